"""The report's PNG charts (matplotlib, the ``plot`` extra): speed over eager per model and
system, cold start per model and system, and kiln's memory-bound kernels' fraction of the
copy rate. Without matplotlib, ``write_plots`` says so instead of drawing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def _bars(ax, models: Sequence[str], systems: Sequence[str], value) -> None:
    width = 0.8 / max(len(systems), 1)
    for k, system in enumerate(systems):
        xs = [i + k * width for i in range(len(models))]
        ax.bar(xs, [value(m, system) or float("nan") for m in models], width, label=system)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))])
    ax.set_xticklabels(models, rotation=30, ha="right")
    ax.legend(fontsize=7)


def write_plots(rows: list[dict[str, Any]], out: Path, title: str) -> tuple[list[Path], str | None]:
    """PNGs under ``out``: (paths, None), or ([], why nothing was drawn)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'kiln[plot]')"
    ok = {(r["model"], r["system"]): r for r in rows if r["status"] == "ok"}
    models = list(dict.fromkeys(m for m, _ in ok))
    systems = list(dict.fromkeys(s for _, s in ok))
    if not ok:
        return [], "no system produced a result"
    paths = []

    def speedup(model: str, system: str) -> float | None:
        eager, row = ok.get((model, "eager")), ok.get((model, system))
        return eager["median_ms"] / row["median_ms"] if eager and row else None

    for name, value, label, log in (
            ("speedup.png", speedup, "speed over eager (x, log scale)", True),
            ("cold_start.png", lambda m, s: (ok.get((m, s)) or {}).get("cold_s"),
             "cold start: built model to first result (s)", True)):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models) + 3), 4))
        _bars(ax, models, systems, value)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        if name == "speedup.png":
            ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    fractions = [(r["model"], k["fraction"]) for r in ok.values() if r["system"] == "kiln_nographs"
                 for k in json.loads(r.get("details_json") or "{}").get("membound", [])]
    if fractions:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist([f for _, f in fractions], bins=20)
        ax.set_xlabel("memory-bound kernel's bandwidth / device-to-device copy")
        ax.set_ylabel("kernels")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "bandwidth.png", dpi=110)
        plt.close(fig)
        paths.append(out / "bandwidth.png")
    return paths, None
