"""Compiled-module artifacts to store records and back.

A module row is self-contained: besides the module source it lists each kernel as the module
names it (name, key, source, meta), so ``get_artifact`` rebuilds the exact artifact from one
row, with one lookup. The kernels dataset keeps one row per ``kernel_key`` for the build and
tune stages, which work per kernel rather than per module.

The module's key columns come from the artifact's ``meta_json``: ``versions.torch``,
``versions.triton``, ``versions.kiln`` (or ``versions.compiler``), ``options_hash``,
``target`` (or ``device``, which the compiler writes: "cuda", "cpu") and ``arch`` (e.g.
"sm_90", once the build stage targets one). A missing torch or Triton version is taken from
the installed package (``put_artifact`` runs in the process that compiled); anything else
missing is stored as an empty string.

Example:
    >>> from compiler.artifact import CompiledArtifact
    >>> art = CompiledArtifact("m1", "g1", "def call(args): return args", (),
    ...                        '{"versions": {"torch": "2.13.0", "triton": "3.9.0", '
    ...                        '"compiler": "0.1.0"}, "target": "cpu", "arch": "cpu"}')
    >>> rec = module_record(art)
    >>> rec.torch_version, rec.target
    ('2.13.0', 'cpu')
    >>> artifact_from_row(records_to_table("modules", [rec]).to_pylist()[0]) == art
    True
"""
from __future__ import annotations

import dataclasses
import json
from importlib import metadata
from typing import Any

from compiler.artifact import CompiledArtifact, KernelArtifact

from .records import KernelRecord, ModuleRecord, records_to_table  # noqa: F401 (doctest)


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def _meta_fields(meta: dict[str, Any]) -> dict[str, str]:
    versions = meta.get("versions") or {}
    return {
        "torch_version": str(versions.get("torch") or _installed("torch")),
        "triton_version": str(versions.get("triton") or _installed("triton")),
        "compiler_version": str(versions.get("kiln") or versions.get("compiler") or ""),
        "options_hash": str(meta.get("options_hash") or ""),
        "target": str(meta.get("target") or meta.get("device") or ""),
        "arch": str(meta.get("arch") or ""),
        "model": meta.get("model") or None,
    }


def _kernel_entry(kernel: KernelArtifact) -> dict[str, str]:
    return {"name": kernel.name, "kernel_key": kernel.kernel_key, "source": kernel.source,
            "meta_json": kernel.meta_json}


def module_record(artifact: CompiledArtifact, **overrides: Any) -> ModuleRecord:
    """The modules row for ``artifact``; ``overrides`` replace fields read from its meta."""
    fields = {**_meta_fields(artifact.meta), **overrides}
    return ModuleRecord(
        module_key=artifact.module_key, graph_key=artifact.graph_key,
        source=artifact.source, meta_json=artifact.meta_json,
        kernel_keys=tuple(k.kernel_key for k in artifact.kernels),
        kernels=tuple(_kernel_entry(k) for k in artifact.kernels), **fields)


def kernel_records(artifact: CompiledArtifact) -> list[KernelRecord]:
    """One kernels row per distinct kernel key of ``artifact`` (a module may reuse one)."""
    first: dict[str, KernelArtifact] = {}
    for kernel in artifact.kernels:
        first.setdefault(kernel.kernel_key, kernel)
    return [KernelRecord(kernel_key=k.kernel_key, name=k.name, source=k.source,
                         meta_json=k.meta_json) for k in first.values()]


def artifact_from_row(row: dict[str, Any]) -> CompiledArtifact:
    """Rebuild the artifact from a modules row (as ``Table.to_pylist`` gives it)."""
    kernels = tuple(KernelArtifact.from_stored(k["name"], k["kernel_key"], k["source"],
                                               k["meta_json"]) for k in row["kernels"])
    return CompiledArtifact(module_key=row["module_key"], graph_key=row["graph_key"],
                            source=row["source"], kernels=kernels, meta_json=row["meta_json"])


def kernel_binaries(store: Any, artifact: Any, arch: int) -> dict[str, Any]:
    """Stored binaries of ``artifact``'s kernels at the configs its wrapper launches, built
    for ``sm_{arch}`` by the installed Triton: ``{kernel name: StoredBinary}``. Kernels
    without an intact, successfully built row are absent (they compile when first launched).
    """
    from compiler.kernels.serve import StoredBinary, triton_version
    from compiler.kernels.spec import Target

    from .records import BinaryRecord
    target = Target("cuda", arch, 32)
    wanted = {}
    for kernel in artifact.kernels:
        if not kernel.spec.launch.params or kernel.spec.candidate:
            continue
        key = BinaryRecord.key(kernel_key=kernel.kernel_key,
                               config=kernel.spec.launch.config().as_dict(),
                               arch=target.arch_name, target=target.name,
                               triton_version=triton_version())
        wanted.setdefault(key, []).append(kernel.name)   # same source and config: one binary
    if not wanted:
        return {}
    rows = store.rows("binaries", keys=wanted)
    found = {}
    for row in rows:
        if row["cubin"] and (row["status"] or "ok") == "ok":
            binary = StoredBinary(row["cubin"], json.loads(row["metadata_json"]))
            for name in wanted[row["binary_key"]]:   # one object: loaded once when served
                found[name] = binary
    return found
