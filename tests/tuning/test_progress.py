"""The progress lines and the report table (no tuning)."""
import io
import math
import re
from pathlib import Path

from patvm.progress import Bar, message
from patvm.tuning.progress import TuningProgress
from patvm.tuning.report import TaskResult, TuneReport, format_elapsed, format_ms


class Terminal(io.StringIO):
    def isatty(self):
        return True


ELAPSED = re.compile(r"\[\d\d:\d\d[,\]]")     # tqdm's elapsed time, first in the brackets


def test_pipe_gets_one_line_per_update():
    out = io.StringIO()
    p = TuningProgress(2, stream=out)
    p.start_task(1, "fused_pa_bitserial_conv2d_add_relu", 0, 8, None, 1.2e-3)
    p.update(done=4, best=8e-4)
    p.end_task()
    p.start_task(2, "a" * 60, 8, 8, 5e-5, None, "skipped (--only)")
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert len(lines) == 5                        # task 1: start, a batch, end; task 2: start, end
    assert lines[0].startswith("[1/2] fused_pa_bitserial_conv2d_add_relu")
    assert "0/8 trials" in lines[0] and "best -, hand 1.200 ms" in lines[0] and ELAPSED.search(lines[0])
    assert "4/8 trials" in lines[1] and "best 0.800 ms, hand 1.200 ms]" in lines[1]
    assert "4/8 trials" in lines[2]
    assert lines[3].startswith("[2/2] " + "a" * 37 + "...")
    assert "8/8 trials" in lines[3] and "best 0.050 ms, skipped (--only)]" in lines[3] and "hand" not in lines[3]


def test_terminal_bar_is_redrawn_and_messages_go_above_it():
    out = Terminal()
    p = TuningProgress(1, stream=out)
    p.start_task(1, "task", 0, 2)
    p.message("a message")
    p.update(done=2, best=1e-3)
    p.close()
    text = out.getvalue()
    assert text.count("\r") >= 3 and text.endswith("\n")
    assert "\ra message\n" in text                 # the bar cleared first, the message on a line of its own
    assert text.rsplit("\r", 1)[1].startswith("[1/1] task") and "2/2 trials" in text.rsplit("\r", 1)[1]
    assert "best 1.000 ms]" in text.rsplit("\r", 1)[1]


def test_off_a_terminal_a_busy_bar_prints_a_line_per_interval():
    out = io.StringIO()
    with Bar(None, "pa-resnet18", unit="layers", stream=out) as bar:
        for _ in range(500):
            bar.advance()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2                        # where it started and where it ended, within 30 s
    assert lines[0].startswith("pa-resnet18  0 layers [") and lines[1].startswith("pa-resnet18  500 layers [")
    message("done", out)
    assert out.getvalue().endswith("]\ndone\n")


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
