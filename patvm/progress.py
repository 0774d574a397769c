"""Progress of patvm's long runs (tuning, zoo builds, fuzz campaigns, the benchmark scripts): the one module
that configures tqdm.

    with Bar(8, "[1/2] fused_conv", unit="trials") as bar:
        bar.set(4, postfix="best 0.252 ms")
        message("a line of its own")

On a terminal a bar is tqdm's, redrawn in place when it changes (its elapsed time moves with it: there is
no ticker), and `message` prints above it (tqdm.write). Anywhere else (a pipe, a CI log, pytest's capture)
nothing is redrawn and no carriage return is written: a bar prints its line as a line of its own when it
starts, when it ends, and on updates at most every `log_interval` seconds in between (0: on every update,
for bars whose updates are few and each worth a line, such as a tuning task's measured batches).
"""
from __future__ import annotations

import io
import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 30.0
BAR_FORMAT = "{desc}  {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]"
COUNT_FORMAT = "{desc}  {n_fmt} {unit} [{elapsed}{postfix}]"     # no total known


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Discard(io.TextIOBase):
    """Where the tqdm of a bar off a terminal draws: the bar keeps tqdm's counting and formatting, and its
    lines are printed whole by `Bar`."""

    def write(self, text: str) -> int:
        return len(text)


class Bar:
    """A progress bar of `total` steps (None: a count) on `stream` (stderr at the time of the call)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0, postfix: str = "",
                 stream=None, live: bool | None = None, log_interval: float = LOG_INTERVAL):
        self.stream = stream if stream is not None else sys.stderr
        self.live = is_terminal(self.stream) if live is None else live
        self.log_interval = log_interval
        self._tqdm = tqdm(total=total, desc=desc, unit=unit, initial=initial, postfix=postfix or None,
                          bar_format=BAR_FORMAT if total is not None else COUNT_FORMAT, leave=True,
                          file=self.stream if self.live else _Discard(), dynamic_ncols=self.live)
        self._printed_at = -float("inf")
        self._print_line()

    def advance(self, steps: int = 1, postfix: str | None = None) -> None:
        self.set(self._tqdm.n + steps, postfix)

    def set(self, n: int | None = None, postfix: str | None = None) -> None:
        """Steps done so far (unchanged if None) and the text after the elapsed time."""
        if postfix is not None:
            self._tqdm.set_postfix_str(postfix, refresh=False)
        if self.live:
            step = 0 if n is None else n - self._tqdm.n
            if step:
                self._tqdm.update(step)          # tqdm redraws at most every mininterval
            else:
                self._tqdm.refresh()
        else:
            if n is not None:
                self._tqdm.n = n
            if time.monotonic() - self._printed_at >= self.log_interval:
                self._print_line()

    def close(self) -> None:
        if not self.live and not self._tqdm.disable:
            self._print_line()
        self._tqdm.close()

    def _print_line(self) -> None:
        if not self.live:
            self.stream.write(f"{self._tqdm}\n")
            self.stream.flush()
            self._printed_at = time.monotonic()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def message(text: str, stream=None) -> None:
    """A line on `stream` (stderr), printed above the bars drawn on a terminal instead of through them."""
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
    stream.flush()
