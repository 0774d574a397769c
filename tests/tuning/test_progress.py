"""The progress lines and the report table (no tuning)."""
import io
import math
import time
from pathlib import Path

from patvm.tuning.progress import Progress, format_elapsed, format_ms
from patvm.tuning.tune import TaskResult, TuneReport


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_pipe_gets_one_line_per_update():
    out = io.StringIO()
    p = Progress(2, stream=out)
    p.start_task(1, "fused_pa_bitserial_conv2d_add_relu", 0, 8, None, 1.2e-3)
    p.update(done=4, best=8e-4)
    p.end_task()
    p.start_task(2, "a" * 60, 8, 8, 5e-5, None, "skipped (--only)")
    p.end_task("done")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert lines[0].startswith("[1/2] fused_pa_bitserial_conv2d_add_relu")
    assert "0/8 trials" in lines[0] and "best -" in lines[0] and "hand 1.200 ms" in lines[0]
    assert "[######......]  4/8 trials  best 0.800 ms" in lines[1] and lines[1].split()[-1].count(":") == 1
    assert "a" * 37 + "..." in lines[2] and "skipped (--only)" in lines[2]


def test_terminal_line_is_redrawn_and_ticks():
    out = Terminal()
    p = Progress(1, stream=out, tick=0.05)
    p.start_task(1, "task", 0, 2)
    time.sleep(0.3)
    p.message("a message")
    p.update(done=2, best=1e-3)
    p.end_task()
    p.close()
    text = out.getvalue()
    assert text.count("\r\033[K") >= 4            # ticker redraws (elapsed time) + updates
    assert "a message\n" in text and text.endswith("\n")
    assert "2/2 trials  best 1.000 ms" in text


def test_formats():
    assert format_ms(None) == "-" and format_ms(math.inf) == "-"
    assert format_ms(1.5e-5) == "0.015 ms" and format_ms(0.25) == "250.0 ms"
    assert format_elapsed(75) == "1:15" and format_elapsed(3723) == "1:02:03"


def test_report_table_and_json():
    report = TuneReport(Path("db"), "host", "on this machine", [
        TaskResult("fused_conv", 3, "1", 32, 16, hand=2e-3, tuned=1e-3),
        TaskResult("pack", 1, "2", 32, 0, hand=1e-4, tuned=2e-4),
        TaskResult("other", 1, "3", 0, 0, hand=None, tuned=None),
    ], seconds=65)
    table = report.table()
    conv = next(line for line in table.splitlines() if line.startswith("fused_conv"))
    assert "2.000 ms" in conv and "1.000 ms" in conv and "2.00x" in conv and conv.endswith("tuned")
    pack = next(line for line in table.splitlines() if line.startswith("pack"))
    assert "0.50x" in pack and pack.endswith("hand")
    assert next(line for line in table.splitlines() if line.startswith("other")).endswith("hand (no record)")
    assert "16 new trials in 1:05" in table
    data = report.as_dict()
    assert data["tasks"][0]["speedup"] == 2.0 and data["tasks"][0]["untuned_ms"] == 2.0
