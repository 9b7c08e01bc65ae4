"""``kiln capture`` and ``kiln relower``: the two halves of ``kiln run``, apart.

    kiln capture CONFIG [--store PATH] [--scheduler ADDR] [--workers N]
    kiln relower [--store PATH] [--target T ...] [--models NAME ...] [--option KEY=VALUE ...]
                 [--scheduler ADDR] [--workers N] [--no-tune] [--space NAME] [--budget-s S]

``kiln capture`` runs only the models' code: it captures every model of a zoo and stores its
graph, loadable, in the store (a team can collect graphs from many model owners and bake them
centrally). ``kiln relower`` needs no config and no model code: it reads the stored graphs
(per model name, the newest one, this torch's first) and runs lower, build, tune and the
tuned relower on them with the installed kiln, torch and Triton; it is the command to run
after an upgrade or for a new GPU kind. Targets default to those the store holds modules
and binaries for; compiler options are kiln's defaults plus ``--option``s (the zoo's own
``[compiler]`` table is not stored). With GPU workers (visible GPUs, or ``--scheduler``) it
tunes every kernel shape whose trials are not stored for these versions, reusing those that
are. A graph this torch cannot read, or one stored before graphs were loadable, is listed
with the reason and makes the exit status 1.

Example:
    >>> option_overrides(["xblock=512", "channels_last=off"])
    {'xblock': 512, 'channels_last': 'off'}
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Sequence, TextIO

from pipeline.report import EXIT_FAILED, EXIT_USAGE, format_summary

DEFAULT_STORE = "./kiln-store"


# --- kiln capture -------------------------------------------------------------------------------

def _capture_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln capture", description="Capture every model of a zoo and store its graph, "
                                         "to lower later (kiln relower) without its code.")
    parser.add_argument("config", help="zoo TOML file")
    parser.add_argument("--store", help=f"store root (default: the config's run.store, "
                                        f"else {DEFAULT_STORE})")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--workers", type=int, help="CPU worker processes of the embedded "
                                                    "cluster (default: the config's, else 2)")
    return parser


def capture_main(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``kiln capture``; returns the exit status (as ``kiln run``'s)."""
    from pipeline.cli import _default_config, store_problem
    from pipeline.config import ConfigError, load_config
    args = _capture_parser().parse_args(list(argv))
    try:
        config = load_config(_default_config(args.config))
    except ConfigError as exc:
        err.write(f"kiln capture: error: {exc}\n")
        return EXIT_USAGE
    from pipeline.runner import run_zoo, with_overrides
    config = with_overrides(config, scheduler=args.scheduler, workers=args.workers)
    store = args.store or config.store or DEFAULT_STORE
    problem = store_problem(store)
    if problem:
        err.write(f"kiln capture: error: {problem}\n")
        return EXIT_USAGE
    report = _run(config, store, err, capture_only=True, command="kiln capture")
    if report is None:
        return EXIT_USAGE
    out.write(format_capture_summary(report) + "\n")
    return report.exit_code if report.interrupted else (EXIT_FAILED if report.failures else 0)


def format_capture_summary(report: Any) -> str:
    """One line per model (its graph: new, stored or FAILED with why, and its key), then
    the totals."""
    words = {"ok": "new", "skipped": "stored", "failed": "FAILED"}
    lines = []
    for r in report.stage("capture"):
        why = f"{r.error_type}: {(r.message.strip().splitlines() or [''])[0][:300]}" \
            if r.failed else r.key
        lines.append(f"  {r.model:<24} {words[r.status]:<7} {why}")
    new = sum(r.status == "ok" for r in report.stage("capture"))
    lines.append(f"{len(report.stage('capture'))} model(s): {new} graph(s) stored new, "
                 f"{len(report.failures)} failed, in {report.wall_s:.1f} s; "
                 f"kiln relower --store {report.store} lowers them")
    return "\n".join(lines)


# --- kiln relower -------------------------------------------------------------------------------

def _relower_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln relower", description="Lower, build and tune the store's graphs again with "
                                         "the installed kiln, torch and Triton: no zoo config, "
                                         "no model code.")
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"store root (default: "
                                                                f"{DEFAULT_STORE})")
    parser.add_argument("--target", action="append", dest="targets", metavar="T",
                        help="cpu or a GPU architecture (sm_90); repeat for several "
                             "(default: those the store has modules and binaries for)")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="only these models (default: every model with a stored graph)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a compiler option over kiln's defaults, e.g. xblock=512")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--workers", type=int, default=2, help="CPU worker processes of the "
                                                               "embedded cluster (default 2)")
    parser.add_argument("--no-tune", action="store_true",
                        help="build default configs only, time nothing")
    parser.add_argument("--space", default="default", help="autotune search space")
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="GPU seconds per kernel shape (default 60)")
    return parser


def option_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as compiler option overrides: VALUE read as JSON (numbers,
    ``true``), else kept as text."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


@dataclass(frozen=True)
class StoredModel:
    """A model's graph to relower (``graph_key``), or why it has none (``problem``)."""
    name: str
    graph_key: str | None
    problem: str = ""


def stored_models(store: Any, names: Sequence[str] | None = None) -> list[StoredModel]:
    """Per model name (of ``names``, else all): its newest loadable graph, one written by
    this torch release first; names with no loadable graph carry the reason. A name with no
    graph at all is a ``KeyError`` naming those the store holds."""
    import pyarrow.compute as pc
    from compiler.capture import torch_version_for_key
    every = sorted(set(store.query("graphs", columns=["model"], verify=False)
                       .column("model").to_pylist()))
    loadable = store.query("graphs", pc.field("program").is_valid(), verify=False,
                           columns=["graph_key", "model", "torch_version", "created_at"])
    here = torch_version_for_key()
    best: dict[str, dict] = {}
    for row in sorted(loadable.to_pylist(), key=lambda r: (r["torch_version"] == here,
                                                           r["created_at"])):
        best[row["model"]] = row            # the last is the best: this torch, newest
    out = []
    for name in names or every:
        if name in best:
            out.append(StoredModel(name, best[name]["graph_key"]))
        elif name in every:
            out.append(StoredModel(name, None, "stored before kiln kept loadable graphs "
                                               "(schema v4): capture it again (kiln capture)"))
        else:
            raise KeyError(f"no graph of model {name!r} in store {store.root} (it holds: "
                           f"{', '.join(every) or 'none'})")
    return out


def stored_targets(store: Any, graph_keys: Sequence[str]) -> tuple[str, ...]:
    """The targets the store lowered these graphs for: ``cpu``, and the architectures of
    the binaries it holds for ``cuda`` modules."""
    import pyarrow.compute as pc
    if not graph_keys:
        return ()
    targets = set(store.query("modules", pc.field("graph_key").isin(list(graph_keys)),
                              columns=["target"], verify=False).column("target").to_pylist())
    out = ("cpu",) if "cpu" in targets else ()
    if "cuda" in targets:
        archs = store.query("binaries", columns=["arch"], verify=False).column("arch")
        out += tuple(sorted(set(archs.to_pylist())))
    return out


def relower_config(store_root: str, models: Sequence[StoredModel], targets: Sequence[str],
                   args: argparse.Namespace, gpus: int) -> Any:
    """The ``RunConfig`` of a relower: one ``ModelSpec(graph_key=...)`` per graph, validated
    by the config's own checks (``ConfigError`` names the flag's key)."""
    from pipeline.config import ModelSpec, parse_config
    tune = not args.no_tune and any(t != "cpu" for t in targets) and \
        bool(args.scheduler or gpus)
    data = {"run": {"name": "(stored graphs)", "targets": list(targets), "store": store_root},
            "cluster": {"workers": args.workers,
                        **({"scheduler": args.scheduler} if args.scheduler else {})},
            "tuning": {"enabled": tune, "space": args.space, "budget_s": args.budget_s},
            "compiler": option_overrides(args.option),
            "models": [{"factory": "kiln.stored:graph"}]}    # replaced below
    config = parse_config(data, "kiln relower")
    specs = tuple(ModelSpec(name=m.name, dtype=None, graph_key=m.graph_key) for m in models)
    return dataclasses.replace(config, models=specs)


def relower_main(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``kiln relower``; returns the exit status (as ``kiln run``'s)."""
    from pipeline.cluster import visible_gpus
    from pipeline.config import ConfigError
    from storage import Store
    args = _relower_parser().parse_args(list(argv))
    store = Store(args.store)
    if not store.exists() or not store.files("graphs"):
        err.write(f"kiln relower: error: store {args.store} holds no graphs (kiln capture "
                  f"CONFIG or kiln run CONFIG stores them)\n")
        return EXIT_USAGE
    try:
        models = stored_models(store, args.models)
    except KeyError as exc:
        err.write(f"kiln relower: error: {exc.args[0]}\n")
        return EXIT_USAGE
    ready = [m for m in models if m.graph_key]
    targets = tuple(args.targets or stored_targets(store, [m.graph_key for m in ready]))
    if not targets:
        err.write("kiln relower: error: the store holds no modules of these graphs to take "
                  "targets from: give --target (cpu, sm_90, ...)\n")
        return EXIT_USAGE
    try:
        config = relower_config(args.store, ready, targets, args, visible_gpus())
    except (ConfigError, ValueError) as exc:
        err.write(f"kiln relower: error: {exc}\n")
        return EXIT_USAGE
    for m in models:
        if m.problem:
            err.write(f"kiln relower: {m.name}: not relowered: {m.problem}\n")
    if not ready:
        return EXIT_FAILED
    report = _run(config, args.store, err, command="kiln relower")
    if report is None:
        return EXIT_USAGE
    out.write(format_summary(report) + "\n")
    return report.exit_code or (EXIT_FAILED if len(ready) < len(models) else 0)


def _run(config: Any, store: str, err: TextIO, **options: Any) -> Any:
    """``run_zoo``, or None (said on ``err``) where the cluster cannot start or be reached."""
    from pipeline.runner import run_zoo
    try:
        return run_zoo(config, store, out=err, **options)
    except (OSError, TimeoutError) as exc:
        err.write(f"{options['command']}: error: cannot start or reach the cluster: "
                  f"{type(exc).__name__}: {exc}\n")
        return None


__all__ = ["StoredModel", "capture_main", "format_capture_summary", "option_overrides",
           "relower_config", "relower_main", "stored_models", "stored_targets"]
