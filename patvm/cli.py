"""The `patvm` command line. Each sub-command is a thin wrapper over the Python API.

User errors (`PatvmError`) print one line and exit 2; Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

import numpy as np

from patvm.errors import PatvmError
from patvm.native_output import native_stderr_captured


def cmd_zoo(args) -> None:
    from patvm import zoo
    from patvm.onnx_format import save_model
    model = zoo.build_model(args.name, M=args.M, N=args.N, seed=args.seed, batch=args.batch,
                            image_size=args.image_size, exact=args.exact, show_progress=True)
    save_model(model, args.output)
    print(f"wrote {args.output}")


def cmd_stats(args) -> None:
    from patvm import stats
    from patvm.frontends import qonnx
    model = stats.load_checked(args.model)
    result = stats.model_stats(qonnx.to_canonical(model) if qonnx.needs_rewrite(model) else model)
    print(json.dumps(result) if args.json else stats.format_table(result))


def cmd_compile(args) -> None:
    import patvm
    tuning_db = False if args.no_tuning_db else args.tuning_db
    compiled = patvm.compile(args.model, target=args.target, tuning_db=tuning_db, strategy=args.strategy)
    compiled.export(args.output)
    if args.report:
        print(compiled.report())
    print(f"wrote {args.output}")


def _load_input(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PatvmError(f"cannot read input {path}: {exc}") from exc


def cmd_run(args) -> None:
    import patvm
    from patvm.verify import compare_with_onnxruntime
    x = _load_input(args.input)
    model = (patvm.load(args.model) if args.model.endswith(".so")
             else patvm.compile(args.model, target=args.target, strategy=args.strategy))
    outputs = model.run(x)
    if args.output:
        import io

        from patvm.files import atomic_write_bytes
        buf = io.BytesIO()
        np.save(buf, outputs[0])
        atomic_write_bytes(args.output, buf.getvalue())
        print(f"wrote {args.output}")
    else:
        top1 = np.argmax(outputs[0].reshape(outputs[0].shape[0], -1), 1).tolist()
        print(f"output shape {list(outputs[0].shape)}, top-1 {top1}")
    if args.verify:
        onnx_path = args.verify_onnx or (args.model if args.model.endswith(".onnx") else None)
        if onnx_path is None:
            raise PatvmError("--verify on a .so needs --onnx MODEL.onnx (the model it was compiled from)")
        print(compare_with_onnxruntime(onnx_path, x, outputs[0]).summary())


def cmd_targets(args) -> None:
    from patvm import targets
    for name, preset in targets.list_presets().items():
        print(f"{name:14s} {preset.get('description', '')}")


def cmd_demo(args) -> None:
    from patvm.demo import run_demo
    run_demo(M=args.M, N=args.N, image_size=args.image_size)


def cmd_deploy(args) -> None:
    from patvm.deploy.command import deploy_command
    deploy_command(args)


def cmd_tune(args) -> None:
    from patvm.tuning.command import run_tune
    run_tune(args)


def cmd_rpc(args) -> None:
    from patvm.tuning.command import run_rpc
    run_rpc(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patvm", description="Compile PA / ABC-Net multiple-binary CNNs with TVM.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="also show TVM's own log lines (warnings)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", parents=[common], help="build PA-ResNet18 from the zoo, compile it, check it, time it")
    d.add_argument("--M", type=int, default=2)
    d.add_argument("--N", type=int, default=1)
    d.add_argument("--image-size", type=int, default=224)
    d.set_defaults(func=cmd_demo)

    z = sub.add_parser("zoo", parents=[common], help="write a zoo model as PA-ONNX")
    z.add_argument("name")
    z.add_argument("--M", type=int, default=4, help="weight pieces (PA: even >= 2; ABC: bases >= 1)")
    z.add_argument("--N", type=int, default=5, help="activation pieces / bases (>= 1)")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--batch", type=int, default=1)
    z.add_argument("--image-size", type=int, default=224)
    z.add_argument("--exact", action="store_true", help="dyadic parameters: fp32 sums exact in any order")
    z.add_argument("-o", "--output", required=True)
    z.set_defaults(func=cmd_zoo)

    s = sub.add_parser("stats", parents=[common], help="memory and operation counts (the paper's sec. 4.6.1 rules)")
    s.add_argument("model")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stats)

    c = sub.add_parser("compile", parents=[common], help="compile a PA-ONNX model to a shared library")
    c.add_argument("model")
    c.add_argument("--target", default="host")
    databases = c.add_mutually_exclusive_group()
    databases.add_argument("--tuning-db", default=None, metavar="DIR",
                           help="a tuning database folder (default: the one in schedules/ made for this target, "
                                "if any)")
    databases.add_argument("--no-tuning-db", action="store_true",
                           help="no tuning database, not even a shipped one: patvm's hand schedules only")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--report", action="store_true")
    c.add_argument("--strategy", default="auto", choices=["auto", "bit-serial", "fp32"],
                   help="per-layer choice (auto), every exact match bit-serial, or TVM's fp32 build")
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", parents=[common], help="run a compiled module (.so) or an ONNX model on an input .npy")
    r.add_argument("model")
    r.add_argument("--input", required=True)
    r.add_argument("-o", "--output")
    r.add_argument("--target", default="host")
    r.add_argument("--verify", action="store_true",
                   help="compare with onnxruntime on the same ONNX (qonnx's executor for a QONNX model)")
    r.add_argument("--onnx", dest="verify_onnx", help="the ONNX a .so was compiled from (for --verify)")
    r.add_argument("--strategy", default="auto", choices=["auto", "bit-serial", "fp32"])
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("targets", parents=[common], help="list the target presets")
    t.set_defaults(func=cmd_targets)

    dp = sub.add_parser("deploy", parents=[common],
                        help="a folder for an aarch64 board: module, C++ runner, runtime, README; "
                             "optionally cross-build the runner and run it here under qemu")
    dp.add_argument("model", nargs="?", help="PA-ONNX model, or a .so exported for an ARM target")
    dp.add_argument("--target", default=None, help="ARM preset (default arm-a72; a .so keeps its own)")
    dp.add_argument("-o", "--output", help="the folder to write")
    dp.add_argument("--name", default="model", help="module file name in the folder (NAME.so)")
    dp.add_argument("--fetch-runtime", action="store_true",
                    help="download the aarch64 TVM runtime (pip, pinned versions) into the cache if missing")
    dp.add_argument("--runtime-dir", help="aarch64 runtime folder (default ~/.cache/patvm/aarch64-runtime/...)")
    dp.add_argument("--wheel-dir", help="with --fetch-runtime: take the aarch64 wheels from here (offline)")
    dp.add_argument("--force", action="store_true",
                    help="with --fetch-runtime: fetch it again even when the cached copy is complete")
    dp.add_argument("--build", action="store_true", help="cross-compile the runner (aarch64-linux-gnu-g++)")
    dp.add_argument("--run", metavar="INPUT.npy", help="run the module under qemu-aarch64 on this input")
    dp.add_argument("--verify", action="store_true", help="with --run: compare with onnxruntime")
    dp.add_argument("--onnx", dest="verify_onnx", help="the ONNX a .so was compiled from (for --verify)")
    dp.set_defaults(func=cmd_deploy)

    from patvm.tuning.command import RPC_HELP, TUNE_HELP, add_rpc_arguments, add_tune_arguments
    tu = sub.add_parser("tune", parents=[common], help=TUNE_HELP, description=TUNE_HELP)
    add_tune_arguments(tu)
    tu.set_defaults(func=cmd_tune)

    rp = sub.add_parser("rpc", help=RPC_HELP)   # a server: its log is its output
    add_rpc_arguments(rp)
    rp.set_defaults(func=cmd_rpc, verbose=True)
    return p


def default_thread_count() -> None:
    """TVM's pool uses half the cores on x86 unless told: make runs and timings use all available ones."""
    import os

    from patvm.host import usable_cores
    os.environ.setdefault("TVM_NUM_THREADS", str(usable_cores()))


def main(argv: list[str] | None = None) -> int:
    default_thread_count()
    args = build_parser().parse_args(argv)
    try:
        with contextlib.nullcontext() if args.verbose else native_stderr_captured():
            args.func(args)
    except PatvmError as exc:
        print(f"patvm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patvm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
