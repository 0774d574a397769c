"""TVM's C++ log lines (LOG(WARNING) goes straight to file descriptor 2) kept out of patvm's output.

Exporting a Relax executable alone prints one "Scope Saving" warning per function. The CLI runs each
command inside `native_stderr_captured()` unless `--verbose`: whatever native code (and the processes it
starts) writes to descriptor 2 goes to a temporary file, while Python's own `sys.stderr` (errors,
progress) still reaches the terminal. If the command fails with anything but a user error, the captured
lines are shown after all, since they may say why.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from patvm.errors import PatvmError

SHOWN_ON_FAILURE = 40   # last captured lines replayed when a command fails unexpectedly


@contextlib.contextmanager
def native_stderr_captured():
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = open(terminal, "w", buffering=1, closefd=False, encoding=python_stderr.encoding,
                          errors="backslashreplace")
        try:
            yield
        except (PatvmError, KeyboardInterrupt):
            raise
        except BaseException:
            _restore(terminal, python_stderr)
            sink.seek(0)
            lines = sink.read().decode(errors="replace").splitlines()[-SHOWN_ON_FAILURE:]
            if lines:
                print("\n".join(["patvm: TVM's log before the failure:", *lines]), file=sys.stderr)
            raise
        finally:
            _restore(terminal, python_stderr)
            os.close(terminal)


def _restore(terminal: int, python_stderr) -> None:
    if sys.stderr is not python_stderr:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)
