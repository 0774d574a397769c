"""Shared helpers of the benchmark scripts: the machine description, per-thread-count worker processes,
interleaved timing with a stopping rule, JSON / markdown / PNG output (atomic writes), progress lines.

Nothing here imports TVM: the parent process of each script never does, because TVM reads
TVM_NUM_THREADS once at import. Each thread count runs in its own worker process
(`run_workers`), started with TVM_NUM_THREADS / OMP_NUM_THREADS set for it.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results"
sys.path.insert(0, str(REPO))          # `python benchmarks/x.py` from a checkout without the editable install

from patvm.files import atomic_path, atomic_write_bytes  # noqa: E402
from patvm.host import (  # noqa: E402
    cpuinfo,
    default_file_mode,
    usable_cores,
)
from patvm.onnx_format.session import onnxruntime_session, session_options  # noqa: E402
from patvm.progress import Bar, message  # noqa: E402

# the /proc/cpuinfo flags that matter for these kernels, in the order they are reported
RELEVANT_FLAGS = ("popcnt", "sse4_2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl",
                  "avx512_vpopcntdq", "avx512_bitalg", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


# ---------------------------------------------------------------- progress
_T0 = time.perf_counter()


def progress(msg: str, tag: str = "") -> None:
    """One line on stderr with the seconds since start (above a bar on a terminal; workers inherit it)."""
    prefix = f"[{tag} {time.perf_counter() - _T0:7.1f}s]" if tag else f"[{time.perf_counter() - _T0:7.1f}s]"
    message(f"{prefix} {msg}")


# ---------------------------------------------------------------- machine
def cpu_features() -> list[str]:
    flags = cpuinfo()["flags"]
    return [f for f in RELEVANT_FLAGS if f in flags]


def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def _cmd_output(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description(argv: list[str] | None = None) -> dict:
    info = cpuinfo()
    gcc = _cmd_output(["gcc", "--version"])
    return {
        "cpu": info["model"],
        "cpu_mhz_reported": info["mhz"],
        "features": cpu_features(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "hypervisor": "hypervisor" in info["flags"],
        "versions": {
            "python": platform.python_version(),
            "numpy": _version("numpy"),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
            "apache-tvm": _version("apache-tvm"),
            "patvm": _version("patvm"),
            "gcc": gcc.splitlines()[0] if gcc else None,
        },
        "git_commit": _cmd_output(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_cmd_output(["git", "status", "--porcelain", "--untracked-files=no"])),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in (argv if argv is not None else [sys.executable] + sys.argv)),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------- statistics
def median_ci(samples, z: float = 1.96) -> tuple[float, float, float]:
    """(median, low, high): a distribution-free ~95% interval of the median from order statistics."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    med = float(np.median(x))
    if n < 3:
        return med, float(x[0]), float(x[-1])
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return med, float(x[lo]), float(x[hi])


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest |got - want| relative to the largest |want|: the sanity check beside every timing."""
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def summarize(samples) -> dict:
    """median, its ~95% interval, the relative half-width of that interval (`ci_rel`: how far a rerun's
    median may move), the interquartile spread relative to the median, min and the number of samples."""
    x = np.asarray(samples, dtype=float)
    med, lo, hi = median_ci(x)
    q1, q3 = np.percentile(x, [25, 75])
    return {"median": med, "ci_low": lo, "ci_high": hi,
            "ci_rel": (hi - lo) / 2 / med if med > 0 else float("nan"),
            "iqr_rel": float((q3 - q1) / med) if med > 0 else float("nan"),
            "min": float(x.min()), "n": int(len(x))}


# ---------------------------------------------------------------- timing
class Timer:
    """A named thing to time: `fn(number)` runs it `number` times and returns the mean ms per run."""

    def __init__(self, name: str, fn):
        self.name = name
        self.fn = fn
        self.number = 1
        self.samples: list[float] = []

    def calibrate(self, sample_ms: float) -> None:
        """Pick `number` so one sample takes about sample_ms (at least one run)."""
        ms = self.fn(1)                   # warm-up, then a first estimate
        ms = min(ms, self.fn(1))
        self.number = max(1, int(math.ceil(sample_ms / max(ms, 1e-3))))


def tvm_timer(name: str, compiled, x) -> Timer:
    """One sample = TVM time_evaluator's mean over `number` runs (it runs once more, untimed, first)."""
    return Timer(name, lambda number: float(compiled.time(x, number=number, repeat=1, min_repeat_ms=0)[0]))


def loop_timer(name: str, call) -> Timer:
    """One sample = the mean of `number` calls of `call()` in a Python loop, after one untimed call."""
    def run(number: int) -> float:
        call()
        start = time.perf_counter()
        for _ in range(number):
            call()
        return (time.perf_counter() - start) * 1e3 / number

    return Timer(name, run)


def run_timer(name: str, compiled, x) -> Timer:
    """`compiled.run(x)`, what a user calls (inputs checked and copied in, outputs returned)."""
    return loop_timer(name, lambda: compiled.run(x))


def ort_session(model_or_path, threads: int):
    import onnxruntime as ort
    opts = session_options(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # round-robin timing: onnxruntime's idle worker threads spin-wait by default and take the core the next
    # executor's parallel section needs (at 2 threads on 2 cores TVM's fp32 1x1 layer measured 4.0 ms next
    # to a spinning onnxruntime, 0.31 ms without). Cost: onnxruntime's own threads then sleep between its
    # parallel sections; on the 2-core VM its 3x3 layer took 2.86 ms at 2 threads against 2.51 ms at 1.
    # 1 thread is unaffected either way; 2-thread comparisons need more cores than threads (README caveats).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime_session(model_or_path, opts)


def ort_int8_model(fp32_path, int8_path, input_name: str, input_shape, seed: int = 0, samples: int = 8) -> Path:
    """What a user would run on a CPU with VNNI or AMX instead: onnxruntime's static QDQ quantisation of the
    fp32 model (per-channel s8 weights, u8 activations), calibrated on `samples` normal inputs (MinMax).
    Written once to `int8_path` (reused when it exists)."""
    int8_path = Path(int8_path)
    if int8_path.is_file():
        return int8_path
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Normal(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.batches = iter([{input_name: rng.standard_normal(input_shape, dtype=np.float32)}
                                 for _ in range(samples)])

        def get_next(self):
            return next(self.batches, None)

    tmp = int8_path.with_suffix(".partial.onnx")
    quantize_static(os.fspath(fp32_path), os.fspath(tmp), Normal(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.replace(tmp, int8_path)
    return int8_path


def ort_timer(name: str, session, feeds: dict) -> Timer:
    """One sample = the mean of `number` runs with IO binding (inputs bound once, outputs preallocated
    by the first run), after one untimed run, so that copies of the inputs are not timed."""
    import onnxruntime as ort
    binding = session.io_binding()
    for key, value in feeds.items():
        binding.bind_ortvalue_input(key, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)))
    for out in session.get_outputs():
        binding.bind_output(out.name)
    session.run_with_iobinding(binding)
    return loop_timer(name, lambda: session.run_with_iobinding(binding))


def interleaved(timers: list[Timer], sample_ms: float, min_rounds: int, max_rounds: int, max_seconds: float,
                target_ci: float, tag: str = "", label: str = "") -> dict:
    """Time `timers` round-robin (A B C A B C ...: every round takes one sample of each, so a change of
    machine load hits all of them alike) until the median of every timer is known to +-target_ci
    (relative half-width of its ~95% interval) or max_rounds / max_seconds is reached (min_rounds first).
    Returns {"rounds", "seconds", "stable", "samples": {name: [ms, ...]}}; samples[i] of two timers were
    taken in the same round, so their ratio is a paired ratio."""
    for t in timers:
        t.samples = []
        t.calibrate(sample_ms)
    start = time.perf_counter()
    rounds, stable = 0, False
    with Bar(max_rounds, f"timing {label}" if label else "timing", unit="rounds") as bar:
        while rounds < max_rounds:
            for t in timers:
                t.samples.append(t.fn(t.number))
            rounds += 1
            if rounds >= min_rounds:
                spreads = [summarize(t.samples)["ci_rel"] for t in timers]
                stable = all(spread <= target_ci for spread in spreads)
                bar.set(rounds, f"worst median +-{100 * max(spreads):.1f}%")
                if stable or time.perf_counter() - start > max_seconds:
                    break
            else:
                bar.set(rounds)
    seconds = time.perf_counter() - start
    if tag:
        worst = max(summarize(t.samples)["ci_rel"] for t in timers)
        progress(f"{label}: {rounds} rounds in {seconds:.1f}s, worst median +-{100 * worst:.1f}%"
                 f"{'' if stable else ' (NOT stable: raise --max-seconds)'}", tag)
    return {"rounds": rounds, "seconds": seconds, "stable": stable, "samples": {t.name: list(t.samples) for t in timers}}


def paired_ratio(samples: dict, num: str, den: str) -> dict:
    """Statistics of samples[num][i] / samples[den][i] (e.g. baseline / candidate = speed-up)."""
    a, b = np.asarray(samples[num], float), np.asarray(samples[den], float)
    return summarize(a / b)


# ---------------------------------------------------------------- workers (one process per thread count)
def run_workers(script: Path, threads: list[int], worker_args: list[str], tag: str) -> dict[int, dict]:
    """Run `python script --worker T --part FILE <worker_args>` once per thread count, one after the other,
    with TVM_NUM_THREADS=OMP_NUM_THREADS=T; returns {T: the JSON the worker wrote}."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="patvm-bench-") as tmp:
        for t in threads:
            part = Path(tmp) / f"part-{t}.json"
            env = dict(os.environ, TVM_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t),
                       OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
            cmd = [sys.executable, str(script), "--worker", str(t), "--part", str(part)] + worker_args
            progress(f"worker for {t} thread(s) starts", tag)
            proc = subprocess.run(cmd, env=env, cwd=REPO)
            if proc.returncode != 0 or not part.is_file():
                raise SystemExit(f"{script.name}: the worker for {t} thread(s) failed (exit {proc.returncode})")
            results[t] = json.loads(part.read_text())
    return results


def start_worker(args, name: str) -> tuple[int, str, dict]:
    """In a worker process: (thread count, progress tag, timing settings), once TVM_NUM_THREADS is checked."""
    t = args.worker
    env = os.environ.get("TVM_NUM_THREADS")
    if env != str(t):
        raise SystemExit(f"worker for {t} threads started with TVM_NUM_THREADS={env!r}: run the script without --worker")
    return t, f"{name} t={t}", timing_settings(args)


# ---------------------------------------------------------------- output
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, set):
        return sorted(obj)
    if isinstance(obj, (np.floating,)):
        obj = float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _readable(path: Path) -> None:
    """atomic writes go through mkstemp (mode 0600): give results the usual umask mode."""
    try:
        os.chmod(path, default_file_mode())
    except OSError:
        pass


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(data), indent=1) + "\n").encode())
    _readable(path)


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
    _readable(path)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_markdown(machine: dict) -> str:
    v = machine["versions"]
    load = machine.get("load_average_at_start")
    return (f"Machine: {machine['cpu']}, {machine['cores']} core(s), features {' '.join(machine['features']) or '-'}"
            f"{' (virtual machine)' if machine.get('hypervisor') else ''}; "
            f"TVM {v['apache-tvm']}, onnxruntime {v['onnxruntime']}, numpy {v['numpy']}, {v['gcc'] or 'no gcc'}; "
            f"patvm {machine.get('git_commit')}{' (uncommitted changes)' if machine.get('git_dirty') else ''}; "
            f"{machine['date']}; load average at start {', '.join(f'{x:.2f}' for x in load) if load else '?'}.\n"
            f"Command: `{machine['command']}`\n"
            + (f"\n{machine['note']}\n" if machine.get("note") else ""))


def write_outputs(out: Path, name: str, data: dict, markdown, plot) -> None:
    """<name>.json, .md (markdown(data)) and .png (plot(data, path)) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", data)
    write_text(out / f"{name}.md", markdown(data))
    plot(data, out / f"{name}.png")
    progress(f"wrote {out / name}.json/.md/.png", name)


def rewrite_outputs(json_path: Path, out: Path, name: str, markdown, plot) -> int:
    """Remake <name>.md and .png from a results JSON without measuring again."""
    data = json.loads(Path(json_path).read_text())
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.md", markdown(data))
    plot(data, out / f"{name}.png")
    progress(f"rewrote {out / name}.md/.png from {json_path}", name)
    return 0


def save_figure(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _readable(path)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def latency_bars(ax, rows: list[dict], series: list[tuple], tick_labels: list[str], rotate: bool = False) -> None:
    """Grouped bars of median latencies: one group per row, one bar per (name, row key, colour) of series."""
    width = 0.85 / len(series)
    for i, (name, key, color) in enumerate(series):
        bars = ax.bar(np.arange(len(rows)) + i * width, [r[key]["median"] for r in rows], width, label=name, color=color)
        ax.bar_label(bars, labels=[fmt_ms(r[key]["median"]) for r in rows], fontsize=6)
    ax.set_xticks(np.arange(len(rows)) + 0.85 / 2 - width / 2)
    ax.set_xticklabels(tick_labels, fontsize=7, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("latency, ms (median)")
    ax.legend(fontsize=7)


def fmt_ms(ms: float | None) -> str:
    if ms is None or not math.isfinite(ms):
        return "-"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def fmt_x(r: float | None) -> str:
    return "-" if r is None or not math.isfinite(r) else f"{r:.2f}x"


def fmt_pct(p: float | None) -> str:
    return "-" if p is None or not math.isfinite(p) else f"{100 * p:.1f}%"


def add_timing_args(parser, quick_defaults: dict | None = None) -> None:
    """--sample-ms / --min-rounds / --max-rounds / --max-seconds / --target-ci and the worker flags."""
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few rounds: checks the script works")
    parser.add_argument("--sample-ms", type=float, default=None,
                        help="time per sample: each sample is the mean of as many runs as fit (default 25, quick 1)")
    parser.add_argument("--min-rounds", type=int, default=None, help="rounds before the stopping rule (default 15)")
    parser.add_argument("--max-rounds", type=int, default=None, help="most rounds per group (default 200)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="most seconds of rounds per group (default 90)")
    parser.add_argument("--target-ci", type=float, default=0.02,
                        help="stop once every median's ~95%% interval is within +-this (default 0.02: a rerun "
                             "moves medians < ~4%%)")
    parser.add_argument("--worker", type=int, default=None, help=argparse_suppress())
    parser.add_argument("--part", type=Path, default=None, help=argparse_suppress())


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def timing_settings(args) -> dict:
    quick = args.quick
    return {
        "sample_ms": args.sample_ms if args.sample_ms is not None else (1.0 if quick else 25.0),
        "min_rounds": args.min_rounds if args.min_rounds is not None else (3 if quick else 15),
        "max_rounds": args.max_rounds if args.max_rounds is not None else (3 if quick else 200),
        "max_seconds": args.max_seconds if args.max_seconds is not None else (5.0 if quick else 90.0),
        "target_ci": args.target_ci,
    }


def worker_passthrough(args, extra: list[str]) -> list[str]:
    """The parent's timing flags again, for the worker command line."""
    out = list(extra)
    if args.quick:
        out.append("--quick")
    for flag in ("sample_ms", "min_rounds", "max_rounds", "max_seconds", "target_ci"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out
