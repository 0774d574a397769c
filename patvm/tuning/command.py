"""The `patvm tune` and `patvm rpc` sub-commands (arguments and actions; `patvm.cli` wires them in).

Nothing here imports TVM at module level: building the parser stays fast.
"""
from __future__ import annotations

import argparse
import json

from patvm.errors import PatvmError

TUNE_HELP = "search faster schedules with MetaSchedule into a tuning database folder (resumable)"
TUNE_EPILOG = """\
examples:
  patvm tune model.onnx --target host --trials 64 --db tuning/host
  patvm tune model.onnx --target arm-a76 --trials 200 --db tuning/a76 --rpc-tracker 127.0.0.1:9190 --rpc-key rk3588
  patvm compile model.onnx --target host --tuning-db tuning/host -o model.so
  patvm tune --db tuning/host --export-best schedules/x86-avx512     # keep the best record per kernel
  patvm tune --db tuning/host --repair                               # move broken lines to quarantine/

--trials counts per kernel; running the same command again continues from what --db holds (an interrupted
run loses at most the batch in flight). Progress goes to stderr, MetaSchedule's log to DB/logs/tune.log.
"""

RPC_HELP = "run a TVM RPC tracker or server for tuning on an edge board (binds to 127.0.0.1 by default)"


def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = TUNE_EPILOG
    p.add_argument("model", nargs="?", help="the PA-ONNX model (not needed with only --repair / --export-best)")
    p.add_argument("--db", required=True, help="tuning database folder (created; resumed if it holds records)")
    p.add_argument("--target", default="host", help="target preset, 'host' or a JSON target (default: host)")
    p.add_argument("--trials", type=int, default=64, help="searched schedules per kernel (default: 64)")
    p.add_argument("--strategy", default="auto", help="per-layer strategy, as for `patvm compile` (default: auto)")
    p.add_argument("--only", metavar="TEXT", help="search only the kernels whose name contains TEXT")
    p.add_argument("--measure-strategies", action="store_true",
                   help="first time bit-serial against fp32 for each binary layer and keep the faster "
                        "(DB/strategies.json, used by --strategy auto here and by patvm compile --tuning-db)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on a board through this TVM RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the board's key at the tracker (see `patvm rpc server`)")
    p.add_argument("--export-best", metavar="DIR", help="after tuning (or alone), write the best record per kernel "
                   "of --db into DIR, merged with what DIR holds (e.g. schedules/x86-avx512)")
    p.add_argument("--keep-only", nargs="+", metavar="MODEL",
                   help="with --export-best: DIR keeps only the kernels these models compile to for --target "
                        "(drops records of kernels that no longer exist)")
    p.add_argument("--repair", action="store_true", help="move broken lines of --db to DB/quarantine/ and exit")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    search = p.add_argument_group("search")
    search.add_argument("--per-iter", type=int, default=16, help="candidates per measured batch (default: 16)")
    search.add_argument("--population", type=int, default=512, help="evolutionary population (default: 512)")
    search.add_argument("--evolve-iters", type=int, default=4, help="genetic iterations per batch (default: 4)")
    search.add_argument("--verify-top", type=int, default=3, help="best candidates per kernel measured again "
                        "against the hand schedule, back to back, at the end (default: 3; 0: off)")
    search.add_argument("--session-timeout", type=float, default=60.0, help="RPC session seconds per candidate")
    search.add_argument("--seed", type=int, default=0)


def run_tune(args) -> None:
    from patvm.tuning import database, export

    if args.repair:
        problems = export.repair_database(args.db)
        for problem in problems:
            print(f"quarantined {problem.message()}")
        print(f"{args.db}: {len(problems)} broken line(s) moved to {args.db}/{database.QUARANTINE_DIR}/"
              if problems else f"{args.db}: every line is valid")
        return
    if args.keep_only and not args.export_best:
        raise PatvmError("--keep-only goes with --export-best DIR")
    if args.model is None and not args.export_best:
        raise PatvmError("give a MODEL to tune (or --export-best DIR / --repair with --db)")
    if args.model is not None:
        from patvm.tuning.tune import SearchOptions, tune_model
        if args.per_iter < 1 or args.population < 2 or args.evolve_iters < 0 or args.verify_top < 0:
            raise PatvmError("--per-iter must be >= 1, --population >= 2, --evolve-iters and --verify-top >= 0")
        if args.measure_strategies:
            from patvm.tuning.strategies import measure_strategies
            measure_strategies(args.model, args.target, args.db)
        options = SearchOptions(per_iter=args.per_iter, population=args.population,
                                evolve_iters=args.evolve_iters, session_timeout=args.session_timeout,
                                seed=args.seed, verify_top=args.verify_top)
        try:
            report = tune_model(args.model, target=args.target, trials=args.trials, db=args.db,
                                rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key, strategy=args.strategy,
                                options=options, only=args.only)
        except KeyboardInterrupt:
            # The run is saved (tune_model flushed the database and stopped its workers). Exit now with
            # 130: when the Ctrl-C landed in code run through PyRun_String (a Cython module's init during
            # one of MetaSchedule's lazy imports), CPython remembers it as "unhandled" and would kill the
            # process with SIGINT at exit even though it was handled.
            import os
            import sys
            print("patvm: interrupted", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        print(json.dumps(report.as_dict()) if args.json else report.table())
    if args.export_best:
        keep = None
        if args.keep_only:
            from patvm.tuning.tasks import model_workloads
            keep = set().union(*(model_workloads(m, args.target, args.strategy, args.db) for m in args.keep_only))
        result = export.export_best(args.db, args.export_best, keep)
        print(f"wrote {args.export_best}: best records of {result['workloads']} kernel(s) "
              f"({result['updated']} new or faster"
              + (f", {result['dropped']} no longer used dropped)" if keep is not None else ")"))


def add_rpc_arguments(p: argparse.ArgumentParser) -> None:
    from patvm.tuning.rpc import SECURITY_NOTE as note
    p.description = ("TVM RPC for tuning on a board: a tracker on the host, a server on the board; "
                     f"`patvm tune --rpc-tracker HOST:PORT --rpc-key KEY` measures there. Both {note}.")
    roles = p.add_subparsers(dest="role", required=True)
    host_help = ("address to listen on (default 127.0.0.1, this machine only: an RPC server runs any module a "
                 "client uploads; name another address only on a trusted network)")
    t = roles.add_parser("tracker", help="run a TVM RPC tracker (on the host)",
                         description=f"Run a TVM RPC tracker; it {note}.")
    t.add_argument("--host", default="127.0.0.1", help=host_help)
    t.add_argument("--port", type=int, default=9190)
    t.add_argument("--port-end", type=int, default=None, help="try ports up to this one (default: port + 10)")
    s = roles.add_parser("server", help="run a TVM RPC server that registers with a tracker (on the board)",
                         description=f"Run a TVM RPC server registered with a tracker; it {note}.")
    s.add_argument("--tracker", required=True, metavar="HOST:PORT")
    s.add_argument("--key", required=True, help="device key clients ask the tracker for (e.g. rk3588)")
    s.add_argument("--host", default="127.0.0.1", help=host_help)
    s.add_argument("--port", type=int, default=9090)
    s.add_argument("--port-end", type=int, default=None, help="try ports up to this one (default: port + 10)")
    s.add_argument("--custom-addr", help="address the tracker gives clients for this server (NAT, tunnels)")
    q = roles.add_parser("status", help="list the servers a tracker knows")
    q.add_argument("--tracker", required=True, metavar="HOST:PORT")


def run_rpc(args) -> None:
    from patvm.tuning import rpc
    if args.role == "tracker":
        argv = rpc.tracker_argv(args.host, args.port, args.port_end)
        rpc.warn_if_exposed(args.host)
        rpc.exec_argv(argv)
    elif args.role == "server":
        argv = rpc.server_argv(args.tracker, args.key, args.host, args.port, args.port_end, args.custom_addr)
        rpc.warn_if_exposed(args.host)
        rpc.exec_argv(argv)
    else:
        from tvm import rpc as tvm_rpc
        host, port = rpc.parse_address(args.tracker, "--tracker")
        try:
            print(tvm_rpc.connect_tracker(host, port).text_summary())
        except (OSError, RuntimeError) as exc:
            raise PatvmError(f"no RPC tracker answers at {host}:{port} ({exc})") from exc
