"""Atomic file writes: a temporary file in the destination folder, then rename, so that an interrupted
run never leaves a half-written file that a later run would trust."""
from __future__ import annotations

import contextlib
import os
import tempfile

from patvm.host import default_file_mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure remove it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix or os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        executable = bool(os.stat(tmp).st_mode & 0o100) or path.endswith(".so")
        os.chmod(tmp, default_file_mode(executable))  # mkstemp makes 0600; give the file what open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
