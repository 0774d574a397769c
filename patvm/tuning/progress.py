"""Progress of a tuning run on stderr: one line per task, redrawn in place on a terminal.

    [1/2] fused_pa_bitserial_conv2d_add_relu   [#####.....]  4/8 trials  best 0.252 ms  hand 0.310 ms  0:35

On a terminal the line is redrawn every second (elapsed time) and after every measured batch; elsewhere
(a pipe, a CI log) one line is printed per batch. MetaSchedule's own logging goes to DIR/logs/, not here.
"""
from __future__ import annotations

import math
import sys
import threading
import time


def format_ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f} ms" if ms < 100 else f"{ms:.1f} ms"


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    BAR = 12
    NAME = 40

    def __init__(self, total_tasks: int, stream=None, live: bool | None = None, tick: float = 1.0):
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total_tasks = total_tasks
        self.tick = tick
        self._lock = threading.RLock()   # re-entrant: a signal handler may print
        self._state: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- task lines
    def start_task(self, index: int, name: str, done: int, total: int, best: float | None = None,
                   hand: float | None = None, phase: str = "") -> None:
        with self._lock:
            self._state = dict(index=index, name=name, done=done, total=total, best=best, hand=hand,
                               phase=phase, start=time.monotonic())
            self._draw(final=False, changed=True)
        if self.live and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._ticker, name="patvm-progress", daemon=True)
            self._thread.start()

    def update(self, **changes) -> None:
        with self._lock:
            if self._state is None:
                return
            self._state.update(changes)
            self._draw(final=False, changed=True)

    def end_task(self, note: str = "") -> None:
        with self._lock:
            if self._state is None:
                return
            self._state["phase"] = note
            self._draw(final=True)
            self._state = None

    def message(self, text: str) -> None:
        with self._lock:
            if self.live and self._state is not None:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            if self.live and self._state is not None:
                self._draw(final=False)
            self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.tick)
            self._thread = None
        with self._lock:
            if self._state is not None:
                self._draw(final=True)
                self._state = None

    # ---- drawing
    def line(self) -> str:
        s = self._state
        name = s["name"] if len(s["name"]) <= self.NAME else s["name"][: self.NAME - 3] + "..."
        total = max(1, s["total"])
        filled = min(self.BAR, int(self.BAR * min(s["done"], total) / total))
        parts = [f"[{s['index']}/{self.total_tasks}] {name:<{self.NAME}}",
                 f"[{'#' * filled}{'.' * (self.BAR - filled)}]",
                 f"{s['done']}/{s['total']} trials",
                 f"best {format_ms(s['best'])}"]
        if s.get("hand") is not None:
            parts.append(f"hand {format_ms(s['hand'])}")
        parts.append(format_elapsed(time.monotonic() - s["start"]))
        if s.get("phase"):
            parts.append(s["phase"])
        return "  ".join(parts)

    def _draw(self, final: bool, changed: bool = False) -> None:
        if self._state is None:
            return
        if self.live:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        elif changed or (final and self._state.get("phase")):
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                if self._state is not None:
                    self._draw(final=False)
