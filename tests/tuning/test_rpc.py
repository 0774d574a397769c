"""Tuning through a real TVM RPC tracker and server on 127.0.0.1 (what an edge board would run), started
with `patvm rpc tracker` / `patvm rpc server` by pid and stopped by pid (process group and children),
also when the test fails."""
import time

import pytest
from tuning_helpers import (
    QUICK,
    alive,
    free_port,
    patvm_cli,
    patvm_popen,
    process_tree,
    save_tiny_model,
    stop_tree,
    wait_for_port,
)

from patvm.errors import PatvmError
from patvm.tuning import database as dbmod
from patvm.tuning import rpc

KEY = "patvm-test-board"


@pytest.fixture(scope="module")
def rpc_pair(tmp_path_factory):
    """(tracker address, log folder, started, seen); every process started here is stopped in the finaliser."""
    tmp_path = tmp_path_factory.mktemp("rpc")
    started, seen = [], {}
    tracker_port, server_port = free_port(), free_port()
    try:
        tracker = patvm_popen("rpc", "tracker", "--port", tracker_port, "--port-end", tracker_port + 1,
                              log=tmp_path / "tracker.log")
        started.append(tracker)
        wait_for_port(tracker_port, proc=tracker)
        server = patvm_popen("rpc", "server", "--tracker", f"127.0.0.1:{tracker_port}", "--key", KEY,
                             "--port", server_port, "--port-end", server_port + 1, log=tmp_path / "server.log")
        started.append(server)
        wait_for_port(server_port, proc=server)
        address = f"127.0.0.1:{tracker_port}"
        for _ in range(120):                       # the server registers with the tracker after it listens
            try:
                rpc.check_tracker(address, KEY)
                break
            except PatvmError:
                time.sleep(0.5)
        for proc in started:
            for p in process_tree(proc.pid):
                seen[p.pid] = p
        yield address, tmp_path, started, seen
    finally:
        for proc in started:
            for p in process_tree(proc.pid):
                seen[p.pid] = p
        for proc in reversed(started):
            stop_tree(proc)
        assert alive(seen.values()) == [], "RPC processes left running"


def test_rpc_processes_bind_to_loopback(rpc_pair):
    import psutil
    address, _, started, seen = rpc_pair
    for proc in started:
        listening = [c for p in process_tree(proc.pid) for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening


def test_tune_through_rpc_tracker(rpc_pair, tmp_path):
    address, logs, started, seen = rpc_pair
    model_path, _, _ = save_tiny_model(tmp_path)
    db = tmp_path / "db"
    result = patvm_cli("tune", model_path, "--db", db, "--trials", 2, "--per-iter", 2, "--strategy", "bit-serial",
                       "--only", "pack", "--rpc-tracker", address, "--rpc-key", KEY, *QUICK)
    assert result.returncode == 0, result.stderr + (logs / "server.log").read_text()[-2000:]
    assert f"through RPC key '{KEY}'" in result.stdout
    loaded = dbmod.load_database(db)
    assert len(loaded.workloads) == 1                       # --only pack: the packer's workload
    assert len(loaded.entries) == 3                         # its hand schedule + 2 searched
    assert all(e.seconds < 1 for e in loaded.entries)       # all measured successfully, on the server
    assert "load_module" in (logs / "server.log").read_text()
    # the processes we started are still the only ones: the server forked per session and cleaned up
    for proc in started:
        assert proc.poll() is None


def test_missing_board_is_a_one_line_error(rpc_pair, tmp_path, capsys):
    from patvm.cli import main
    address, _, _, _ = rpc_pair
    model_path, _, _ = save_tiny_model(tmp_path)
    code = main(["tune", str(model_path), "--db", str(tmp_path / "db"), "--trials", "1", "--rpc-tracker", address,
                 "--rpc-key", "no-such-board"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "has no server with key 'no-such-board'" in line and KEY in line


def test_rpc_helpers_default_to_loopback():
    argv = rpc.tracker_argv()
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    argv = rpc.server_argv("10.0.0.2:9190", "board")
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--tracker") + 1] == "10.0.0.2:9190"
    for bad in ("9190", "host:", ":9190", "host:99999", "host:port"):
        with pytest.raises(PatvmError, match="HOST:PORT"):
            rpc.parse_address(bad)
    assert rpc.parse_address("[::1]:9190") == ("::1", 9190)
    help_text = patvm_cli("rpc", "server", "--help").stdout
    assert "127.0.0.1" in help_text and "runs whatever module a client uploads" in " ".join(help_text.split())
