"""Record factories shared by the storage tests (no tests here).

Every factory draws distinct, non-trivial values from its arguments so that rows differ,
hashes differ, and a test that loses or duplicates a row sees it in counts and keys.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING
import random

import pyarrow as pa
import pyarrow.parquet as pq

from storage import BinaryRecord, Store, TrialRecord
from storage.records import records_to_table

if TYPE_CHECKING:
    from compiler.artifact import CompiledArtifact, KernelArtifact

H100 = "NVIDIA H100 80GB HBM3"


def trial(i: int, worker: str = "w0", status: str = "ok") -> TrialRecord:
    """The i-th distinct trial: a different config per i, real-looking timings."""
    rng = random.Random(i)
    times = [0.01 + rng.random() * 0.005 for _ in range(5)]
    return TrialRecord.timed(
        kernel_key=f"kernel-{i % 37}", sizes={"xnumel": 4096 * (1 + i % 5)},
        config={"XBLOCK": 64 << (i % 6), "num_warps": 4, "worker": worker, "i": i},
        device_name=H100, arch="sm_90", driver="550.54.15", triton_version="3.9.0",
        torch_version="2.13.0", times_ms=times if status == "ok" else [], status=status,
        error=None if status == "ok" else "out of resources: shared memory", worker=worker)


def trials(start: int, stop: int, worker: str = "w0") -> list[TrialRecord]:
    return [trial(i, worker) for i in range(start, stop)]


def cubin(i: int, size: int = 4096) -> bytes:
    return random.Random(f"cubin{i}").randbytes(size)


def binary(i: int) -> BinaryRecord:
    return BinaryRecord.build(
        kernel_key=f"kernel-{i}", config={"XBLOCK": 1024, "num_warps": 4 + i % 2},
        arch="sm_90", target="cuda:90:32", triton_version="3.9.0", cubin=cubin(i),
        metadata={"shared": 1024 * (i % 4), "num_warps": 4 + i % 2, "name": f"k{i}"})


def kernel(name: str, body: str) -> "KernelArtifact":
    """A kernel whose key ignores its name, as the compiler keys kernels."""
    from compiler.artifact import KernelArtifact, content_hash  # keeps torch out of writers
    from compiler.kernels.spec import KernelKind, KernelSpec, LaunchConfig
    source = f"@triton.jit\ndef {name}(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):\n{body}"
    canonical = source.replace(name, "KERNEL")
    spec = KernelSpec(KernelKind.POINTWISE_1D, ("in_ptr0", "out_ptr0"), ("torch.float32",) * 2,
                      (16, 16), 1, ("16",), (), LaunchConfig((("XBLOCK", 16),), (1,)))
    return KernelArtifact(name=name, kernel_key=content_hash(canonical), source=source,
                          spec=spec)


def artifact(i: int, kernels: tuple["KernelArtifact", ...] | None = None
             ) -> "CompiledArtifact":
    from compiler.artifact import CompiledArtifact, content_hash
    if kernels is None:
        kernels = (kernel(f"triton_poi_{i}_0", f"    x = tl.load(in_ptr0) + {i}\n"),)
    source = "\n".join(k.source for k in kernels) + f"\ndef call(args):\n    return {i}\n"
    meta = {"versions": {"torch": "2.13.0", "triton": "3.9.0", "compiler": "0.1.0"},
            "options_hash": "ab12cd34ef56ab78", "target": "cuda:90:32", "arch": "sm_90",
            "inputs": [{"size": [8, 16], "dtype": "float32"}]}
    return CompiledArtifact(module_key=content_hash(f"module-{i}"),
                            graph_key=content_hash(f"graph-{i}"), source=source,
                            kernels=kernels, meta_json=json.dumps(meta))


def rewrite_file(path: str, table: pa.Table) -> None:
    """Overwrite a store file in place with ``table``, keeping its schema (tampering tests)."""
    table = table.cast(pq.read_schema(path))
    pq.write_table(table, path, compression="zstd", write_page_checksum=True)


def total_rows(store: Store, kind: str) -> int:
    return store.query(kind, columns=[store_key(kind)]).num_rows


def store_key(kind: str) -> str:
    from storage import KEY_COLUMN
    return KEY_COLUMN[kind]


def trials_table(records: list[TrialRecord]) -> pa.Table:
    return records_to_table("trials", records)
