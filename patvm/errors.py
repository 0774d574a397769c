"""Errors patvm raises for bad input.

A `PatvmError` is a user error: the CLI prints its one-line message and exits with code 2, no traceback.
Anything else escaping patvm is a bug in patvm.
"""


class PatvmError(ValueError):
    """Bad input from the user: a file, a model, a parameter. The message names the problem."""


class ModelError(PatvmError):
    """An ONNX model that patvm refuses (unreadable, fails the checker, unsafe, malformed PA node)."""


class InputError(PatvmError):
    """An input tensor handed to a compiled model has the wrong name, shape or dtype."""


def require(condition: bool, message: str, error: type = PatvmError) -> None:
    """Raise `error(message)` unless `condition` holds."""
    if not condition:
        raise error(message)


def _lines(exc: BaseException) -> list[str]:
    return [line.strip() for line in str(exc).splitlines() if line.strip()]


def first_line(exc: BaseException, limit: int | None = None, skip_traceback: bool = False) -> str:
    """The first non-empty line of an exception's message (at most `limit` characters; with `skip_traceback`,
    not a "Traceback"/"File ..." line of a traceback quoted in it), or the exception's type name."""
    for line in _lines(exc):
        if not (skip_traceback and line.startswith(("File ", "Traceback"))):
            return line[:limit]
    return type(exc).__name__


def last_line(exc: BaseException, limit: int | None = None) -> str:
    """The last non-empty line of an exception's message, where TVM and onnxruntime put the error itself
    after a stack (at most `limit` characters), or the exception's type name."""
    lines = _lines(exc)
    return lines[-1][:limit] if lines else type(exc).__name__
