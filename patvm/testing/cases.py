"""What the fuzzer passes around: the choosers (where structural choices come from), a generated graph
(`FuzzCase`), a tensor of the graph under construction with its exactness bookkeeping (`Tensor`), and the
outcome of one graph (`Outcome`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from patvm.approx import Staircase

MODES = ("dyadic", "float")
EXACT_BITS = 23          # |value| * 2**exp must stay below 2**EXACT_BITS (fp32 has a 24-bit significand)
MAX_FEATURES = 400       # widest dense input the generator flattens to
MAX_CHANNELS = 20


# ---------------------------------------------------------------------------------------------- choosers
class RngChooser:
    """Structural choices from a numpy Generator (deterministic for a seed)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def bool(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, options, weights=None):
        options = list(options)
        if weights is None:
            return options[self.int(0, len(options) - 1)]
        w = np.asarray(weights, np.float64)
        return options[int(self.rng.choice(len(options), p=w / w.sum()))]


class HypothesisChooser:
    """Structural choices drawn from hypothesis (shrinks towards the first option / the low end);
    bulk arrays come from a numpy Generator seeded by one more draw."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self._st = st
        self.data = data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="array seed"))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self._st.integers(lo, hi))

    def bool(self, p: float = 0.5) -> bool:
        return self.data.draw(self._st.booleans())

    def choice(self, options, weights=None):
        options = list(options)
        return options[self.int(0, len(options) - 1)]


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    exp: int = 0            # dyadic: every value is a multiple of 2**-exp
    bound: float = 0.0      # dyadic: max |value|, also of every partial sum that produced it
    depth: int = 0          # quantizers on the longest path from the input (float mode keeps it <= 2)
    stair: Staircase | None = None   # for a quantizer output: its staircase
    special: bool = False   # may hold NaN / +-inf: no MaxPool reads it (onnxruntime's NaN answer depends on
                            # its place in the window: tests/reliability/test_regressions.py), quantizers map
                            # it to levels


@dataclass
class FuzzCase:
    seed: int | None
    index: int | None
    mode: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    steps: list[str]
    strategy: str = "bit-serial"     # patvm.compile's strategy: every exact match bit-serial by default

    @property
    def label(self) -> str:
        return f"seed {self.seed} graph {self.index} ({self.mode}, strategy {self.strategy})"


@dataclass
class Outcome:
    case: FuzzCase
    status: str                      # pass | flip | mismatch | compile-error | run-error | reference-error
    detail: str = ""
    layers: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "flip")   # flip: a float-mode threshold flip from fp32 rounding

    @property
    def bit_serial(self) -> int:
        return sum(1 for la in self.layers if la.get("strategy") == "bit-serial")

    def signature(self) -> str:
        """A coarse key grouping failures that are probably one bug."""
        head = self.detail.split(":", 1)[0] if self.status != "mismatch" else ""
        return f"{self.status} {head}".strip()


def dyadic_exp(values) -> int:
    """The smallest e with values * 2**e all integers (capped at 60: not dyadic)."""
    v = np.abs(np.asarray(values, np.float64).ravel())
    v = v[np.isfinite(v) & (v != 0)]
    for e in range(61):
        s = v * 2.0**e
        if np.all(s == np.floor(s)):
            return e
    return 60


def representable(bound: float, exp: int) -> bool:
    return bound * 2.0**exp < 2.0**EXACT_BITS


def grid(rng, shape, den: int, span: int, nonzero: bool = False) -> np.ndarray:
    """Dyadic values k/den, k in [-span, span]."""
    k = rng.integers(-span, span + 1, size=shape)
    if nonzero:
        k = np.where(k == 0, rng.choice([-1, 1], size=shape), k)
    return (k / den).astype(np.float32)

