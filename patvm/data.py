"""Where the data folders patvm ships live: targets/ (presets), schedules/ (tuned databases), deploy/
(the C++ runner).

In the repository they sit beside the package; a wheel carries them inside it, as patvm/_data/<name>
(setup.py copies them at build time), so an installed patvm finds them wherever it runs from.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FOLDERS = ("targets", "schedules", "deploy")


def data_dir(name: str) -> Path:
    """The folder `name` (one of FOLDERS): the wheel's copy if this is an installed wheel, else the checkout's."""
    assert name in FOLDERS, name
    installed = PACKAGE / "_data" / name
    return installed if installed.is_dir() else PACKAGE.parent / name
