"""`patvm demo`: the main job on a built-in default, end to end.

Build PA-ResNet18 from the zoo, compile it for this machine, check it against onnxruntime, and print
module size and latency against the fp32 twin run by onnxruntime.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np


def _median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))


def run_demo(M: int = 2, N: int = 1, image_size: int = 224, runs: int = 20) -> None:
    import patvm
    from patvm import zoo
    from patvm.onnx_format import save_model
    from patvm.onnx_format.session import onnxruntime_session, session_options
    from patvm.verify import compare_outputs, onnxruntime_outputs

    threads = int(os.environ.get("TVM_NUM_THREADS", "0")) or None
    print(f"[1/5] building pa-resnet18 (M={M}, N={N}, {image_size}x{image_size}) and its fp32 twin from the zoo",
          flush=True)
    model = zoo.build_model("pa-resnet18", M=M, N=N, image_size=image_size, exact=True)
    twin = zoo.build_model("resnet18", image_size=image_size)
    print("[2/5] compiling for host", flush=True)
    compiled = patvm.compile(model, target="host")
    binary = sum(layer["strategy"] == "bit-serial" for layer in compiled.layers)
    print(f"      {binary} of {len(compiled.layers)} conv/dense layers bit-serial, "
          f"compiled in {compiled.compile_seconds:.1f} s", flush=True)

    print("[3/5] checking against onnxruntime on the same ONNX (4 dyadic random images)", flush=True)
    rng = np.random.default_rng(0)
    xs = [(rng.integers(-64, 65, size=(1, 3, image_size, image_size)) / 32).astype(np.float32) for _ in range(4)]
    got = np.concatenate([compiled.run(x)[0] for x in xs])
    want = np.concatenate([onnxruntime_outputs(model, {"input": x})[0] for x in xs])
    print("      " + compare_outputs(got, want).summary(), flush=True)

    print("[4/5] sizes", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        so, onnx_fp32 = os.path.join(tmp, "pa-resnet18.so"), os.path.join(tmp, "resnet18.onnx")
        compiled.export(so)
        save_model(twin, onnx_fp32)
        so_mb, fp32_mb = os.path.getsize(so) / 1e6, os.path.getsize(onnx_fp32) / 1e6
    print(f"      compiled module {so_mb:.1f} MB vs fp32 ONNX {fp32_mb:.1f} MB ({fp32_mb / so_mb:.1f}x smaller)")

    print(f"[5/5] latency, batch 1, median of {runs} (TVM_NUM_THREADS={threads or 'unset'})", flush=True)
    x = xs[0]
    sess = onnxruntime_session(twin, session_options(threads, quiet=False))
    t_patvm = float(np.median(compiled.time(x, number=1, repeat=runs, min_repeat_ms=0)))
    t_fp32 = _median_ms(lambda: sess.run(None, {"input": x}), runs)
    print(f"      patvm pa-resnet18 {t_patvm:.2f} ms | onnxruntime fp32 resnet18 {t_fp32:.2f} ms | "
          f"ratio {t_fp32 / t_patvm:.2f}x")
