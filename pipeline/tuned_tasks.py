"""The tuned module of a model: its graph lowered again with the best stored launch configs.

Once every kernel shape of a model's CUDA module has been through the tune stage, the runner
submits one ``relower_task`` per GPU kind that tuned them. The task reads the best ``ok``
trial of each kernel at the sizes the module launches it at, on that GPU kind
(``storage.tuning.best_trials``), lowers the captured graph again with those configs
(``compiler.api.lower(captured, options, "cuda", configs=...)``, the graph read from the
store as lower reads it) and stores the module with
``tuned_for`` = the device name. A deployment finds it with
``Store.tuned_module(graph_key, torch.cuda.get_device_name())`` and loads it like any module:
the wrapper launches the tuned configs, nothing is compiled or tuned on the serving machine.

The configs are part of the module key, so a rerun that finds the same best trials computes
the same key, finds the module stored and skips it without reading the graph; a later sweep
that found faster configs stores a new module (``tuned_module`` returns the newest). A kernel
launched at several sizes in one module gets the config of the size with the most time at
stake (the wrapper takes one config per kernel); kernels never timed keep the heuristic.

Example:
    >>> job = RelowerJob(model="m", graph_key="g" * 64, device_name="NVIDIA H100 80GB HBM3",
    ...                  shapes=())
    >>> job.record_key
    'gggggggggggggggg...:cuda:tuned-for:NVIDIA H100 80GB HBM3'
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

from pipeline.shapes import KernelShape
from pipeline.tasks import OK, SKIPPED, TaskResult, _failure, stored_graph


@dataclass(frozen=True)
class RelowerJob:
    """Lower the stored graph ``graph_key`` (of ``model``) for CUDA with the best configs
    that ``device_name`` measured for ``shapes`` (the kernel shapes of its untuned module)."""
    model: str
    graph_key: str
    device_name: str
    shapes: tuple[KernelShape, ...]
    options_json: str = "{}"

    @property
    def record_key(self) -> str:
        return f"{self.graph_key[:16]}...:cuda:tuned-for:{self.device_name}"


def tuned_configs(store: Any, device_name: str,
                  shapes: Iterable[KernelShape]) -> dict[str, dict[str, Any]]:
    """``{kernel_key: best config}`` on ``device_name`` at the sizes of ``shapes``; a kernel
    with several shapes gets the config of the one with the largest best time. Where a
    depthwise conv kernel's best was cuDNN (``{"extern": 1}``), the conv's own key gets
    that config too: lowering reads it there (``compiler.codegen.depthwise_baseline``)."""
    from storage import canonical_json
    from storage.tuning import best_trials
    shapes = [s for s in shapes if not s.error]
    best = {(b.kernel_key, canonical_json(b.sizes)): b
            for b in best_trials(store, device_name, sorted({s.kernel_key for s in shapes}))}
    chosen: dict[str, Any] = {}
    for shape in shapes:
        found = best.get((shape.kernel_key, canonical_json(shape.trial_sizes())))
        held = chosen.get(shape.kernel_key)
        if found is not None and (held is None or found.median_ms > held.median_ms):
            chosen[shape.kernel_key] = found
    configs = {key: b.config for key, b in sorted(chosen.items())}
    return {**configs, **_depthwise_choices(store, configs)}


def _depthwise_choices(store: Any, configs: dict[str, Any]) -> dict[str, dict]:
    """The conv keys of the kernels among ``configs`` whose extern path won (their specs,
    read from the store, say which conv: ``depthwise_choices``)."""
    from compiler.codegen.depthwise_baseline import depthwise_choices
    from pipeline.kernel_tasks import load_stored_kernel
    kernels = [load_stored_kernel(store, key) for key, c in configs.items() if c.get("extern")]
    return depthwise_choices(kernels, configs)


def relower_task(job: RelowerJob, store_root: str) -> TaskResult:
    """Store the tuned module of ``job`` unless it is stored already; see the module doc."""
    start = time.perf_counter()
    key = job.record_key
    name = job.model

    def result(status: str, note: str, **fields: Any) -> TaskResult:
        return TaskResult(stage="relower", model=name, status=status, key=key, target="cuda",
                          device=job.device_name, seconds=time.perf_counter() - start,
                          note=note, **fields)
    try:
        import pyarrow.compute as pc
        from compiler.api import lower, module_key
        from compiler.config import options_from_json
        from storage import Store
        options = options_from_json(job.options_json)
        store = Store(store_root)
        configs = tuned_configs(store, job.device_name, job.shapes)
        if not configs:
            return result(SKIPPED, f"no kernel of {name} has an ok trial on {job.device_name}")
        key = module_key(job.graph_key, options, "cuda", configs)
        if store.query("modules", (pc.field("module_key") == key)
                       & (pc.field("tuned_for") == job.device_name),
                       columns=["module_key"]).num_rows:
            return result(SKIPPED, f"tuned module for {job.device_name} already stored")
        captured = stored_graph(store, job.graph_key)
        artifact = lower(captured, options, "cuda", configs)
        store.put_artifact(artifact, tuned_for=job.device_name)
        tuned = sum(k.spec.launch.tuned for k in artifact.kernels)
        return result(OK, f"{name}: {tuned} of {len(artifact.kernels)} kernel launches use "
                          f"configs tuned on {job.device_name}",
                      kernel_keys=tuple(dict.fromkeys(k.kernel_key for k in artifact.kernels)))
    except Exception as exc:
        return _failure("relower", name, key, "cuda", start, exc)
