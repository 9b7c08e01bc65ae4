"""The registry of benchmarked systems: each turns a built model into a callable.

A ``System`` names its maker as ``module:function`` plus keyword options (JSON), so a child
process finds it by import, and a test can hand the runner a registry of its own (a system
that fails on purpose) without patching this one. The maker runs inside the timed cold
start: ``make(module, args, dynamic_shapes, context, **options) -> Built``.

``baseline`` names the system a ratio is taken against (DESIGN.md's "Measuring": kiln with
CUDA graphs against torch.compile ``reduce-overhead``, which replays CUDA graphs too; kiln
without them against torch.compile's default).

Example:
    >>> [s.name for s in select(None, quick=True, max_autotune=False, registry=SYSTEMS)]
    ['eager', 'inductor', 'inductor_ro', 'kiln_graphs', 'kiln_nographs', 'kiln_tuned']
    >>> SYSTEMS["kiln_graphs"].unavailable("cpu")
    'CUDA graphs need a CUDA device'
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class System:
    name: str
    make: str                       # "module:function" building the callable
    about: str
    options_json: str = "{}"        # keyword arguments of ``make``
    needs_cuda: str | None = None   # why it cannot run without CUDA (None: it can)
    quick: bool = True              # part of ``--quick``'s set
    default: bool = True            # part of the default set (else named or flagged)
    baseline: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    def unavailable(self, device: str) -> str | None:
        """Why this system is skipped on ``device``, or None."""
        return self.needs_cuda if device != "cuda" else None


@dataclass(frozen=True)
class Context:
    device: str
    quick: bool
    tune_budget_s: float
    same_process: bool = False      # untuned kiln also times its baseline (``same_process_ab``)


@dataclass(frozen=True)
class Built:
    fn: Callable[..., Any]
    kiln: Any = None                # the CompiledModel: its kernels' bytes for bandwidth
    inductor: bool = False          # Inductor's kernel counter means something
    notes: tuple[str, ...] = ()
    # more notes, made after the timed calls (so outside the cold start and the timings)
    checks: tuple[Callable[[], str], ...] = ()


def eager(module: Any, args: tuple, dynamic_shapes: Any, context: Context) -> Built:
    return Built(module)


def torch_compile(module: Any, args: tuple, dynamic_shapes: Any, context: Context,
                  mode: str | None = None) -> Built:
    from .inductor import compiled
    return Built(compiled(module, dynamic_shapes, mode), inductor=True)


def kiln(module: Any, args: tuple, dynamic_shapes: Any, context: Context,
         tuned: bool = False, **options: Any) -> Built:
    """``compiler.compile_module`` with ``options``; ``tuned``: its kernels timed here first."""
    import compiler
    if not tuned:
        fn = compiler.compile_module(module, args, options, dynamic_shapes=dynamic_shapes)
        checks = ()
        if context.same_process and context.device == "cuda":
            mode = "reduce-overhead" if options.get("cuda_graphs", True) else None
            checks = (lambda: _against_baseline(module, args, dynamic_shapes, fn, mode),)
        return Built(fn, kiln=fn, checks=checks)
    from .tuned import tune_module
    untuned = compiler.compile_module(module, args, {**options, "cuda_graphs": False},
                                      dynamic_shapes=dynamic_shapes)
    summary = tune_module(untuned, args, context.device, context.quick,
                          context.tune_budget_s)
    fn = compiler.compile_module(module, args, options, dynamic_shapes=dynamic_shapes,
                                 configs=summary.configs)
    note = (f"tuned {summary.tuned} of {summary.kernels} kernels in {summary.seconds:.1f} s; "
            f"{len(summary.configs)} changed their config")
    checks = ()
    if context.device == "cuda" and summary.configs:
        checks = (lambda: same_process_ab(compiler.compile_module(
            module, args, options, dynamic_shapes=dynamic_shapes), fn, args, context.device),)
    return Built(fn, kiln=fn, notes=(note,), checks=checks)


def _against_baseline(module: Any, args: tuple, dynamic_shapes: Any, fn: Callable,
                      mode: str | None) -> str:
    """kiln against torch.compile (``mode``) in this process, after kiln's own timings."""
    from .inductor import compiled
    baseline = compiled(module, dynamic_shapes, mode)
    for _ in range(3):          # compile and, for reduce-overhead, record its graphs
        baseline(*args)
    name = f"torch.compile {mode or 'default'}"
    return same_process_ab(baseline, fn, args, "cuda", labels=(name, "kiln"))


def same_process_ab(untuned: Callable, tuned: Callable, args: tuple, device: str,
                    rounds: int = 3, calls: int = 20,
                    labels: tuple[str, str] = ("untuned", "tuned")) -> str:
    """Two modules in one process, alternating blocks of calls (untuned against tuned, or a
    baseline against kiln): the two systems' own rows come from separate processes, whose
    difference can be the process's (its allocator's state after tuning, the card's
    clocks, the host's load) and not the modules'. The ratio is the first's time over the
    second's."""
    from .timing import time_calls
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(rounds):
        for key, fn in (("a", untuned), ("b", tuned)):
            times[key].append(time_calls(lambda: fn(*args), device, calls, 3).median_ms)
    a, b = (sorted(times[k])[len(times[k]) // 2] for k in ("a", "b"))
    return (f"same process, alternating {rounds}x{calls} calls: {labels[0]} {a:.3f} ms, "
            f"{labels[1]} {b:.3f} ms ({a / b:.2f}x)")


_GPU_COMPILE = "torch.compile is benchmarked on CUDA only"
_GRAPHS = "CUDA graphs need a CUDA device"
_TUNING = "tuning times kernels on a GPU"
_HERE = "pipeline.bench.systems"

SYSTEMS: Mapping[str, System] = MappingProxyType({s.name: s for s in (
    System("eager", f"{_HERE}:eager", "the module itself"),
    System("inductor", f"{_HERE}:torch_compile", "torch.compile, default mode",
           needs_cuda=_GPU_COMPILE),
    System("inductor_ro", f"{_HERE}:torch_compile", "torch.compile mode=reduce-overhead "
           "(CUDA graphs)", '{"mode": "reduce-overhead"}', needs_cuda=_GPU_COMPILE),
    System("inductor_max", f"{_HERE}:torch_compile", "torch.compile mode=max-autotune",
           '{"mode": "max-autotune"}', needs_cuda=_GPU_COMPILE, quick=False, default=False),
    System("kiln_graphs", f"{_HERE}:kiln", "kiln, untuned, CUDA graphs",
           '{"cuda_graphs": true}', needs_cuda=_GRAPHS, baseline="inductor_ro"),
    System("kiln_nographs", f"{_HERE}:kiln", "kiln, untuned, no CUDA graphs",
           '{"cuda_graphs": false}', baseline="inductor"),
    System("kiln_tuned", f"{_HERE}:kiln", "kiln, tuned here, CUDA graphs",
           '{"cuda_graphs": true, "tuned": true}', needs_cuda=_TUNING,
           baseline="inductor_ro"),
    System("kiln_tuned_nographs", f"{_HERE}:kiln", "kiln, tuned here, no CUDA graphs",
           '{"cuda_graphs": false, "tuned": true}', needs_cuda=_TUNING, quick=False,
           baseline="inductor"),
)})


def select(names: Sequence[str] | None, quick: bool, max_autotune: bool,
           registry: Mapping[str, System]) -> list[System]:
    """The systems to run: ``names`` as given, else the default (or quick) set, plus
    max-autotune when asked. An unknown name is a ValueError naming the known ones."""
    if names:
        unknown = [n for n in names if n not in registry]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; known: {', '.join(registry)}")
        return [registry[n] for n in names]
    chosen = [s for s in registry.values()
              if (s.quick if quick else s.default) or (max_autotune and s.name == "inductor_max")]
    return chosen


def maker(system: System) -> Callable[..., Built]:
    """The function ``system.make`` names (imported: the child process calls this)."""
    import importlib
    module, _, function = system.make.partition(":")
    return getattr(importlib.import_module(module), function)
