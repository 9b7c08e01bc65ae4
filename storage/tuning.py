"""Questions asked of a sweep's trials: the best config of a kernel on a GPU, and what tuning
gained per kernel (the heuristic default's median time over the best one's).

Trials are grouped by (kernel, sizes, GPU kind): one kernel source can run at several sizes,
and its best config differs with them. Every successful (``ok``) trial of a group counts,
whatever the driver, clock state or versions it ran under; the fastest median wins. The
default's time comes from the trials marked ``is_default`` (schema v3 on): a group without one
(rows from before v3, or a sweep whose default failed) has no gain to report.

Example:
    >>> import tempfile
    >>> from storage import Store, TrialRecord
    >>> store = Store(tempfile.mkdtemp())
    >>> def trial(block, ms, default=False):
    ...     return TrialRecord.timed(kernel_key="k1", sizes={"xnumel": 4096},
    ...         config={"XBLOCK": block}, device_name="H100", arch="sm_90", driver="d",
    ...         triton_version="3.6.0", torch_version="2.11", times_ms=[ms],
    ...         is_default=default)
    >>> _ = store.write("trials", [trial(1024, 0.02, True), trial(256, 0.01)])
    >>> best_config(store, "k1", "H100").config
    {'XBLOCK': 256}
    >>> [round(g.speedup, 2) for g in tuning_gains(store)]
    [2.0]
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow.compute as pc

_COLUMNS = ["kernel_key", "sizes_json", "device_name", "config_json", "median_ms",
            "is_default", "status"]


@dataclass(frozen=True)
class BestTrial:
    """The fastest ``ok`` trial of one kernel at one size on one GPU kind."""
    kernel_key: str
    sizes: dict[str, Any]
    device_name: str
    config: dict[str, Any]
    median_ms: float
    timed: int                        # ok trials in the group


@dataclass(frozen=True)
class KernelGain:
    """What tuning gained for one kernel at one size on one GPU kind. ``default_ms`` is None
    when no trial of the default config is known; then ``speedup`` is None too."""
    kernel_key: str
    sizes: dict[str, Any]
    device_name: str
    default_ms: float | None
    best_ms: float
    best_config: dict[str, Any]
    timed: int
    name: str = ""                    # the kernel's name, from the kernels dataset
    kind: str = ""

    @property
    def speedup(self) -> float | None:
        return self.default_ms / self.best_ms if self.default_ms else None


def _groups(store: Any, expr: Any) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    rows = store.query("trials", expr & (pc.field("status") == "ok"),
                       columns=_COLUMNS).to_pylist()
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["median_ms"] is not None:
            groups[(row["kernel_key"], row["sizes_json"], row["device_name"])].append(row)
    return groups


def _device_filter(device_name: str | None) -> Any:
    return pc.field("device_name") == device_name if device_name else pc.scalar(True)


def best_trials(store: Any, device_name: str | None = None,
                kernel_keys: Iterable[str] | None = None) -> list[BestTrial]:
    """The best trial of every (kernel, sizes, GPU kind), optionally of one GPU kind and of
    some kernels only; sorted by kernel key, then sizes."""
    expr = _device_filter(device_name)
    if kernel_keys is not None:
        expr &= pc.field("kernel_key").isin(list(kernel_keys))
    out = []
    for (kernel, sizes, device), rows in sorted(_groups(store, expr).items()):
        best = min(rows, key=lambda r: r["median_ms"])
        out.append(BestTrial(kernel, json.loads(sizes), device, json.loads(best["config_json"]),
                             best["median_ms"], len(rows)))
    return out


def best_config(store: Any, kernel_key: str, device_name: str,
                sizes: dict[str, Any] | None = None) -> BestTrial | None:
    """The best config of ``kernel_key`` on ``device_name`` at ``sizes``, or None if it was
    never timed there. Without ``sizes``: at the size with the most time at stake (the
    largest best median), the one a module that runs the kernel at one size cares about."""
    found = best_trials(store, device_name, [kernel_key])
    if sizes is not None:
        found = [b for b in found if b.sizes == sizes]
    return max(found, key=lambda b: b.median_ms, default=None)


def tuning_gains(store: Any, device_name: str | None = None) -> list[KernelGain]:
    """Default vs best median of every tuned (kernel, sizes, GPU kind), largest gain first
    (unknown gains last), with kernel names and kinds from the kernels dataset."""
    gains = []
    for (kernel, sizes, device), rows in _groups(store, _device_filter(device_name)).items():
        best = min(rows, key=lambda r: r["median_ms"])
        defaults = [r["median_ms"] for r in rows if r["is_default"]]
        gains.append(KernelGain(kernel, json.loads(sizes), device,
                                min(defaults) if defaults else None, best["median_ms"],
                                json.loads(best["config_json"]), len(rows)))
    names = _kernel_names(store, {g.kernel_key for g in gains})
    gains = [_named(g, names.get(g.kernel_key)) for g in gains]
    return sorted(gains, key=lambda g: (g.speedup is None, -(g.speedup or 0), g.kernel_key))


def _numels(sizes: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in sizes.items() if k.endswith("numel")}


def _distance(a: dict[str, Any], b: dict[str, Any], ratio: float) -> float | None:
    """Sum of |log2| size ratios of two trial sizes (0: the same), or None if they are not
    "nearby": other numel names, dtypes or size arguments, or a numel ``ratio`` times apart."""
    na, nb = _numels(a), _numels(b)
    if set(na) != set(nb) or a.get("dtypes") != b.get("dtypes"):
        return None
    if len(a.get("size_args", ())) != len(b.get("size_args", ())):
        return None
    logs = [abs(math.log2(max(1, na[k]) / max(1, nb[k]))) for k in na]
    return sum(logs) if max(logs) <= math.log2(ratio) else None


def nearby_winners(store: Any, kernel_key: str, sizes: dict[str, Any], device_name: str,
                   ratio: float = 4.0, limit: int = 3) -> list[dict[str, Any]]:
    """Best configs of kernels like this one (the same numel names and dtypes) at sizes
    within ``ratio`` of ``sizes`` on ``device_name``: this kernel's own first, then the
    nearest; at most ``limit``, without repeats. A search starts from them (origin "nearby"):
    what won at a nearby size often wins here, and the roofline stop then ends it early.
    Configs of another kernel kind may come back; the caller keeps those its space fits."""
    found = []
    for (kernel, sizes_json, _), rows in _groups(store, _device_filter(device_name)).items():
        other = json.loads(sizes_json)
        distance = _distance(sizes, other, ratio)
        if distance is not None and (kernel, other) != (kernel_key, sizes):
            best = min(rows, key=lambda r: r["median_ms"])
            found.append((kernel != kernel_key, distance, best["config_json"]))
    configs = [config for *_, config in sorted(found)]
    return [json.loads(c) for c in dict.fromkeys(configs)][:limit]


def _kernel_names(store: Any, keys: set[str]) -> dict[str, tuple[str, str]]:
    if not keys:
        return {}
    from compiler.kernels.spec import KernelSpec
    table = store.lookup("kernels", sorted(keys), columns=["kernel_key", "name", "meta_json"])
    return {r["kernel_key"]: (r["name"], str(KernelSpec.from_json(r["meta_json"]).kind))
            for r in table.to_pylist()}


def _named(gain: KernelGain, name_kind: tuple[str, str] | None) -> KernelGain:
    if name_kind is None:
        return gain
    from dataclasses import replace
    return replace(gain, name=name_kind[0], kind=name_kind[1])


def plot_gains(gains: list[KernelGain], path: str, title: str = "") -> int:
    """A bar chart (PNG) of default time / tuned time per kernel; returns the bars drawn.

    Needs matplotlib (``pip install 'kiln[plot]'``): ImportError naming it otherwise. Kernels
    without a known default are left out; a ValueError when none is left.
    """
    rows = [g for g in gains if g.speedup is not None]
    if not rows:
        raise ValueError("no kernel has both a default and a best timing: nothing to plot")
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'kiln[plot]'") from None
    matplotlib.use("Agg")               # no display: write the file only
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows)), 4.5))
    ax.bar(range(len(rows)), [g.speedup for g in rows], color="tab:blue")
    ax.axhline(1.0, color="black", linewidth=0.8)
    labels = [f"{(g.name or g.kernel_key[:12])[:32]}\n{g.kind}" for g in rows]
    ax.set_xticks(range(len(rows)), labels, rotation=70, ha="right", fontsize=6)
    ax.set_ylabel("default time / tuned time")
    devices = sorted({g.device_name for g in rows})
    ax.set_title(title or f"kiln: speedup from tuning per kernel ({', '.join(devices)})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return len(rows)
