"""The extern path a GEMM template competes with, run from the template's kernel metadata.

``spec.baseline`` (written by ``compiler.codegen.matmul.baseline``) names the ATen call the
extern path makes (mm, addmm, bmm; operands as strided views of the template's pointer
arguments) and, when the template fused a pointwise consumer, that consumer's own kernel as
the extern path would launch it separately, pointer ``-1`` being the product. Run on the
template's inputs, it writes the template's output: the Tuner checks it against the
template's default config and times it as the candidate ``Config(extern=1)``, so the faster
of the two is chosen per shape with both recorded.

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
    if "ptr" in spec:
        return args[spec["ptr"]].as_strided(spec["size"], spec["stride"], spec["offset"])
    return spec["value"]


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
        product = op(*call_args, **kwargs)
        pointers = [product if k == -1 else args[k] for k in epilogue["buffers"]]
        launch(*pointers, *numels, **consts)
    return run
