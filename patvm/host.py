"""Facts about the machine patvm runs on that several parts need: the cores it may use, the file mode new
files get."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_file_mode(executable: bool = False) -> int:
    """The mode open() would give a new file under the current umask (mkstemp makes 0600)."""
    umask = os.umask(0)     # the only way to read the umask is to set it: put it straight back
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask
