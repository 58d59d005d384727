"""Shared test fixtures. Tests that need ../shared (the surrogate Sleep-EDF kit) skip cleanly without it."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "sleep-edf"


@pytest.fixture(scope="session")
def shared_sleep_edf() -> Path:
    """Path to ../shared/sleep-edf; skips the test when the kit is absent (a user's fresh clone)."""
    if not (SHARED / "make_surrogate.py").is_file():
        pytest.skip("../shared/sleep-edf is absent (only present in the development workplace)")
    return SHARED


def pytest_configure(config):
    """One intra-op thread: CI has 2 cores, and two threads per process fight over them (measured 5-8x slower)."""
    import torch

    torch.set_num_threads(1)
