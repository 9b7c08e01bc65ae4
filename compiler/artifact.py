"""The compiled-module artifact and the cache protocol the store implements.

An artifact is plain data (text, JSON): the whole Python module source (kernels and wrapper),
each kernel's own source keyed by its content hash with its ``KernelSpec`` (the typed kernel
contract, ``compiler.kernels.spec``), and metadata describing the inputs the module was
compiled for. No pickles: a deployment rebuilds the callable from the text alone.

Example:
    >>> art = CompiledArtifact(module_key="m", graph_key="g", source="...", kernels=(),
    ...                        meta_json="{}")
    >>> art.meta == {}
    True
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .kernels.spec import KernelSpec


def content_hash(text: str | bytes) -> str:
    """sha256 hex digest: the key of a kernel's source, a module's source, a binary."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class KernelArtifact:
    """One generated Triton kernel.

    ``kernel_key`` is the hash of ``source`` with the kernel renamed to a fixed name, and of
    its pointer dtypes, so the same fused computation in fifty graphs is one key. ``spec``
    is everything else build, tune, precompile and the store know of it; ``meta_json`` its
    stored form.
    """
    name: str
    kernel_key: str
    source: str
    spec: KernelSpec

    @property
    def meta_json(self) -> str:
        return self.spec.to_json()

    @classmethod
    def from_stored(cls, name: str, kernel_key: str, source: str,
                    meta_json: str) -> "KernelArtifact":
        """A kernel as the store keeps it (``meta_json`` is its spec's JSON)."""
        return cls(name, kernel_key, source, KernelSpec.from_json(meta_json))


@dataclass(frozen=True)
class CompiledArtifact:
    """A compiled module: ``source`` is importable Python defining ``call(args)``.

    ``meta_json`` holds the input specs (size, stride, dtype, device per flat input), the
    output count, versions (torch, triton, compiler) and the options hash.
    """
    module_key: str
    graph_key: str
    source: str
    kernels: tuple[KernelArtifact, ...]
    meta_json: str

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_json)


@runtime_checkable
class ArtifactCache(Protocol):
    """What ``compile_module(..., cache=...)`` needs; ``storage.Store`` implements it."""

    def get_artifact(self, module_key: str) -> CompiledArtifact | None:
        """The artifact stored under ``module_key``, or None on a miss."""

    def put_artifact(self, artifact: CompiledArtifact) -> None:
        """Store ``artifact`` under its ``module_key`` (idempotent)."""
