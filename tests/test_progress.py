"""Progress bars and summaries on rich: live bars (count, rate, elapsed, ETA) on a terminal,
plain lines in a log; the summary's tables styled on a terminal, plain text otherwise; the
per-model time chart. No cluster here (test_store_sql.py runs the tiny zoo)."""
from __future__ import annotations

import io
import re
import time

import pytest

from pipeline.config import parse_config
from pipeline.progress import Progress, format_table
from pipeline.report import RunReport, format_summary
from pipeline.tasks import TaskResult
from storage.timeline import RunTimeline, TaskSpan, plot_timeline

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> str:
    """The last frame of a live display, escape codes removed."""
    return ANSI.sub("", text)


def test_live_bars_show_counts_rate_elapsed_and_eta():
    out = Terminal()
    with Progress(["capture", "lower", "build"], out, live=True) as bars:
        bars.add("capture", 4)
        bars.add("lower", 8)
        bars.start("capture")
        time.sleep(0.3)
        bars.finish("capture", "ok")
        bars.finish("capture", "failed")
        bars.note("FAILED two: capture: CaptureError: no export")
        bars._bars.refresh()
        frame = screen(out.getvalue())
    assert "\x1b[" in out.getvalue()                       # drawn for a terminal
    line = next(ln for ln in frame.splitlines()[::-1] if ln.startswith("capture"))
    assert re.search(r"2/4 +\d+(\.\d)?/(s|min) +0:00:0\d +eta 0:0\d +ok 1  failed 1", line), line
    assert "FAILED two: capture: CaptureError: no export" in frame
    lower = next(ln for ln in frame.splitlines()[::-1] if ln.startswith("lower"))
    assert re.search(r"0/8 +-:--:-- *$", lower), lower     # waiting: its clock has not started
    assert not any(ln.startswith("build") for ln in frame.splitlines())   # no tasks: hidden


def test_a_stage_whose_total_grows_runs_again():
    out = Terminal()
    with Progress(["build"], out, live=True) as bars:
        bars.add("build", 1)
        bars.finish("build", "ok")
        task = bars._bars.tasks[0]
        assert task.finished
        bars.add("build", 2)                               # lowering found more kernels
        assert not task.finished and task.total == 3


def test_log_lines_are_plain_and_carry_no_escape_codes():
    out = io.StringIO()
    with Progress(["capture", "lower"], out, live=False) as bars:
        bars.add("lower", 2)
        bars.finish("lower", "ok")
        bars.note("warning: mlp: train mode")
    assert out.getvalue() == ("lower    [##########----------]   1/2    ok 1\n"
                              "warning: mlp: train mode\n")


def test_tables_are_plain_unless_coloured():
    plain = format_table(["model", "status"], [["mlp", "ok"], ["[b]x[/b]", "FAILED"]])
    assert plain.splitlines() == ["model     status", "--------- ------", "mlp       ok",
                                  "[b]x[/b]  FAILED"]       # no markup: text as given
    coloured = format_table(["model"], [["mlp"]], color=True)
    assert "\x1b[1m" in coloured and screen(coloured).splitlines()[0] == "model"


def test_summary_is_styled_on_a_terminal_only():
    cfg = parse_config({"models": [{"factory": "a.b:one"}, {"factory": "a.b:two"}]}, "z.toml")
    results = [TaskResult("capture", "one", "ok", key="g1"),
               TaskResult("lower", "one", "ok", target="cpu", kernel_keys=("k1",)),
               TaskResult("capture", "two", "failed", error_type="CaptureError",
                          message="no export")]
    report = RunReport(config=cfg, store="s", results=results, wall_s=1.0)
    plain, coloured = format_summary(report), format_summary(report, color=True)
    assert "\x1b" not in plain
    assert "\x1b[1;31mFAILED" in coloured and "\x1b[32mok" in coloured
    assert screen(coloured).replace("─", "-") == plain        # the same text, styled


def test_time_chart_per_model(tmp_path):
    pytest.importorskip("matplotlib")
    spans = (TaskSpan("capture", "mlp", "", 0.0, 2.0, "ok"),
             TaskSpan("lower", "mlp", "cuda", 2.0, 3.0, "ok"),
             TaskSpan("build", "mlp", "sm_90", 3.0, 3.5, "failed"),
             TaskSpan("capture", "net", "", 0.0, 0.1, "skipped"))
    run = RunTimeline("zoo", 3.5, spans)
    assert run.models() == ["mlp", "net"]
    assert run.seconds_by_model()["mlp"] == {"capture": 2.0, "lower": 1.0, "build": 0.5,
                                             "tune": 0.0, "relower": 0.0}
    assert plot_timeline(run, tmp_path / "t.png") == 2
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no tasks"):
        plot_timeline(RunTimeline("zoo", 0.0, ()), tmp_path / "e.png")
