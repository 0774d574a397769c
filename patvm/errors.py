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
