"""Store benchmark: trial write throughput, module lookup before/after compaction, size.

    python benchmarks/bench_store.py                 # 1,000,000 trials, 10,000 modules
    python benchmarks/bench_store.py --trials 100000 --modules 1000 --root /tmp/bench

What it measures (CPU and disk only, no GPU):
1. ``Store.write`` of trial rows in batches (one file per batch, fsynced and renamed as in
   production): rows/s. Batches are built before the timer starts; building them from
   ``TrialRecord`` objects is timed separately, since the tuner does that work too.
2. A query over all trials, then compaction of them.
3. 10,000 compiled modules written one ``put_artifact`` each (two files per module, as the
   pipeline's tasks write them), then ``get_artifact`` of random keys on a freshly opened
   Store, before and after compaction; and the bytes the store holds per module.

Synthetic modules are sized like small models' output: 3 to 30 kernels of 1 to 3 KB of
Triton source each, drawn from a pool so that kernels repeat across modules.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.artifact import CompiledArtifact, KernelArtifact, content_hash  # noqa: E402
from compiler.kernels.spec import KernelKind, KernelSpec, LaunchConfig  # noqa: E402
from storage import Store, TrialRecord  # noqa: E402
from storage.records import derived_key, records_to_table  # noqa: E402

DEVICES = [("NVIDIA H100 80GB HBM3", "sm_90"), ("NVIDIA A100-SXM4-80GB", "sm_80")]
STATUSES = ["ok"] * 18 + ["resource_error", "timeout"]


# ------------------------------------------------------------------------------ trials

def trial_batch(start: int, n: int, rng: random.Random) -> pa.Table:
    """``n`` distinct trial rows built column by column (as a tuner would for one sweep)."""
    cols: dict[str, list] = {name: [] for name in (
        "trial_key", "kernel_key", "sizes_json", "config_key", "config_json", "device_name",
        "arch", "driver", "clocks", "triton_version", "torch_version", "median_ms",
        "mean_ms", "min_ms", "max_ms", "std_ms", "n_repeats", "status", "error", "is_best",
        "timestamp", "worker", "host")}
    now = time.time()
    for i in range(start, start + n):
        device, arch = DEVICES[i % 2]
        kernel = f"{i // 200:064x}"
        sizes = f'{{"xnumel":{4096 << (i % 7)}}}'
        config = f'{{"XBLOCK":{64 << (i % 6)},"num_stages":{1 + i % 4},"num_warps":{4 << (i % 3)}}}'
        config_key = derived_key(config)
        status = STATUSES[i % len(STATUSES)]
        median = rng.uniform(0.005, 2.0) if status == "ok" else None
        for name, value in (
                ("trial_key", TrialRecord.make_key(kernel, sizes, config_key, device, arch,
                                                   "550.54.15", "default", "3.9.0", "2.13.0")
                 + f"{i:x}"[-4:]),
                ("kernel_key", kernel), ("sizes_json", sizes), ("config_key", config_key),
                ("config_json", config), ("device_name", device), ("arch", arch),
                ("driver", "550.54.15"), ("clocks", "default"), ("triton_version", "3.9.0"),
                ("torch_version", "2.13.0"), ("median_ms", median),
                ("mean_ms", median and median * 1.01), ("min_ms", median and median * 0.97),
                ("max_ms", median and median * 1.2), ("std_ms", median and median * 0.02),
                ("n_repeats", 100 if median else 0), ("status", status),
                ("error", None if median else "out of resource: shared memory 233472 > 232448"),
                ("is_best", i % 50 == 0), ("timestamp", int((now + i) * 1e6)),
                ("worker", f"tcp://10.0.0.{i % 8}:4000{i % 4}"), ("host", f"gpu-{i % 8}")):
            cols[name].append(value)
    table = pa.table(cols)
    return table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                            pc.cast(table["timestamp"], pa.timestamp("us", tz="UTC")))


def bench_trials(root: Path, total: int, batch: int) -> None:
    store = Store(root)
    rng = random.Random(0)
    written, seconds = 0, 0.0
    while written < total:
        n = min(batch, total - written)
        table = trial_batch(written, n, rng)
        start = time.perf_counter()
        store.write("trials", table)
        seconds += time.perf_counter() - start
        written += n
    files = store.files("trials")
    size = sum(f.size for f in files)
    print(f"trials: wrote {written:,} rows in {len(files)} files of {batch:,} in {seconds:.2f} s"
          f" = {written / seconds:,.0f} rows/s; {size / written:.1f} bytes/row on disk")

    records = [TrialRecord.timed(kernel_key="k", sizes=[i], config={"XBLOCK": i},
                                 device_name=DEVICES[0][0], arch="sm_90", driver="550",
                                 triton_version="3.9.0", torch_version="2.13.0",
                                 times_ms=[0.1, 0.11, 0.12]) for i in range(10_000)]
    start = time.perf_counter()
    records_to_table("trials", records)
    print(f"trials: TrialRecord -> Arrow table: {10_000 / (time.perf_counter() - start):,.0f}"
          " rows/s (the tuner's side of a write)")

    start = time.perf_counter()
    everything = store.query("trials", columns=["trial_key", "median_ms"])
    print(f"trials: read all {everything.num_rows:,} (dedup on): "
          f"{time.perf_counter() - start:.2f} s")
    rows, ms = _kernel_query(store)
    print(f"trials: filtered query (one kernel on sm_90, {rows} rows) before compaction: "
          f"median of 5 {ms:.0f} ms")
    start = time.perf_counter()
    report = store.compact(["trials"]).kinds["trials"]
    print(f"trials: compaction {report.files_in} -> {report.files_out} files, "
          f"{report.rows_in:,} -> {report.rows_out:,} rows: {time.perf_counter() - start:.2f} s")
    rows, ms = _kernel_query(store)
    print(f"trials: same filtered query after compaction: median of 5 {ms:.0f} ms")


def _kernel_query(store: Store) -> tuple[int, float]:
    """(rows, median ms) of "the ok trials of one kernel on sm_90", asked five times."""
    times, rows = [], 0
    for _ in range(5):
        start = time.perf_counter()
        rows = store.query("trials", (pc.field("status") == "ok") & (pc.field("arch") == "sm_90")
                           & (pc.field("kernel_key") == f"{1234:064x}")).num_rows
        times.append((time.perf_counter() - start) * 1000)
    return rows, statistics.median(times)


# ----------------------------------------------------------------------------- modules

OPS = ["tl.exp", "tl.log", "tl.sigmoid", "tl.abs", "libdevice.tanh", "tl.sqrt", "tl.maximum"]


def kernel_pool(n: int, rng: random.Random) -> list[tuple[str, KernelSpec]]:
    """(canonical source, meta) of ``n`` distinct kernels, 1 to 3 KB each."""
    pool = []
    for k in range(n):
        lines = ["@triton.jit", "def KERNEL(in_ptr0, in_ptr1, out_ptr0, xnumel, "
                 "XBLOCK: tl.constexpr):", "    xoffset = tl.program_id(0) * XBLOCK",
                 "    xindex = xoffset + tl.arange(0, XBLOCK)[:]", "    xmask = xindex < xnumel",
                 "    tmp0 = tl.load(in_ptr0 + (xindex), xmask).to(tl.float32)",
                 "    tmp1 = tl.load(in_ptr1 + (xindex % 768), xmask, eviction_policy="
                 "'evict_last').to(tl.float32)"]
        for t in range(2, rng.randint(10, 45)):
            lines.append(f"    tmp{t} = {rng.choice(OPS)}(tmp{t - 1} * {rng.random():.6f} "
                         f"+ tmp{rng.randrange(t)})  # fused op {k}.{t}")
        lines.append(f"    tl.store(out_ptr0 + (xindex), tmp{t}, xmask)")
        meta = KernelSpec(KernelKind.POINTWISE_1D, ("in_ptr0", "in_ptr1", "out_ptr0"),
                          ("torch.float32",) * 3, (1 << 20, 768, 1 << 20), 1, (str(1 << 20),),
                          (), LaunchConfig((("XBLOCK", 1024), ("num_warps", 4)), (1024,)))
        pool.append(("\n".join(lines) + "\n", meta))
    return pool


def module(i: int, pool: list[tuple[str, str]], rng: random.Random) -> CompiledArtifact:
    kernels = []
    for j, (canonical, meta) in enumerate(rng.sample(pool, rng.randint(3, 30))):
        name = f"kiln_pw_fused_{j}"
        kernels.append(KernelArtifact(name=name, kernel_key=content_hash(canonical),
                                      source=canonical.replace("KERNEL", name), spec=meta))
    calls = [f"    {k.name}[grid({1 << 20})](buf{j}, arg{j}_1, buf{j + 1}, {1 << 20}, XBLOCK=1024)"
             for j, k in enumerate(kernels)]
    source = ("import triton\nimport triton.language as tl\nfrom compiler.runtime import grid"
              "\n\n" + "\n".join(k.source for k in kernels)
              + "\ndef call(args):\n" + "\n".join(calls) + f"\n    return (buf{len(kernels)},)\n")
    meta = {"graph_key": content_hash(f"g{i}"), "device": "cuda", "options_hash": "a3660c16",
            "versions": {"kiln": "0.1.0", "torch": "2.13.0", "triton": "3.9.0"},
            "inputs": [{"size": [32, 768], "stride": [768, 1], "dtype": "torch.float16"}]}
    return CompiledArtifact(module_key=content_hash(f"module {i}"),
                            graph_key=meta["graph_key"], source=source,
                            kernels=tuple(kernels), meta_json=json.dumps(meta))


def _lookup_ms(root: Path, keys: list[str], expected: dict[str, CompiledArtifact]) -> list[float]:
    times = []
    for key in keys:
        start = time.perf_counter()
        artifact = Store(root).get_artifact(key)      # freshly opened: no state carried over
        times.append((time.perf_counter() - start) * 1000)
        assert artifact == expected[key], f"lookup of {key} returned the wrong artifact"
    return times


def _store_bytes(store: Store) -> tuple[int, int]:
    stats = {k: sum(f.size for f in store.files(k)) for k in ("modules", "kernels")}
    return stats["modules"], stats["kernels"]


def bench_modules(root: Path, n: int) -> None:
    store = Store(root)
    rng = random.Random(1)
    pool = kernel_pool(max(50, n // 2), rng)
    artifacts = [module(i, pool, rng) for i in range(n)]
    source_bytes = sum(len(a.source) for a in artifacts)
    start = time.perf_counter()
    for artifact in artifacts:
        store.put_artifact(artifact)
    seconds = time.perf_counter() - start
    print(f"modules: {n:,} put_artifact calls in {seconds:.1f} s ({n / seconds:,.0f}/s); "
          f"mean module source {source_bytes / n / 1024:.1f} KiB, "
          f"{statistics.mean(len(a.kernels) for a in artifacts):.1f} kernels")
    by_key = {a.module_key: a for a in artifacts}
    sample = random.Random(2).sample(sorted(by_key), 5)
    before = _lookup_ms(root, sample, by_key)
    mods, kerns = _store_bytes(store)
    print(f"modules: lookup before compaction ({len(store.files('modules')):,} module files): "
          f"median {statistics.median(before):.0f} ms, max {max(before):.0f} ms")
    print(f"modules: store size before compaction {(mods + kerns) / n / 1024:.1f} KiB/module "
          f"(modules {mods / n / 1024:.1f} + kernels {kerns / n / 1024:.1f})")
    start = time.perf_counter()
    report = store.compact(["modules", "kernels"])
    print(f"modules: compaction {report.kinds['modules'].files_in:,} + "
          f"{report.kinds['kernels'].files_in:,} files -> {report.kinds['modules'].files_out} "
          f"+ {report.kinds['kernels'].files_out}: {time.perf_counter() - start:.1f} s")
    after = _lookup_ms(root, random.Random(3).sample(sorted(by_key), 50), by_key)
    mods, kerns = _store_bytes(store)
    print(f"modules: lookup after compaction: median {statistics.median(after):.1f} ms, "
          f"p90 {sorted(after)[44]:.1f} ms, max {max(after):.1f} ms (50 random keys)")
    print(f"modules: store size after compaction {(mods + kerns) / n / 1024:.1f} KiB/module "
          f"(modules {mods / n / 1024:.1f} + kernels {kerns / n / 1024:.1f}); uncompressed "
          f"module source alone {source_bytes / n / 1024:.1f} KiB/module")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--modules", type=int, default=10_000)
    parser.add_argument("--root", type=Path, help="where to build the stores (default: tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, pyarrow {pa.__version__}; store in {root}")
    try:
        if args.trials:
            bench_trials(root / "trials-store", args.trials, args.batch)
        if args.modules:
            bench_modules(root / "modules-store", args.modules)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
