"""The knobs of a tuning run's search and measurements."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SearchOptions:
    """Knobs of the search; the defaults suit real tuning, tests shrink them."""
    per_iter: int = 16                  # candidates measured per batch (and per checkpoint)
    population: int = 512               # evolutionary search population
    evolve_iters: int = 4               # genetic iterations per batch
    xgb_early_stopping: int = 50        # XGBoost boosting rounds without improvement before it stops
    number: int = 5                     # runs per measurement ...
    repeat: int = 3                     # ... measurements per candidate (run_secs has `repeat` values)
    min_repeat_ms: int = 40
    build_timeout: float = 60.0
    run_timeout: float = 30.0
    session_timeout: float = 60.0       # RPC session per candidate
    seed: int = 0
    verify_top: int = 3                 # best searched candidates re-measured against the hand schedule
    verify_rounds: int = 2              # interleaved rounds of that re-measurement
