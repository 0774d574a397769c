"""How a binary layer approximates its weights and its input activations: PA or ABC-Net.

PA (ECAI 2020): weights by M pieces, eq. 6-7 (`approximate_weights_pa`); activations by an N-piece
staircase with a zero bottom level, eq. 10, initialised from activation statistics (`pa_activation_init`).

ABC-Net (NIPS 2017): weights by M {-1,+1} bases, eq. 1-5 (`approximate_weights_abc`); activations
A = sum_n beta_n H_{v_n}(x), eq. 8-9 (`abc_activation_staircase`), a staircase with a non-zero bottom
level. The zoo places the ABC thresholds 0.5 - v_n where PA would (quantiles of the calibration
activations) and takes beta_n as half the gap between neighbouring piece means, so the ABC levels are
the PA levels shifted down by half their top: same spread, bottom level -sum(beta) != 0.

exact: the weight scales (PA / ABC alphas) and the levels are rounded to short dyadic values
(`patvm.zoo.exact`); the pieces, bases and thresholds are those of the unrounded fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patvm.approx import (
    Staircase,
    abc_activation_staircase,
    approximate_weights_abc,
    approximate_weights_pa,
    pa_activation_init,
)
from patvm.approx.pa import check_weight_pieces
from patvm.errors import require
from patvm.zoo import exact as ex


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Scheme:
    family: str   # "pa" or "abc"
    M: int        # weight pieces (PA) / weight bases (ABC)
    N: int        # activation pieces (PA) / activation bases (ABC)
    exact: bool = False

    def __post_init__(self):
        require(self.family in ("pa", "abc"), f"unknown binarisation scheme '{self.family}'")
        if self.family == "pa":
            check_weight_pieces(self.M)
        else:
            require(_is_int(self.M) and self.M >= 1, f"ABC-Net needs M >= 1 weight bases, got M={self.M}")
        require(
            _is_int(self.N) and self.N >= 1,
            f"{self.family.upper()} needs N >= 1 activation pieces, got N={self.N}",
        )

    def approximate(self, W: np.ndarray) -> np.ndarray:
        """W_bar: few distinct values (PA eq. 6; ABC eq. 2-5)."""
        if self.family == "pa":
            fit = approximate_weights_pa(W, self.M)
            planes, rounded = fit.planes, ex.dyadic_ladder          # alphas increase, the zero piece stays
        else:
            fit = approximate_weights_abc(W, self.M)
            planes, rounded = fit.bases, ex.dyadic_bases           # none rounded to 0 or across it
        if not self.exact:
            return fit.w_bar
        alphas = rounded(fit.alphas, ex.ALPHA_BITS)
        return np.tensordot(alphas, planes.astype(np.float32), axes=1).astype(np.float32)

    def staircase(self, samples: np.ndarray) -> Staircase:
        """The activation quantizer for a layer whose (BN'd) input activations look like `samples`."""
        thresholds, levels = pa_activation_init(samples, self.N)
        if self.exact:
            levels = ex.dyadic_ladder(levels, ex.LEVEL_BITS)
        if self.family == "pa":
            return Staircase(thresholds, levels)
        betas = np.diff(levels.astype(np.float64)) / 2.0
        return Staircase(*abc_activation_staircase(0.5 - thresholds.astype(np.float64), betas))
