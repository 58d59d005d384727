"""Download the Sleep-EDF-2018 sleep-cassette PSGs and hypnograms from PhysioNet, verified and resumable.

    python dset/Sleep-EDF-2018/download_sleep-edf-2018.py [--out DIR] [--subjects 0-19|0,1,5|all] [--workers N]

Rerun it after an interruption: finished files are skipped, partial ones resume. Exit status 1 if any file failed.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dset.physionet import BASE_URL, DEFAULT_OUT, DownloadError, download_sleep_edf  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target folder (default: %(default)s)")
    parser.add_argument("--base-url", default=BASE_URL, help="sleep-edfx top level (default: %(default)s)")
    parser.add_argument("--subjects", default="all", help="'all' (default), '0-19', '0,1,5' or a mix like '0-3,7'")
    parser.add_argument("--workers", type=int, default=4, help="parallel downloads (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=5, help="network retries per file (default: %(default)s)")
    parser.add_argument("--backoff", type=float, default=2.0,
                        help="seconds before the first retry, doubling each time (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default: %(default)s)")
    parser.add_argument("--recheck", action="store_true",
                        help="hash existing files again instead of trusting the verification cache")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        parser.error("--workers must be >= 1, --retries and --backoff >= 0, --timeout > 0")
    try:
        summary = download_sleep_edf(args.out, args.base_url, args.subjects, args.workers, args.retries,
                                     args.backoff, args.timeout, args.recheck)
    except ValueError as exc:
        parser.error(str(exc))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: partial files are kept in {args.out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(summary.report())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
