"""Benchmark the Sleep-EDF prepare step (EDF -> NPZ): nights/s, total seconds and peak memory.

    python benchmarks/bench_prepare.py [--shared ../shared/sleep-edf] [--subjects 0-19] [--workers 2]
    python benchmarks/bench_prepare.py --data-dir DIR [--workers 2]     # time an existing download folder

Without --data-dir, surrogate nights (make_surrogate.py from the shared kit; subjects 0-19 = 39 nights) are generated
into a temporary folder first, untimed. The timed run happens in a fresh child process, so the peak resident memory
it reports (ru_maxrss of the process and of its largest worker) excludes the generator.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dset.sleep_edf import find_nights, prepare  # noqa: E402


def peak_mb(who: int) -> float:
    """Peak resident memory in MB (ru_maxrss is in KB on Linux, bytes on macOS)."""
    return resource.getrusage(who).ru_maxrss / (1024 ** 2 if sys.platform == "darwin" else 1024)


def folder_mb(folder: Path, pattern: str) -> float:
    return sum(p.stat().st_size for p in folder.rglob(pattern)) / 1e6


def measure(data_dir: Path, out_dir: Path, workers: int) -> None:
    n_nights = len(find_nights(data_dir))
    start = time.perf_counter()
    report = prepare(data_dir, out_dir, workers=workers, force=True, progress=False)
    seconds = time.perf_counter() - start
    print(f"prepare benchmark: {n_nights} nights ({len(report.prepared)} prepared, {len(report.failed)} failed), "
          f"{workers} workers")
    print(f"  total {seconds:.1f} s, {n_nights / seconds:.2f} nights/s")
    print(f"  peak RSS: main process {peak_mb(resource.RUSAGE_SELF):.0f} MB, "
          f"largest worker {peak_mb(resource.RUSAGE_CHILDREN):.0f} MB")
    print(f"  input {folder_mb(data_dir, '*.edf'):.0f} MB EDF, output {folder_mb(out_dir, '*.npz'):.0f} MB NPZ")
    print(report.summary() if report.failed else "", end="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="existing EDF folder (skips the generation)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "sleep-edf")
    parser.add_argument("--subjects", default="0-19")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        if args.data_dir is not None:
            measure(args.data_dir, Path(tmp) / "npz", args.workers)
            return
        generator = args.shared / "make_surrogate.py"
        if not generator.is_file():
            sys.exit(f"{generator} not found: pass --shared (the surrogate kit) or --data-dir (an EDF folder)")
        edf = Path(tmp) / "edf"
        print(f"generating surrogate subjects {args.subjects} into {edf} (not timed)...", flush=True)
        subprocess.run([sys.executable, str(generator), "--out", str(edf), "--subjects", args.subjects,
                        "--workers", str(args.workers)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, __file__, "--data-dir", str(edf), "--workers", str(args.workers)], check=True)


if __name__ == "__main__":
    main()
