"""Tuning on an edge board through TVM RPC: a tracker on the host, an RPC server on the board.

    patvm rpc tracker --port 9190                                  # on the host
    patvm rpc server --tracker HOST:9190 --key rk3588              # on the board
    patvm tune model.onnx --target arm-a76 --rpc-tracker 127.0.0.1:9190 --rpc-key rk3588 --db tuning/a76

Both helpers bind to 127.0.0.1 unless given another --host: an RPC server loads and runs whatever
compiled module a client uploads (arbitrary native code), and a tracker hands its servers to any client
that asks; neither authenticates. Expose them only on a network you trust (or through an SSH tunnel,
see docs/tuning.md). The helpers `exec` TVM's own `python -m tvm.exec.rpc_tracker` / `rpc_server`, so
the process id stays the one you started (the server forks a child per session: stop the process group).
"""
from __future__ import annotations

import os
import sys

from patvm.errors import PatvmError

LOOPBACK = "127.0.0.1"
SECURITY_NOTE = ("binds to 127.0.0.1 unless --host names another address: the RPC server runs whatever "
                 "module a client uploads and the tracker hands servers to anyone who asks (no "
                 "authentication), so expose them only on a trusted network")


def parse_address(text: str, what: str = "--rpc-tracker") -> tuple[str, int]:
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PatvmError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def check_tracker(tracker: str, key: str, timeout: float = 10.0) -> dict:
    """The tracker answers and has at least one server registered under `key` (PatvmError otherwise)."""
    import socket

    from tvm import rpc
    host, port = parse_address(tracker)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        summary = rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError, ValueError) as exc:
        raise PatvmError(f"no RPC tracker answers at {host}:{port} ({exc}); start one with "
                         "`patvm rpc tracker --port PORT`") from exc
    finally:
        socket.setdefaulttimeout(old)
    keys = set((summary.get("queue_info") or {}).keys())
    keys |= {str(s.get("key", "")).split(":")[-1] for s in summary.get("server_info") or [] if isinstance(s, dict)}
    if key not in keys:
        raise PatvmError(f"the tracker at {host}:{port} has no server with key '{key}' (it has: "
                         f"{', '.join(sorted(k for k in keys if k)) or 'none'}); start one on the board with "
                         f"`patvm rpc server --tracker {host}:{port} --key {key}`")
    return summary


def make_rpc_runner(tracker: str, key: str, evaluator_config, session_timeout: float = 60.0):
    from tvm.s_tir import meta_schedule as ms
    host, port = parse_address(tracker)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                 session_priority=1, session_timeout_sec=int(session_timeout))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator_config, max_workers=1)


def tracker_argv(host: str = LOOPBACK, port: int = 9190, port_end: int | None = None) -> list[str]:
    return [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
            "--port-end", str(port_end or port + 10)]


def server_argv(tracker: str, key: str, host: str = LOOPBACK, port: int = 9090, port_end: int | None = None,
                custom_addr: str | None = None) -> list[str]:
    parse_address(tracker, "--tracker")
    if not key:
        raise PatvmError("--key is required: it names the device type clients ask the tracker for")
    argv = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", host, "--port", str(port),
            "--port-end", str(port_end or port + 10), "--tracker", tracker, "--key", key]
    if custom_addr:
        argv += ["--custom-addr", custom_addr]
    return argv


def warn_if_exposed(host: str) -> None:
    if host not in (LOOPBACK, "localhost", "::1"):
        print(f"patvm: warning: listening on {host}: anyone who reaches this port can use it "
              "(an RPC server runs any uploaded module)", file=sys.stderr)


def exec_argv(argv: list[str]) -> None:
    """Replace this process by `argv` (same pid: stop it with its process group)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
