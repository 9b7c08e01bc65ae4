"""The markdown report of one ``kiln bench`` run: the goals of issue 15 judged on its rows
(with the models and amounts that miss), a table per model, kiln's memory-bound kernels
against the copy rate, what failed or was skipped, and the plots.

Example:
    >>> rows = [{"model": "m", "system": "eager", "status": "ok", "median_ms": 2.0},
    ...         {"model": "m", "system": "kiln_nographs", "status": "ok", "median_ms": 1.0}]
    >>> ratio(rows, "m", "kiln_nographs", "eager")
    2.0
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

# (title, system, baseline, field, higher is better, goal on each model, goal on the geomean)
GOALS = (
    ("kiln without CUDA graphs vs torch.compile default, speed", "kiln_nographs", "inductor",
     "median_ms", 1.0, None),
    ("kiln with CUDA graphs vs torch.compile reduce-overhead, speed", "kiln_graphs",
     "inductor_ro", "median_ms", 0.95, 1.15),
    ("cold start to first result, torch.compile default over kiln", "kiln_graphs", "inductor",
     "cold_s", 3.0, None),
)


def _ok(rows: list[dict[str, Any]], model: str, system: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["model"] == model and r["system"] == system
                 and r["status"] == "ok"), None)


def ratio(rows: list[dict[str, Any]], model: str, system: str, baseline: str,
          field: str = "median_ms") -> float | None:
    """``baseline``'s ``field`` over ``system``'s on ``model`` (> 1: ``system`` is faster)."""
    a, b = _ok(rows, model, system), _ok(rows, model, baseline)
    if a is None or b is None or not a.get(field) or b.get(field) is None:
        return None
    return b[field] / a[field]


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _goals(rows: list[dict[str, Any]], models: list[str]) -> list[str]:
    lines = ["## Goals (issue 15)", "",
             "| comparison | geomean | range | goal | met | misses |", "|---|---|---|---|---|---|"]
    for title, system, baseline, field, each, overall in GOALS:
        got = {m: ratio(rows, m, system, baseline, field) for m in models}
        got = {m: v for m, v in got.items() if v is not None}
        if not got:
            lines.append(f"| {title} | - | - | | not measured | |")
            continue
        mean = geomean(list(got.values()))
        misses = [f"{m} {v:.2f}x" for m, v in got.items() if v < each]
        met = not misses and (overall is None or mean >= overall)
        goal = f">= {each}x each" + (f", >= {overall}x geomean" if overall else "")
        lines.append(f"| {title} | {mean:.2f}x | {min(got.values()):.2f}x to "
                     f"{max(got.values()):.2f}x | {goal} | {'yes' if met else 'NO'} | "
                     f"{', '.join(misses)} |")
    lines += ["", "(ratios are the baseline's time over kiln's: above 1, kiln is faster)", ""]
    return lines


def _model_table(rows: list[dict[str, Any]], model: str,
                 baselines: Mapping[str, str | None]) -> list[str]:
    lines = [f"### {model}", "", "| system | ms (median) | IQR ms | vs eager | vs baseline | "
             "cold s | kernels | mem-bound BW / copy |", "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["model"] == model):
        if r["status"] != "ok":
            lines.append(f"| {r['system']} | {r['status']} | | | | | | {r.get('error') or ''} |")
            continue
        base = baselines.get(r["system"])
        vs_base = ratio(rows, model, r["system"], base) if base else None
        bw = r.get("bandwidth_fraction")
        bw_text = "-" if bw is None else f"{bw:.2f} over {r.get('membound_kernels')} kernels"
        base_text = "-" if vs_base is None else f"{vs_base:.2f} ({base})"
        lines.append(
            f"| {r['system']} | {r['median_ms']:.3f} | {_f(r.get('q1_ms'))}-{_f(r.get('q3_ms'))} | "
            f"{_f(ratio(rows, model, r['system'], 'eager'), '.2f')} | {base_text} | "
            f"{_f(r.get('cold_s'), '.1f')} | {_f(r.get('kernel_count'), 'd')} | {bw_text} |")
    return lines + [""]


def _bandwidth(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Memory-bound kernels (kiln without CUDA graphs)", "",
             "Each kernel's bytes (kiln's metadata: read + written) over its device time "
             "(torch.profiler), as a fraction of a device-to-device copy timed in the same "
             "process. The five slowest per model:", ""]
    found = False
    for r in rows:
        if r["system"] != "kiln_nographs" or r["status"] != "ok":
            continue
        kernels = json.loads(r.get("details_json") or "{}").get("membound", [])
        if not kernels:
            continue
        found = True
        lines.append(f"- **{r['model']}** (copy {_f(r.get('copy_gbps'), '.0f')} GB/s): " + "; ".join(
            f"`{k['name']}` {k['ms']:.3f} ms, {k['fraction']:.2f}"
            for k in sorted(kernels, key=lambda k: -k["ms"])[:5]))
    return lines + [""] if found else []


def markdown(rows: list[dict[str, Any]], header: Mapping[str, Any],
             baselines: Mapping[str, str | None], plots: list[Path], plot_note: str | None) -> str:
    """The whole report as markdown text (plots linked relative to the report)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = [f"# kiln bench: {header['config']}", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()] + [""]
    lines += _goals(rows, models)
    lines += ["## Per model", "",
              "ms: steady time per call (CUDA events, one call each); cold: the built model on "
              "the device to its first synchronized result, in a fresh process with empty "
              "caches; kernels: GPU kernels per call (torch.profiler).", ""]
    for model in models:
        lines += _model_table(rows, model, baselines)
    lines += _bandwidth(rows)
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["## Not measured", ""]
        lines += [f"- {r['model']} / {r['system']}: {r['status']}: {r.get('error')}" for r in bad]
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] or [f"No plots: {plot_note}"]
    return "\n".join(lines) + "\n"
