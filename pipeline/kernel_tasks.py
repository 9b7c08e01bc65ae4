"""Build tasks, per distinct kernel, on CPU workers (the tune task: ``pipeline.tune_tasks``).

Like ``pipeline.tasks``, each is a top-level function of a small frozen job plus the store
root; it loads the kernel source from the store by ``kernel_key``, writes its own rows and
returns a ``TaskResult`` of counts. A config that does not compile, or needs more than the
target has, is a row with its status, never an exception.

``build_task`` compiles one kernel for one GPU architecture (``sm_90``) at the heuristic
default config, or when tuning is on at the configs a tune search will time (its cover: the
default and the cost model's first ``descent_budget`` candidates of the space, the order
``search_order`` gives the tune task too; a config past it is never timed), and writes one
binaries row per (kernel, config, target): its ``status`` column says ``ok``,
``build_error`` or ``resource_error`` and, for a failed config, ``error`` says why; a failed
config's ``cubin`` is empty unless it compiled but exceeds the target's limits. A config
whose row exists is not built again. A candidate that exceeds the target's limits for sure
(``compiler.autotune.prune``: threads, shared memory, registers, from its block sizes) is
not built at all and counted as ``pruned``; the tune stage records it as a trial with origin
"pruned". The task fails (a failures row, exit status 1) only when the *default* config
does not build: then no module using the kernel can run on that architecture as lowered.

Example:
    >>> from pipeline.shapes import KernelShape
    >>> shape = KernelShape("k", "pointwise1d", ("torch.float32",) * 2, (64, 64), (64,))
    >>> job = BuildJob(model="mlp", shape=shape, target="sm_90")
    >>> r = build_task(job, "/tmp/kiln-empty-store")          # doctest: +SKIP
    >>> r.status, r.error_type                                # doctest: +SKIP
    ('failed', 'KernelNotStored')
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config import cuda_arch
from pipeline.shapes import KernelShape
from pipeline.tasks import OK, SKIPPED, TaskResult, _failure



class KernelNotStored(LookupError):
    """The kernels dataset has no (intact) row for a kernel key the lower stage reported."""


class BuildError(RuntimeError):
    """The default config of a kernel did not build for a target."""


@dataclass(frozen=True)
class BuildJob:
    """Build ``shape.kernel_key`` for ``target`` (``sm_90``): the default config, or every
    candidate of ``space`` when ``tuning``. ``model`` is the first model that uses the
    kernel (for the log and failure rows); ``options_json`` the run's compiler options
    (the default config depends on them)."""
    model: str
    shape: KernelShape
    target: str
    tuning: bool = False
    space: str = "default"
    options_json: str = "{}"

    @property
    def record_key(self) -> str:
        return f"{self.shape.kernel_key}:{self.target}"


# --- shared helpers -----------------------------------------------------------------------------

def load_stored_kernel(store: Any, kernel_key: str) -> Any:
    """The ``KernelArtifact`` stored under ``kernel_key``."""
    from compiler.artifact import KernelArtifact
    row = store.get("kernels", kernel_key)
    if row is None:
        raise KernelNotStored(f"kernel {kernel_key} is not in store {store.root}")
    return KernelArtifact.from_stored(row["name"], row["kernel_key"], row["source"],
                                      row["meta_json"])


def _candidates(shape: KernelShape, spaces: Any, stencil: bool = False) -> list[Any]:
    """The space's candidates at ``shape``; ``stencil``: the kernel spec's flag."""
    from compiler.autotune import candidates
    if shape.kind not in spaces.spaces:
        return []
    return candidates(spaces.of_kernel(shape.kind, stencil), shape.numels)


def _extern(kernel: Any) -> list[Any]:
    """The extern path as a candidate where ``kernel``'s spec has a baseline: a GEMM
    template's is among its space's candidates already, a depthwise conv kernel's cuDNN
    conv (``compiler.codegen.depthwise_baseline``) is not."""
    from compiler.autotune.spaces import EXTERN
    return [EXTERN] if kernel.spec.baseline is not None else []


def search_order(shape: KernelShape, launch: Any, configs: list[Any], nearby: list[Any],
                 sms: int | None = None) -> list[Any]:
    """``configs`` in the order a tune search takes them: the default, the nearby winners,
    then the rest by the cost model (on ``sms`` SMs, else the model's card; its bandwidth
    is fixed, so the order does not move with a measurement)."""
    from compiler.autotune.cost import Machine, rank
    from compiler.autotune.prune import dtype_bytes, operand_bytes
    machine = Machine() if sms is None else Machine(sms=sms)
    rest = [c for c in configs if c != launch.default and c not in nearby]
    moved = sum(a.numel * dtype_bytes(a.dtype) for a in launch.args)
    ranked = rank(shape.kind, launch.numels, rest, moved, machine, operand_bytes(shape.dtypes))
    return [c for c in [launch.default, *nearby] if c in configs] + ranked


def cover_size(spaces: Any, configs: list[Any], nearby: list[Any]) -> int:
    """How many of ``search_order``'s configs a search may time: the default, the nearby
    winners among ``configs``, and the space's ``descent_budget``."""
    return 1 + len([c for c in nearby if c in configs]) + spaces.search.descent_budget


def kernel_launch(kernel: Any, shape: KernelShape, options_json: str) -> Any:
    """The launch a build or tune task ranks and times ``shape`` of ``kernel`` with."""
    from compiler.autotune import launch_from_meta
    from compiler.config import options_from_json
    return launch_from_meta(kernel, shape.dtypes, shape.extents, sizes=shape.numels,
                            device_type="cuda", options=options_from_json(options_json),
                            size_args=shape.size_args)


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return ""



# --- build --------------------------------------------------------------------------------------

def binary_row(result: Any) -> Any:
    """The binaries row of a ``BuildResult``, ok or not (see the module doc)."""
    from storage import BinaryRecord
    return BinaryRecord.build(kernel_key=result.kernel_key, config=result.config.as_dict(),
                              arch=result.target.arch_name, target=result.target.name,
                              triton_version=result.triton_version, cubin=result.cubin or b"",
                              metadata=result.metadata, status=result.status,
                              error=None if result.ok else result.error)


def _binary_key(kernel_key: str, config: Any, target: Any, triton_version: str) -> str:
    from storage import BinaryRecord
    return BinaryRecord.key(kernel_key=kernel_key, config=config.as_dict(),
                            arch=target.arch_name, target=target.name,
                            triton_version=triton_version)


def _stored_statuses(store: Any, keys: list[str]) -> dict[str, tuple[str, str]]:
    """``{binary_key: (status, error)}`` of the binaries rows among ``keys``."""
    table = store.lookup("binaries", keys, columns=["binary_key", "status", "error"])
    return {row["binary_key"]: (row["status"] or "ok", row["error"] or "")
            for row in table.to_pylist()}


def build_task(job: BuildJob, store_root: str) -> TaskResult:
    """Build what the store lacks of one kernel for one target; see the module doc."""
    start = time.perf_counter()
    shape = job.shape
    counts = {"built": 0, "build_errors": 0}
    try:
        if shape.error:
            raise ValueError(f"kernel {shape.kernel_key[:12]}: {shape.error}")
        import triton
        from compiler.autotune import Target, build, load_spaces
        from compiler.autotune.prune import prune
        from storage import Store
        store = Store(store_root)
        kernel = load_stored_kernel(store, shape.kernel_key)
        spaces = load_spaces(job.space)
        target = Target("cuda", cuda_arch(job.target), 32)
        # the launch's default follows every heuristic flag of the spec (rows_across,
        # stencil): the config the untuned module launches is the one built
        launch = kernel_launch(kernel, shape, job.options_json)
        default = launch.default
        configs = [default]
        if job.tuning:
            configs += _candidates(shape, spaces, stencil=kernel.spec.stencil) + _extern(kernel)
        configs, pruned = prune(shape.kind, list(dict.fromkeys(configs)),
                                spaces.targets.get(target.arch), shape.dtypes, default)
        if job.tuning:   # what a search will time (its cover), not the whole space
            configs = search_order(shape, launch, configs, [])[:cover_size(spaces, configs, [])]
        keys = {c: _binary_key(kernel.kernel_key, c, target, triton.__version__)
                for c in configs}
        stored = _stored_statuses(store, list(keys.values()))
        todo = [c for c in configs if keys[c] not in stored]
        built = [build(kernel, c, target, dtypes=shape.dtypes, sizes=shape.int_args,
                       limits=spaces.targets.get(target.arch)) for c in todo]
        if built:
            store.write("binaries", [binary_row(b) for b in built])
        default_status = next(((b.status, b.error or "") for b in built if b.config == default),
                              None) or stored[keys[default]]
        counts = {"built": sum(b.ok for b in built),
                  "build_errors": sum(not b.ok for b in built), "pruned": len(pruned)}
        if default_status[0] != "ok":
            raise BuildError(f"the default config ({default}) of {kernel.name} "
                             f"({shape.kind} {shape.describe()}) did not build for "
                             f"{job.target}: {default_status[0]}: {default_status[1]}")
        note = (f"{kernel.name} {job.target}: {counts['built']} built, "
                f"{counts['build_errors']} failed, {len(configs) - len(todo)} stored"
                + (f", {len(pruned)} pruned (exceed sm_{target.arch}'s limits)" if pruned
                   else ""))
        return TaskResult(stage="build", model=job.model, status=OK if built else SKIPPED,
                          key=job.record_key, target=job.target,
                          seconds=time.perf_counter() - start, note=note, **counts)
    except Exception as exc:
        # what was built before the failure is in the store and counted
        return dataclasses.replace(
            _failure("build", job.model, job.record_key, job.target, start, exc), **counts)
