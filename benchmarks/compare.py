"""Two exported patvm modules side by side (A B A B ...): is a compiler change faster on a whole model?

    git worktree add /tmp/before <commit>
    patvm zoo pa-resnet18 --M 2 --N 1 -o r18.onnx                 # or any ONNX model
    PYTHONPATH=/tmp/before python -m patvm compile r18.onnx -o before.so
    patvm compile r18.onnx -o after.so
    TVM_NUM_THREADS=1 python benchmarks/compare.py before.so after.so

Prints whether the outputs are identical on a random input, both medians with their ~95% intervals, and
the paired ratio A/B (> 1: B is faster). Nothing is written.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, paired_ratio, summarize, tvm_timer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="exported module A (.so)")
    p.add_argument("b", help="exported module B (.so)")
    p.add_argument("--sample-ms", type=float, default=100)
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import patvm
    a, b = patvm.load(args.a), patvm.load(args.b)
    (spec,) = a.inputs
    x = np.random.default_rng(args.seed).standard_normal(spec["shape"]).astype(spec["dtype"])
    ya, yb = a.run(x)[0], b.run(x)[0]
    print(f"outputs identical: {np.array_equal(ya, yb, equal_nan=True)} "
          f"(max |A - B| {float(np.nanmax(np.abs(ya.astype(np.float64) - yb))):.3g})")
    result = interleaved([tvm_timer("A", a, x), tvm_timer("B", b, x)], args.sample_ms, min_rounds=15,
                         max_rounds=400, max_seconds=args.max_seconds, target_ci=0.01)
    for name, path in (("A", args.a), ("B", args.b)):
        s = summarize(result["samples"][name])
        print(f"{name} {path}: median {s['median']:.2f} ms [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
    ratio = paired_ratio(result["samples"], "A", "B")
    print(f"A/B {ratio['median']:.3f} [{ratio['ci_low']:.3f}, {ratio['ci_high']:.3f}] over {result['rounds']} "
          f"rounds, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS', 'unset')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
