"""The ``kiln`` command: ``kiln run [CONFIG]`` turns a zoo into a warm store; ``kiln store``
looks at one.

    kiln run [CONFIG] [--store PATH] [--scheduler ADDR] [--workers N] [--dask-report FILE]
             [--dry-run]
    kiln capture CONFIG [--store PATH] ...      (pipeline.commands)
    kiln relower [--store PATH] [--target sm_90] [--models NAME...] ...
    kiln store {ls,show,stats,verify,compact} [--store PATH] ...
    kiln bench CONFIG [--quick] [--systems ...] ...   (pipeline.bench)
    kiln config {schema,docs,check}

CONFIG defaults to ``configs/zoo-tiny.toml``. The store is ``--store``, else the config's
``run.store``, else ``./kiln-store``. Exit status: 0 when everything asked for succeeded,
1 when some task failed for good (the others finished; see the failures dataset), 2 for a
bad config or command line, 130 when stopped by SIGINT/SIGTERM (rerun to resume).

``tuning.enabled = true`` on a cluster without GPU workers is not a failure (exit 0): every
candidate is built, nothing is timed, and the summary and the last line say that tuning was
skipped and how many kernels were left untuned. Building on CPU machines and tuning later on
a GPU cluster against the same store is the intended split (the rerun builds nothing and
times only what was never timed); a run fails only for work that was possible and broke.

Example:
    >>> main(["run", "configs/zoo-tiny.toml", "--dry-run"])   # doctest: +SKIP
    0
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence, TextIO

from pipeline.config import ConfigError, load_config
from pipeline.report import EXIT_USAGE, format_plan, make_plan, print_summary

DEFAULT_CONFIG = "configs/zoo-tiny.toml"
DEFAULT_STORE = "./kiln-store"


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln run", description="Capture, lower, build and tune every model of a zoo "
                                     "into a store.")
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                        help=f"zoo TOML file (default: {DEFAULT_CONFIG})")
    parser.add_argument("--store", help="store root (default: the config's run.store, "
                                        f"else {DEFAULT_STORE})")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. "
                                            "tcp://host:8786 (default: an embedded cluster)")
    parser.add_argument("--workers", type=int, help="CPU worker processes of the embedded "
                                                    "cluster (default: the config's, else 2)")
    parser.add_argument("--dask-report", metavar="FILE",
                        help="save Dask's performance report of the run (HTML: task stream, "
                             "worker profiles, transfers) to FILE")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan, import every factory and check every .pt2 "
                             "file, and exit without running anything (2 if a model would "
                             "not load)")
    return parser


def _default_config(path: str) -> Path:
    """``configs/zoo-tiny.toml`` from the working directory, else the copy kiln ships."""
    candidate = Path(path)
    if path == DEFAULT_CONFIG and not candidate.exists():
        from compiler.config import config_file
        return config_file(Path(DEFAULT_CONFIG).name)
    return candidate


def _store_contents(root: str) -> str:
    """A one-line description of what the store holds already."""
    from storage import Store
    store = Store(root)
    if not store.exists():
        return "does not exist yet; it will be created"
    counts = [f"{len(store.keys(kind))} {kind}" for kind in ("graphs", "modules", "kernels",
                                                              "binaries", "trials", "failures")]
    return "holds " + ", ".join(counts)


def store_problem(root: str) -> str | None:
    """Why ``root`` cannot hold a store (a file, a directory this process cannot write in),
    or None. Checked before any task runs, so a bad path is one line, not a failure per
    model. URIs (``s3://...``) are left to their first write.

    >>> store_problem("/dev/null")
    'store /dev/null: is a file, not a directory'
    """
    if "://" in root:
        return None
    path = Path(root)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        return f"store {root}: is a file, not a directory{where}"
    try:   # os.access ignores read-only mounts and ACLs; a real write does not
        fd, probe = tempfile.mkstemp(prefix=".kiln-probe-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        return f"store {root}: cannot write in {existing}: {exc.strerror or exc}"
    return _signing_problem(root)


def _signing_problem(root: str) -> str | None:
    """A signed store and no key or another key (or a misconfigured key): every task's
    write would be refused, so the run is refused up front."""
    from storage import Store
    try:
        return Store(root).signing_problem()
    except ValueError as exc:        # compiler.config's OptionsError, a too-short key
        return str(exc)


def _check_models(config, out: TextIO, err: TextIO) -> int:
    """``--dry-run``'s last step: import every factory and open every ``.pt2`` here, as a
    worker would (same search path), and say which would fail."""
    from pipeline.tasks import check_model
    problems = [(spec.name, check_model(spec)) for spec in config.models]
    bad = [(name, problem) for name, problem in problems if problem]
    if not bad:
        out.write(f"\nchecks: all {len(problems)} model(s) load (factories imported, .pt2 "
                  f"files readable)\n")
        return 0
    err.writelines(f"kiln run: error: model {name!r}: {problem}\n" for name, problem in bad)
    return EXIT_USAGE


def run_main(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``kiln run``; returns the exit status."""
    args = _run_parser().parse_args(list(argv))
    if args.workers is not None and args.workers < 1:
        err.write("kiln run: error: --workers must be >= 1\n")
        return EXIT_USAGE
    try:
        config = load_config(_default_config(args.config))
    except ConfigError as exc:
        err.write(f"kiln run: error: {exc}\n")
        return EXIT_USAGE
    from pipeline.cluster import visible_gpus
    from pipeline.runner import run_zoo, with_overrides
    config = with_overrides(config, scheduler=args.scheduler, workers=args.workers)
    store = args.store or config.store or DEFAULT_STORE
    problem = store_problem(store)
    if problem:
        err.write(f"kiln run: error: {problem}\n")
        return EXIT_USAGE
    if args.dry_run:
        out.write(format_plan(make_plan(config, store, visible_gpus()), _store_contents(store))
                  + "\n")
        return _check_models(config, out, err)
    try:
        report = run_zoo(config, store, out=err, dask_report=args.dask_report)
    except (OSError, TimeoutError) as exc:
        err.write(f"kiln run: error: cannot start or reach the cluster: "
                  f"{type(exc).__name__}: {exc}\n")
        return EXIT_USAGE
    print_summary(report, out)
    return report.exit_code


USAGE = """usage: kiln [--version] [--help] {run,capture,relower,store,bench,config} ...

kiln bakes a PyTorch model zoo into a store of compiled modules.

commands:
  run [CONFIG]   capture, lower, build and tune every model of a zoo into a store
                 (default config: configs/zoo-tiny.toml; --dry-run checks it and prints the plan)
  capture CONFIG capture only: store every model's graph, to lower later without its code
  relower        lower, build and tune the store's graphs again with the installed kiln,
                 torch and Triton (no config, no model code): --target, --models, --option
  store CMD      look at or maintain a store: ls, show, stats, verify, repair, compact,
                 best, gains, plot-tuning; why (does a model serve here), export (for a server)
  bench CONFIG   time every model of a zoo under eager, torch.compile and kiln, each in a
                 fresh process: rows in the store, a markdown report with plots (--quick)
  config CMD     the zoo config schema: schema (JSON Schema), docs (reference), check CONFIG

Run `kiln run --help`, `kiln store --help` or `kiln config --help` for a command's options.
"""


def version_text() -> str:
    """``kiln --version``: kiln's version and those of the packages its records depend on
    (read from package metadata: nothing heavy is imported)."""
    from importlib import metadata

    from compiler import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    return (f"kiln {__version__} (torch {installed('torch')}, triton {installed('triton')}, "
            f"python {sys.version.split()[0]})")


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        (sys.stdout if argv else sys.stderr).write(USAGE)
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        sys.stdout.write(version_text() + "\n")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run_main(rest, sys.stdout, sys.stderr)
    if command in ("capture", "relower"):
        from pipeline.commands import capture_main, relower_main
        entry = capture_main if command == "capture" else relower_main
        return entry(rest, sys.stdout, sys.stderr)
    if command == "store":
        from storage.cli import store_main   # lazy: only this command needs it
        return store_main(rest)
    if command == "bench":
        from pipeline.bench.cli import bench_main   # lazy: only this command needs it
        return bench_main(rest, sys.stdout, sys.stderr)
    if command == "config":
        from pipeline.config_docs import config_main
        return config_main(rest)
    sys.stderr.write(f"kiln: unknown command {command!r}\n\n{USAGE}")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kiln`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _dispatch(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # `kiln store ls | head -1`: the reader left early; not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
