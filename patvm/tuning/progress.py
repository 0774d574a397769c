"""Progress of a tuning run on stderr: one bar per task (`patvm.progress`: redrawn in place on a terminal,
elsewhere one line when the task starts, after every measured batch and when it ends).

    [1/2] fused_pa_bitserial_conv2d_add_relu         50%|#####     | 4/8 trials [00:35, best 0.252 ms, hand 0.310 ms]

MetaSchedule's own logging goes to DIR/logs/, not here.
"""
from __future__ import annotations

from patvm.progress import Bar, message
from patvm.tuning.report import format_ms


class TuningProgress:
    NAME = 40      # task names are cut to this, so that the bars of a run line up

    def __init__(self, total_tasks: int, stream=None, live: bool | None = None):
        self.total_tasks = total_tasks
        self.stream, self.live = stream, live
        self._bar: Bar | None = None
        self._hand: float | None = None

    def start_task(self, index: int, name: str, done: int, total: int, best: float | None = None,
                   hand: float | None = None, phase: str = "") -> None:
        self.end_task()
        name = name if len(name) <= self.NAME else name[: self.NAME - 3] + "..."
        self._hand = hand
        self._bar = Bar(total, f"[{index}/{self.total_tasks}] {name:<{self.NAME}}", unit="trials", initial=done,
                        postfix=self._postfix(best, phase), stream=self.stream, live=self.live, log_interval=0)

    def update(self, done: int, best: float | None) -> None:
        if self._bar is not None:
            self._bar.set(done, self._postfix(best))

    def end_task(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def message(self, text: str) -> None:
        message(text, self.stream)

    def close(self) -> None:
        self.end_task()

    def _postfix(self, best: float | None, phase: str = "") -> str:
        parts = [f"best {format_ms(best)}"]
        if self._hand is not None:
            parts.append(f"hand {format_ms(self._hand)}")
        if phase:
            parts.append(phase)
        return ", ".join(parts)
