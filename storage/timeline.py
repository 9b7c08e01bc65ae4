"""Where a run's time went, per model: every task's span saved as JSON next to the run's log
(``STORE/logs/run-*.tasks.json``), and drawn as a PNG beside it (``kiln store plot-run``).

The chart has two panels: a Gantt of the run (one row per model, one lane per stage: when
each of its capture, lower, build, tune and relower tasks ran) and a stacked bar of the
seconds its tasks took per stage. Build and tune tasks count for the model that first
needed their kernel (a kernel shared by several models is built and tuned once). Drawing
needs matplotlib (``pip install 'kiln[plot]'``); the JSON does not.

Example:
    >>> import tempfile, os
    >>> run = RunTimeline("zoo", 3.0, (TaskSpan("capture", "mlp", "", 0.1, 1.2, "ok"),
    ...                                TaskSpan("lower", "mlp", "cpu", 1.3, 2.9, "ok")))
    >>> path = save_timeline(run, os.path.join(tempfile.mkdtemp(), "run-1.tasks.json"))
    >>> load_timeline(path) == run, run.seconds_by_model()["mlp"]["lower"]
    (True, 1.6)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

STAGES = ("capture", "lower", "build", "tune", "relower")
SUFFIX = ".tasks.json"
_COLORS = {"capture": "tab:blue", "lower": "tab:orange", "build": "tab:green",
           "tune": "tab:red", "relower": "tab:purple"}


@dataclass(frozen=True)
class TaskSpan:
    """One task of a run: seconds after the run started when it began and ended."""
    stage: str
    model: str
    target: str
    start_s: float
    end_s: float
    status: str            # ok, skipped or failed


@dataclass(frozen=True)
class RunTimeline:
    """The spans of one run, with the run's name and wall time."""
    name: str
    wall_s: float
    spans: tuple[TaskSpan, ...]

    def models(self) -> list[str]:
        """Models in the order their first task started."""
        return list(dict.fromkeys(s.model for s in sorted(self.spans, key=lambda s: s.start_s)))

    def seconds_by_model(self) -> dict[str, dict[str, float]]:
        """``{model: {stage: seconds its tasks took}}``."""
        out = {m: dict.fromkeys(STAGES, 0.0) for m in self.models()}
        for s in self.spans:
            out[s.model][s.stage] = round(out[s.model].get(s.stage, 0.0) + s.end_s - s.start_s,
                                          6)
        return out


def save_timeline(run: RunTimeline, path: str | Path) -> str:
    """Write ``run`` as JSON to ``path``; returns the path."""
    data = {"name": run.name, "wall_s": run.wall_s, "spans": [asdict(s) for s in run.spans]}
    Path(path).write_text(json.dumps(data, indent=1))
    return str(path)


def load_timeline(path: str | Path) -> RunTimeline:
    data = json.loads(Path(path).read_text())
    return RunTimeline(data["name"], data["wall_s"],
                       tuple(TaskSpan(**s) for s in data["spans"]))


def latest_timeline(root: str | Path) -> Path | None:
    """The newest run's timeline under a store root, or None."""
    runs = sorted(Path(root, "logs").glob(f"run-*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def png_path(timeline_path: str | Path) -> str:
    """Where the chart of a timeline goes: beside it, ``run-*.times.png``."""
    return str(timeline_path).removesuffix(SUFFIX) + ".times.png"


def plot_timeline(run: RunTimeline, path: str | Path) -> int:
    """Draw ``run`` (Gantt and seconds per stage, per model) as a PNG; returns the models
    drawn. ImportError naming the extra without matplotlib, ValueError for an empty run."""
    models = run.models()
    if not models:
        raise ValueError("the run has no tasks: nothing to plot")
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'kiln[plot]'") from None
    matplotlib.use("Agg")               # no display: write the file only
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    fig, (gantt, bars) = plt.subplots(1, 2, figsize=(13, 1.2 + 0.55 * len(models)),
                                      gridspec_kw={"width_ratios": [3, 2]}, sharey=True)
    _draw_gantt(gantt, run, models)
    _draw_bars(bars, run, models)
    gantt.legend(handles=[Patch(color=c, label=s)
                          for s, c in _COLORS.items()], loc="upper center", ncol=5,
                 bbox_to_anchor=(0.8, 1.0 + 0.9 / (1 + len(models))), fontsize=8, frameon=False)
    fig.suptitle(f"kiln run {run.name}: {run.wall_s:.1f} s", x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(models)


def _draw_gantt(ax, run: RunTimeline, models: list[str]) -> None:
    """One row per model, one lane per stage; failed tasks hatched."""
    lane = 0.8 / len(STAGES)
    for s in run.spans:
        y = models.index(s.model) - 0.4 + lane * STAGES.index(s.stage)
        ax.broken_barh([(s.start_s, max(s.end_s - s.start_s, run.wall_s / 500))], (y, lane),
                       color=_COLORS[s.stage], hatch="xx" if s.status == "failed" else None,
                       alpha=0.5 if s.status == "skipped" else 1.0)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, run.wall_s * 1.01 or 1)
    ax.set_xlabel("seconds since the run started (faded: found stored)")


def _draw_bars(ax, run: RunTimeline, models: list[str]) -> None:
    """Seconds of task time per stage, stacked, per model."""
    seconds = run.seconds_by_model()
    left = [0.0] * len(models)
    for stage in STAGES:
        widths = [seconds[m][stage] for m in models]
        ax.barh(range(len(models)), widths, left=left, color=_COLORS[stage], height=0.6)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("task seconds per stage")
