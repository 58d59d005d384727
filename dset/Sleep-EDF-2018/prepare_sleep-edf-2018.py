"""Prepare Sleep-EDF-2018 (sleep-cassette): one NPZ per night of 30-s Fpz-Cz epochs with stage labels.

    python dset/Sleep-EDF-2018/prepare_sleep-edf-2018.py --data-dir dset/Sleep-EDF-2018/edf [--channel "EEG Fpz-Cz"]
                                                         [--out-dir DIR] [--workers N] [--force]

The work is done by dset/sleep_edf.py (format and rules in its docstring).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dset.sleep_edf import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
