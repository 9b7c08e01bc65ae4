"""``kiln store ls|show KEY|stats|verify|repair|compact|best|gains|plot-tuning|plot-run|sql|why|
export``:
look at a store, or mend it (``repair``: see ``storage.repair``).

``best KERNEL`` prints the best config of a kernel (key or unique prefix) per size and GPU;
``gains`` what tuning gained per kernel (default vs best median); ``plot-tuning --out PNG``
draws that as a bar chart, ``plot-run`` a run's time per model (``storage.timeline``; both
need matplotlib: ``pip install 'kiln[plot]'``). See ``storage.tuning``. ``sql QUERY`` runs
SQL over views named after the record kinds (``storage.sql``; needs DuckDB:
``pip install 'kiln[query]'``).
``why NAME`` says whether the model's stored module serves this machine, or what differs
(``storage.deploy.explain``); ``export NAME... --arch sm_90 --out DIR`` copies what serving
those models needs into a new store (``storage.export``).

Exit status: 0 on success; 1 when the command ran but found something wrong (verify found a
problem, repair left one, show found no such key, compact left corrupt files in place, a
file's schema version is unreadable, why found the model does not serve, export refused);
2 for a usage error, a missing store, or a signed store without its key (``KILN_STORE_KEY_FILE``);
130 when interrupted (Ctrl-C: nothing is lost).

Example:
    >>> import tempfile
    >>> store_main(["--store", tempfile.mkdtemp(), "verify"])   # doctest: +ELLIPSIS
    verify: 0 files, 0 rows checked: OK
    0
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import pyarrow.compute as pc

from .compact import CompactReport
from .records import canonical_json
from .schema import KEY_COLUMN, KINDS, StoreVersionError
from .signing import StoreKeyError
from .store import Store, StoreStats

DEFAULT_STORE = "./kiln-store"
_PREVIEW_CHARS = 400
_MIN_PREFIX = 4      # shorter prefixes would match half a dataset


def _kind(text: str) -> str:
    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(KINDS)}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln store", description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=DEFAULT_STORE,
                        help=f"store root, a path or URI (default: {DEFAULT_STORE})")
    sub = parser.add_subparsers(dest="command", required=True)
    # ``--store`` is accepted after the command too (``kiln store gains --store DIR``).
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--store", default=argparse.SUPPRESS, help="store root (as above)")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[after], **kwargs)

    ls = command("ls", help="datasets, or the keys of one dataset")
    ls.add_argument("kind", nargs="?", choices=KINDS)
    ls.add_argument("--limit", type=int, default=50, help="keys to list (0: all)")
    show = command("show", help="one record by key (or a unique key prefix of at least "
                                f"{_MIN_PREFIX} characters)")
    show.add_argument("key")
    show.add_argument("--kind", choices=KINDS, help="search only this dataset")
    show.add_argument("--full", action="store_true", help="print long text whole")
    command("stats", help="files, rows, keys and bytes per dataset")
    verify = command("verify", help="check every file and row; nonzero if corrupt")
    verify.add_argument("kinds", nargs="*", type=_kind, metavar="KIND")
    command("repair", help="quarantine corrupt files, restore lost kernels rows, drop "
                           "dangling binaries; says what it did, then verifies")
    compact = command("compact", help="merge small files into large sorted ones")
    compact.add_argument("kinds", nargs="*", type=_kind, metavar="KIND")
    compact.add_argument("--full", action="store_true", help="rewrite every file")
    best = command("best", help="best config of a kernel per size and GPU")
    best.add_argument("kernel", help="kernel key or a unique prefix of it")
    best.add_argument("--device", help="GPU device name (default: every GPU)")
    gains = command("gains", help="default vs best median time per tuned kernel")
    gains.add_argument("--device", help="GPU device name (default: every GPU)")
    gains.add_argument("--limit", type=int, default=50, help="rows to print (0: all)")
    plot = command("plot-tuning", help="PNG bar chart of per-kernel speedup from tuning")
    plot.add_argument("--out", default="tuning.png", help="PNG path (default: tuning.png)")
    plot.add_argument("--device", help="GPU device name (default: every GPU)")
    run = command("plot-run", help="PNG of a run's time per model: when each stage's tasks "
                                   "ran, and their seconds per stage")
    run.add_argument("--run", help="a run's STORE/logs/run-*.tasks.json (default: the newest)")
    run.add_argument("--out", help="PNG path (default: beside the run's log, run-*.times.png)")
    query = command("sql", help="SQL over views named after the record kinds (graphs, "
                                "modules, kernels, binaries, trials, failures), by DuckDB")
    query.add_argument("query", help='e.g. "SELECT model, target FROM modules"')
    query.add_argument("--format", choices=("table", "csv", "json"), default="table",
                       help="table (DuckDB's, long results elided), or every row as CSV or "
                            "JSON lines")
    query.add_argument("--raw", action="store_true",
                       help="read the Parquet files as they are: faster, but unverified and "
                            "not deduplicated (see storage/sql.py)")
    why = command("why", help="whether a model's stored module serves this machine, or what "
                              "differs from the nearest record")
    why.add_argument("name", help="the model's name in its zoo config")
    why.add_argument("--device", choices=("cpu", "cuda"),
                     help="where it would run (default: cuda when there is a GPU, else cpu)")
    export = command("export", help="copy what serving some models needs (modules, kernels, "
                                    "one architecture's binaries, graphs, best trials) into a "
                                    "new store")
    export.add_argument("names", nargs="+", metavar="NAME", help="model names")
    export.add_argument("--arch", required=True, help="GPU architecture of the binaries to "
                                                      "copy, e.g. sm_90")
    export.add_argument("--out", required=True, help="root of the new store (absent or empty)")
    return parser


def _ls(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    if args.kind is None:
        for kind in KINDS:
            files = store.files(kind)
            size = sum(f.size for f in files)
            out.write(f"{kind:<9} {len(files):>6} files {size:>14,} bytes\n")
        return 0
    keys = store.keys(args.kind)
    shown = keys if args.limit <= 0 else keys[:args.limit]
    if args.kind == "modules":
        _ls_modules(store, shown, out)
    else:
        out.writelines(f"{key}\n" for key in shown)
    if len(shown) < len(keys):
        out.write(f"... {len(keys) - len(shown)} more ({len(keys)} keys; --limit 0 for all)\n")
    return 0


def _ls_modules(store: Store, keys: list[str], out: TextIO) -> None:
    """One line per module: its key, the model its graph was captured from (``-`` for a
    ``compile_module`` cache entry, which has no graph row), the lowering target (cpu, cuda),
    the GPU architecture (``any`` until a build names one) and the GPU it was tuned for
    (``-``: heuristic launch configs)."""
    rows = {r["module_key"]: r for r in store.lookup(
        "modules", keys, columns=["module_key", "graph_key", "target", "arch", "tuned_for"])
        .to_pylist()}
    graph_keys = sorted({r["graph_key"] for r in rows.values()})
    models: dict[str, list[str]] = {}
    for g in store.lookup("graphs", graph_keys, columns=["graph_key", "model"]).to_pylist():
        models.setdefault(g["graph_key"], []).append(g["model"])
    out.write(f"{'module_key':<64}  {'model':<24} {'target':<6} {'arch':<6} tuned_for\n")
    for key in keys:
        row = rows.get(key)
        if row is None:    # a row whose content hash fails: `verify` names it
            out.write(f"{key:<64}  (unreadable row: run `kiln store verify`)\n")
            continue
        model = ",".join(sorted(set(models.get(row["graph_key"], ["-"]))))
        out.write(f"{key:<64}  {model:<24} {row['target']:<6} {row['arch'] or 'any':<6} "
                  f"{row['tuned_for'] or '-'}\n")


def _format(value: Any, full: bool) -> str:
    if isinstance(value, bytes):
        from .integrity import hash_values
        return f"<{len(value):,} bytes, sha256 {hash_values([value])[:16]}...>"
    if isinstance(value, (list, dict)):
        value = json.dumps(value, default=str)
    text = str(value)
    if not full and len(text) > _PREVIEW_CHARS:
        return f"{text[:_PREVIEW_CHARS]}... ({len(text):,} chars; --full for all)"
    return text


def _find(store: Store, key: str, kinds: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Rows whose key is ``key``, else whose key starts with it, across ``kinds``."""
    found = [(kind, row) for kind in kinds for row in store.lookup(kind, key).to_pylist()]
    if found or len(key) < _MIN_PREFIX:
        return found
    return [(kind, row) for kind in kinds for row in store.query(
        kind, pc.starts_with(pc.field(KEY_COLUMN[kind]), key)).to_pylist()]


def _show(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    found = _find(store, args.key, [args.kind] if args.kind else list(KINDS))
    if not found:
        hint = (f"; a key prefix needs at least {_MIN_PREFIX} characters"
                if len(args.key) < _MIN_PREFIX else "")
        sys.stderr.write(f"kiln store: no record with key {args.key!r} in {store.root}"
                         f"{hint}\n")
        return 1
    if len(found) > 1 and len({row[KEY_COLUMN[kind]] for kind, row in found}) > 1:
        sys.stderr.write(f"kiln store: {args.key!r} is ambiguous; matches:\n")
        sys.stderr.writelines(f"  {kind} {row[KEY_COLUMN[kind]]}\n" for kind, row in found)
        return 1
    for kind, row in found:
        out.write(f"[{kind}]\n")
        out.writelines(f"{name}: {_format(value, args.full)}\n" for name, value in row.items())
    return 0


def _print_stats(stats: StoreStats, out: TextIO) -> None:
    out.write(f"store {stats.root}\n")
    out.write(f"{'kind':<9} {'files':>6} {'rows':>10} {'keys':>10} {'bytes':>14} "
              f"{'B/key':>9} {'tmp':>4} {'bad':>4} versions\n")
    for k in stats.kinds.values():
        per_key = f"{k.bytes / k.unique_keys:,.0f}" if k.unique_keys else "-"
        versions = ",".join(f"v{v}:{n}" for v, n in sorted(k.versions.items())) or "-"
        out.write(f"{k.kind:<9} {k.files:>6} {k.rows:>10,} {k.unique_keys:>10,} "
                  f"{k.bytes:>14,} {per_key:>9} {k.temp_files:>4} {k.unreadable_files:>4} "
                  f"{versions}\n")
    out.write(f"total {stats.total_bytes:,} bytes")
    if stats.bytes_per_module is not None:
        out.write(f"; {stats.bytes_per_module:,.0f} bytes per module (modules + kernels)")
    out.write("\n")


def _verify(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    report = store.verify(args.kinds or KINDS)
    out.writelines(f"PROBLEM {issue}\n" for issue in report.problems)
    out.writelines(f"note    {note}\n" for note in report.notes)
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    out.write(f"verify: {report.files_checked} files, {report.rows_checked:,} rows "
              f"checked: {verdict}\n")
    return 0 if report.ok else 1


def _repair(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    report = store.repair()
    out.writelines(f"repair: {action}\n" for action in report.actions)
    after = report.after
    out.writelines(f"PROBLEM {issue}\n" for issue in after.problems)
    done = (f"{report.quarantined} file(s) quarantined, {report.restored} row(s) restored, "
            f"{report.dropped} row(s) dropped" if report.actions else "nothing to repair")
    verdict = "OK" if after.ok else f"{len(after.problems)} problem(s) left"
    out.write(f"repair: {done}; verify: {after.files_checked} files, {after.rows_checked:,} "
              f"rows checked: {verdict}\n")
    return 0 if after.ok else 1


def _print_compaction(report: CompactReport, out: TextIO) -> None:
    for k in report.kinds.values():
        out.write(f"{k.kind:<9} {k.files_in:>6} files -> {k.files_out:>3}, rows {k.rows_in:,}"
                  f" -> {k.rows_out:,} ({k.duplicates_removed:,} duplicates dropped)"
                  f"{f', {k.temp_removed} stale temp files removed' if k.temp_removed else ''}"
                  "\n")
        out.writelines(f"  left in place: {issue}\n" for issue in k.skipped)


def _compact(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    report = store.compact(args.kinds or KINDS, full=args.full)
    _print_compaction(report, out)
    return 0 if report.ok else 1


def _stats(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    _print_stats(store.stats(), out)
    return 0


def _kernel_key(store: Store, prefix: str) -> str | None:
    keys = sorted({k for k in store.query("trials", columns=["kernel_key"], verify=False)
                  .column("kernel_key").to_pylist() if k.startswith(prefix)})
    if len(keys) != 1:
        sys.stderr.write(f"kiln store: {prefix!r} matches {len(keys)} tuned kernels"
                         + (": " + ", ".join(k[:16] for k in keys[:5]) if keys else "") + "\n")
        return None
    return keys[0]


def _sizes(sizes: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sizes.items() if k != "dtypes")


def _best(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from .tuning import best_trials
    kernel = _kernel_key(store, args.kernel)
    if kernel is None:
        return 1
    found = best_trials(store, args.device, [kernel])
    if not found:
        sys.stderr.write(f"kiln store: kernel {kernel[:16]} has no ok trial"
                         + (f" on {args.device!r}" if args.device else "") + "\n")
        return 1
    out.write(f"kernel {kernel}\n")
    for b in found:
        out.write(f"  {b.device_name}  {_sizes(b.sizes)}: {json.dumps(b.config)} "
                  f"{b.median_ms:.4f} ms (best of {b.timed})\n")
    return 0


def _gains(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from .tuning import tuning_gains
    from .tuning_time import describe_models, describe_time, model_gains, tuning_time
    gains = tuning_gains(store, args.device)
    time = tuning_time(store, args.device)
    spent = {(k.kernel_key, k.sizes_json, k.device_name): k for k in time.per_kernel}
    shown = gains if args.limit <= 0 else gains[:args.limit]
    out.write(f"{'kernel':<34} {'kind':<20} {'sizes':<26} {'default ms':>10} {'best ms':>9} "
              f"{'speedup':>7} {'timed':>5} {'GPU-s':>6} {'stop':<8}  device / best config\n")
    for g in shown:
        default = f"{g.default_ms:.4f}" if g.default_ms else "-"
        speedup = f"{g.speedup:.2f}x" if g.speedup else "-"
        cost = spent.get((g.kernel_key, canonical_json(g.sizes), g.device_name))
        gpu_s = f"{cost.gpu_s:.2f}" if cost and cost.gpu_s is not None else "-"
        stop = (cost.stop_reason if cost else "") or "-"
        out.write(f"{(g.name or g.kernel_key[:16])[:34]:<34} {g.kind[:20]:<20} "
                  f"{_sizes(g.sizes)[:26]:<26} {default:>10} {g.best_ms:>9.4f} {speedup:>7} "
                  f"{g.timed:>5} {gpu_s:>6} {stop[:8]:<8}  {g.device_name} "
                  f"{json.dumps(g.best_config)}\n")
    known = [g.speedup for g in gains if g.speedup]
    geomean = math.exp(sum(map(math.log, known)) / len(known)) if known else None
    out.write(f"{len(gains)} tuned kernel sizes"
              + (f"; {geomean:.3f}x geomean speedup over {len(known)} with a known default"
                 if geomean else "; no default timing known") + "\n")
    out.write(describe_time(time) + "\n")
    for line in describe_models(model_gains(store, gains, time)):
        out.write(line + "\n")
    return 0


def _plot_tuning(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from .tuning import plot_gains, tuning_gains
    from .tuning_time import plot_time, tuning_time
    try:
        bars = plot_gains(tuning_gains(store, args.device), args.out)
    except (ImportError, ValueError) as err:
        sys.stderr.write(f"kiln store: plot-tuning: {err}\n")
        return 1
    out.write(f"plot-tuning: {bars} kernel(s) -> {args.out}\n")
    # where the time went, beside it; trials from before schema v5 have no GPU seconds
    time_path = str(Path(args.out).with_suffix("")) + "-time.png"
    try:
        drawn = plot_time(tuning_time(store, args.device), time_path)
        out.write(f"plot-tuning: GPU-s of {drawn} kernel size(s) -> {time_path}\n")
    except ValueError as err:
        out.write(f"plot-tuning: {err}\n")
    return 0


def _plot_run(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from .timeline import latest_timeline, load_timeline, plot_timeline, png_path
    path = args.run or latest_timeline(store.root)
    if path is None:
        sys.stderr.write(f"kiln store: plot-run: no run timeline in {store.root}/logs (kiln "
                         f"run writes one per run)\n")
        return 1
    target = args.out or png_path(path)
    try:
        models = plot_timeline(load_timeline(path), target)
    except (ImportError, ValueError, OSError) as err:
        sys.stderr.write(f"kiln store: plot-run: {err}\n")
        return 1
    out.write(f"plot-run: {models} model(s) -> {target}\n")
    return 0


def _sql(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    try:
        import duckdb
    except ImportError:
        sys.stderr.write("kiln store: sql needs DuckDB: pip install 'kiln[query]'\n")
        return 2
    from .sql import connect, kinds_in
    try:
        relation = connect(store, kinds_in(args.query), raw=args.raw).sql(args.query)
    except (duckdb.Error, ValueError) as err:
        sys.stderr.write(f"kiln store: sql: {err}\n")
        return 1
    if relation is None:            # a statement without rows
        return 0
    if args.format == "table":
        out.write(f"{relation}\n")
        return 0
    columns, rows = relation.columns, relation.fetchall()
    if args.format == "json":
        out.writelines(json.dumps(dict(zip(columns, row)), default=str) + "\n" for row in rows)
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return 0


def _why(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    import torch

    from .deploy import Wanted, choose, explain, miss_message
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write("kiln store why: --device cuda, but this machine has no CUDA GPU\n")
        return 2
    wanted = Wanted.here(device)
    row, rows = choose(store, args.name, wanted)
    if row is not None:
        out.write(explain(store, args.name, wanted, rows) + "\n")
        return 0
    out.write(miss_message(store, args.name, wanted, rows) + "\n")
    return 1


def _export(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from .export import ExportError, export_models
    try:
        report = export_models(store, args.names, args.arch, args.out)
    except ExportError as err:
        sys.stderr.write(f"kiln store export: {err}\n")
        return 1
    signed = (f"signed with key {report.signed_with}" if report.signed_with
              else "unsigned (no key configured)")
    out.write(f"export: {', '.join(report.models)} for {report.arch} -> {report.root} "
              f"({signed})\n")
    out.writelines(f"{c.kind:<9} {c.rows:>6} rows {c.bytes:>12,} bytes\n" for c in report.copied)
    out.write(f"total     {report.rows:>6} rows {report.bytes:>12,} bytes\n")
    out.writelines(f"note: {note}\n" for note in report.notes)
    return 0


_COMMANDS = {"ls": _ls, "show": _show, "stats": _stats, "verify": _verify, "repair": _repair,
             "compact": _compact, "best": _best, "gains": _gains, "plot-tuning": _plot_tuning,
             "plot-run": _plot_run, "sql": _sql, "why": _why, "export": _export}


def store_main(argv: list[str], out: TextIO | None = None) -> int:
    """Run one ``kiln store`` command; returns the exit status (see the module docstring)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:     # argparse exits on --help and on usage errors
        return int(exit_.code or 0)
    out = out or sys.stdout
    try:
        store = Store(args.store)
    except ValueError as err:       # a misconfigured signing key (compiler.config)
        sys.stderr.write(f"kiln store: {err}\n")
        return 2
    if not store.exists():
        sys.stderr.write(f"kiln store: no store at {store.root}\n")
        return 2
    try:
        return _COMMANDS[args.command](store, args, out)
    except StoreVersionError as err:
        sys.stderr.write(f"kiln store: {err}\n")
        return 1
    except StoreKeyError as err:
        sys.stderr.write(f"kiln store {args.command}: {err}\n")
        return 2
    except KeyboardInterrupt:
        # Every store write is atomic and compaction deletes its inputs only after its
        # output is in place, so stopping anywhere loses nothing (see storage.compact).
        sys.stderr.write(f"kiln store {args.command}: interrupted; nothing was lost (an "
                         f"unfinished compaction leaves duplicates or a temporary file, which "
                         f"the next compact removes)\n")
        return 130


if __name__ == "__main__":
    try:
        sys.exit(store_main(sys.argv[1:]))
    except BrokenPipeError:         # `... ls | head`: the reader left; not an error
        sys.stderr.close()
        sys.exit(0)
