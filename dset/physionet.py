"""Download Sleep-EDF-2018 (PhysioNet sleep-edfx 1.0.0, sleep-cassette) with verified, resumable transfers.

The file list comes from the server: `SHA256SUMS.txt` names every file with its hash ("HASH PATH"), `RECORDS`
the PSGs. Each PSG is paired with its hypnogram by the first 7 characters of the name
(`SC4001E0-PSG.edf` <-> `SC4001EC-Hypnogram.edf`); subject = int(name[3:5]), night = int(name[5]).

A file is written as `NAME.partial` (resumed with an HTTP Range request after an interruption) and gets its final
name by an atomic rename only once its SHA-256 matches `SHA256SUMS.txt`. Files already present and verified are
skipped; the verification is cached in `OUT/.verified-sha256.json` by (size, mtime), so reruns cost no hashing.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from tqdm import tqdm

from utils import REPO_ROOT, atomic_write_bytes, file_sha256

BASE_URL = "https://physionet.org/files/sleep-edfx/1.0.0/"
DEFAULT_OUT = REPO_ROOT / "dset" / "Sleep-EDF-2018" / "edf"
SUBSET = "sleep-cassette"
CACHE_NAME = ".verified-sha256.json"
CHUNK = 1 << 20
USER_AGENT = "DeepSleepBench-downloader (Python urllib)"
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
CASSETTE_FILE = re.compile(r"SC4(\d\d)(\d)\w\w-(PSG|Hypnogram)\.edf")


# ----------------------------------------------------------------------------- the manifest
class RemoteFile(NamedTuple):
    path: str  # relative to the base URL, e.g. "sleep-cassette/SC4001E0-PSG.edf"
    sha256: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class Night(NamedTuple):
    subject: int
    night: int
    psg: RemoteFile
    hypnogram: RemoteFile


class Problem(NamedTuple):
    subject: int
    files: str  # the file name(s) concerned
    reason: str


@dataclass
class Manifest:
    """The sleep-cassette nights on the server, and what could not be paired or verified."""

    nights: list[Night]
    problems: list[Problem]

    @property
    def subjects(self) -> set[int]:
        return {n.subject for n in self.nights} | {p.subject for p in self.problems}


def parse_sha256sums(text: str) -> dict[str, str]:
    """`HASH PATH` lines -> {path: hash}."""
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, path = line.strip().partition(" ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not path.strip():
            raise ValueError(f"SHA256SUMS.txt line {number}: expected 'HASH PATH', got {line!r}")
        sums[path.strip().lstrip("*")] = digest
    return sums


def parse_manifest(records: str, sha256sums: str) -> Manifest:
    """Pair the sleep-cassette PSGs and hypnograms of `SHA256SUMS.txt`; `RECORDS` is checked against it.

    Other folders (sleep-telemetry) and top-level files are ignored. Unpaired files, several candidates for one
    night, and PSGs in RECORDS without a checksum become `Problem`s.
    """
    sums = parse_sha256sums(sha256sums)
    by_night: dict[str, dict[str, list[RemoteFile]]] = defaultdict(lambda: {"PSG": [], "Hypnogram": []})
    for path, digest in sums.items():
        folder, _, name = path.rpartition("/")
        if folder == SUBSET and (match := CASSETTE_FILE.fullmatch(name)):
            by_night[name[:7]][match.group(3)].append(RemoteFile(path, digest))
    problems = [
        Problem(int(path.rsplit("/", 1)[-1][3:5]), path, "in RECORDS but not in SHA256SUMS.txt (cannot verify)")
        for path in (line.strip() for line in records.splitlines())
        if path.startswith(f"{SUBSET}/") and path not in sums
    ]
    nights = []
    for prefix, files in sorted(by_night.items()):
        subject, night = int(prefix[3:5]), int(prefix[5])
        psgs, hypnograms = files["PSG"], files["Hypnogram"]
        if len(psgs) == 1 and len(hypnograms) == 1:
            nights.append(Night(subject, night, psgs[0], hypnograms[0]))
            continue
        names = ", ".join(f.name for f in psgs + hypnograms)
        if not hypnograms:
            problems.append(Problem(subject, names, "PSG without a hypnogram on the server"))
        elif not psgs:
            problems.append(Problem(subject, names, "hypnogram without a PSG on the server"))
        else:
            problems.append(Problem(subject, names, f"more than one PSG or hypnogram for night {prefix}"))
    return Manifest(nights, sorted(problems))


def compact_ranges(ids: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def parse_subjects(spec: str, available: Iterable[int]) -> list[int]:
    """'all', '0-19', '0,1,5' or '0-3,7' -> sorted subject ids; a ValueError names bad or absent subjects."""
    available = set(available)
    if spec.strip() == "all":
        return sorted(available)
    wanted: set[int] = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ValueError(f"--subjects {spec!r}: {part!r} is not a subject id or a range like 0-19")
        lo = int(match.group(1))
        wanted.update(range(lo, int(match.group(2) or lo) + 1))
    if absent := wanted - available:
        raise ValueError(f"--subjects {spec!r}: subject(s) {compact_ranges(absent)} are not on the server "
                         f"(it has {compact_ranges(available) or 'none'})")
    return sorted(wanted)


# ----------------------------------------------------------------------------- transfers
class DownloadError(RuntimeError):
    """A file could not be fetched or verified; the message names the file or URL."""


def permanent_failure(exc: Exception) -> str | None:
    """'connection refused' or 'host name not found' when retrying cannot help; None for transient failures
    (timeouts, resets, cut transfers), which are retried."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"host name not found ({cause})"
    return None


class _Retryable(Exception):
    """A transfer that ended early; worth another try."""


class _Stopped(Exception):
    """The user interrupted the run."""


@dataclass
class Summary:
    """What a run did, by file name."""

    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # file name -> reason

    @property
    def ok(self) -> bool:
        return not self.failed

    def report(self) -> str:
        lines = [f"downloaded {len(self.downloaded)}, skipped {len(self.skipped)} (already verified), "
                 f"failed {len(self.failed)}"]
        lines += [f"FAILED {name}: {reason}" for name, reason in sorted(self.failed.items())]
        return "\n".join(lines)


class Downloader:
    """Fetches files below `base_url` into `out` (same relative paths), in parallel, verified and resumable.

    `retries` network retries per transfer, waiting `backoff * 2**k` seconds before retry k; a checksum mismatch
    is retried once from scratch. `recheck` hashes existing files again instead of trusting the cache.
    """

    def __init__(self, out: Path, base_url: str = BASE_URL, workers: int = 4, retries: int = 5,
                 backoff: float = 2.0, timeout: float = 60.0, recheck: bool = False):
        self.out, self.base_url = Path(out), base_url if base_url.endswith("/") else base_url + "/"
        self.workers, self.retries, self.backoff, self.timeout = workers, retries, backoff, timeout
        self.recheck = recheck
        self.cache_path = self.out / CACHE_NAME
        self._cache = self._load_cache()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: tqdm | None = None

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, urllib.parse.quote(path))

    # -- small files, read into memory
    def get_text(self, path: str) -> str:
        """The body of `base_url/path` as text (with retries)."""
        url = self.url(path)

        def fetch() -> str:
            with self._open(url) as response:
                body = response.read()
                length = response.headers.get("Content-Length")
                if length is not None and len(body) < int(length):
                    raise _Retryable(f"connection closed after {len(body)} of {length} bytes")
                return body.decode()

        return self._with_retries(url, fetch)

    # -- many files, verified and resumable
    def fetch_all(self, files: list[RemoteFile]) -> Summary:
        """Download (or skip, when verified) every file; never raises for a single file's failure."""
        summary = Summary()
        with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=f"files 0/{len(files)}", disable=None) as bar, \
                ThreadPoolExecutor(max(1, self.workers)) as pool:
            self._bar = bar
            futures = {pool.submit(self.fetch, f): f for f in files}
            try:
                for done, future in enumerate(as_completed(futures), 1):
                    name = futures[future].name
                    try:
                        (summary.downloaded if future.result() else summary.skipped).append(name)
                    except (DownloadError, OSError) as exc:  # OSError: the local disk (full, permissions)
                        summary.failed[name] = str(exc)
                        tqdm.write(f"FAILED {name}: {exc}")
                    bar.set_description(f"files {done}/{len(files)}")
            except KeyboardInterrupt:
                self._stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return summary

    def fetch(self, remote: RemoteFile) -> bool:
        """Make `out/remote.path` a verified copy; True if downloaded, False if it was already there."""
        final = self.out / remote.path
        partial = final.with_name(final.name + ".partial")
        if final.exists():
            if self._verified(final, remote.path, remote.sha256):
                partial.unlink(missing_ok=True)
                return False
            tqdm.write(f"{final}: does not match SHA256SUMS.txt; downloading it again")
            final.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        url = self.url(remote.path)
        for from_scratch in (False, True):  # a checksum mismatch is retried once from scratch
            self._with_retries(url, lambda: self._transfer(url, partial))
            actual = file_sha256(partial)
            if actual == remote.sha256:
                os.replace(partial, final)
                self._remember(final, remote.path, actual)
                return True
            partial.unlink()
            if not from_scratch:
                tqdm.write(f"{remote.name}: SHA-256 mismatch; downloading it again from scratch")
        raise DownloadError(f"SHA-256 mismatch after 2 downloads from {url}: expected {remote.sha256}, "
                            f"got {actual}; nothing kept")

    def _transfer(self, url: str, partial: Path) -> None:
        """Append the rest of `url` to `partial` (Range request when it has a part already)."""
        offset = partial.stat().st_size if partial.exists() else 0
        try:
            response = self._open(url, offset)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing beyond `offset`: the checksum decides
                return
            raise
        with response:
            resumed = offset > 0 and response.status == 206
            if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise DownloadError(f"{url}: asked for bytes {offset}- but got Content-Range "
                                    f"{response.headers.get('Content-Range')!r}")
            length = response.headers.get("Content-Length")
            received = 0
            with open(partial, "ab" if resumed else "wb") as f:
                while chunk := response.read(CHUNK):
                    if self._stop.is_set():
                        raise _Stopped
                    f.write(chunk)
                    received += len(chunk)
                    if self._bar is not None:
                        self._bar.update(len(chunk))
        if length is not None and received < int(length):
            raise _Retryable(f"connection closed after {received} of {length} bytes")

    def _open(self, url: str, offset: int = 0) -> http.client.HTTPResponse:
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)

    def _with_retries(self, url: str, attempt: Callable):
        """Run `attempt()`, retrying network errors with exponential backoff; errors name the URL."""
        for k in range(self.retries + 1):
            try:
                return attempt()
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRYABLE_HTTP or k == self.retries:
                    raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
                error = exc
            except (_Retryable, urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                    ssl.SSLError) as exc:
                if (reason := permanent_failure(exc)) is not None:
                    raise DownloadError(f"{url}: {reason}; not retried (check the URL and the network)") from exc
                if k == self.retries:
                    raise DownloadError(f"{url}: {exc} (gave up after {k + 1} attempts)") from exc
                error = exc
            delay = self.backoff * 2 ** k
            tqdm.write(f"{url}: {error}; retry {k + 1}/{self.retries} in {delay:.3g} s")
            if self._stop.wait(delay):
                raise _Stopped

    # -- verification cache: {relative path: [size, mtime_ns, sha256]}
    def _load_cache(self) -> dict[str, list]:
        try:
            return json.loads(self.cache_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _verified(self, path: Path, key: str, expected: str) -> bool:
        stat = path.stat()
        if not self.recheck and self._cache.get(key) == [stat.st_size, stat.st_mtime_ns, expected]:
            return True
        actual = file_sha256(path)
        if actual == expected:
            self._remember(path, key, actual)
        return actual == expected

    def _remember(self, path: Path, key: str, digest: str) -> None:
        stat = path.stat()
        with self._lock:
            self._cache[key] = [stat.st_size, stat.st_mtime_ns, digest]
            atomic_write_bytes(self.cache_path, json.dumps(self._cache, indent=1, sort_keys=True).encode())


# ----------------------------------------------------------------------------- the whole dataset
def download_sleep_edf(out: str | os.PathLike = DEFAULT_OUT, base_url: str = BASE_URL, subjects: str = "all",
                       workers: int = 4, retries: int = 5, backoff: float = 2.0, timeout: float = 60.0,
                       recheck: bool = False) -> Summary:
    """Fetch the PSG and hypnogram of every sleep-cassette night of `subjects` into `out/sleep-cassette/`.

    `out/RECORDS` and `out/SHA256SUMS.txt` are the server's copies. Unpaired files of the chosen subjects are
    reported as failures. Raises ValueError for a bad or absent `subjects`, DownloadError when the manifest
    cannot be fetched.
    """
    downloader = Downloader(Path(out), base_url, workers, retries, backoff, timeout, recheck)
    records, sums = downloader.get_text("RECORDS"), downloader.get_text("SHA256SUMS.txt")
    try:
        manifest = parse_manifest(records, sums)
    except ValueError as exc:
        raise DownloadError(f"{downloader.url('SHA256SUMS.txt')}: {exc}") from exc
    chosen = set(parse_subjects(subjects, manifest.subjects))
    nights = [n for n in manifest.nights if n.subject in chosen]
    tqdm.write(f"{len(chosen)} subject(s), {len(nights)} night(s), {2 * len(nights)} files from "
         f"{downloader.base_url} -> {downloader.out}")
    atomic_write_bytes(downloader.out / "RECORDS", records.encode())
    atomic_write_bytes(downloader.out / "SHA256SUMS.txt", sums.encode())
    summary = downloader.fetch_all([f for n in nights for f in (n.psg, n.hypnogram)])
    for problem in manifest.problems:
        if problem.subject in chosen:
            summary.failed[problem.files] = problem.reason
    return summary
