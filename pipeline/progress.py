"""Text progress bars (one per stage) and the final summary table, on a text stream.

On a terminal the bars are redrawn in place; in a log (CI, a pipe) each finished task prints
its stage's bar once, so the log reads as a history. No dependencies beyond the stdlib.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> bars = Progress(["capture", "lower"], out, live=False)
    >>> bars.add("capture", 2)
    >>> bars.finish("capture", "ok")
    >>> out.getvalue().strip()
    'capture  [##########----------]   1/2    ok 1'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, TextIO

OUTCOMES = ("ok", "skipped", "failed")
_WIDTH = 20


@dataclass
class _Bar:
    total: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def render(self, name: str, pad: int) -> str:
        filled = _WIDTH * self.done // self.total if self.total else _WIDTH
        parts = "  ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        return (f"{name:<{pad}}  [{'#' * filled}{'-' * (_WIDTH - filled)}] "
                f"{self.done:>3}/{self.total:<3}  {parts}").rstrip()


class Progress:
    """One bar per stage; totals may grow as later stages learn their work."""

    def __init__(self, stages: Sequence[str], stream: TextIO, live: bool):
        self.stream, self.live = stream, live
        self.bars = {stage: _Bar() for stage in stages}
        self._pad = max(len(s) for s in stages)
        self._drawn = 0

    def add(self, stage: str, count: int = 1) -> None:
        """``count`` more tasks for ``stage`` (negative: tasks that will not run after all)."""
        self.bars[stage].total += count
        if self.live:
            self._redraw()

    def finish(self, stage: str, outcome: str) -> None:
        """One task of ``stage`` ended as ``ok``, ``skipped`` or ``failed``."""
        self.bars[stage].counts[outcome] += 1
        if self.live:
            self._redraw()
        else:
            self.stream.write(self.bars[stage].render(stage, self._pad) + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A line of text above the bars (a failure, a warning)."""
        if self.live and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self.stream.write(text + "\n")
        if self.live:
            self._redraw()
        self.stream.flush()

    def _redraw(self) -> None:
        # Move the cursor up over the bars drawn last time, then draw them again.
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        lines = [bar.render(name, self._pad) for name, bar in self.bars.items() if bar.total]
        for line in lines:
            self.stream.write("\x1b[2K" + line + "\n")
        self._drawn = len(lines)
        self.stream.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned text table.

    >>> print(format_table(["model", "kernels"], [["mlp", 4]]))
    model  kernels
    -----  -------
    mlp    4
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
