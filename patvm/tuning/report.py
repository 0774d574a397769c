"""What `patvm tune` reports: per task the hand-scheduled and the best searched latency, and the table."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


def format_ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f} ms" if ms < 100 else f"{ms:.1f} ms"


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class TaskResult:
    name: str
    weight: int
    shash: str
    trials: int                          # searched records in the database for this task
    new_trials: int                      # of which measured by this run
    hand: float | None                   # seconds, hand schedule
    tuned: float | None                  # seconds, best searched record

    @property
    def best(self) -> float | None:
        values = [v for v in (self.hand, self.tuned) if v is not None and math.isfinite(v)]
        return min(values) if values else None

    @property
    def speedup(self) -> float | None:
        if self.hand is None or self.tuned is None or not math.isfinite(self.hand) or not math.isfinite(self.tuned):
            return None
        return self.hand / self.tuned

    @property
    def applied(self) -> str:
        if self.best is None:
            return "hand (no record)"
        return "tuned" if self.tuned is not None and self.best == self.tuned else "hand"


@dataclass
class TuneReport:
    folder: Path
    target: str
    device: str
    tasks: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def table(self) -> str:
        name_width = max([len("task")] + [min(44, len(t.name)) for t in self.tasks])
        head = (f"{'task':<{name_width}}  {'calls':>5}  {'trials':>6}  {'untuned (hand)':>14}  {'tuned':>10}  "
                f"{'speed-up':>8}  build uses")
        rows = [f"tuning database {self.folder} for target {self.target}, measured {self.device}", head,
                "-" * len(head)]
        for t in self.tasks:
            name = t.name if len(t.name) <= name_width else t.name[: name_width - 3] + "..."
            speed = f"{t.speedup:.2f}x" if t.speedup is not None else "-"
            rows.append(f"{name:<{name_width}}  {t.weight:>5}  {t.trials:>6}  {format_ms(t.hand):>14}  "
                        f"{format_ms(t.tuned):>10}  {speed:>8}  {t.applied}")
        hand_total = sum(t.weight * t.hand for t in self.tasks if t.hand is not None and math.isfinite(t.hand))
        best_total = sum(t.weight * t.best for t in self.tasks if t.best is not None)
        if all(t.hand is not None and math.isfinite(t.hand) for t in self.tasks) and best_total > 0:
            rows.append("-" * len(head))
            rows.append(f"{'all kernels x calls':<{name_width}}  {'':>5}  {'':>6}  {format_ms(hand_total):>14}  "
                        f"{format_ms(best_total):>10}  {hand_total / best_total:>7.2f}x  (best of both per task)")
        rows.append(f"{sum(t.new_trials for t in self.tasks)} new trials in {format_elapsed(self.seconds)}"
                    + (" (interrupted: run the same command to resume)" if self.interrupted else ""))
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {"folder": str(self.folder), "target": self.target, "device": self.device,
                "seconds": self.seconds, "interrupted": self.interrupted,
                "tasks": [dict(name=t.name, weight=t.weight, workload=t.shash, trials=t.trials,
                               new_trials=t.new_trials, untuned_ms=_ms(t.hand), tuned_ms=_ms(t.tuned),
                               speedup=t.speedup, applied=t.applied) for t in self.tasks]}


def _ms(seconds):
    return None if seconds is None or not math.isfinite(seconds) else seconds * 1e3

