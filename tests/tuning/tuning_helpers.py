"""Helpers for the tuning tests: a tiny bit-serial model, the CLI in a subprocess, process bookkeeping.

(Not a conftest.py: tests/compiler's conftest is imported by name elsewhere, a second one would shadow it.)
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
# the quick search knobs every test uses: tiny populations, small XGBoost, batches of `per_iter`
QUICK = ["--population", "32", "--evolve-iters", "1", "--verify-top", "1"]
QUICK_OPTIONS = dict(population=32, evolve_iters=1, xgb_early_stopping=10, verify_top=1)


def compiler_builders():
    """tests/compiler/conftest.py (the dyadic layer builders), loaded once under its own name."""
    name = "patvm_tests_compiler_builders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "compiler" / "conftest.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def tiny_model():
    """One 3x3 PA conv, 16 -> 16 channels on 8x8, batch 1: two kernels (packer, bit-serial conv)."""
    return compiler_builders().binary_layer_model(kind="conv", C=16, O=16, H=8, batch=1)


def save_tiny_model(folder: Path):
    from patvm.onnx_format import save_model
    model, x = tiny_model()
    path = Path(folder) / "tiny.onnx"
    save_model(model, path)
    return path, model, x


def patvm_cli(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "patvm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kwargs)


def patvm_popen(*args, log: Path, **kwargs) -> subprocess.Popen:
    """The CLI in its own process group (so that everything it starts can be stopped with it)."""
    out = open(log, "w")
    try:
        return subprocess.Popen([sys.executable, "-m", "patvm.cli", *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, **kwargs)
    finally:
        out.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent] + parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes) -> list[int]:
    result = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                result.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return result


def stop_tree(proc: subprocess.Popen, grace: float = 10.0) -> list[int]:
    """Stop a process we started, its process group and every descendant, by pid; returns pids still alive."""
    tree = process_tree(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in tree:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        _, still = psutil.wait_procs(tree, timeout=grace)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if not alive(still):
            break
    return alive(tree)
