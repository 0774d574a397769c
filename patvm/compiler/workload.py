"""A binary layer's workload key: its identity for measured strategy choices (`patvm tune
--measure-strategies` writes them to DB/strategies.json, the lowering looks them up).

One string form, written by `str(key)` and read back by `WorkloadKey.parse`:

    conv:x[1, 64, 56, 56]:w[64, 64, 3, 3]:s1:p1:values3:N1
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_FORM = re.compile(r"(?P<kind>\w+):x\[(?P<x>[\d, ]+)\]:w\[(?P<w>[\d, ]+)\]:s(?P<s>\d+):p(?P<p>\d+):"
                   r"values(?P<values>\d+):N(?P<N>\d+)")


@dataclass(frozen=True)
class WorkloadKey:
    kind: str                       # "conv" or "dense"
    x_shape: tuple[int, ...]        # the quantizer's input
    w_shape: tuple[int, ...]        # the weight, [O, C, KH, KW]
    stride: int
    pad: int
    values: int                     # distinct weight values
    N: int                          # activation pieces

    def __str__(self) -> str:
        return (f"{self.kind}:x{list(self.x_shape)}:w{list(self.w_shape)}:s{self.stride}:p{self.pad}:"
                f"values{self.values}:N{self.N}")

    @classmethod
    def parse(cls, text: str) -> WorkloadKey:
        """The key `text` is the string form of; ValueError if it is none."""
        m = _FORM.fullmatch(text)
        if m is None:
            raise ValueError(f"not a workload key: {text}")
        return cls(m["kind"], tuple(int(v) for v in m["x"].split(",")), tuple(int(v) for v in m["w"].split(",")),
                   int(m["s"]), int(m["p"]), int(m["values"]), int(m["N"]))
