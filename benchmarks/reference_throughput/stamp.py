#!/usr/bin/env python3
"""Timestamp a program's output record by record (records end in '\\r' or '\\n').

The reference's utils.progress_bar redraws one line per step with '\\r', pads it and jumps back with
backspaces, then flushes; every training step ends in loss.item() (a GPU sync) before that flush, so the
time a record arrives here is the time that step finished. Each output line: '<seconds since start>\\t<text>'
with backspaces removed and runs of spaces collapsed. Reads stdin, writes stdout.
"""
import os
import re
import sys
import time

_SPACES = re.compile(rb" {2,}")


def main():
    t0 = time.monotonic()
    out = sys.stdout.buffer
    buf = b""
    fd = sys.stdin.fileno()
    while True:
        chunk = os.read(fd, 1 << 16)
        t = time.monotonic() - t0
        if not chunk:
            break
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()  # incomplete tail
        for p in parts:
            p = _SPACES.sub(b" ", p.replace(b"\b", b"")).strip()
            if p:
                out.write(b"%.4f\t" % t + p + b"\n")
        out.flush()
    if buf.strip():
        out.write(b"%.4f\t" % (time.monotonic() - t0) + buf.strip() + b"\n")
    out.flush()


if __name__ == "__main__":
    main()
