"""The paper's memory saving on the fp32 path: a binary layer's weights stored as codes, expanded once.

A PA or ABC layer's weights take few distinct values (M + 1 for M disjoint planes, sec. 3 of the paper),
so a weight is a `bits`-bit index into a table of those values -- bits = 1, 2, 4 or 8, the fewest that
count them, so codes never straddle the uint32 words they are packed into (M = 4: 4 bits a weight, 1/8 of
fp32). A layer that takes the fp32 path reads its weights as `expand_weight_codes(words, values)`, where
the words are a parameter of `main`, not a constant: Relax's LiftTransformParams (patvm.compiler.build)
moves the expansion and every later weight transform (layout, blocking) into `main_transform_params`,
which patvm's runtime and the C++ runner call once, when the module is loaded, on the words returned by
the module's function `patvm_weight_codes`. The conv kernels themselves are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

CODES_FUNCTION = "patvm_weight_codes"
WORD_BITS = 32


@dataclass(frozen=True)
class WeightCodes:
    words: np.ndarray       # [ceil(size * bits / 32)] uint32: codes, lowest bits first
    values: np.ndarray      # [2**bits] float32: the weight of each code (unused codes repeat the last)
    bits: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes + self.values.nbytes)


def stores_weight_codes(mod) -> bool:
    """Whether a lowered module keeps weights as codes (it then has CODES_FUNCTION)."""
    return any(gv.name_hint == CODES_FUNCTION for gv in mod.get_global_vars())


def encode_weights(weight: np.ndarray) -> WeightCodes | None:
    """The codes of `weight`, or None when it has more than 256 distinct values (kept as fp32)."""
    values, codes = np.unique(weight.astype(np.float32), return_inverse=True)
    bits = next((b for b in (1, 2, 4, 8) if len(values) <= 1 << b), None)
    if bits is None:
        return None
    per_word = WORD_BITS // bits
    codes = codes.reshape(-1).astype(np.uint64)
    codes = np.concatenate([codes, np.zeros(-len(codes) % per_word, np.uint64)]).reshape(-1, per_word)
    words = (codes << (np.arange(per_word, dtype=np.uint64) * bits)).sum(axis=1).astype(np.uint32)
    table = np.concatenate([values, np.full((1 << bits) - len(values), values[-1], np.float32)])
    return WeightCodes(words, table, bits, tuple(weight.shape))


def expand_weight_codes(words: te.Tensor, values: te.Tensor, bits: int, shape: tuple[int, ...]) -> te.Tensor:
    """words [W] uint32, values [2**bits] float32 -> the weight tensor of `shape` (row-major codes)."""
    per_word = WORD_BITS // bits
    strides = [int(np.prod(shape[k + 1:])) for k in range(len(shape))]

    def weight(*index):
        flat = index[0] * strides[0]
        for i, stride in zip(index[1:], strides[1:]):
            flat = flat + i * stride
        word = words[flat // per_word]
        shift = (flat % per_word * bits).astype("uint32")
        code = (word >> shift) & tirx.const((1 << bits) - 1, "uint32")
        return values[code.astype("int32")]

    return te.compute(shape, weight, name="expand_weight_codes")


def decode_weights(codes: WeightCodes) -> np.ndarray:
    """numpy's expansion (tests compare the kernel's with it)."""
    per_word = WORD_BITS // codes.bits
    shifts = np.arange(per_word, dtype=np.uint64) * codes.bits
    flat = (codes.words.astype(np.uint64)[:, None] >> shifts) & ((1 << codes.bits) - 1)
    size = int(np.prod(codes.shape))
    return codes.values[flat.reshape(-1)[:size].astype(np.int64)].reshape(codes.shape)
