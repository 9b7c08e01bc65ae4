"""Pipeline tasks: top-level functions on small frozen dataclasses, run on Dask workers.

Each task opens the store itself by path, writes its own records (the store's writes are
atomic, so concurrent workers and killed workers are safe) and returns a small
``TaskResult``: keys and counts, never graphs or modules. Tasks never raise for a model's
fault: an export error, a lowering error or a store error becomes a ``failed`` result that
carries the error type, message and traceback, so the runner records it and goes on.

Only ``capture_task`` runs the model's code. It stores the graph loadable
(``storage.graphs``: torch.export's JSON of the graph plus its calling convention, no
weights) after reading it back once to check that it keys the same; every later stage
works from the stored graph by its key (``stored_graph``), so a worker needs neither the
model's module nor its factory. A per-process memo keeps the last few graphs read (or
written), as lower runs next to capture when the scheduler can (the runner asks for that).
``restore_task`` is capture's stand-in for ``kiln relower``: it reads a stored graph and,
under a newer torch, stores it again under this torch's key.

Example:
    >>> from pipeline.config import ModelSpec
    >>> spec = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp")
    >>> r = capture_task(spec, "/tmp/kiln-doctest-store")   # doctest: +SKIP
    >>> r.status, len(r.key)                                # doctest: +SKIP
    ('ok', 64)
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import time
import traceback
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from pipeline.config import ModelSpec
from pipeline.shapes import KernelShape, kernel_shapes

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
_MESSAGE_CHARS = 4000


@dataclass(frozen=True)
class TaskResult:
    """What one task did. ``status``: ``ok`` (new records written), ``skipped`` (already in
    the store; ``repaired`` then says what the task wrote back that the store had lost) or
    ``failed``. ``key`` is the graph key (capture) or module key (lower), or
    the model's source when capture failed before a key existed.

    ``kernel_keys`` lists a lowered module's kernels; ``new_kernel_keys`` those the store did
    not hold before this task (the rest were reused); ``fallback_ops`` the ATen ops the
    module runs eagerly because the compiler has no lowering for them; ``kernel_shapes`` the
    sizes the module launches each kernel at (what build and tune fan out over).

    Build and tune results (``pipeline.kernel_tasks``) count what they did: ``built``
    binaries and ``build_errors`` (configs that did not compile or exceed the target's
    resources: rows too, never crashes); ``timed`` trials and ``trial_errors``;
    ``gpu_seconds`` spent launching and timing; ``speedup`` of the best config over the
    default; ``note`` one line for the log; ``warning`` what the user should know although
    the task succeeded (printed and listed in the summary).

    Issue 16's counts: ``pruned`` configs never built (they exceed the target's limits for
    sure); a tune's ``stop_reason`` ("roofline", "launch_bound", "budget", "halving") and
    the configs it left ``not_reached`` because of it; the configs it launched
    ``from_binary`` (stored by the build stage) and those it ``jit_compiled``, and the
    ``load_seconds`` that took (CPU time, not in ``gpu_seconds``).
    """
    stage: str
    model: str
    status: str
    key: str = ""
    target: str = ""
    seconds: float = 0.0
    kernel_keys: tuple[str, ...] = ()
    new_kernel_keys: tuple[str, ...] = ()
    fallback_ops: tuple[str, ...] = ()
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    attempts: int = 1
    kernel_shapes: tuple[KernelShape, ...] = ()
    built: int = 0
    build_errors: int = 0
    timed: int = 0
    trial_errors: int = 0
    gpu_seconds: float = 0.0
    speedup: float | None = None
    device: str = ""
    note: str = ""
    warning: str = ""
    repaired: str = ""
    pruned: int = 0
    not_reached: int = 0
    stop_reason: str = ""
    from_binary: int = 0
    jit_compiled: int = 0
    load_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def _failure(stage: str, model: str, key: str, target: str, start: float,
             exc: BaseException) -> TaskResult:
    message = str(exc).strip() or type(exc).__name__
    return TaskResult(stage=stage, model=model, status=FAILED, key=key, target=target,
                      seconds=time.perf_counter() - start, error_type=type(exc).__name__,
                      message=message[:_MESSAGE_CHARS],
                      traceback="".join(traceback.format_exception(exc))[-_MESSAGE_CHARS:])


# --- the per-process memo of captured graphs ----------------------------------------------------

class _GraphMemo:
    """The last few graphs this worker process read from the store or wrote, by graph key.

    A pure cache: a hit and a miss (read the store) give the same graph, so it needs no
    invalidation; it only saves reading the store again when lower runs where capture ran.
    """

    def __init__(self, capacity: int):
        self.capacity, self._items, self._lock = capacity, OrderedDict(), threading.Lock()

    def put(self, graph_key: str, captured: Any) -> None:
        with self._lock:
            self._items[graph_key] = captured
            self._items.move_to_end(graph_key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, graph_key: str) -> Any | None:
        with self._lock:
            return self._items.get(graph_key)


_GRAPHS = _GraphMemo(capacity=8)


# --- capture ----------------------------------------------------------------------------------

def _extend_path(search_path: tuple[str, ...]) -> None:
    """Append the spec's directories to ``sys.path`` (appended: an installed package of the
    same name, or kiln's own ``pipeline``/``storage``, is never shadowed by a local file)."""
    for directory in search_path:
        if directory not in sys.path:
            sys.path.append(directory)


def import_factory(path: str, search_path: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``package.module:function`` → the function; the module is looked for on ``sys.path``
    and then in ``search_path`` (a ``ModelSpec``'s: the config's and the working directory).

    >>> import_factory("pipeline.zoo.tiny:mlp").__name__
    'mlp'
    >>> import_factory("nomod:net", ("/srv/zoo",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ModuleNotFoundError: factory 'nomod:net': no module named 'nomod' in /srv/zoo, on PYTHONPATH...
    """
    module_name, _, attr = path.partition(":")
    module = _import_module(path, search_path)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"factory {path!r}: module {module_name!r} "
                             f"({getattr(module, '__file__', None) or 'no file'}) has no "
                             f"attribute {attr!r}") from None


def _import_module(factory: str, search_path: tuple[str, ...]) -> Any:
    """The factory's module; a missing one is an error that says where it was looked for."""
    module_name = factory.partition(":")[0]
    _extend_path(search_path)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise          # the factory's module imports something that is missing
        where = ", ".join(search_path) + ", " if search_path else ""
        raise ModuleNotFoundError(
            f"factory {factory!r}: no module named {exc.name!r} in {where}on PYTHONPATH or "
            f"among installed packages (a worker imports factories from the config's "
            f"directory and the directory kiln runs in; elsewhere, set PYTHONPATH)",
            name=exc.name) from None


def check_model(spec: ModelSpec) -> str | None:
    """What would stop ``spec`` from loading, found without building the model (``kiln run
    --dry-run``): a factory that does not import or is not a function, a ``.pt2`` that is
    not a readable archive. None when nothing is wrong.

    >>> check_model(ModelSpec("m", factory="pipeline.zoo.tiny:mlp")) is None
    True
    >>> check_model(ModelSpec("m", pt2="/nonexistent.pt2"))
    '/nonexistent.pt2: no such file'
    """
    if spec.pt2 is not None:
        if not os.path.isfile(spec.pt2):
            return f"{spec.pt2}: no such file"
        try:
            if not zipfile.is_zipfile(spec.pt2):
                return f"{spec.pt2}: not a .pt2 archive (torch.export.save writes a zip file)"
        except OSError as exc:
            return f"{spec.pt2}: cannot read: {exc.strerror or exc}"
        return None
    try:
        factory = import_factory(spec.factory or "", spec.search_path)
    except Exception as exc:   # any import-time error of the user's module
        return f"{type(exc).__name__}: {exc}"
    return None if callable(factory) else f"factory {spec.factory!r} is not callable"


def _dynamic_shapes(spec: ModelSpec, args: tuple) -> tuple | None:
    """torch.export ``dynamic_shapes`` for the positional args: one ``{dim: Dim}`` per arg."""
    if not spec.dynamic:
        return None
    import torch
    dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max) for d in spec.dynamic}
    shapes: list[dict | None] = [None] * len(args)
    for d in spec.dynamic:
        if d.input >= len(args):
            raise ValueError(f"model {spec.name!r}: dynamic dim names input {d.input}, but the "
                             f"factory returns {len(args)} positional input(s)")
        rank = getattr(args[d.input], "ndim", 0)
        if d.dim >= rank:
            raise ValueError(f"model {spec.name!r}: dynamic dim {d.name!r} is dim {d.dim} of "
                             f"input {d.input}, which has {rank} dim(s)")
        shapes[d.input] = {**(shapes[d.input] or {}), d.dim: dims[d.name]}
    return tuple(shapes)


def _cast(value: Any, dtype: Any) -> Any:
    """Floating tensors to ``dtype``; integer inputs (token ids, indices) stay as they are."""
    import torch
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def capture_model(spec: ModelSpec, notes: list[str] | None = None) -> Any:
    """Build (or load) the model of ``spec`` and capture it into a ``CapturedGraph``;
    ``notes`` gets a line for anything the user should know (see ``build_model``)."""
    from compiler.capture import capture_exported, capture_module, load_pt2
    if spec.pt2 is not None:
        return capture_exported(load_pt2(spec.pt2), name=spec.name)
    module, args, dynamic_shapes = build_model(spec, notes)
    return capture_module(module, args, dynamic_shapes=dynamic_shapes, name=spec.name)


def build_model(spec: ModelSpec, notes: list[str] | None = None) -> tuple[Any, tuple, Any]:
    """``(module, args, dynamic_shapes)`` of a factory ``spec``, on CPU in the spec's dtype:
    what ``capture_model`` captures (a serving process moves the same to its GPU).

    A factory returns ``(module, example_args)``, or ``(module, example_args,
    dynamic_shapes)`` with torch.export's ``dynamic_shapes`` when it knows its own dynamic
    dims (``pipeline.zoo.blocks.gpt2_block_dynamic``); the config's ``dynamic`` is the other
    way to say it, and giving both is an error.

    A zoo is compiled for inference: a module the factory returns in train mode (as every
    freshly built ``nn.Module`` is) is switched to eval mode before capture, so dropout and
    batch statistics are not compiled; ``notes`` gets a line saying so.

    >>> module, args, dynamic = build_model(ModelSpec("mlp", factory="pipeline.zoo.tiny:mlp"))
    >>> type(module).__name__, args[0].dtype, dynamic
    ('MLP', torch.float32, None)
    """
    import torch
    made = import_factory(spec.factory, spec.search_path)(**spec.kwargs)
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise TypeError(f"factory {spec.factory!r} must return (module, example_args) or "
                        f"(module, example_args, dynamic_shapes), got {type(made).__name__}")
    module, args = made[0], made[1] if isinstance(made[1], tuple) else (made[1],)
    if getattr(module, "training", False):
        module.eval()
        if notes is not None:
            notes.append("the factory returned a module in train mode; compiled in eval mode "
                         "(no dropout, batch-norm running statistics)")
    dynamic_shapes = _dynamic_shapes(spec, args)
    if len(made) == 3:
        if dynamic_shapes is not None:
            raise ValueError(f"model {spec.name!r}: factory {spec.factory!r} returns its own "
                             f"dynamic_shapes; remove 'dynamic' from the config entry")
        dynamic_shapes = made[2]
    dtype = getattr(torch, spec.dtype)
    return module.to(dtype), _cast(args, dtype), dynamic_shapes


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _module_source(factory: str, search_path: tuple[str, ...] = ()) -> str:
    """The source text of a factory's module, read from its file without importing it (a
    zoo module may import heavy libraries); ``inspect.getsource`` of the imported module
    where there is no plain source file."""
    _extend_path(search_path)
    try:
        found = importlib.util.find_spec(factory.partition(":")[0])
    except ModuleNotFoundError:      # a missing parent package
        found = None
    origin = getattr(found, "origin", None)
    if origin and origin.endswith(".py"):
        with open(origin, encoding="utf-8") as f:
            return f.read()
    return inspect.getsource(_import_module(factory, search_path))


def source_key(spec: ModelSpec) -> str:
    """sha256 of everything a captured graph depends on, known before capturing it.

    The model (factory path, kwargs and the source text of the factory's module, so editing
    the model code changes it; or a ``.pt2`` file's content hash), its dtype and dynamic
    dims, the torch release (``torch_version_for_key``) and the kiln compiler version. A run
    looks its graph up by this key (``Store.graph_for_source``) instead of capturing again.
    Code the factory's module imports from elsewhere is not covered.

    >>> a = ModelSpec("m", factory="pipeline.zoo.tiny:mlp", kwargs_json='{"batch": 4}')
    >>> source_key(a) == source_key(a), source_key(a) == source_key(
    ...     dataclasses.replace(a, kwargs_json='{"batch": 8}'))
    (True, False)
    """
    from compiler import __version__
    from compiler.capture import torch_version_for_key
    from storage import canonical_json
    if spec.pt2 is not None:
        model: dict[str, Any] = {"pt2_sha256": _file_sha256(spec.pt2)}
    else:
        model = {"factory": spec.factory, "kwargs": spec.kwargs,
                 "module_source_sha256": hashlib.sha256(
                     _module_source(spec.factory or "", spec.search_path).encode()).hexdigest()}
    # "eval": factories' modules are captured in eval mode (capture_model); graphs stored
    # before that rule, which may hold train-mode dropout, are not found by this key.
    parts = {"model": model, "dtype": spec.dtype, "mode": "eval",
             "dynamic": [dataclasses.asdict(d) for d in spec.dynamic],
             "torch": torch_version_for_key(), "kiln": __version__}
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def storable(captured: Any) -> tuple[Any, Any]:
    """``(serialized, read back)``: the graph as the store keeps it, and that read back as a
    lower task will read it; ``GraphFormatError`` where it does not key the same, so a graph
    that would not lower from the store fails its capture, not every later stage."""
    from compiler.capture_serde import dump_graph, load_graph
    serialized = dump_graph(captured)
    return serialized, load_graph(serialized)


def stored_graph(store: Any, graph_key: str) -> Any:
    """The ``CapturedGraph`` of a stored graph, from this process's memo or the store."""
    captured = _GRAPHS.get(graph_key)
    if captured is None:
        captured = store.load_graph(graph_key)
        _GRAPHS.put(graph_key, captured)
    if captured.graph_key != graph_key:
        raise RuntimeError(f"graph {graph_key[:12]} was stored by another torch release and "
                           f"reads as graph {captured.graph_key[:12]} here: kiln relower "
                           f"stores it under this torch's key")
    return captured


def capture_task(spec: ModelSpec, store_root: str) -> TaskResult:
    """Capture one model; write its graph row (loadable, with its ``source_key``) unless the
    store has that graph under that source key already.

    >>> capture_task(ModelSpec("x", factory="no.such.module:f"), "/tmp/s").error_type
    'ModuleNotFoundError'
    """
    start = time.perf_counter()
    try:
        source = source_key(spec)
        notes: list[str] = []
        captured = capture_model(spec, notes)
        serialized, loaded = storable(captured)
        _GRAPHS.put(captured.graph_key, loaded)
        from storage import Store
        from storage.graphs import graph_record
        store = Store(store_root)
        status = SKIPPED
        if not _loadable(store, captured.graph_key):
            store.write("graphs", [graph_record(captured, spec.name, source, serialized)])
            status = OK
        elif store.graph_for_source(source) != captured.graph_key:
            # The graph is stored, but not under this source (an older row, another model
            # with the same graph): add a row that names it, so the next run finds it.
            store.write("graphs", [graph_record(captured, spec.name, source, serialized)])
        return TaskResult(stage="capture", model=spec.name, status=status,
                          key=captured.graph_key, seconds=time.perf_counter() - start,
                          warning="; ".join(notes))
    except Exception as exc:
        return _failure("capture", spec.name, spec.source, "", start, exc)


def _loadable(store: Any, graph_key: str) -> bool:
    """Whether a graphs row of ``graph_key`` holds the loadable graph (rows before schema v4
    name it only: capture writes one that does)."""
    import pyarrow.compute as pc
    return store.query("graphs", (pc.field("graph_key") == graph_key)
                       & pc.field("program").is_valid(), columns=["graph_key"]).num_rows > 0


def restore_task(spec: ModelSpec, store_root: str) -> TaskResult:
    """``kiln relower``'s capture: read the stored graph ``spec.graph_key`` with this torch.
    Stored by this torch release, nothing is written (``skipped``); by another one that
    reads, the graph is stored again under this torch's key (``ok``, the new key); one
    that cannot be read fails with the reason (``GraphFormatError``).

    >>> spec = ModelSpec("m", graph_key="0" * 64)
    >>> restore_task(spec, "/tmp/kiln-doctest-empty").error_type
    'GraphMissError'
    """
    start = time.perf_counter()
    try:
        from storage import Store
        from storage.graphs import graph_record
        store = Store(store_root)
        captured = store.load_graph(spec.graph_key)
        _GRAPHS.put(captured.graph_key, captured)
        result = functools.partial(TaskResult, stage="capture", model=spec.name,
                                   key=captured.graph_key)
        if captured.graph_key == spec.graph_key:
            return result(status=SKIPPED, seconds=time.perf_counter() - start,
                          note="stored graph read")
        if not _loadable(store, captured.graph_key):
            store.write("graphs", [graph_record(captured, spec.name)])
        return result(status=OK, seconds=time.perf_counter() - start,
                      note=f"stored graph {spec.graph_key[:12]} (another torch) stored again "
                           f"as {captured.graph_key[:12]} for this torch")
    except Exception as exc:
        return _failure("capture", spec.name, spec.source, "", start, exc)


# --- lower ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LowerJob:
    """One module to lower: a stored graph (by key; ``model`` names it in results and module
    rows) for one target.

    ``target`` is the compiler's (``cpu`` or ``cuda``); ``options_json`` the compiler option
    overrides of the run.
    """
    model: str
    graph_key: str
    target: str
    options_json: str = "{}"


def _stored_kernels(store: Any, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    table = store.lookup("kernels", keys, columns=["kernel_key"])
    return set(table.column("kernel_key").to_pylist())


def _fallbacks(meta_json: str) -> tuple[str, ...]:
    return tuple(json.loads(meta_json).get("fallback_ops", ()))


def _example_sizes(store: Any, graph_key: str, captured: Any = None) -> list[list[int]]:
    """The example size of every graph input: from the captured graph when at hand, else
    from the stored graph row's input signature."""
    if captured is not None:
        return [list(s.size) for s in captured.inputs]
    row = store.get("graphs", graph_key)
    if row is None:
        return []
    return [list(s.get("size", ())) for s in json.loads(row["input_signature"])]


def lower_task(job: LowerJob, store_root: str) -> TaskResult:
    """Lower one captured graph for one target; store the module and its new kernels.

    A module already in the store is not lowered again: its key depends only on the graph
    key, the compiler version, the code-changing options and the target. Either way the
    result lists the module's kernels with the concrete sizes it launches them at.
    """
    start = time.perf_counter()
    key = f"{job.graph_key}:{job.target}"
    try:
        from compiler.api import lower, module_key
        from compiler.config import options_from_json
        from compiler.kernels.spec import KernelSpec
        from storage import Store
        from storage.repair import restore_kernels
        options = options_from_json(job.options_json)
        key = module_key(job.graph_key, options, job.target)
        store = Store(store_root)
        stored = store.lookup("modules", key,
                              columns=["kernel_keys", "kernels", "meta_json"]).to_pylist()
        if stored:
            row = stored[0]
            # Build and tune read kernels rows: restore any the store lost (a deleted file).
            restored = restore_kernels(store, [row])
            shapes = kernel_shapes(
                json.loads(row["meta_json"]),
                [(k["kernel_key"], KernelSpec.from_json(k["meta_json"])) for k in row["kernels"]],
                lambda: _example_sizes(store, job.graph_key))
            return TaskResult(stage="lower", model=job.model, status=SKIPPED, key=key,
                              target=job.target, seconds=time.perf_counter() - start,
                              kernel_keys=tuple(row["kernel_keys"]),
                              fallback_ops=_fallbacks(row["meta_json"]), kernel_shapes=shapes,
                              repaired=f"restored {restored} kernels row(s) the store had "
                                       f"lost, from the stored module" if restored else "")
        captured = stored_graph(store, job.graph_key)
        artifact = lower(captured, options, target=job.target)
        kernel_keys = tuple(dict.fromkeys(k.kernel_key for k in artifact.kernels))
        known = _stored_kernels(store, list(kernel_keys))
        store.put_artifact(artifact)
        shapes = kernel_shapes(artifact.meta, [(k.kernel_key, k.spec) for k in artifact.kernels],
                               lambda: _example_sizes(store, job.graph_key, captured))
        return TaskResult(stage="lower", model=job.model, status=OK, key=artifact.module_key,
                          target=job.target, seconds=time.perf_counter() - start,
                          kernel_keys=kernel_keys,
                          new_kernel_keys=tuple(k for k in kernel_keys if k not in known),
                          fallback_ops=_fallbacks(artifact.meta_json), kernel_shapes=shapes)
    except Exception as exc:
        return _failure("lower", job.model, key, job.target, start, exc)
