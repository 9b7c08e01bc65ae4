"""Run configuration: a zoo TOML file → frozen dataclasses, validated with errors naming the key.

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
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DTYPES = ("bfloat16", "float16", "float32", "float64")
STAGES = ("capture", "lower", "build", "tune", "relower")
DEFAULT_TIMEOUTS = {"capture": 300.0, "lower": 600.0, "build": 600.0, "tune": 1800.0,
                    "relower": 900.0}
MIN_ARCH = 70
_TARGET_RE = re.compile(r"^(cpu|sm_\d{2,3}a?)$")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME_RE = re.compile(r"^[\w.\-/]+$")


class ConfigError(ValueError):
    """A bad config; the message names the file and the key path (``models[2].dtype``)."""


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
    (nothing is recorded for them, so a rerun plans them again).
    """
    enabled: bool = False
    space: str = "default"
    budget_s: float = 60.0


@dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run: an embedded LocalCluster (``scheduler`` None) or an existing one.

    ``gpus`` None means one GPU worker per visible GPU; 0 means none.
    """
    workers: int = 2
    gpus: int | None = None
    scheduler: str | None = None


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


def cuda_arch(target: str) -> int:
    """The compute capability of a GPU target, as Triton's ``GPUTarget`` takes it.

    >>> cuda_arch("sm_90"), cuda_arch("sm_90a"), cuda_arch("sm_120")
    (90, 90, 120)
    """
    return int(target.removeprefix("sm_").rstrip("a"))


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


# --- validation helpers: each takes the key path it reports ---------------------------------

class _Table:
    """A TOML table being validated; remembers which keys were read to reject unknown ones."""

    def __init__(self, data: Any, path: str, source: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {path or 'top level'}: expected a table, "
                              f"got {type(data).__name__}")
        self.data, self.path, self.source, self.seen = data, path, source, set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a TOML `true` must not pass as a count.
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"expected {_kind_names(kinds)}, got bool ({value!r})")
        if not isinstance(value, kinds):
            raise self.error(name, f"expected {_kind_names(kinds)}, got "
                                   f"{type(value).__name__} ({value!r})")
        return value

    def table(self, name: str) -> "_Table":
        self.seen.add(name)
        return _Table(self.data.get(name, {}), self.key(name), self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], f"unknown key; known keys here: "
                                         f"{', '.join(sorted(self.seen))}")


def _kind_names(kinds: tuple[type, ...]) -> str:
    if set(kinds) == {int, float}:
        return "a number"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive(t: _Table, name: str, kind: type | tuple[type, ...], default: Any,
              minimum: float = 1) -> Any:
    value = t.get(name, kind, default)
    if value is not None and value < minimum:
        raise t.error(name, f"must be >= {minimum}, got {value!r}")
    return value


# --- sections ---------------------------------------------------------------------------------

def parse_config(data: Mapping[str, Any], source: str,
                 base_dir: str | Path | None = None) -> RunConfig:
    """Validate already-parsed TOML; ``base_dir`` resolves relative ``.pt2`` paths."""
    top = _Table(data, "", source)
    run = top.table("run")
    name = run.get("name", str, Path(source).stem)
    store = run.get("store", str)
    targets = _targets(run)
    run.finish()
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    models = _models(top, base)
    tuning = _tuning(top.table("tuning"), base, targets)
    cfg = RunConfig(name=name, path=source, models=models, targets=targets, store=store,
                    tuning=tuning, cluster=_cluster(top.table("cluster")),
                    tasks=_tasks(top.table("tasks")), compiler_json=_compiler(top))
    top.finish()
    return cfg


def _targets(run: _Table) -> tuple[str, ...]:
    targets = run.get("targets", list, ["cpu"])
    if not targets:
        raise run.error("targets", "must name at least one target (cpu, sm_80, sm_90, ...)")
    for i, target in enumerate(targets):
        if not isinstance(target, str) or not _TARGET_RE.match(target):
            raise ConfigError(f"{run.source}: {run.key('targets')}[{i}]: expected 'cpu' or a "
                              f"GPU architecture like 'sm_90', got {target!r}")
        if target != "cpu" and cuda_arch(target) < MIN_ARCH:
            # Triton's LLVM aborts the whole process for older architectures: refuse here.
            raise ConfigError(f"{run.source}: {run.key('targets')}[{i}]: {target!r} is older "
                              f"than sm_{MIN_ARCH}, the oldest architecture Triton compiles for")
    if len(set(targets)) != len(targets):
        raise run.error("targets", f"repeated target in {targets!r}")
    return tuple(targets)


def _tuning(t: _Table, base: Path, targets: tuple[str, ...]) -> TuningSpec:
    enabled = t.get("enabled", bool, False)
    spec = TuningSpec(enabled=enabled, space=_space(t, base),
                      budget_s=float(_positive(t, "budget_s", (int, float), 60.0, 0)))
    t.finish()
    if enabled and all(target == "cpu" for target in targets):
        raise t.error("enabled", "tuning times kernels on GPUs: add a GPU architecture "
                                 "(e.g. 'sm_90') to run.targets, or set enabled = false")
    return spec


def _space(t: _Table, base: Path) -> str:
    """The search-space file: a name under configs/autotune/, or a path resolved against the
    config's directory; read and checked now, so a bad file is a config error, not a failure
    of every build task."""
    name = t.get("space", str, "default")
    if name.endswith(".toml") or "/" in name:
        path = Path(name) if Path(name).is_absolute() else base / name
        name = str(path)
    try:
        from compiler.autotune.spaces import SpaceError, load_spaces
    except ImportError:  # the compiler package is not importable: keep the name
        return name
    try:
        load_spaces(name)
    except FileNotFoundError as exc:
        raise t.error("space", f"no such search-space file: {exc.filename}") from None
    except (SpaceError, ValueError, OSError) as exc:
        raise t.error("space", str(exc)) from None
    return name


def _cluster(t: _Table) -> ClusterSpec:
    scheduler = t.get("scheduler", str)
    if scheduler is not None and "://" not in scheduler:
        raise t.error("scheduler", f"expected an address like 'tcp://host:8786', "
                                   f"got {scheduler!r}")
    spec = ClusterSpec(workers=_positive(t, "workers", int, 2),
                       gpus=_positive(t, "gpus", int, None, 0), scheduler=scheduler)
    t.finish()
    return spec


def _tasks(t: _Table) -> TaskSpec:
    retries = _positive(t, "retries", int, 2, 0)
    timeouts = dict(DEFAULT_TIMEOUTS)
    tt = t.table("timeout_s")
    for stage in STAGES:
        timeouts[stage] = float(_positive(tt, stage, (int, float), timeouts[stage], 0.001))
    tt.finish()
    t.finish()
    return TaskSpec(retries=retries, timeout_s=tuple(timeouts.items()))


def _compiler(top: _Table) -> str:
    """Compiler option overrides, checked by the compiler's own option loader."""
    options = dict(top.table("compiler").data)
    try:
        from compiler.config import OptionsError, load_options
    except ImportError:  # the compiler package is not importable: keep the raw table
        return json.dumps(options, sort_keys=True)
    try:
        load_options(options)
    except OptionsError as exc:
        raise ConfigError(f"{top.source}: compiler: {exc}") from None
    return json.dumps(options, sort_keys=True)


def _models(top: _Table, base: Path) -> tuple[ModelSpec, ...]:
    top.seen.add("models")
    raw = top.data.get("models")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{top.source}: models: expected a non-empty array of tables "
                          f"([[models]] with factory = 'pkg.module:function' or pt2 = 'file')")
    models: list[ModelSpec] = []
    search = tuple(dict.fromkeys([str(base.resolve()), str(Path.cwd())]))
    for i, entry in enumerate(raw):
        models.extend(_model(_Table(entry, f"models[{i}]", top.source), base, search))
    seen: dict[str, int] = {}
    for i, spec in enumerate(models):
        if spec.name in seen:
            raise ConfigError(f"{top.source}: models: two models are named {spec.name!r}; "
                              f"give one a distinct name")
        seen[spec.name] = i
    return tuple(models)


def _model(t: _Table, base: Path, search: tuple[str, ...]) -> list[ModelSpec]:
    factory, pt2 = t.get("factory", str), t.get("pt2", str)
    if (factory is None) == (pt2 is None):
        raise ConfigError(f"{t.source}: {t.path}: give exactly one of 'factory' "
                          f"('pkg.module:function') and 'pt2' (a file or directory)")
    name = t.get("name", str)
    if name is not None and not _NAME_RE.match(name):
        raise t.error("name", f"use letters, digits and . _ - / only, got {name!r}")
    if factory is not None:
        return [_factory_model(t, factory, name, search)]
    for key in ("dtype", "dynamic", "kwargs"):
        if key in t.data:
            raise t.error(key, "applies to factory models only (a .pt2 file fixes dtypes "
                               "and dynamic dims at export)")
    t.finish()
    return [ModelSpec(name=n, pt2=str(p), dtype=None) for n, p in _pt2_files(t, pt2, name, base)]


def _factory_model(t: _Table, factory: str, name: str | None,
                   search: tuple[str, ...]) -> ModelSpec:
    if not _FACTORY_RE.match(factory):
        raise t.error("factory", f"expected 'package.module:function', got {factory!r}")
    dtype = t.get("dtype", str, "float32")
    if dtype not in DTYPES:
        raise t.error("dtype", f"expected one of {', '.join(DTYPES)}; got {dtype!r}")
    kwargs = t.get("kwargs", dict, {})
    dynamic = tuple(_dynamic_dim(_Table(d, f"{t.key('dynamic')}[{j}]", t.source), j)
                    for j, d in enumerate(t.get("dynamic", list, [])))
    t.finish()
    return ModelSpec(name=name or factory.rsplit(":", 1)[1], factory=factory,
                     kwargs_json=json.dumps(kwargs, sort_keys=True), dtype=dtype,
                     dynamic=dynamic, search_path=search)


def _dynamic_dim(t: _Table, index: int) -> DynamicDim:
    inp = _positive(t, "input", int, 0, 0)
    dim = _positive(t, "dim", int, None, 0)
    if dim is None:
        raise t.error("dim", "required: which dimension of the input is dynamic")
    lo = _positive(t, "min", int, 1, 0)
    hi = _positive(t, "max", int, None, 0)
    if hi is None:
        raise t.error("max", "required: the largest size this dim takes")
    if hi < lo:
        raise t.error("max", f"must be >= min ({lo}), got {hi}")
    name = t.get("name", str, f"d{inp}_{dim}")
    if not name.isidentifier():
        raise t.error("name", f"must be an identifier, got {name!r}")
    t.finish()
    return DynamicDim(input=inp, dim=dim, min=lo, max=hi, name=name)


def _pt2_files(t: _Table, pt2: str, name: str | None, base: Path) -> list[tuple[str, Path]]:
    path = Path(pt2) if Path(pt2).is_absolute() else base / pt2
    if path.is_file():
        return [(name or path.stem, path)]
    if path.is_dir():
        files = sorted(path.glob("*.pt2"))
        if not files:
            raise t.error("pt2", f"directory {path} holds no .pt2 files")
        prefix = f"{name}/" if name else ""
        return [(f"{prefix}{f.stem}", f) for f in files]
    raise t.error("pt2", f"no such file or directory: {path}")
