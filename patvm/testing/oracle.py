"""The oracle: onnxruntime's answer for a generated graph, and whether patvm's answer is the same (dyadic
graphs: bit for bit; float graphs: patvm.verify's float tolerance, or a threshold flip from fp32 rounding,
patvm.testing.flips)."""
from __future__ import annotations

import time

import numpy as np
import onnx

from patvm.errors import last_line
from patvm.onnx_format.session import onnxruntime_session
from patvm.testing.cases import FuzzCase, Outcome
from patvm.verify import TOLERANCE, fraction_off

MAX_FRACTION_OFF = 1e-3     # float graphs: at most 0.1% of the elements off (patvm.verify's tolerance)


def onnxruntime_outputs(model: onnx.ModelProto, inputs: dict) -> list[np.ndarray]:
    """onnxruntime's outputs for a generated graph (not validated: the generator's graphs are trusted)."""
    return onnxruntime_session(model).run(None, inputs)


def exception_summary(exc: BaseException) -> str:
    """"Type: the message's last line" (TVM and onnxruntime put the error itself after their stacks)."""
    return f"{type(exc).__name__}: {last_line(exc, 300) if str(exc).strip() else ''}"


def compare(got: list[np.ndarray], want: list[np.ndarray], mode: str) -> str | None:
    """None when `got` passes against the reference `want`, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs, onnxruntime has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output {i}: {g.dtype}{list(g.shape)} vs onnxruntime {w.dtype}{list(w.shape)}"
        if mode == "dyadic":
            if not np.array_equal(g, w, equal_nan=True):
                off = ~((g == w) | (np.isnan(g) & np.isnan(w)))
                with np.errstate(invalid="ignore"):
                    worst = float(np.nanmax(np.abs(g.astype(np.float64) - w)))
                first = tuple(int(i) for i in np.argwhere(off)[0])
                return (f"output {i}: {int(off.sum())} of {off.size} elements differ (max |diff| {worst:.6g}); "
                        f"first at {list(first)}: {g[first]!r} vs onnxruntime {w[first]!r}")
            continue
        problem = float_tolerance_problem(g, w)
        if problem:
            return f"output {i}: {problem}"
    return None


def float_tolerance_problem(got: np.ndarray, want: np.ndarray) -> str | None:
    """Top-1 agreement and at most 0.1% of elements off by more than 1e-3 of the range."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return "NaN positions differ"
    finite = np.isfinite(w)
    if not np.array_equal(g[~finite], w[~finite], equal_nan=True):
        return "infinities differ"
    span = float(w[finite].max() - w[finite].min()) if finite.any() else 0.0
    if span == 0.0:   # a constant (or one-element) output: its magnitude is the range
        span = float(np.abs(w[finite]).max()) if finite.any() else 0.0
    tol = TOLERANCE * span
    diff = np.where(finite, np.abs(g - w), 0.0)
    fraction = fraction_off(diff, span)
    if fraction > MAX_FRACTION_OFF:
        return (f"{100 * fraction:.3f}% of elements off by > 1e-3 of range "
                f"(max |diff| {diff.max():.3g}, range {span:.3g})")
    batch = w.shape[0] if w.ndim > 1 else 1
    g2, w2 = np.nan_to_num(g.reshape(batch, -1)), np.nan_to_num(w.reshape(batch, -1))
    winners = np.argmax(w2, axis=1)
    # the reference winner must also win (up to the tolerance: exact ties are not disagreements)
    agree = g2[np.arange(batch), winners] >= g2.max(axis=1) - tol
    if not agree.all():
        return f"top-1 disagrees on {int((~agree).sum())} of {batch} images"
    return None


def run_case(case: FuzzCase, target: str = "host") -> Outcome:
    import patvm
    from patvm.testing.flips import rounding_flip  # here: the flip classifier runs the oracle itself
    start = time.perf_counter()
    try:
        want = onnxruntime_outputs(case.model, case.inputs)
    except Exception as exc:  # noqa: BLE001 - a generator bug, reported as such
        return Outcome(case, "reference-error", exception_summary(exc), seconds=time.perf_counter() - start)
    try:
        compiled = patvm.compile(case.model, target=target, strategy=case.strategy)
    except Exception as exc:  # noqa: BLE001 - any exception compiling a valid model is a finding
        return Outcome(case, "compile-error", exception_summary(exc), seconds=time.perf_counter() - start)
    try:
        got = compiled.run([case.inputs[i["name"]] for i in compiled.inputs])
    except Exception as exc:  # noqa: BLE001 - any exception running a compiled valid model is a finding
        return Outcome(case, "run-error", exception_summary(exc), compiled.layers, time.perf_counter() - start)
    problem = compare(got, want, case.mode)
    status = "pass" if problem is None else "mismatch"
    if problem is not None and case.mode == "float":
        flip = rounding_flip(case, got, target)
        status, problem = ("flip", flip) if flip else (status, problem)
    return Outcome(case, status, problem or "", compiled.layers, time.perf_counter() - start)
