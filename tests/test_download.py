"""The Sleep-EDF downloader against the genuine PhysioNet manifest and a local HTTP server serving a surrogate."""
import hashlib
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from dset.physionet import (DownloadError, Downloader, RemoteFile, download_sleep_edf, parse_manifest,
                            parse_subjects)
from utils import REPO_ROOT

SCRIPT = REPO_ROOT / "dset" / "Sleep-EDF-2018" / "download_sleep-edf-2018.py"
FAST = dict(workers=2, backoff=0.0)


# ----------------------------------------------------------------------------- manifest and subjects
def test_genuine_manifest_pairs_all_153_cassette_nights(shared_sleep_edf):
    folder = shared_sleep_edf / "physionet_manifest"
    manifest = parse_manifest((folder / "RECORDS").read_text(), (folder / "SHA256SUMS.txt").read_text())
    assert manifest.problems == []
    assert len(manifest.nights) == 153
    assert manifest.subjects == set(range(83)) - {39, 68, 69, 78, 79} and len(manifest.subjects) == 78
    nights_of = {s: sorted(n.night for n in manifest.nights if n.subject == s) for s in manifest.subjects}
    assert {s for s, nights in nights_of.items() if len(nights) == 1} == {13, 36, 52}
    assert all(n.psg.path.startswith("sleep-cassette/SC4") for n in manifest.nights)  # telemetry ignored
    first = manifest.nights[0]
    assert (first.subject, first.night, first.psg.name, first.hypnogram.name) == (
        0, 1, "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf")
    sums = dict(line.split(" ")[::-1] for line in (folder / "SHA256SUMS.txt").read_text().splitlines())
    assert first.hypnogram.sha256 == sums["sleep-cassette/SC4001EC-Hypnogram.edf"]
    assert all(n.psg.name[:7] == n.hypnogram.name[:7] for n in manifest.nights)


def test_unpaired_files_and_unverifiable_records_are_problems():
    h = "0" * 64
    sums = "\n".join(f"{h} {p}" for p in [
        "sleep-cassette/SC4001E0-PSG.edf", "sleep-cassette/SC4001EC-Hypnogram.edf",
        "sleep-cassette/SC4012E0-PSG.edf",                                   # no hypnogram
        "sleep-cassette/SC4421FA-Hypnogram.edf",                             # no PSG
        "sleep-telemetry/ST7011J0-PSG.edf", "RECORDS"])
    records = "sleep-cassette/SC4001E0-PSG.edf\nsleep-cassette/SC4771G0-PSG.edf\nsleep-telemetry/ST7011J0-PSG.edf\n"
    manifest = parse_manifest(records, sums)
    assert [(n.subject, n.night) for n in manifest.nights] == [(0, 1)]
    assert [(p.subject, p.files) for p in manifest.problems] == [
        (1, "SC4012E0-PSG.edf"), (42, "SC4421FA-Hypnogram.edf"), (77, "sleep-cassette/SC4771G0-PSG.edf")]
    assert "without a hypnogram" in manifest.problems[0].reason
    assert "without a PSG" in manifest.problems[1].reason
    assert "not in SHA256SUMS.txt" in manifest.problems[2].reason
    assert manifest.subjects == {0, 1, 42, 77}
    with pytest.raises(ValueError, match="line 1"):
        parse_manifest("", "not-a-hash sleep-cassette/SC4001E0-PSG.edf\n")


def test_parse_subjects():
    available = set(range(83)) - {39, 68, 69, 78, 79}
    assert parse_subjects("0-19", available) == list(range(20))
    assert parse_subjects("0,1,5", available) == [0, 1, 5]
    assert parse_subjects("0-3,7", available) == [0, 1, 2, 3, 7]
    assert parse_subjects(" 2 - 3 , 2 ", available) == [2, 3]
    assert parse_subjects("all", available) == sorted(available)
    with pytest.raises(ValueError, match=r"subject\(s\) 39, 68-69 are not on the server"):
        parse_subjects("38-40,68-69", available)
    for bad in ["", "a", "3-1", "1-", "-2", "1,,2", "1.5"]:
        with pytest.raises(ValueError, match="not a subject id or a range"):
            parse_subjects(bad, available)


# ----------------------------------------------------------------------------- a local PhysioNet
class RangeHandler(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-`; the server's hooks can cut a transfer, replace a body, answer 404, or answer
    an HTTP error status once."""

    def do_GET(self):
        server: SurrogateServer = self.server
        path = urlparse(self.path).path.lstrip("/")
        with server.lock:
            server.requests.append((path, self.headers.get("Range")))
            cut = server.cut_once.pop(path, None)
            status = server.fail_once.pop(path, None)
        if status is not None:
            self.send_error(status)
            return
        body = server.replace.get(path)
        if body is None and (path in server.missing or not (server.root / path).is_file()):
            self.send_error(404)
            return
        body = body if body is not None else (server.root / path).read_bytes()
        start = 0
        if requested := self.headers.get("Range"):
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if cut is None:
            self.wfile.write(body[start:])
        else:  # announce the whole body, send `cut` bytes, hang up
            self.wfile.write(body[start:start + cut])
            self.close_connection = True

    def log_message(self, *args):
        pass


class SurrogateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_once: dict[str, int] = {}
        self.fail_once: dict[str, int] = {}  # path -> HTTP status answered once
        self.replace: dict[str, bytes] = {}
        self.missing: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def file_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].startswith("sleep-cassette/")]


@pytest.fixture(scope="module")
def surrogate(shared_sleep_edf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("physionet")
    subprocess.run([sys.executable, str(shared_sleep_edf / "make_surrogate.py"), "--out", str(out),
                    "--subjects", "0-1"], check=True, capture_output=True)
    return out


@contextmanager
def serving(root: Path):
    """A SurrogateServer of `root`, answering in a background thread for the block."""
    httpd = SurrogateServer(root)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def server(surrogate):
    with serving(surrogate) as httpd:
        yield httpd


def cassette_files(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "sleep-cassette").iterdir())


# ----------------------------------------------------------------------------- downloads
def test_full_download_is_byte_identical_and_rerun_skips(server, surrogate, tmp_path):
    summary = download_sleep_edf(tmp_path, server.url, "0-1", **FAST)
    assert summary.ok and len(summary.downloaded) == 8 and summary.skipped == []
    assert cassette_files(tmp_path) == cassette_files(surrogate)  # no .partial left
    for name in cassette_files(surrogate):
        assert (tmp_path / "sleep-cassette" / name).read_bytes() == (surrogate / "sleep-cassette" / name).read_bytes()
    for name in ["RECORDS", "SHA256SUMS.txt"]:
        assert (tmp_path / name).read_bytes() == (surrogate / name).read_bytes()

    server.requests.clear()
    summary = download_sleep_edf(tmp_path, server.url, "0-1", **FAST)
    assert summary.ok and summary.downloaded == [] and len(summary.skipped) == 8
    assert server.file_requests() == []

    # a file changed on disk is not trusted from the verification cache: only it is fetched again
    tampered = tmp_path / "sleep-cassette" / "SC4002E0-PSG.edf"
    with open(tampered, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    summary = download_sleep_edf(tmp_path, server.url, "0-1", **FAST)
    assert summary.ok and summary.downloaded == ["SC4002E0-PSG.edf"] and len(summary.skipped) == 7
    assert tampered.read_bytes() == (surrogate / "sleep-cassette" / "SC4002E0-PSG.edf").read_bytes()

    # same size and mtime: the cache is trusted unless recheck=True hashes every file again
    stat = tampered.stat()
    with open(tampered, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    os.utime(tampered, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert download_sleep_edf(tmp_path, server.url, "0-1", **FAST).downloaded == []
    assert download_sleep_edf(tmp_path, server.url, "0-1", recheck=True, **FAST).downloaded == ["SC4002E0-PSG.edf"]
    assert tampered.read_bytes() == (surrogate / "sleep-cassette" / "SC4002E0-PSG.edf").read_bytes()


@pytest.mark.parametrize("retries", [0, 1])
def test_cut_transfer_resumes_with_a_range_request(server, surrogate, tmp_path, retries):
    path, cut = "sleep-cassette/SC4001E0-PSG.edf", 1 << 20
    server.cut_once[path] = cut
    summary = download_sleep_edf(tmp_path, server.url, "0", retries=retries, **FAST)
    final, partial = tmp_path / path, tmp_path / (path + ".partial")
    if retries == 0:  # the first run gives up on that file and keeps what it received
        assert list(summary.failed) == ["SC4001E0-PSG.edf"] and len(summary.downloaded) == 3
        assert "connection closed after 1048576 of 24097088 bytes" in summary.failed["SC4001E0-PSG.edf"]
        assert server.url + path in summary.failed["SC4001E0-PSG.edf"]
        assert not final.exists() and partial.stat().st_size == cut
        summary = download_sleep_edf(tmp_path, server.url, "0", retries=retries, **FAST)
        assert len(summary.skipped) == 3
    assert summary.ok and "SC4001E0-PSG.edf" in summary.downloaded
    assert (path, f"bytes={cut}-") in server.requests
    assert final.read_bytes() == (surrogate / path).read_bytes() and not partial.exists()


@pytest.mark.parametrize("leftover", ["complete", "too long"])
def test_leftover_partial_is_finished_or_restarted(server, surrogate, tmp_path, leftover):
    """A partial that already holds every byte (killed before the rename) gets 416 and is verified; one with
    extra bytes fails the checksum and is fetched again from scratch."""
    path = "sleep-cassette/SC4001EC-Hypnogram.edf"
    good = (surrogate / path).read_bytes()
    partial = tmp_path / (path + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(good if leftover == "complete" else good + b"junk")
    remote = RemoteFile(path, hashlib.sha256(good).hexdigest())
    assert Downloader(tmp_path, server.url, **FAST).fetch(remote)
    assert (tmp_path / path).read_bytes() == good and not partial.exists()
    ranges = [r for p, r in server.requests if p == path]
    assert ranges == ([f"bytes={len(good)}-"] if leftover == "complete" else [f"bytes={len(good) + 4}-", None])


def test_corrupt_missing_and_unpaired_files_fail_clearly_cli(server, surrogate, tmp_path):
    corrupt = "sleep-cassette/SC4011EH-Hypnogram.edf"
    good = (surrogate / corrupt).read_bytes()
    bad = good[:200] + b"X" + good[201:]
    server.replace[corrupt] = bad
    server.missing.add("sleep-cassette/SC4002EC-Hypnogram.edf")
    sums = (surrogate / "SHA256SUMS.txt").read_text()
    server.replace["SHA256SUMS.txt"] = re.sub(r".*SC4012EC-Hypnogram.edf\n", "", sums).encode()

    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--base-url", server.url,
                             "--subjects", "0-1", "--retries", "0", "--backoff", "0"], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "downloaded 4, skipped 0 (already verified), failed 3" in result.stdout
    failure = re.search(r"FAILED SC4011EH-Hypnogram.edf: .*", result.stdout).group(0)
    assert hashlib.sha256(good).hexdigest() in failure and hashlib.sha256(bad).hexdigest() in failure
    assert f"{server.url}sleep-cassette/SC4002EC-Hypnogram.edf: HTTP 404" in output
    assert "SC4012E0-PSG.edf: PSG without a hypnogram" in output
    assert [p for p, _ in server.file_requests()].count(corrupt) == 2  # retried once from scratch
    assert cassette_files(tmp_path) == ["SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", "SC4002E0-PSG.edf",
                                        "SC4011E0-PSG.edf"]
    for name in cassette_files(tmp_path):
        assert (tmp_path / "sleep-cassette" / name).read_bytes() == (surrogate / "sleep-cassette" / name).read_bytes()


def test_bad_base_url_and_absent_subjects(server, tmp_path):
    with pytest.raises(DownloadError, match=re.escape(f"{server.url}nowhere/RECORDS: HTTP 404")):
        download_sleep_edf(tmp_path, server.url + "nowhere/", retries=0)
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--base-url", server.url,
                             "--subjects", "1-3"], capture_output=True, text=True)
    assert result.returncode == 2 and "subject(s) 2-3 are not on the server (it has 0-1)" in result.stderr


# ----------------------------------------------------------------------------- download -> prepare, as a user runs it
def test_download_then_prepare_gives_nights_whose_labels_match_the_hypnograms(server, tmp_path):
    """The two user commands end to end: NPZ label counts equal those computed from the downloaded hypnograms."""
    from test_prepare import expected_labels, n_epochs_of

    edf, npz = tmp_path / "edf", tmp_path / "npz"
    download = [sys.executable, str(SCRIPT), "--out", str(edf),
                "--base-url", server.url, "--subjects", "0", "--workers", "2"]
    prepare = [sys.executable, str(REPO_ROOT / "dset/Sleep-EDF-2018/prepare_sleep-edf-2018.py"), "--data-dir", str(edf),
               "--out-dir", str(npz), "--workers", "1"]
    for command in (download, prepare):
        subprocess.run(command, check=True, capture_output=True)
    for psg in sorted((edf / "sleep-cassette").glob("*-PSG.edf")):
        hypnogram = next((edf / "sleep-cassette").glob(f"{psg.name[:7]}*-Hypnogram.edf"))
        y = np.load(npz / f"{psg.name[:8]}.npz")["y"]
        expected = expected_labels(hypnogram, n_epochs_of(psg))
        assert np.array_equal(np.bincount(y, minlength=5), np.bincount(expected, minlength=5)), psg.name
    assert len(list(npz.glob("*.npz"))) == 2
