"""What a zoo TOML file may say, declared once as pydantic models: the checks, the JSON Schema
(``kiln config schema``) and the reference docs (``kiln config docs``) all come from here.

The models follow the file's layout: ``[run]``, ``[[models]]``, ``[tuning]``, ``[cluster]``,
``[tasks]``, ``[compiler]``. A field's docstring is its documentation. ``validate`` turns
pydantic's errors into one ``ConfigError`` line that names the file and the key path, as
kiln always has; ``pipeline.config`` turns a valid file into the frozen run records.

Example:
    >>> zoo = validate({"models": [{"factory": "pipeline.zoo.tiny:mlp"}]}, "z.toml")
    >>> zoo.run.targets, zoo.models[0].dtype, zoo.cluster.workers
    (['cpu'], 'float32', 2)
    >>> validate({"models": [{"factory": "a.b:c", "dtype": "f8"}]}, "z.toml")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pipeline.config_schema.ConfigError: z.toml: models[0].dtype: expected one of ...; got 'f8'
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, get_args

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

DTYPES = ("bfloat16", "float16", "float32", "float64")
STAGES = ("capture", "lower", "build", "tune", "relower")
DEFAULT_TIMEOUTS = {"capture": 300.0, "lower": 600.0, "build": 600.0, "tune": 1800.0,
                    "relower": 900.0}
MIN_ARCH = 70
TARGET_PATTERN = r"^(cpu|sm_\d{2,3}a?)$"
FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
NAME_PATTERN = r"^[\w.\-/]+$"
_MODELS_MESSAGE = ("expected a non-empty array of tables ([[models]] with factory = "
                   "'pkg.module:function' or pt2 = 'file')")
_FACTORY_ONLY = ("applies to factory models only (a .pt2 file fixes dtypes and dynamic dims "
                 "at export)")


class ConfigError(ValueError):
    """A bad config; the message names the file and the key path (``models[2].dtype``)."""


class Say:
    """Field metadata: this field's message for a pydantic error type, as a format string
    (keys: ``input``, ``type``: the input's type name, and the error's context)."""

    def __init__(self, **templates: str):
        self.templates = templates


def _fail(message: str, at: str = "") -> PydanticCustomError:
    """An error with kiln's own words; ``at`` names a key below where it is raised."""
    return PydanticCustomError("kiln", "{message}", {"message": message, "at": at})


def cuda_arch(target: str) -> int:
    """The compute capability of a GPU target, as Triton's ``GPUTarget`` takes it.

    >>> cuda_arch("sm_90"), cuda_arch("sm_90a"), cuda_arch("sm_120")
    (90, 90, 120)
    """
    return int(target.removeprefix("sm_").rstrip("a"))


def _target(value: Any) -> Any:
    if not isinstance(value, str) or not re.match(TARGET_PATTERN, value):
        raise _fail(f"expected 'cpu' or a GPU architecture like 'sm_90', got {value!r}")
    if value != "cpu" and cuda_arch(value) < MIN_ARCH:
        # Triton's LLVM aborts the whole process for older architectures: refuse here.
        raise _fail(f"{value!r} is older than sm_{MIN_ARCH}, the oldest architecture Triton "
                    f"compiles for")
    return value


Target = Annotated[str, Field(pattern=TARGET_PATTERN), BeforeValidator(_target)]


class TomlTable(BaseModel):
    """A TOML table: values of exactly the declared types (a TOML ``true`` is no count),
    unknown keys refused."""
    model_config = ConfigDict(strict=True, extra="forbid", use_attribute_docstrings=True)

    @classmethod
    def known_keys(cls, raw: Any) -> list[str]:
        """The keys an unknown-key error lists for the table ``raw``."""
        return sorted(cls.model_fields)


class RunTable(TomlTable):
    """``[run]``: what the run is called, what it compiles for, where it stores it."""
    name: str | None = None
    """The run's name in messages (default: the config file's name without ``.toml``)."""
    store: str | None = None
    """Store root, relative to the working directory; ``--store`` wins (default:
    ``./kiln-store``)."""
    targets: Annotated[list[Target], Say(
        too_short="must name at least one target (cpu, sm_80, sm_90, ...)")] = Field(
        default_factory=lambda: ["cpu"], min_length=1)
    """``cpu`` lowers modules the Triton interpreter runs on CPU tensors; ``sm_XX`` lowers
    the CUDA module and builds each kernel's cubin for that architecture (sm_70 and newer;
    no GPU needed to build)."""

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[str]) -> list[str]:
        if len(set(targets)) != len(targets):
            raise _fail(f"repeated target in {targets!r}")
        return targets


class DynamicDim(TomlTable):
    """``[[models.dynamic]]``: one dynamic dimension of a factory model's input."""
    input: int = Field(0, ge=0)
    """Which positional input of the model."""
    dim: Annotated[int, Say(missing="required: which dimension of the input is dynamic")] = \
        Field(ge=0)
    """Which dimension of that input is dynamic (required)."""
    min: int = Field(1, ge=0)
    """The smallest size the dimension takes."""
    max: Annotated[int, Say(missing="required: the largest size this dim takes")] = Field(ge=0)
    """The largest size the dimension takes (required)."""
    name: Annotated[str | None, Say(
        string_pattern_mismatch="must be an identifier, got {input!r}")] = Field(
        None, pattern=r"^[^\W\d]\w*$")
    """The size's symbol; dims that share a name are one size (e.g. one batch size for two
    inputs). Default: ``d<input>_<dim>``."""

    @model_validator(mode="after")
    def _ordered(self) -> "DynamicDim":
        if self.max < self.min:
            raise _fail(f"must be >= min ({self.min}), got {self.max}", at="max")
        return self


class ModelEntry(TomlTable):
    """``[[models]]``: one model of the zoo, made by a factory or read from ``.pt2`` files
    (exactly one of ``factory`` and ``pt2``)."""
    factory: Annotated[str | None, Say(
        string_pattern_mismatch="expected 'package.module:function', got {input!r}")] = \
        Field(None, pattern=FACTORY_PATTERN)
    """``package.module:function`` returning the model and its example inputs; the module is
    imported from the config's directory, the working directory or anywhere on the path."""
    pt2: str | None = None
    """A ``torch.export.save`` file, or a directory of them (one model each), relative to
    the config file's directory."""
    name: Annotated[str | None, Say(
        string_pattern_mismatch="use letters, digits and . _ - / only, got {input!r}")] = \
        Field(None, pattern=NAME_PATTERN)
    """The model's name in the store (default: the factory's function name, or the .pt2
    file's stem; for a directory, a prefix ``name/``)."""
    dtype: Literal[DTYPES] = "float32"
    """Floating dtype the factory's model and inputs are cast to (factory models only)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the factory (factory models only)."""
    dynamic: list[DynamicDim] = Field(default_factory=list)
    """Dimensions compiled as symbolic sizes, not specialised (factory models only)."""

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and (data.get("factory") is None) == (
                data.get("pt2") is None):
            raise _fail("give exactly one of 'factory' ('pkg.module:function') and 'pt2' "
                        "(a file or directory)")
        return data

    @field_validator("dtype", "dynamic", "kwargs", mode="before")
    @classmethod
    def _factory_only(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("pt2") is not None:
            raise _fail(_FACTORY_ONLY)
        return value

    @model_validator(mode="after")
    def _pt2_exists(self, info: ValidationInfo) -> "ModelEntry":
        if self.pt2 is not None:
            self.pt2_files(_base(info))   # raises for a missing file or an empty directory
        return self

    @classmethod
    def known_keys(cls, raw: Any) -> list[str]:
        if isinstance(raw, Mapping) and "pt2" in raw and "factory" not in raw:
            return ["factory", "name", "pt2"]
        return super().known_keys(raw)

    def pt2_files(self, base: Path) -> list[tuple[str, Path]]:
        """``(model name, file)`` of each ``.pt2`` file this entry names."""
        path = Path(self.pt2) if Path(self.pt2).is_absolute() else base / self.pt2
        if path.is_file():
            return [(self.name or path.stem, path)]
        if path.is_dir():
            files = sorted(path.glob("*.pt2"))
            if not files:
                raise _fail(f"directory {path} holds no .pt2 files", at="pt2")
            prefix = f"{self.name}/" if self.name else ""
            return [(f"{prefix}{f.stem}", f) for f in files]
        raise _fail(f"no such file or directory: {path}", at="pt2")

    def names(self, base: Path) -> list[str]:
        if self.factory is not None:
            return [self.name or self.factory.rsplit(":", 1)[1]]
        return [name for name, _ in self.pt2_files(base)]


class TuningTable(TomlTable):
    """``[tuning]``: autotuning. Without GPU workers the run builds every candidate and
    times none (exit 0); a later run with GPU workers times what was never timed."""
    enabled: bool = False
    """Build every candidate config of each kernel's search space (not only the heuristic
    default) and time them on the GPU workers; needs a GPU target in ``run.targets``."""
    space: str = "default"
    """Search-space file: a name under ``configs/autotune/`` or a path relative to the
    config file. Its ``[targets.N]`` resource limits apply to builds even with tuning off."""
    budget_s: float = Field(60.0, ge=0)
    """GPU seconds per kernel shape; candidates not reached wait for the next run."""
    overlap: bool = True
    """Tune each kernel as soon as its candidates are built. False holds every tune until
    no capture, lower or build task is left (a stage barrier: what overlapping saves)."""

    @field_validator("space")
    @classmethod
    def _space(cls, name: str, info: ValidationInfo) -> str:
        """Read and check the file now: a bad one is a config error, not a failure of every
        build task. Returns the name resolved against the config's directory."""
        from compiler.autotune.spaces import SpaceError, load_spaces
        if name.endswith(".toml") or "/" in name:
            name = str(Path(name) if Path(name).is_absolute() else _base(info) / name)
        try:
            load_spaces(name)
        except FileNotFoundError as exc:
            raise _fail(f"no such search-space file: {exc.filename}") from None
        except (SpaceError, ValueError, OSError) as exc:
            raise _fail(str(exc)) from None
        return name


class ClusterTable(TomlTable):
    """``[cluster]``: where tasks run. ``--scheduler`` and ``--workers`` win over these."""
    workers: int = Field(2, ge=1)
    """CPU worker processes of the embedded cluster, one thread each."""
    gpus: int | None = Field(None, ge=0)
    """GPU workers of the embedded cluster, one per card (default: one per visible GPU)."""
    scheduler: Annotated[str | None, Say(
        string_pattern_mismatch="expected an address like 'tcp://host:8786', got {input!r}")] \
        = Field(None, pattern="://")
    """Address of a running Dask scheduler to join instead of starting a cluster."""
    dashboard: str = "127.0.0.1:8787"
    """Where the embedded cluster serves Dask's dashboard (another free port if that one is
    taken; the address is printed); ``""`` turns it off."""


class TimeoutTable(TomlTable):
    """``[tasks.timeout_s]``: seconds a task of each stage may run before it is stopped
    (the process running it is killed) and recorded as failed."""
    capture: float = Field(DEFAULT_TIMEOUTS["capture"], ge=0.001)
    """Capturing one model."""
    lower: float = Field(DEFAULT_TIMEOUTS["lower"], ge=0.001)
    """Lowering one graph for one target."""
    build: float = Field(DEFAULT_TIMEOUTS["build"], ge=0.001)
    """Building one kernel's candidates for one architecture."""
    tune: float = Field(DEFAULT_TIMEOUTS["tune"], ge=0.001)
    """Timing one kernel shape on a GPU."""
    relower: float = Field(DEFAULT_TIMEOUTS["relower"], ge=0.001)
    """Lowering a model again with its tuned configs."""


class TasksTable(TomlTable):
    """``[tasks]``: fault handling."""
    retries: int = Field(2, ge=0)
    """Re-runs of a task on another worker after its worker dies (or its process crashes)."""
    timeout_s: TimeoutTable = Field(default_factory=TimeoutTable)
    """Per-stage timeouts (see ``[tasks.timeout_s]``)."""


class ZooFile(TomlTable):
    """A zoo config file: the models to bake and how."""
    run: RunTable = Field(default_factory=RunTable)
    """The run (see ``[run]``)."""
    models: Annotated[list[ModelEntry], Say(missing=_MODELS_MESSAGE, list_type=_MODELS_MESSAGE,
                                            too_short=_MODELS_MESSAGE)] = Field(min_length=1)
    """The models (see ``[[models]]``; at least one)."""
    tuning: TuningTable = Field(default_factory=TuningTable)
    """Autotuning (see ``[tuning]``)."""
    cluster: ClusterTable = Field(default_factory=ClusterTable)
    """The cluster (see ``[cluster]``)."""
    tasks: TasksTable = Field(default_factory=TasksTable)
    """Fault handling (see ``[tasks]``)."""
    compiler: Annotated[dict[str, Any], Say(dict_type="expected a table, got {type}")] = \
        Field(default_factory=dict)
    """Compiler option overrides (``configs/compiler.toml`` lists them), checked by the
    compiler's option loader."""

    @field_validator("models")
    @classmethod
    def _distinct_names(cls, models: list[ModelEntry], info: ValidationInfo) -> list:
        seen: set[str] = set()
        for entry in models:
            for name in entry.names(_base(info)):
                if name in seen:
                    raise _fail(f"two models are named {name!r}; give one a distinct name")
                seen.add(name)
        return models

    @field_validator("tuning")
    @classmethod
    def _gpu_to_tune(cls, tuning: TuningTable, info: ValidationInfo) -> TuningTable:
        run = info.data.get("run")
        if tuning.enabled and run is not None and all(t == "cpu" for t in run.targets):
            raise _fail("tuning times kernels on GPUs: add a GPU architecture (e.g. 'sm_90') "
                        "to run.targets, or set enabled = false", at="enabled")
        return tuning

    @field_validator("compiler")
    @classmethod
    def _compiler(cls, options: dict[str, Any]) -> dict[str, Any]:
        from compiler.config import OptionsError, load_options
        try:
            load_options(options)
        except OptionsError as exc:
            raise _fail(str(exc)) from None
        return options


def _base(info: ValidationInfo) -> Path:
    """The config file's directory: relative ``.pt2`` and search-space paths start there."""
    return Path((info.context or {}).get("base") or Path.cwd())


# --- errors in kiln's words -------------------------------------------------------------------

_KIND_WORDS = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
               "bool_type": "true/false", "list_type": "an array", "dict_type": "a table"}


def validate(data: Any, source: str, base_dir: str | Path | None = None) -> ZooFile:
    """``data`` (parsed TOML) checked against ``ZooFile``, or ``ConfigError`` naming the file
    and the key path of the first problem."""
    try:
        return ZooFile.model_validate(data, context={"base": base_dir})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_problem(exc.errors(include_url=False), data)}") \
            from None


def _first_problem(errors: list[dict[str, Any]], data: Any) -> str:
    first = errors[0]
    if first["type"] == "extra_forbidden":   # the alphabetically first unknown key of a table
        first = min((e for e in errors if e["type"] == "extra_forbidden"
                     and e["loc"][:-1] == first["loc"][:-1]), key=lambda e: str(e["loc"][-1]))
    loc = tuple(first["loc"]) + ((first["ctx"]["at"],) if first["type"] == "kiln"
                                  and first["ctx"]["at"] else ())
    return f"{_path(loc) or 'top level'}: {_message(first, loc, data)}"


def _path(loc: tuple[Any, ...]) -> str:
    """``('models', 2, 'dtype')`` -> ``models[2].dtype``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _message(error: dict[str, Any], loc: tuple[Any, ...], data: Any) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind == "kiln":
        return ctx["message"]
    table, field = _table_at(loc[:-1]), loc[-1] if loc else None
    info = table.model_fields.get(field) if table and isinstance(field, str) else None
    for say in (m for m in (info.metadata if info else ()) if isinstance(m, Say)):
        if kind in say.templates:
            return say.templates[kind].format(input=value, type=type(value).__name__, **ctx)
    if kind == "extra_forbidden":
        known = table.known_keys(_raw_at(data, loc[:-1]))
        return f"unknown key; known keys here: {', '.join(known)}"
    if kind == "model_type":
        return f"expected a table, got {type(value).__name__}"
    if kind == "literal_error" and info is not None:
        choices = get_args(info.annotation)
        if isinstance(value, str):
            return f"expected one of {', '.join(choices)}; got {value!r}"
        kind = "string_type"
    if kind in _KIND_WORDS:
        return f"expected {_KIND_WORDS[kind]}, got {type(value).__name__} ({value!r})"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']:g}, got {value!r}"
    return error["msg"]


def _table_at(loc: tuple[Any, ...]) -> type[TomlTable] | None:
    """The model class of the table at ``loc`` (list indices step into the item type)."""
    annotation: Any = ZooFile
    for part in loc:
        if isinstance(part, int):
            annotation = (get_args(annotation) or (None,))[0]
        elif isinstance(annotation, type) and issubclass(annotation, TomlTable):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, TomlTable) \
        else None


def _raw_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data

