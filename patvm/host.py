"""Facts about the machine patvm runs on that several parts need: the cores it may use, the file mode new
files get, the CPU's model and flags."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_file_mode(executable: bool = False) -> int:
    """The mode open() would give a new file under the current umask (mkstemp makes 0600)."""
    umask = os.umask(0)     # the only way to read the umask is to set it: put it straight back
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask


def cpuinfo() -> dict:
    """CPU model and flags from /proc/cpuinfo (first processor)."""
    model, flags, mhz = platform.processor() or platform.machine(), set(), None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and model in (platform.processor(), platform.machine(), ""):
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "cpu MHz" and mhz is None:
            mhz = float(value)
    return {"model": model, "flags": flags, "mhz": mhz}
