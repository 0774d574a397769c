"""`patvm deploy` (the options are in patvm/cli.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from patvm.deploy.folder import deploy
from patvm.deploy.qemu import run_on_qemu
from patvm.deploy.runtime_fetch import fetch_runtime
from patvm.errors import PatvmError


def _check_input(x: np.ndarray, inputs: list[dict], path: str) -> None:
    if len(inputs) != 1:
        raise PatvmError(f"the model takes {len(inputs)} inputs; --run takes one .npy (use run_on_qemu)")
    spec = inputs[0]
    if x.dtype != np.dtype(spec.get("dtype", "float32")) or list(x.shape) != list(spec["shape"]):
        raise PatvmError(f"{path}: the model's input '{spec['name']}' is {spec.get('dtype', 'float32')} "
                         f"{list(spec['shape'])}, the file holds {x.dtype} {list(x.shape)}")


def deploy_command(args) -> None:
    """`patvm deploy` (see patvm/cli.py for the options)."""
    if args.model is None:
        if not args.fetch_runtime:
            raise PatvmError("give a MODEL (.onnx, or a .so exported for an ARM target), or --fetch-runtime")
        print(fetch_runtime(args.runtime_dir, args.wheel_dir, force=args.force, quiet=False))
        return
    if not args.output:
        raise PatvmError("-o DIR is required: the folder to write")
    if args.verify and not args.run:
        raise PatvmError("--verify needs --run INPUT.npy")
    if args.fetch_runtime:
        fetch_runtime(args.runtime_dir, args.wheel_dir, force=args.force, quiet=False)
    x = None
    if args.run:   # read the input before the (slow) compile, so that a bad file fails fast
        try:
            x = np.load(args.run, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PatvmError(f"cannot read input {args.run}: {exc}") from exc
    result = deploy(args.model, target=args.target, out_dir=args.output, name=args.name, build=args.build,
                    runtime_dir=args.runtime_dir)
    print(f"wrote {result.out_dir}/: {', '.join(result.files)}")
    if result.runtime is None:
        print("note: no aarch64 runtime in the folder (run with --fetch-runtime to add lib/ and include/)")
    print(f"see {result.out_dir / 'README.md'} for the commands on the board")
    if x is None:
        return
    meta = json.loads(Path(str(result.module) + ".json").read_text())
    _check_input(x, meta.get("inputs", []), args.run)
    run = run_on_qemu(result.module, x, runtime_dir=args.runtime_dir, runner=result.runner)
    out_path = result.out_dir / "output.npy"
    np.save(out_path, run.outputs[0])
    y = run.outputs[0]
    top1 = np.argmax(y.reshape(y.shape[0], -1), 1).tolist() if y.ndim > 1 else [int(np.argmax(y))]
    print(f"ran under qemu in {run.seconds:.1f} s (emulated: says nothing about the board's speed): "
          f"output shape {list(y.shape)}, top-1 {top1}; wrote {out_path}")
    if args.verify:
        onnx_path = args.verify_onnx or (args.model if str(args.model).endswith(".onnx") else None)
        if onnx_path is None:
            raise PatvmError("--verify on a .so needs --onnx MODEL.onnx (the model it was compiled from)")
        from patvm.verify import compare_with_onnxruntime
        print(compare_with_onnxruntime(onnx_path, x, y).summary())
