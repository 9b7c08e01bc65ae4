"""Serving from a store: a model's precompiled module by name, bound to the live module's
weights, with no capture and no compile; and misses that say what differs.

``load_model(store, name, module)`` finds the module ``kiln run`` stored for the model named
``name`` in its zoo config, for this device (a GPU kind's tuned module first, else the
untuned one) and the installed torch, Triton and kiln; restores the calling convention kept
with it (input specs, pytree specs, constants); binds the module's parameters and buffers
by their state_dict names, checking shape, dtype and device; and hands every kernel its
stored cubin (``compiler.kernels.serve``). No torch.export, no Triton compile, no compile
pool, no gcc: on CUDA Triton is not even imported.

A miss is ``ModelMissError``, whose message names what differs from the nearest record
(``explain``): no such name, or the name stored for another target, GPU architecture,
torch, Triton or kiln version, or parameter dtype; and every row of the model the store
refused to use (a content hash or, in a signed store, a signature that fails), by file and
key. Nothing of a refused row is imported or launched.

Example:
    >>> import tempfile, torch
    >>> from storage import Store
    >>> try:
    ...     load_model(Store(tempfile.mkdtemp()), "mlp", torch.nn.Linear(2, 2))
    ... except ModelMissError as err:
    ...     print(str(err).split(":")[0])
    no model named 'mlp' in store ...
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import StoreMissError

if TYPE_CHECKING:
    import torch

    from .reader import Issue
    from .store import Store

MODULE_COLUMNS = ["module_key", "graph_key", "model", "target", "torch_version",
                  "triton_version", "compiler_version", "tuned_for", "created_at", "meta_json",
                  "kernel_keys"]


class ModelMissError(StoreMissError):
    """No stored module serves this model here; the message says what differs."""


@dataclass(frozen=True)
class Wanted:
    """What this process can run: target, GPU (name, arch) and versions."""
    target: str                  # "cuda" | "cpu"
    arch: str                    # "sm_90", "" on CPU
    device_name: str             # torch.cuda.get_device_name(), "" on CPU
    torch: str                   # release, no local part
    triton: str
    kiln: str
    dtypes: tuple[tuple[str, str], ...] = ()   # (state_dict name, dtype) of the parameters

    @classmethod
    def here(cls, device: Any = None, module: Any = None) -> "Wanted":
        import torch
        from compiler import __version__
        device = torch.device(device) if device is not None else _device_of(module)
        arch = name = ""
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            arch, name = f"sm_{major}{minor}", torch.cuda.get_device_name(index)
        dtypes = tuple((k, str(v.dtype)) for k, v in module.named_parameters()) \
            if module is not None else ()
        return cls("cuda" if device.type == "cuda" else "cpu", arch, name,
                   torch.__version__.split("+", 1)[0], _version("triton"), __version__, dtypes)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def _device_of(module: Any) -> "torch.device":
    import torch
    for t in [*module.parameters(), *module.buffers()] if module is not None else []:
        return t.device
    return torch.device("cpu")


def differences(row: dict[str, Any], wanted: Wanted, archs: set[str] | None = None
                ) -> list[str]:
    """What keeps a modules row (``MODULE_COLUMNS``) from serving ``wanted``, in words;
    ``archs``: the GPU architectures its kernels have binaries for (CUDA rows)."""
    out = []
    if row["target"] != wanted.target:
        out.append(f"stored for {row['target']}, this device is {wanted.target}")
    elif wanted.target == "cuda" and archs is not None and wanted.arch not in archs:
        built = ", ".join(sorted(archs)) or "no architecture"
        out.append(f"stored for {built}, this GPU is {wanted.arch}")
    if row["torch_version"].split("+", 1)[0] != wanted.torch:
        out.append(f"stored by torch {row['torch_version']}, running torch {wanted.torch}")
    if row["triton_version"] != wanted.triton:
        out.append(f"stored by Triton {row['triton_version']}, running Triton {wanted.triton}")
    if row["compiler_version"] != wanted.kiln:
        out.append(f"stored by kiln {row['compiler_version']}, running kiln {wanted.kiln}")
    call = json.loads(row["meta_json"]).get("call")
    if call is None:
        out.append("stored before kiln kept calling conventions: run kiln run again")
    elif wanted.dtypes:
        stored = {s["target"]: s["dtype"] for s in json.loads(call)["inputs"]
                  if s["kind"] == "parameter"}
        wrong = [(n, d) for n, d in wanted.dtypes if n in stored and stored[n] != d]
        if wrong:
            n, d = wrong[0]
            out.append(f"stored for {stored[n].removeprefix('torch.')} parameters, the "
                       f"module's are {d.removeprefix('torch.')} ({n})")
    return out


def _rows(store: "Store", name: str) -> list[dict[str, Any]]:
    """The modules rows of ``name`` (labels: the chosen row is read again, checked). Two
    passes: the names of all modules, then the few files that may hold this name's keys."""
    keys = [r["module_key"] for r in store.rows("modules", lambda r: r["model"] == name,
                                                  columns=["module_key", "model"], verify=False)]
    return store.rows("modules", keys=keys, columns=MODULE_COLUMNS, verify=False) if keys else []


def _archs(store: "Store", row: dict[str, Any]) -> set[str]:
    """GPU architectures every kernel of the module has an ok binary for."""
    keys = set(row["kernel_keys"])
    if not keys:
        return set()
    have: dict[str, set[str]] = {}
    for b in store.rows("binaries", lambda r: r["kernel_key"] in keys,
                        columns=["kernel_key", "arch", "status"], verify=False):
        if (b["status"] or "ok") == "ok":
            have.setdefault(b["arch"], set()).add(b["kernel_key"])
    return {arch for arch, built in have.items() if built >= keys}


def choose(store: "Store", name: str, wanted: Wanted, tuned: bool = True, *,
           check_archs: bool = True) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The modules row that serves ``wanted`` (this GPU's tuned one first when ``tuned``,
    then the untuned, newest first), and every row of the name (for ``explain``).
    ``check_archs`` also requires binaries for this GPU (``load_model`` instead finds out
    when it reads them: one read of the binaries, not two)."""
    rows = sorted(_rows(store, name), key=lambda r: r["created_at"], reverse=True)
    fits = [r for r in rows if not differences(r, wanted)]
    if wanted.target == "cuda" and check_archs:
        fits = [r for r in fits if wanted.arch in _archs(store, r)]
    ranked = [r for r in fits if tuned and r["tuned_for"] == wanted.device_name] + \
             [r for r in fits if r["tuned_for"] is None]
    return (ranked[0] if ranked else None), rows


def explain(store: "Store", name: str, wanted: Wanted, rows: list | None = None) -> str:
    """Why no stored module of ``name`` serves ``wanted``: the nearest record's differences."""
    rows = _rows(store, name) if rows is None else rows
    if not rows:
        known = sorted({r["model"] for r in store.rows("modules", columns=["model"],
                                                        verify=False) if r["model"]})
        return (f"no model named {name!r} in store {store.root}"
                + (f" (it holds {', '.join(known)})" if known else " (it holds no named models)"))
    scored = []
    for row in rows:
        archs = _archs(store, row) if row["target"] == "cuda" == wanted.target else None
        why = differences(row, wanted, archs)
        if not why and wanted.target == "cuda" and row["tuned_for"] not in (None, wanted.device_name):
            why = [f"only tuned for {row['tuned_for']}, not for {wanted.device_name}"]
        # the nearest: fewest differences, a row of this target before one of another
        scored.append(((len(why), row["target"] != wanted.target), why, row))
    (count, _), why, row = min(scored, key=lambda s: s[0])
    if not count:
        return f"model {name!r} is stored and serves this device (module {row['module_key'][:12]})"
    return (f"model {name!r} is stored, but not for this process: " + "; ".join(why)
            + f" (nearest: module {row['module_key'][:12]})")


def refusals(store: "Store", name: str) -> list["Issue"]:
    """The rows of model ``name`` the store refuses to use (tampered, or unsigned or signed
    with another key in a signed store): its modules rows and its kernels' binaries, each
    naming file and key. Read again on a miss only, quietly: the reads that missed warned."""
    import pyarrow.compute as pc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, refused = store.query_with_refusals("modules", pc.field("model") == name,
                                                  ["kernel_keys"])
        kernels = sorted({k for row in rows.to_pylist() for k in row["kernel_keys"]})
        if kernels:
            refused += store.query_with_refusals(
                "binaries", pc.field("kernel_key").isin(kernels), ["binary_key"])[1]
    return refused


def miss_message(store: "Store", name: str, wanted: Wanted, rows: list | None = None) -> str:
    """``explain``, followed by the rows of ``name`` the store refused (``refusals``)."""
    refused = refusals(store, name)
    text = explain(store, name, wanted, rows)
    return text + "".join(f"; refused {issue}" for issue in refused)


def load_model(store: "Store", name: str, module: "torch.nn.Module", *, device: Any = None,
               tuned: bool = True) -> Any:
    """The stored module of ``name`` as a callable used like ``module`` (see the module doc).
    Strict: a miss raises ``ModelMissError`` saying what differs from the nearest record and
    naming each refused row."""
    import torch
    where = torch.device(device) if device is not None else _device_of(module)
    wanted = Wanted.here(where, module)
    warming = None
    if wanted.target == "cuda":     # cuBLAS's set-up overlaps the loading (storage.warm)
        from .warm import warm_blas
        warming = warm_blas(where, module)
    try:
        return _load(store, name, module, wanted, tuned)
    finally:
        if warming is not None:
            warming.join()


def _load(store: "Store", name: str, module: "torch.nn.Module", wanted: Wanted,
          tuned: bool) -> Any:
    from compiler.convention import CallConvention
    from compiler.runtime import CompiledModel
    row, rows = choose(store, name, wanted, tuned, check_archs=False)
    if row is None:
        raise ModelMissError(miss_message(store, name, wanted, rows))
    artifact = store.get_artifact(row["module_key"])
    if artifact is None:     # vanished or tampered since the query: say so, never compile
        refused = "".join(f"; refused {issue}" for issue in refusals(store, name))
        raise ModelMissError(f"module {row['module_key']} of {name!r} is not intact in "
                             f"store {store.root}{refused}")
    convention = CallConvention.from_json(artifact.meta["call"], module)
    bind_state(convention, module, name)
    compiled = compiled_module(store, artifact, wanted)
    return CompiledModel(module, convention, compiled, cache_hit=True)


def bind_state(convention: Any, module: "torch.nn.Module", name: str) -> None:
    """Check that every parameter and buffer the module was compiled with is on ``module``
    with the stored shape, dtype and device; the error names the first that is not."""
    for spec in convention.inputs:
        if spec.kind not in ("parameter", "buffer"):
            continue
        try:
            t = (module.get_parameter(spec.target) if spec.kind == "parameter"
                 else module.get_buffer(spec.target))
        except AttributeError:
            raise ModelMissError(f"model {name!r}: the module has no {spec.kind} "
                                 f"{spec.target!r} (is it the model that was compiled?)") from None
        static = [d for d in range(len(spec.size)) if d not in spec.dynamic_dims]
        if (str(t.dtype) != spec.dtype or t.dim() != len(spec.size)
                or any(t.shape[d] != spec.size[d] for d in static)):
            raise ModelMissError(f"model {name!r}: {spec.kind} {spec.target!r} is "
                                 f"{t.dtype}{list(t.shape)}, compiled for "
                                 f"{spec.dtype}{list(spec.size)}")


def compiled_module(store: "Store", artifact: Any, wanted: Wanted) -> Any:
    """The artifact as a ``CompiledModule``: on CUDA every kernel runs its stored cubin (no
    Triton), on CPU the interpreter runs the source."""
    from compiler.config import load_options
    from compiler.runtime import CompiledModule, load_artifact
    options = load_options()
    if wanted.target != "cuda":
        return load_artifact(artifact, options.code_dir(), None, options.check_inputs)
    from compiler.kernels.serve import ServeError, serve_module
    from .artifacts import kernel_binaries
    binaries = kernel_binaries(store, artifact, int(wanted.arch.removeprefix("sm_")))
    try:
        module = serve_module(artifact, binaries, Path(options.code_dir()) / "binaries")
    except ServeError as err:
        if not binaries:     # none for this GPU at all: say which architectures there are
            raise ModelMissError(explain(store, artifact.meta.get("model"), wanted)) from None
        raise ModelMissError(f"module {artifact.module_key[:12]}: {err}") from None
    return CompiledModule(module, artifact, options.check_inputs)


def served(store: "Store", artifact: Any) -> Any:
    """``compiled_module`` for a CUDA artifact on this process's GPU, or None where it cannot
    be served from stored binaries (the caller then compiles)."""
    import torch
    if artifact.meta.get("device") != "cuda" or not torch.cuda.is_available():
        return None
    try:
        return compiled_module(store, artifact, Wanted.here("cuda"))
    except ModelMissError:
        return None


def why_not(store: "Store", graph_key: str, target: str, options_hash: str) -> str:
    """The difference between a wanted module (graph, target, options) and the stored modules
    of the same graph, in words."""
    import pyarrow.compute as pc
    from compiler import __version__
    rows = store.query("modules", pc.field("graph_key") == graph_key,
                       columns=["target", "options_hash", "compiler_version"]).to_pylist()
    if not rows:
        return "no module of this graph is stored (the model or its inputs differ)"
    notes = []
    for row in rows:
        why = [f"{label} {have}, wanted {want}" for label, have, want in (
            ("target", row["target"], target), ("options", row["options_hash"], options_hash),
            ("kiln", row["compiler_version"], __version__)) if have != want]
        notes.append("; ".join(why) or "an identical key that did not read back intact")
    return "stored modules of this graph differ: " + min(notes, key=len)
