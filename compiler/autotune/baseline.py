"""The extern path a kernel competes with, run from the kernel's metadata: a GEMM or conv
template's cuBLAS or cuDNN call, or a depthwise conv kernel's cuDNN conv
(``codegen.depthwise_baseline``).

``spec.baseline`` (written by ``compiler.codegen.matmul.baseline``) names the ATen call the
extern path makes (mm, addmm, bmm; operands as strided views of the template's pointer
arguments) and, when the template fused a pointwise consumer, that consumer's own kernel as
the extern path would launch it separately, pointer ``-1`` being the product. Run on the
template's inputs, it writes the template's output: the Tuner checks it against the
template's default config and times it as the candidate ``Config(extern=1)``, so the faster
of the two is chosen per shape with both recorded. An operand with ``"copy"`` is the library
path's own copy of the pointer's view (another dtype and strides: a depthwise kernel's
float32 weight as the graph's weight), made once when the closure is made, so it is not
timed; a product whose strides differ from ``"out"``'s is copied into them before the
epilogue reads it, as the wrapper copies an extern result into the layout it predicted.

Example (a mm with no epilogue writes the product into the output pointer):
    >>> import json, torch
    >>> from compiler.artifact import KernelArtifact
    >>> from compiler.kernels.spec import KernelKind, KernelSpec, LaunchConfig
    >>> view = {"size": [2, 2], "stride": [2, 1], "offset": 0}
    >>> baseline = {"op": "aten.mm.default", "kwargs": {}, "epilogue": None,
    ...             "args": [{"ptr": 0, **view}, {"ptr": 1, **view}], "out": view}
    >>> spec = KernelSpec(KernelKind.MATMUL, ("a", "b", "out"), ("torch.float32",) * 3,
    ...                   (4, 4, 4), 1, ("1", "2", "2", "2"), (), LaunchConfig((), ()),
    ...                   baseline=json.dumps(baseline))
    >>> kernel = KernelArtifact("k", "", "", spec)
    >>> a, b, out = torch.arange(4.0), torch.eye(2).flatten(), torch.empty(4)
    >>> run = extern_launcher(kernel, [a, b, out], "cpu")
    >>> _ = run()
    >>> out.tolist()
    [0.0, 1.0, 2.0, 3.0]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..artifact import KernelArtifact
from ..kernels.load import load_kernel
from .spaces import default_config, grid


def _aten(path: str):
    """``"aten.mm.default"`` -> ``torch.ops.aten.mm.default``."""
    namespace, name, overload = path.split(".")
    return getattr(getattr(getattr(torch.ops, namespace), name), overload)


def _arg(spec: dict, args: list[torch.Tensor]):
    if "ptr" not in spec:
        return spec["value"]
    view = args[spec["ptr"]].as_strided(spec["size"], spec["stride"], spec["offset"])
    copy = spec.get("copy")
    if copy is None:
        return view
    dtype = getattr(torch, copy["dtype"].removeprefix("torch."))
    out = torch.empty_strided(spec["size"], copy["stride"], dtype=dtype, device=view.device)
    return out.copy_(view)


def _in_layout(product: torch.Tensor, out: dict) -> torch.Tensor:
    """``product`` with the strides ``out`` expects (copied only where they differ)."""
    size, stride = out["size"], out["stride"]
    if all(n == 1 or a == b for n, a, b in zip(size, product.stride(), stride)):
        return product
    return torch.empty_strided(size, stride, dtype=product.dtype,
                               device=product.device).copy_(product)


def extern_launcher(kernel: KernelArtifact, args: list[torch.Tensor], device_type: str,
                    code_dir: Path | None = None) -> Callable[[], None]:
    """A closure running ``kernel``'s extern baseline on ``args`` (flat tensors, one per
    pointer, as ``measure.make_inputs`` draws them); the last one receives the output."""
    if not kernel.spec.baseline:
        raise ValueError(f"kernel {kernel.name} ({kernel.spec.kind}) has no extern "
                         f"baseline in its spec")
    spec = json.loads(kernel.spec.baseline)
    call_args = [_arg(a, args) for a in spec["args"]]
    kwargs = {k: _arg(v, args) for k, v in spec["kwargs"].items()}
    epilogue = spec["epilogue"]
    if epilogue is None:   # the library writes the output itself
        out = args[-1].as_strided(spec["out"]["size"], spec["out"]["stride"])
        op = _aten(spec["op"].rsplit(".", 1)[0] + ".out")
        return lambda: op(*call_args, **kwargs, out=out)
    op = _aten(spec["op"])
    fn = load_kernel(epilogue["name"], epilogue["source"], device_type, code_dir)
    config = default_config(epilogue["kind"], epilogue["numels"], device_type)
    launch = fn[grid(epilogue["kind"], epilogue["numels"], config)]
    numels, consts = epilogue["numels"], {**config.blocks(), **config.options()}

    def run():
        product = _in_layout(op(*call_args, **kwargs), spec["out"])
        pointers = [product if k == -1 else args[k] for k in epilogue["buffers"]]
        launch(*pointers, *numels, **consts)
    return run
