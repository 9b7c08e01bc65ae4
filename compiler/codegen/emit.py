"""Scheduled steps to kernels: the emitter for each step, its launch config, its contract.

Each kernel step of the schedule (a fused group, a GEMM template) goes to the emitter of its
family; its launch config is the tuned one from ``configs`` where that can run it, else the
heuristic (``codegen.heuristics``). GEMM templates not chosen ("auto", ``matmul_select``)
are emitted too, never launched: their spec says ``candidate``, so the pipeline tunes them
against the extern path.

Example:
    >>> import torch, sympy
    >>> from compiler.ir import ComputedBuffer, Layout, Load, Op, index_symbols
    >>> lay = Layout("cpu", torch.float32, (sympy.Integer(8),), (sympy.Integer(1),))
    >>> buf = ComputedBuffer("buf0", lay, Op("relu", (Load("arg0", index_symbols(1)[0],
    ...                                                   torch.float32),), torch.float32))
    >>> emitted = emit_kernels([FusedKernel((buf,), frozenset({"buf0"}))], (),
    ...                        {"arg0": lay, "buf0": lay}, CompilerOptions(), "cpu")
    >>> [(k.name, k.spec.kind, k.spec.launch.kwargs()) for k in emitted.artifacts]
    [('kiln_pw_relu_0', <KernelKind.POINTWISE_1D: 'pointwise1d'>, {'XBLOCK': 16, 'num_warps': 1})]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..artifact import KernelArtifact
from ..config import CompilerOptions
from ..ir import ComputedBuffer, DepthwiseConv, Layout, MatmulTemplate, ScanBuffer, ScatterBuffer
from ..kernels.spec import LaunchConfig
from ..scheduler import FusedKernel
from .heuristics import choose_launch
from .kernel import GeneratedKernel, artifact_of, kernel_key
from .depthwise_baseline import with_baselines
from .matmul import generate_matmul
from .planner import TritonPlanner
from .reduction import generate_row_kernel
from .scan import generate_scan_kernel
from .scatter import generate_scatter_kernel
from .triton import generate_kernel, generate_pointwise_group


@dataclass(frozen=True)
class EmittedKernels:
    """Every kernel of a module: ``launched`` maps ``id(step)`` of each kernel step to its
    (``GeneratedKernel``, ``LaunchConfig``); ``artifacts`` are all kernels, launched ones in
    schedule order and then the unlaunched template candidates; ``sources`` their source."""
    launched: dict[int, tuple[GeneratedKernel, LaunchConfig]]
    artifacts: tuple[KernelArtifact, ...]

    @property
    def sources(self) -> list[str]:
        return [k.source for k in self.artifacts]


def emit_kernel(step, number: int, layouts: Mapping[str, Layout],
                planner: TritonPlanner | None = None) -> GeneratedKernel:
    """The kernel computing ``step`` (a ``FusedKernel`` or a ``MatmulTemplate``), by family;
    a row kernel from the plan ``planner`` made when the scheduler asked it, if given."""
    if isinstance(step, MatmulTemplate):
        return generate_matmul(step, number, layouts)
    nodes = step.nodes
    if len(nodes) == 1 and isinstance(nodes[0], ScanBuffer):
        return generate_scan_kernel(nodes[0], number)
    if len(nodes) == 1 and isinstance(nodes[0], ScatterBuffer):
        return generate_scatter_kernel(nodes[0], number)
    if len(nodes) == 1 and isinstance(nodes[0], ComputedBuffer):
        return generate_kernel(nodes[0], number)
    if all(type(n) is ComputedBuffer for n in nodes):
        return generate_pointwise_group(nodes, step.stores, number)
    plan = planner.row_plan(nodes) if planner is not None else None
    return generate_row_kernel(nodes, step.stores, number, plan)


def emit_kernels(steps, candidates, layouts: Mapping[str, Layout], options: CompilerOptions,
                 device_type: str, configs: Mapping[str, Mapping[str, int]] | None = None,
                 planner: TritonPlanner | None = None,
                 convs: Sequence[DepthwiseConv] = ()) -> EmittedKernels:
    """Emit the kernel of every kernel step, then the unchosen GEMM ``candidates``, numbered
    in that order (the number makes each kernel's name unique in its module). ``planner``:
    the one the scheduler asked, whose row plans the row kernels are written from.
    ``convs``: the depthwise convs lowering recorded (option ``depthwise_baseline``), whose
    kernels get cuDNN's conv as baseline (``depthwise_baseline``)."""
    kernel_steps = [s for s in steps if isinstance(s, (FusedKernel, MatmulTemplate))]
    generated = [emit_kernel(s, k, layouts, planner) for k, s in enumerate(kernel_steps)]
    if convs:
        generated = with_baselines(kernel_steps, generated, convs)
    spare = [generate_matmul(t, len(generated) + k, layouts) for k, t in enumerate(candidates)]
    launched, artifacts = {}, []
    for k, kernel in enumerate(generated + spare):
        tuned = (configs or {}).get(kernel_key(kernel, layouts))
        launch = choose_launch(kernel.kind, kernel.numels, options, device_type, tuned,
                               kernel.rows_across, kernel.stencil)
        if k < len(kernel_steps):
            launched[id(kernel_steps[k])] = (kernel, launch)
        artifacts.append(artifact_of(kernel, layouts, launch, candidate=k >= len(kernel_steps)))
    return EmittedKernels(launched, tuple(artifacts))
