"""The process around a tuning run: MetaSchedule's logs into DIR/logs/, environment variables for the
run, and Ctrl-C (once: stop after the batch in flight; twice: at once)."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

LOG_DIR = "logs"
LOG_FILE = "tune.log"


@contextlib.contextmanager
def logs_to_file(folder: Path):
    """MetaSchedule's loggers (and patvm's task loggers) write to DIR/logs/tune.log only."""
    log_dir = folder / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / LOG_FILE, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    names = ["tvm.s_tir.meta_schedule", "patvm.tuning.search"]
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if name.startswith("patvm") else logging.INFO)
        logger.propagate = False
    try:
        yield logging.getLogger("patvm.tuning.search")
    finally:
        for logger, level, propagate, handlers in saved:
            logger.removeHandler(handler)
            for h in handlers:
                logger.addHandler(h)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()


@contextlib.contextmanager
def environment(**values):
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is not None:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def sigint_seen(progress):
    """Ctrl-C once: finish the batch in flight, save it, stop (checked at each checkpoint and between
    steps). Ctrl-C twice: exit at once with 130, losing only the batch in flight (every finished batch is
    already on disk; the workers exit when their pipes close; the kernel drops the folder lock).

    Not a KeyboardInterrupt raised from the handler: MetaSchedule's C++ search polls Python's signal
    handlers, and an exception raised there ends in std::terminate (a segfault report, TVM 0.27)."""
    state = {"seen": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["seen"]:
            try:
                progress.message("patvm: interrupted at once; the finished batches are saved, run the same "
                                 "command to resume")
            finally:
                os._exit(130)
        state["seen"] = True
        progress.message("patvm: stopping after the batch in flight (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_if_asked(sigint) -> None:
    if sigint is not None and sigint["seen"]:
        raise KeyboardInterrupt
