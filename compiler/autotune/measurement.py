"""Measuring candidates at a kernel's real shapes: inputs, output checks, timings, the device.

A ``KernelLaunch`` says how a kernel is called: each pointer argument's dtype and extent,
which are outputs, the numel arguments, and the config the wrapper launched (the default).
``record_launches`` learns all of it by running a compiled module once; ``launch_from_meta``
builds one from the kernel's spec plus caller-given dtypes, extents and sizes (a module's
example sizes, where the spec's are symbolic).

A ``Tuner`` draws inputs once, fresh random (never zeros; integer buffers such as gather
indices keep the values recorded from a real run, so every index stays in range), runs the
default config for reference outputs, then per candidate: restores the inputs, launches,
compares every output with the reference (a wrong config is ``wrong_result`` and never
timed), and on a GPU times it with ``triton.testing.do_bench`` (warm-up, then every
repetition kept; the median is reported). Under the CPU interpreter nothing is timed: a
verified candidate is ``not_timed``, with no numbers. ``Config(extern=1)`` of a GEMM
template (or of any kernel whose spec has a baseline: a depthwise conv kernel's cuDNN conv)
runs the extern path instead (``baseline.extern_launcher``: the ATen call plus the separate
epilogue kernel) on the same inputs, checked and timed like any other candidate.

Example:
    >>> info = device_info("cpu")
    >>> info.timed, info.arch
    (False, 'cpu')
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..artifact import KernelArtifact, content_hash
from ..kernels.signature import dtype_name
from ..kernels.host import BoundLaunch
from ..kernels.load import load_kernel
from .baseline import extern_launcher
from .search import coordinate_descent
from .timing import Timer
from .spaces import (Config, SearchSettings, Space, TRITON_DEFAULT_NUM_STAGES, candidates,
                     default_config, grid)

MEASURE_STATUSES = ("ok", "not_timed", "wrong_result", "launch_error", "resource_error",
                    "runtime_error", "build_error")


# ----------------------------------------------------------------------------- launches
@dataclass(frozen=True, eq=False)
class TensorArg:
    """One pointer argument: ``numel`` elements from the pointer on may be touched."""
    dtype: str
    numel: int
    is_output: bool
    values: torch.Tensor | None = None   # flat contents to reuse (integer/bool buffers)
    nonnegative: bool = False            # a float input that was >= 0 (a variance, a count)


@dataclass(frozen=True, eq=False)
class KernelLaunch:
    """How one kernel is launched at one size: enough to run it alone, on fresh inputs."""
    kernel: KernelArtifact
    args: tuple[TensorArg, ...]
    numels: tuple[int, ...]
    default: Config
    size_args: tuple[int, ...] = ()      # run-time size symbols (s0...) of a dynamic kernel

    @property
    def kind(self) -> str:
        return str(self.kernel.spec.kind)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(a.dtype for a in self.args)

    @property
    def int_args(self) -> tuple[int, ...]:
        """Every integer argument in order: numels, then size symbols (``build``'s sizes)."""
        return self.numels + self.size_args

    def sizes(self) -> dict[str, Any]:
        """What a trial is timed at: the numels by name, any size symbols, and the pointer
        dtypes (the same source can run on float32 and int64 buffers)."""
        out = {**dict(zip(self.kernel.spec.kind.numel_names, self.numels)),
               "dtypes": list(self.dtypes)}
        if self.size_args:
            out["size_args"] = list(self.size_args)
        return out


def _tensor_arg(t: torch.Tensor, is_output: bool) -> TensorArg:
    numel = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    flat = t.detach().as_strided((numel,), (1,), t.storage_offset())
    values = None
    nonnegative = False
    if not (t.dtype.is_floating_point or t.dtype.is_complex):
        values = flat.clone()
    elif not is_output and numel:
        nonnegative = bool((flat >= 0).all())
    return TensorArg(dtype_name(t.dtype), int(numel), is_output, values, nonnegative)


class _Recorder:
    """Stands in for a kernel in a loaded module: records its first launch, then launches."""

    def __init__(self, fn, kernel: KernelArtifact, launches: dict[str, KernelLaunch]):
        self.fn, self.kernel, self.launches = fn, kernel, launches

    def __getitem__(self, grid_):
        def launch(*args, **kwargs):
            if self.kernel.name not in self.launches:
                self.launches[self.kernel.name] = self._record(args, kwargs)
            return self.fn[grid_](*args, **kwargs)
        return launch

    def _record(self, args, kwargs) -> KernelLaunch:
        spec = self.kernel.spec
        n_ptr, n_out = len(spec.buffers), spec.outputs
        tensors = [_tensor_arg(t, k >= n_ptr - n_out) for k, t in enumerate(args[:n_ptr])]
        ints = tuple(int(n) for n in args[n_ptr:])
        n_numels = len(spec.numels)
        kwargs = {"num_stages": TRITON_DEFAULT_NUM_STAGES, **kwargs}
        return KernelLaunch(self.kernel, tuple(tensors), ints[:n_numels], Config.from_dict(kwargs),
                            ints[n_numels:])


@contextlib.contextmanager
def record_launches(compiled) -> Iterator[dict[str, KernelLaunch]]:
    """While open, every kernel a ``CompiledModule`` launches is recorded (by kernel name).

    Example: ``with record_launches(model.compiled) as launches: model(*args)``.
    """
    module = compiled.module
    kernels = {k.name: k for k in compiled.artifact.kernels}
    launches: dict[str, KernelLaunch] = {}
    originals = {name: getattr(module, name) for name in kernels}
    for name, fn in originals.items():
        setattr(module, name, _Recorder(fn, kernels[name], launches))
    # A wrapper binds each launch site once, when it loads (``kernels.host.bind_launch``):
    # those sites hold the kernel itself, so each records through its ``run``.
    names = {id(fn): name for name, fn in originals.items()}
    sites = {site: site.run for site in vars(module).values()
             if isinstance(site, BoundLaunch) and id(site.kernel) in names}
    for site, run in sites.items():
        site.run = _recording_run(site, run, _Recorder(site.kernel, kernels[
            names[id(site.kernel)]], launches))
    try:
        yield launches
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)
        for site, run in sites.items():
            site.run = run


def _recording_run(site, run, recorder: _Recorder):
    """A bound launch site's ``run`` (arguments then the stream; a grid first where the
    site has none bound) that records its kernel's first launch."""
    def recording(*args):
        if recorder.kernel.name not in recorder.launches:
            passed = args[:-1] if site.grid is not None else args[1:-1]
            recorder.launches[recorder.kernel.name] = recorder._record(passed, site.meta)
        return run(*args)
    return recording


def launch_from_meta(kernel: KernelArtifact, dtypes: Sequence[str | torch.dtype],
                     extents: Sequence[int] | None = None, sizes: Sequence[int] | None = None,
                     device_type: str = "cuda", options: Any = None,
                     size_args: Sequence[int] = ()) -> KernelLaunch:
    """A launch from the kernel's spec and caller-given pointer ``dtypes`` (``spec.buffers``
    order).

    ``extents`` (elements each pointer may touch) default to the iteration space's size,
    right for contiguous buffers over the kernel's dims but not for strided or sliced reads:
    pass them when known. Integer buffers are drawn in [0, 2), a safe index into any dim.
    ``sizes`` (the numels) and ``size_args`` are needed for a dynamic-shape kernel.
    """
    spec = kernel.spec
    numels = spec.int_numels(sizes)
    if len(dtypes) != len(spec.buffers):
        raise ValueError(f"kernel {kernel.name} has {len(spec.buffers)} pointers, "
                         f"got {len(dtypes)} dtypes")
    extents = extents or [math.prod(numels)] * len(dtypes)
    args = tuple(TensorArg(dtype_name(d), int(e), k >= len(dtypes) - spec.outputs)
                 for k, (d, e) in enumerate(zip(dtypes, extents)))
    return KernelLaunch(kernel, args, numels,
                        default_config(spec.kind, numels, device_type, options,
                                       spec.rows_across, spec.stencil),
                        tuple(int(v) for v in size_args))


# ----------------------------------------------------------------------------- inputs
def make_inputs(launch: KernelLaunch, device: str, seed: int = 0) -> list[torch.Tensor]:
    """One flat tensor per pointer: recorded values, else seeded random (never zeros)."""
    out = []
    for k, arg in enumerate(launch.args):
        dtype = getattr(torch, arg.dtype.removeprefix("torch."))
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        if arg.values is not None:
            t = arg.values.to(device=device, copy=True)
        elif dtype.is_floating_point:
            t = torch.randn(arg.numel, generator=gen, dtype=torch.float32)
            t = (t.abs() + 0.01 if arg.nonnegative else t).to(dtype)
        elif dtype == torch.bool:
            t = torch.rand(arg.numel, generator=gen) > 0.5
        else:
            t = torch.randint(0, 2, (arg.numel,), generator=gen, dtype=dtype)
        out.append(t.to(device))
    return out


def outputs_match(ref: torch.Tensor, out: torch.Tensor) -> tuple[bool, float]:
    """(match, error). Floats: within ``rtol * (|ref| + max|ref| / 10)`` (rtol 1e-4 for
    float32/64, 1e-2 float16, 2e-2 bfloat16), NaN and inf exactly where the reference has
    them; the error is the max abs difference. Integers and bools: exactly (argmax ties break
    left in every config); the error is the count of differing elements."""
    if not ref.dtype.is_floating_point:
        bad = (ref != out)
        return not bool(bad.any()), float(bad.sum())
    r, o = ref.double(), out.double()
    nan = torch.isnan(r)
    if not torch.equal(nan, torch.isnan(o)):
        return False, math.inf
    finite = torch.isfinite(r)
    if not torch.equal(r[~finite & ~nan], o[~finite & ~nan]):
        return False, math.inf
    r, o = r[finite], o[finite]
    if r.numel() == 0:
        return True, 0.0
    rtol = {torch.float16: 1e-2, torch.bfloat16: 2e-2}.get(ref.dtype, 1e-4)
    scale = max(1.0, float(r.abs().max()))
    err = (o - r).abs()
    return bool((err <= rtol * scale * 0.1 + rtol * r.abs()).all()), float(err.max())


# ----------------------------------------------------------------------------- the device
@dataclass(frozen=True)
class DeviceInfo:
    """The card a measurement ran on; the trial columns ``device_name, arch, driver, clocks``."""
    name: str
    arch: str
    driver: str
    clocks: str                 # "default", "app:<MHz>" (application clocks set), "n/a"
    timed: bool                 # False under the CPU interpreter
    # nvidia-smi's readings (current SM clock, temperature, power...): informative only
    readings: dict[str, str] = field(default_factory=dict, compare=False)


_SMI_FIELDS = ("driver_version", "clocks.sm", "clocks.max.sm", "clocks.applications.graphics",
               "clocks.default_applications.graphics", "pstate", "temperature.gpu", "power.draw",
               "persistence_mode")


def _nvidia_smi(uuid: str | None) -> dict[str, str]:
    cmd = ["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    if uuid:
        cmd.append(f"--id={uuid}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    if not lines:
        return {}
    values = [v.strip() for v in lines[0].split(",")]
    return dict(zip(_SMI_FIELDS, values)) if len(values) == len(_SMI_FIELDS) else {}


def device_info(device: str = "cuda") -> DeviceInfo:
    """Name, arch, driver and clock state of ``device`` ("cuda[:N]" or "cpu")."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return DeviceInfo("cpu (Triton interpreter)", "cpu", "", "n/a", False)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    smi = _nvidia_smi(f"GPU-{uuid}" if uuid and not uuid.startswith("GPU-") else uuid or None)
    driver = smi.get("driver_version") or f"cuda-driver-api-{torch._C._cuda_getDriverVersion()}"
    app, default_app = smi.get("clocks.applications.graphics"), smi.get(
        "clocks.default_applications.graphics")
    clocks = f"app:{app}MHz" if app and default_app and app != default_app else "default"
    return DeviceInfo(props.name, f"sm_{props.major}{props.minor}", driver, clocks, True, smi)


# ----------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class Measurement:
    """One candidate on one device. ``times_ms`` is empty unless status is "ok"."""
    config: Config
    status: str
    times_ms: tuple[float, ...] = ()
    error: str | None = None
    max_abs_error: float | None = None
    n_regs: int | None = None
    n_spills: int | None = None
    cubin_sha256: str | None = None    # of the binary the GPU ran (compare with the build's)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None


class Tuner:
    """Runs candidates of one ``KernelLaunch`` on ``device`` against the default's outputs.

    Inputs are drawn once (seeded) and restored before every run, so every candidate sees
    the same data. Nothing runs until asked: the default config runs (untimed) for reference
    outputs the first time another config needs them, and is timed only when asked for
    itself. ``seconds`` accumulates the wall time spent launching and timing.

    ``stored(config)`` gives the config's kernel loaded from the binary the build stage
    stored (``kernels.stored``), a string saying why that binary cannot run here, or None
    when there is none: those configs are JIT compiled (``origins`` says which way each
    config came, ``fallbacks`` why a stored one was not used). Getting a kernel, loaded or
    compiled, is CPU work: it counts in ``load_seconds``, not in ``seconds``.
    """

    def __init__(self, launch: KernelLaunch, device: str = "cuda", *, warmup_ms: int = 25,
                 rep_ms: int = 100, seed: int = 0, code_dir: Path | None = None,
                 timer: Timer | None = None,
                 stored: Callable[[Config], Any] | None = None):
        self.launch, self.device = launch, device
        self.device_type = torch.device(device).type
        # a given timer (``timing``) times on any device: tests give made-up times on CPU
        self.timer = timer
        self.timed = self.device_type == "cuda" or timer is not None
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.seconds = 0.0
        self.config_seconds: dict[Config, float] = {}   # wall time spent per config
        self.code_dir = code_dir
        self.stored = stored
        self.load_seconds = 0.0
        self.origins: dict[Config, str] = {}       # "binary" or "jit"
        self.fallbacks: dict[Config, str] = {}     # why a stored binary was not used
        self._loaded: dict[Config, Any] = {}
        self._fn = None
        self.initial = make_inputs(launch, device, seed)
        self.outputs = [k for k, a in enumerate(launch.args) if a.is_output]
        self.reference: list[torch.Tensor] | None = None
        self.reference_error: str | None = None
        self.results: dict[Config, Measurement] = {}

    @property
    def fn(self):
        """The kernel's JIT function, made only when a config needs compiling."""
        if self._fn is None:
            self._fn = load_kernel(self.launch.kernel.name, self.launch.kernel.source,
                                   self.device_type, self.code_dir)
        return self._fn

    def _sync(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)

    def _launcher(self, config: Config, args: list[torch.Tensor]):
        if config.extern:
            return extern_launcher(self.launch.kernel, args, self.device_type, self.code_dir)
        g = grid(self.launch.kind, self.launch.numels, config)
        ints, blocks, options = self.launch.int_args, config.blocks(), config.options()
        loaded = self._kernel(config, g, args)
        if loaded is not None:      # a stored binary takes the positional arguments only
            kernel = loaded[tuple(g) + (1,) * (3 - len(g))]
            return lambda: kernel(*args, *ints)
        kernel = self.fn[g]
        return lambda: kernel(*args, *ints, **blocks, **options)

    def _kernel(self, config: Config, g: tuple[int, ...], args: list[torch.Tensor]):
        """The config's kernel from its stored binary, or None after compiling it (the JIT
        function then launches it from its cache); once per config, timed apart."""
        if config in self.origins:
            return self._loaded.get(config)
        start = time.perf_counter()
        try:
            found = self.stored(config) if self.stored is not None else None
            if found is not None and not isinstance(found, str):
                self.origins[config], self._loaded[config] = "binary", found
                return found
            if found is not None:
                self.fallbacks[config] = found
            self.origins[config] = "jit"
            if self.device_type == "cuda":   # compile now, so the first launch only launches
                self.fn.warmup(*args, *self.launch.int_args, grid=g, **config.blocks(),
                               **config.options())
            return None
        finally:
            self.load_seconds += time.perf_counter() - start

    def _execute(self, config: Config):
        """(outputs, compiled kernel) of one fresh run of ``config``; raises on failure."""
        args = [t.clone() for t in self.initial]
        launch = self._launcher(config, args)
        compiled = launch()
        self._sync()
        return args, launch, compiled

    def _reference(self) -> list[torch.Tensor] | None:
        if self.reference is None and self.reference_error is None:
            try:
                args, _, _ = self._execute(self.launch.default)
                self.reference = [args[k].clone() for k in self.outputs]
            except Exception as e:   # noqa: BLE001
                self.reference_error = f"{type(e).__name__}: {e}"[:2000]
        return self.reference

    def run(self, config: Config, reps: int | None = None) -> Measurement:
        """Launch, verify and (on a GPU) time ``config``; each config runs once per Tuner.
        ``reps``: how many timings a ``timer`` takes (without one, do_bench's ``rep_ms``)."""
        if config not in self.results:
            with self._clock(config):
                self.results[config] = self._run(config, reps)
        return self.results[config]

    def more(self, config: Config, reps: int) -> Measurement:
        """``reps`` more timings of ``config`` (run first if it was not): successive
        halving's later rounds. A failed config stays as it was."""
        if config not in self.results:
            return self.run(config, reps)
        m = self.results[config]
        if m.status != "ok":
            return m
        with self._clock(config):
            args = [t.clone() for t in self.initial]
            times = self._time(self._launcher(config, args), reps, config)
            self.results[config] = dataclasses.replace(m, times_ms=m.times_ms + tuple(times))
        return self.results[config]

    @contextlib.contextmanager
    def _clock(self, config: Config) -> Iterator[None]:
        start, loading = time.perf_counter(), self.load_seconds
        try:
            yield
        finally:
            spent = time.perf_counter() - start - (self.load_seconds - loading)
            self.seconds += spent
            self.config_seconds[config] = self.config_seconds.get(config, 0.0) + spent

    def _time(self, launch: Callable[[], Any], reps: int | None, config: Config) -> list[float]:
        if self.timer is not None:
            return [float(t) for t in self.timer(launch, reps or 3, config)]
        return _do_bench(launch, self.warmup_ms, self.rep_ms)

    def _run(self, config: Config, reps: int | None = None) -> Measurement:
        is_default = config == self.launch.default
        reference = None if is_default else self._reference()
        if reference is None and not is_default:
            return Measurement(config, "runtime_error",
                               error=f"the default config {self.launch.default} failed "
                                     f"({self.reference_error}): outputs cannot be verified")
        try:
            args, launch, compiled = self._execute(config)
        except Exception as e:   # noqa: BLE001 -- a failing candidate is a result
            status = "resource_error" if type(e).__name__ == "OutOfResources" else "launch_error"
            return Measurement(config, status, error=f"{type(e).__name__}: {e}"[:4000])
        extra = _binary_facts(compiled)
        outs = [args[k] for k in self.outputs]
        worst = 0.0
        if is_default:
            if self.reference is None:
                self.reference = [t.clone() for t in outs]
        else:
            for k, ref, out in zip(self.outputs, reference, outs):
                ok, err = outputs_match(ref, out)
                worst = max(worst, err)
                if not ok:
                    return Measurement(config, "wrong_result", max_abs_error=err,
                                       error=f"output {k} differs from the default config's "
                                             f"(max abs error {err:.3g})", **extra)
        if not self.timed:
            return Measurement(config, "not_timed", max_abs_error=worst, **extra)
        try:
            times = self._time(launch, reps, config)
        except Exception as e:   # noqa: BLE001
            return Measurement(config, "runtime_error", error=f"{type(e).__name__}: {e}"[:4000],
                               max_abs_error=worst, **extra)
        return Measurement(config, "ok", tuple(times), max_abs_error=worst, **extra)


def _binary_facts(compiled: Any) -> dict[str, Any]:
    """Registers, spills and the cubin hash of what a JIT launch ran (CUDA only)."""
    asm = getattr(compiled, "asm", None)
    if not isinstance(asm, dict) or "cubin" not in asm:
        return {}
    return {"n_regs": getattr(compiled, "n_regs", None),
            "n_spills": getattr(compiled, "n_spills", None),
            "cubin_sha256": content_hash(asm["cubin"])}


def _do_bench(fn, warmup_ms: int, rep_ms: int) -> list[float]:
    from triton.testing import do_bench
    try:
        times = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
    except (AssertionError, TypeError, ValueError):   # an older do_bench without "all"
        times = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5])
    times = [float(t) for t in (times if isinstance(times, (list, tuple)) else [times])]
    if not times or not all(math.isfinite(t) and t > 0 for t in times):
        raise RuntimeError(f"do_bench returned unusable timings {times[:5]}")
    return times


# ----------------------------------------------------------------------------- tuning
@dataclass
class TuneResult:
    """Measurements of one launch on one device; ``best`` is the fastest verified one.

    ``measurements`` holds what this call ran or gated (build failures included), not what
    ``known`` costs stood for.
    """
    launch: KernelLaunch
    device: DeviceInfo
    measurements: list[Measurement]
    seconds: float
    searched: str                 # "sweep" or "descent"

    @property
    def default(self) -> Measurement | None:
        return next((m for m in self.measurements if m.config == self.launch.default), None)

    @property
    def best(self) -> Measurement | None:
        ok = [m for m in self.measurements if m.status == "ok"]
        return min(ok, key=lambda m: m.median_ms, default=None)

    @property
    def speedup(self) -> float | None:
        """Default time over best time, when both were timed in this call."""
        best, default = self.best, self.default
        if best is None or default is None or default.status != "ok":
            return None
        return default.median_ms / best.median_ms

    @property
    def note(self) -> str:
        if self.device.timed:
            timed = sum(m.status == "ok" for m in self.measurements)
            return f"timed {timed} configs on {self.device.name}"
        verified = sum(m.status == "not_timed" for m in self.measurements)
        return (f"not timed: no GPU ({self.device.name}); outputs of {verified} configs "
                f"verified against the default config")


Gate = Callable[[Config], "Measurement | None"]


def tune(tuner: Tuner, space: Space, configs: Sequence[Config], settings: SearchSettings, *,
         known: dict[Config, float | None] | None = None, gate: Gate | None = None,
         include_default: bool = True) -> TuneResult:
    """Measure the planned ``configs`` (see ``search.plan_trials``) with ``tuner``.

    At most ``settings.sweep_max`` of them: all are run. More: coordinate descent from the
    default, at most ``settings.descent_budget`` runs, over the planned configs only; the
    others count as ``known`` (costs read back from the store) or as failed. ``gate(config)``
    runs first for every config but the default (which must run: it is the reference) and
    may return a failed Measurement instead (a build error) -- builds can thus be done
    lazily, only for configs the descent reaches. ``include_default`` times the default too.
    """
    gated: dict[Config, Measurement] = {}

    def run(config: Config) -> Measurement:
        if config in gated:
            return gated[config]
        if gate is not None and config != tuner.launch.default:
            failed = gate(config)
            if failed is not None:
                gated[config] = failed
                return failed
        return tuner.run(config)

    default = tuner.launch.default
    planned = [c for c in dict.fromkeys(configs) if c != default]
    if include_default:
        planned.insert(0, default)
    if len(planned) <= settings.sweep_max:
        for config in planned:
            run(config)
        searched = "sweep"
    else:
        for config in planned:   # a GEMM's extern path is no neighbour of any config
            if config.extern:
                run(config)
        allowed = set(planned)
        seeds = {c: None for c in candidates(space, tuner.launch.numels) if c not in allowed}
        if not include_default:
            seeds.setdefault(default, None)
        seeds.update(known or {})
        coordinate_descent(space, tuner.launch.numels, default,
                           lambda config: run(config).median_ms, settings.descent_budget, seeds)
        searched = "descent"
    measured = {**gated, **tuner.results}
    return TuneResult(tuner.launch, device_info(tuner.device), list(measured.values()),
                      tuner.seconds, searched)


def measure(launch: KernelLaunch, configs: Sequence[Config], device: str = "cuda",
            **tuner_options: Any) -> TuneResult:
    """The default plus every config in ``configs`` on ``device``, in one call (a sweep)."""
    tuner = Tuner(launch, device, **tuner_options)
    for config in [launch.default, *configs]:
        tuner.run(config)
    return TuneResult(launch, device_info(device), list(tuner.results.values()), tuner.seconds,
                      "sweep")
