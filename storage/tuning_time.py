"""Where tuning time went, and what it gained per model: the trials' v5 columns made visible.

Per (kernel, sizes, GPU kind): the GPU seconds its trials cost (``gpu_s``), how many configs
were timed, pruned before building (origin "pruned") or tried first because they won at a
nearby size (origin "nearby"), and why its search stopped (``stop_reason``: "roofline" when
a config came within 90% of the copy bandwidth). Per model (the ``model`` column of its
modules): the kernels' default and best times summed, one launch of each kernel at each
timed size, which is what tuning changes end to end when every kernel runs once.

Rows from before schema v5 have no ``gpu_s``: their kernels count as tuned but not in the
GPU seconds nor in kernels per minute.

Example:
    >>> import tempfile
    >>> from storage import Store, TrialRecord
    >>> store = Store(tempfile.mkdtemp())
    >>> def trial(block, ms, **extra):
    ...     return TrialRecord.timed(kernel_key="k1", sizes={"xnumel": 4096},
    ...         config={"XBLOCK": block}, device_name="H200", arch="sm_90", driver="d",
    ...         triton_version="3.6.0", torch_version="2.11", times_ms=[ms], **extra)
    >>> _ = store.write("trials", [trial(1024, 0.02, gpu_s=0.25, stop_reason="roofline"),
    ...                            trial(64, 0.0, status="resource_error", origin="pruned")])
    >>> t = tuning_time(store)
    >>> t.kernels, t.roofline, t.pruned, t.gpu_s, t.kernels_per_minute
    (1, 1, 1, 0.25, 240.0)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from .tuning import KernelGain, _device_filter

_COLUMNS = ["kernel_key", "sizes_json", "device_name", "status", "origin", "gpu_s",
            "stop_reason"]


@dataclass(frozen=True)
class KernelTime:
    """The tuning cost of one kernel at one size on one GPU kind."""
    kernel_key: str
    sizes_json: str
    device_name: str
    gpu_s: float | None               # None: no v5 row says
    timed: int
    pruned: int
    nearby: int
    stop_reason: str                  # "" where no row says


@dataclass(frozen=True)
class TuningTime:
    per_kernel: tuple[KernelTime, ...]

    @property
    def kernels(self) -> int:
        return len(self.per_kernel)

    @property
    def timed(self) -> int:
        return sum(k.timed for k in self.per_kernel)

    @property
    def pruned(self) -> int:
        return sum(k.pruned for k in self.per_kernel)

    @property
    def nearby(self) -> int:
        return sum(k.nearby for k in self.per_kernel)

    @property
    def roofline(self) -> int:
        return sum(k.stop_reason == "roofline" for k in self.per_kernel)

    @property
    def gpu_s(self) -> float:
        return sum(k.gpu_s for k in self.per_kernel if k.gpu_s is not None)

    @property
    def kernels_per_minute(self) -> float | None:
        counted = sum(k.gpu_s is not None for k in self.per_kernel)
        return counted / (self.gpu_s / 60) if self.gpu_s > 0 else None


def _kernel_time(key: tuple[str, str, str], rows: list[dict[str, Any]]) -> KernelTime:
    spent = [r["gpu_s"] for r in rows if r["gpu_s"] is not None]
    reasons = {r["stop_reason"] for r in rows if r["stop_reason"]}
    reason = "roofline" if "roofline" in reasons else ",".join(sorted(reasons))
    return KernelTime(*key, gpu_s=sum(spent) if spent else None,
                      timed=sum(r["status"] == "ok" for r in rows),
                      pruned=sum(r["origin"] == "pruned" for r in rows),
                      nearby=sum(r["origin"] == "nearby" for r in rows), stop_reason=reason)


def tuning_time(store: Any, device_name: str | None = None) -> TuningTime:
    """The cost of every tuned (kernel, sizes, GPU kind), most GPU seconds first."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in store.query("trials", _device_filter(device_name), columns=_COLUMNS).to_pylist():
        groups[(row["kernel_key"], row["sizes_json"], row["device_name"])].append(row)
    per_kernel = [_kernel_time(key, rows) for key, rows in sorted(groups.items())]
    return TuningTime(tuple(sorted(per_kernel, key=lambda k: -(k.gpu_s or 0.0))))


@dataclass(frozen=True)
class ModelGain:
    """A model's kernels, default vs best, summed (one launch each at each timed size)."""
    model: str
    device_name: str
    kernels: int                      # kernel sizes with a known default and best
    default_ms: float
    best_ms: float
    gpu_s: float

    @property
    def speedup(self) -> float:
        return self.default_ms / self.best_ms if self.best_ms else 1.0


def model_kernels(store: Any) -> dict[str, set[str]]:
    """``{model: kernel keys}`` of the stored modules that name their model."""
    table = store.query("modules", pc.field("model").is_valid(),
                        columns=["model", "kernel_keys"])
    out: dict[str, set[str]] = defaultdict(set)
    for row in table.to_pylist():
        out[row["model"]].update(row["kernel_keys"] or ())
    return dict(out)


def model_gains(store: Any, gains: list[KernelGain], time: TuningTime) -> list[ModelGain]:
    """Per model and GPU kind, from ``tuning_gains`` and ``tuning_time``; largest gain first."""
    spent: dict[tuple[str, str], float] = defaultdict(float)
    for k in time.per_kernel:
        spent[(k.kernel_key, k.device_name)] += k.gpu_s or 0.0
    out = []
    for model, keys in sorted(model_kernels(store).items()):
        for device in sorted({g.device_name for g in gains}):
            mine = [g for g in gains if g.kernel_key in keys and g.device_name == device
                    and g.default_ms is not None]
            if mine:
                out.append(ModelGain(model, device, len(mine), sum(g.default_ms for g in mine),
                                     sum(g.best_ms for g in mine),
                                     sum(spent[(k, device)] for k in keys)))
    return sorted(out, key=lambda m: -m.speedup)


def describe_time(time: TuningTime) -> str:
    """One line: where the tuning GPU time went."""
    rate = time.kernels_per_minute
    per_kernel = time.gpu_s / time.kernels if time.kernels else 0.0
    return (f"tuning time: {time.gpu_s:.1f} GPU-s over {time.kernels} kernel sizes "
            f"({per_kernel:.2f} GPU-s each"
            + (f", {rate:.1f} kernels per GPU-minute" if rate else "") + f"); "
            f"{time.timed} configs timed, {time.pruned} pruned before building, "
            f"{time.nearby} tried first from nearby sizes; {time.roofline} kernel sizes "
            f"stopped at the roofline")


def describe_models(models: list[ModelGain]) -> list[str]:
    """A table of per-model gains (see ``ModelGain``)."""
    if not models:
        return []
    lines = [f"{'model':<28} {'kernels':>7} {'default ms':>10} {'best ms':>9} {'speedup':>7} "
             f"{'GPU-s':>7}  device"]
    lines += [f"{m.model[:28]:<28} {m.kernels:>7} {m.default_ms:>10.4f} {m.best_ms:>9.4f} "
              f"{m.speedup:>6.2f}x {m.gpu_s:>7.1f}  {m.device_name}" for m in models]
    return lines


def plot_time(time: TuningTime, path: str, limit: int = 60) -> int:
    """A bar chart (PNG) of GPU seconds per kernel size, coloured by why its search stopped;
    returns the bars drawn (the ``limit`` costliest). Needs matplotlib."""
    rows = [k for k in time.per_kernel if k.gpu_s][:limit]
    if not rows:
        raise ValueError("no trial records its GPU seconds (schema v5): nothing to plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"roofline": "tab:green", "launch_bound": "tab:olive", "budget": "tab:red",
               "halving": "tab:blue"}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(rows)), 4.5))
    ax.bar(range(len(rows)), [k.gpu_s for k in rows],
           color=[colours.get(k.stop_reason, "tab:gray") for k in rows])
    ax.set_xticks(range(len(rows)), [k.kernel_key[:10] for k in rows], rotation=70,
                  fontsize=6)
    ax.set_ylabel("GPU-s spent tuning")
    ax.set_title("kiln: tuning time per kernel size (green: roofline stop, olive: launch "
                 "bound, blue: halving, red: budget)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return len(rows)
