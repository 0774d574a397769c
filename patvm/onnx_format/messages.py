"""Messages about a model patvm refuses: one line, hostile text (node names, paths, checker output) made
printable, prefixed with where the model came from."""
from __future__ import annotations

from patvm.errors import ModelError, first_line

MESSAGE_PART_LIMIT = 160


def one_line(text: object, limit: int = MESSAGE_PART_LIMIT) -> str:
    """A hostile string (node name, path, checker output) made safe for a one-line message."""
    s = str(text)
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def printable_first_line(exc: BaseException) -> str:
    """An exception's first line (patvm.errors.first_line) made safe for a one-line message."""
    return one_line(first_line(exc), 300)


class Source:
    """Where a model came from: its name in messages and the folder its external data must stay in."""

    def __init__(self, label: str, folder: str | None):
        self.label = label
        self.folder = folder

    def fail(self, problem: str) -> ModelError:
        return ModelError(f"{self.label}: {problem}")

    def require(self, condition: bool, problem: str) -> None:
        if not condition:
            raise self.fail(problem)
