"""Progress of a run (one bar per stage) and text tables, drawn by rich.

On a terminal each stage gets a live bar with its count, rate (tasks per second, averaged
over the stage so far: totals grow as lowering finds kernels, so a recent-window rate would
keep restarting), elapsed time and ETA, and notes scroll above the bars. In a log (CI, a
pipe, a test) every finished task prints its stage's line once, so the log reads as a
history and stays plain text.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(["capture", "lower"], out, live=False) as bars:
    ...     bars.add("capture", 2)
    ...     bars.finish("capture", "ok")
    >>> out.getvalue().strip()
    'capture  [##########----------]   1/2    ok 1'
"""
from __future__ import annotations

import io
from typing import Any, Sequence, TextIO

import rich.progress as rp
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

OUTCOMES = ("ok", "skipped", "failed")
_STYLES = {"ok": "green", "skipped": "cyan", "failed": "bold red"}
_WIDTH = 20
# A table without edges: a header, one rule under it, columns two spaces apart.
_PLAIN_BOX = box.Box("    \n    \n -  \n    \n    \n -  \n    \n    \n", ascii=True)
_TERMINAL_BOX = box.Box("    \n    \n ─  \n    \n    \n ─  \n    \n    \n")


class _Rate(rp.ProgressColumn):
    """Tasks per second (per minute when slower), over the stage's whole elapsed time."""

    def render(self, task: rp.Task) -> Text:
        elapsed = task.finished_time or task.elapsed
        if not task.completed or not elapsed:
            return Text("", style="progress.data.speed")
        rate = task.completed / elapsed
        return Text(f"{rate:.1f}/s" if rate >= 1 else f"{60 * rate:.1f}/min",
                    style="progress.data.speed")


class _Eta(rp.ProgressColumn):
    """Time left at the stage's average rate so far."""

    def render(self, task: rp.Task) -> Text:
        if task.finished or not task.completed or not task.elapsed or task.total is None:
            return Text("", style="progress.remaining")
        left = (task.total - task.completed) * task.elapsed / task.completed
        return Text(f"eta {int(left) // 60}:{int(left) % 60:02d}", style="progress.remaining")


class Progress:
    """One bar per stage; totals may grow as later stages learn their work. Use it as a
    context manager (the live display stops at the end)."""

    def __init__(self, stages: Sequence[str], stream: TextIO, live: bool):
        self.stream, self.live = stream, live
        self.totals = dict.fromkeys(stages, 0)
        self.counts = {stage: dict.fromkeys(OUTCOMES, 0) for stage in stages}
        self._pad = max(len(s) for s in stages)
        self._bars: rp.Progress | None = None
        if live:
            self._bars = rp.Progress(
                rp.TextColumn(f"{{task.description:<{self._pad}}}"), rp.BarColumn(),
                rp.MofNCompleteColumn(), _Rate(), rp.TimeElapsedColumn(), _Eta(),
                rp.TextColumn("{task.fields[outcomes]}"),
                console=Console(file=stream, force_terminal=True), refresh_per_second=4)
            self._ids = {s: self._bars.add_task(s, total=0, start=False, visible=False,
                                                outcomes="") for s in stages}
            self._bars.start()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display, leaving the bars' last state on the terminal."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def add(self, stage: str, count: int = 1) -> None:
        """``count`` more tasks for ``stage`` (negative: tasks that will not run after all)."""
        self.totals[stage] += count
        if self._bars is not None:
            self._bars.update(self._ids[stage], total=self.totals[stage],
                              visible=self.totals[stage] > 0)

    def start(self, stage: str) -> None:
        """The first task of ``stage`` was submitted: its clock (elapsed, rate) starts. Totals
        are known earlier (every lowering at the start of a run) and would make a stage that
        waits look slow."""
        if self._bars is not None:
            self._bars.start_task(self._ids[stage])

    def finish(self, stage: str, outcome: str) -> None:
        """One task of ``stage`` ended as ``ok``, ``skipped`` or ``failed``."""
        self.counts[stage][outcome] += 1
        if self._bars is not None:
            self.start(stage)         # a stage found stored submits nothing
            outcomes = Text("  ").join(Text(f"{k} {v}", style=_STYLES[k])
                                       for k, v in self.counts[stage].items() if v)
            self._bars.update(self._ids[stage], advance=1, outcomes=outcomes)
        else:
            self.stream.write(self._line(stage) + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A line of text above the bars (a failure, a warning)."""
        if self._bars is not None:
            style = "red" if text.startswith("FAILED") else "yellow" if text.startswith(
                "warning") else None
            self._bars.console.print(text, style=style, markup=False, highlight=False,
                                     soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _line(self, stage: str) -> str:
        """A stage's state as one plain line, for logs."""
        done, total = sum(self.counts[stage].values()), self.totals[stage]
        filled = _WIDTH * done // total if total else _WIDTH
        parts = "  ".join(f"{k} {v}" for k, v in self.counts[stage].items() if v)
        return (f"{stage:<{self._pad}}  [{'#' * filled}{'-' * (_WIDTH - filled)}] "
                f"{done:>3}/{total:<3}  {parts}").rstrip()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                 color: bool = False) -> str:
    """A left-aligned text table; cells may be rich ``Text`` (styled when ``color``).

    >>> print(format_table(["model", "module[cpu]"], [["mlp", "[new]"]]))
    model  module[cpu]
    ------ -----------
    mlp    [new]
    """
    table = Table(box=_TERMINAL_BOX if color else _PLAIN_BOX, show_edge=False,
                  pad_edge=False, padding=(0, 1, 0, 0), header_style="bold" if color else "")
    for header in headers:   # as Text: ``module[cpu]`` is no markup tag
        table.add_column(Text(header), no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
    return render(table, color)


def render(renderable: Any, color: bool = False) -> str:
    """``renderable`` as text: ANSI-styled for a terminal when ``color``, else plain. Never
    wrapped: a log line stays one line whatever the width."""
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, force_terminal=color, no_color=not color,
            color_system="standard" if color else None, highlight=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())
