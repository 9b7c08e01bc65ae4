"""Run configuration: a zoo TOML file → frozen dataclasses, validated with errors naming the key.

The file's schema (every key, its type, default and meaning) is ``pipeline.config_schema``;
``docs/config.md`` is generated from it. This module reads a file, validates it there and
resolves it into the records a run uses.

A config names the models of a zoo (factories ``pkg.module:function`` or ``.pt2`` files from
``torch.export.save``), the targets to compile for, tuning settings, the store and the cluster.
Every problem raises ``ConfigError`` whose message starts with the file and the key path, e.g.
``configs/zoo.toml: models[2].dtype: expected one of bfloat16, float16, float32, float64; got
'float33'``.

Paths: ``.pt2`` paths are relative to the config file's directory (a zoo travels with its
files); ``run.store`` is relative to the working directory (like ``--store``). A factory's
module is imported, on every worker, from the config file's directory, the working
directory, or anywhere on ``PYTHONPATH`` / among installed packages (``mymodels:net`` next
to ``my.toml`` just works).

Example:
    >>> cfg = parse_config({"models": [{"factory": "pipeline.zoo.tiny:mlp"}]}, "inline")
    >>> cfg.models[0].name, cfg.models[0].dtype, cfg.targets
    ('mlp', 'float32', ('cpu',))
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# Re-exported: callers import them from here.
from pipeline.config_schema import (DEFAULT_TIMEOUTS, DTYPES, MIN_ARCH, STAGES,  # noqa: F401
                                    ConfigError, ModelEntry, cuda_arch, validate)


@dataclass(frozen=True)
class DynamicDim:
    """One dynamic dimension: ``input`` (positional index) dim ``dim`` ranges over [min, max].

    Dims sharing a ``name`` are the same symbol (e.g. one batch size for two inputs).
    """
    input: int
    dim: int
    min: int
    max: int
    name: str


@dataclass(frozen=True)
class ModelSpec:
    """One model of a zoo: exactly one of ``factory`` and ``pt2`` is set, or, for ``kiln
    relower``, neither and ``graph_key`` names the model's graph in the store.

    ``kwargs_json`` holds the factory's keyword arguments as JSON text, so the spec stays a
    small hashable value that travels to workers. ``dtype`` is None for ``.pt2`` models (an
    exported program's dtypes are fixed). ``search_path`` is appended to a worker's
    ``sys.path`` before the factory is imported (installed packages win over a local file
    of the same name).
    """
    name: str
    factory: str | None = None
    pt2: str | None = None
    kwargs_json: str = "{}"
    dtype: str | None = "float32"
    dynamic: tuple[DynamicDim, ...] = ()
    # Where a factory's module is looked for besides the worker's own sys.path (PYTHONPATH,
    # installed packages): the config file's directory and the directory kiln ran in.
    search_path: tuple[str, ...] = ()
    graph_key: str | None = None     # a stored graph: read from the store, never captured

    @property
    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.kwargs_json)

    @property
    def source(self) -> str:
        """What the model is made from, for plans and failure rows."""
        if self.graph_key:
            return f"graph:{self.graph_key}"
        return self.factory if self.factory else f"pt2:{self.pt2}"


@dataclass(frozen=True)
class TuningSpec:
    """Autotuning settings.

    ``enabled``: build every candidate config of each kernel's search space (not only the
    heuristic default) and time them on the GPU workers. ``space``: a search-space file,
    ``configs/autotune/<name>.toml`` by name or a path (relative to the config file); its
    ``[targets.N]`` resource limits apply to builds even with tuning off. ``budget_s``: GPU
    seconds per kernel shape; candidates not reached within it are left for the next run
    (nothing is recorded for them, so a rerun plans them again). ``overlap``: tune a kernel
    as soon as its builds finish; False holds every tune behind the last capture, lower and
    build (a stage barrier, to measure what the overlap saves).
    """
    enabled: bool = False
    space: str = "default"
    budget_s: float = 60.0
    overlap: bool = True


@dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run: an embedded LocalCluster (``scheduler`` None) or an existing one.

    ``gpus`` None means one GPU worker per visible GPU; 0 means none. ``dashboard``: where
    the embedded cluster serves Dask's dashboard ("" for none).
    """
    workers: int = 2
    gpus: int | None = None
    scheduler: str | None = None
    dashboard: str = "127.0.0.1:8787"


@dataclass(frozen=True)
class TaskSpec:
    """Fault handling: per-stage timeouts and re-runs after a worker dies."""
    retries: int = 2
    timeout_s: tuple[tuple[str, float], ...] = tuple(DEFAULT_TIMEOUTS.items())

    def timeout(self, stage: str) -> float:
        return dict(self.timeout_s)[stage]


@dataclass(frozen=True)
class RunConfig:
    """A whole zoo run. ``store`` None means the caller's default (``./kiln-store``)."""
    name: str
    path: str
    models: tuple[ModelSpec, ...]
    targets: tuple[str, ...] = ("cpu",)
    store: str | None = None
    tuning: TuningSpec = field(default_factory=TuningSpec)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    tasks: TaskSpec = field(default_factory=TaskSpec)
    compiler_json: str = "{}"

    @property
    def compiler_options(self) -> dict[str, Any]:
        return json.loads(self.compiler_json)


def gpu_targets(config: RunConfig) -> tuple[str, ...]:
    """The GPU architectures of ``config`` (what the build stage compiles for), in order.

    >>> gpu_targets(parse_config({"models": [{"factory": "a.b:c"}],
    ...                           "run": {"targets": ["cpu", "sm_90", "sm_80"]}}, "z.toml"))
    ('sm_90', 'sm_80')
    """
    return tuple(t for t in config.targets if t != "cpu")


def lower_target(target: str) -> str:
    """The compiler target a config target lowers with: ``cpu`` or ``cuda`` (any ``sm_XX``).

    Architectures share one lowered module; they differ only at the build stage.

    >>> lower_target("sm_90"), lower_target("cpu")
    ('cuda', 'cpu')
    """
    return "cpu" if target == "cpu" else "cuda"


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a zoo TOML file.

    >>> load_config("configs/zoo-tiny.toml").name  # doctest: +SKIP
    'zoo-tiny'
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the path of a .toml config "
                          f"file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a TOML config is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path), base_dir=path.resolve().parent)


def parse_config(data: Mapping[str, Any], source: str,
                 base_dir: str | Path | None = None) -> RunConfig:
    """Validate already-parsed TOML (``pipeline.config_schema``) into a ``RunConfig``;
    ``base_dir`` resolves relative ``.pt2`` and search-space paths."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    zoo = validate(data, source, base)
    search = tuple(dict.fromkeys([str(base.resolve()), str(Path.cwd())]))
    timeouts = zoo.tasks.timeout_s.model_dump()
    return RunConfig(
        name=zoo.run.name if zoo.run.name is not None else Path(source).stem, path=source,
        models=tuple(spec for entry in zoo.models for spec in _specs(entry, base, search)),
        targets=tuple(zoo.run.targets), store=zoo.run.store,
        tuning=TuningSpec(**zoo.tuning.model_dump()),
        cluster=ClusterSpec(**zoo.cluster.model_dump()),
        tasks=TaskSpec(retries=zoo.tasks.retries,
                       timeout_s=tuple((stage, timeouts[stage]) for stage in STAGES)),
        compiler_json=json.dumps(zoo.compiler, sort_keys=True))


def _specs(entry: ModelEntry, base: Path, search: tuple[str, ...]) -> list[ModelSpec]:
    """The models one ``[[models]]`` entry names (a ``.pt2`` directory names several)."""
    if entry.pt2 is not None:
        return [ModelSpec(name=name, pt2=str(path), dtype=None)
                for name, path in entry.pt2_files(base)]
    dynamic = tuple(DynamicDim(input=d.input, dim=d.dim, min=d.min, max=d.max,
                               name=d.name or f"d{d.input}_{d.dim}") for d in entry.dynamic)
    return [ModelSpec(name=entry.names(base)[0], factory=entry.factory,
                      kwargs_json=json.dumps(entry.kwargs, sort_keys=True), dtype=entry.dtype,
                      dynamic=dynamic, search_path=search)]
