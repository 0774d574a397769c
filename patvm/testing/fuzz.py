"""The fuzzer's command line: `python -m patvm.testing.fuzz` (docs/reliability.md).

    python -m patvm.testing.fuzz --graphs 500 --seed 0                # the long campaign
    python -m patvm.testing.fuzz --graphs 1 --seed 0 --start 17 --save-failures out/ --localize   # one graph again
"""
from __future__ import annotations

import argparse
import sys

from patvm.testing.campaign import campaign
from patvm.testing.cases import MODES

DESCRIPTION = "Differential fuzzing: random small PA-ONNX graphs, compiled by patvm and run by onnxruntime."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m patvm.testing.fuzz", description=DESCRIPTION)
    p.add_argument("--graphs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first graph (rebuild one graph)")
    p.add_argument("--mode", choices=MODES, default=None, help="default: 4 in 5 dyadic, 1 in 5 float")
    p.add_argument("--strategy", choices=("bit-serial", "auto", "fp32"), default=None,
                   help="patvm.compile strategy; default: 8 in 10 bit-serial, 1 auto, 1 fp32")
    p.add_argument("--target", default="host")
    p.add_argument("--time-limit", type=float, default=None, help="stop starting graphs after this many seconds")
    p.add_argument("--save-failures", default=None, metavar="DIR", help="write failing graphs (.onnx/.npz/.txt)")
    p.add_argument("--localize", action="store_true", help="find the first diverging node of a failure")
    p.add_argument("--max-steps", type=int, default=None, help="steps per graph (default 6 dyadic, 4 float)")
    p.add_argument("--max-size", type=int, default=10, help="largest input height / width")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("-v", "--verbose", action="store_true", help="one line per graph")
    args = p.parse_args(argv)
    summary = campaign(args.seed, args.graphs, args.start, args.mode, args.strategy, args.target, args.time_limit,
                       args.save_failures, args.localize, args.verbose, max_steps=args.max_steps,
                       max_size=args.max_size, max_batch=args.max_batch)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
