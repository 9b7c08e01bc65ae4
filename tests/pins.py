"""Pins of what kiln generates for every zoo model: graph key, module key, source, kernels.

A refactor of the compiler must not change generated code or keys: ``tests/test_pins.py``
lowers every model of the repo's zoo configs for both targets and compares against
``tests/data/codegen_pins.json``. Each pin is a digest, so the file stays small: the module
key, the sha256 of the module source, and the sha256 of each kernel's launch contract (the
fields build, tune and the store read, as plain JSON).

Regenerate (only when a change is meant to alter generated code, and say so in the commit):

    python -m tests.pins --write

Example:
    >>> sorted(PIN_CASES)[:2]
    ['zoo-blocks/bert_layer', 'zoo-blocks/convnext_block']
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = Path(__file__).resolve().parent / "data" / "codegen_pins.json"
ZOOS = ("zoo-tiny", "zoo-blocks", "zoo-text", "zoo-vision")
TARGETS = ("cpu", "cuda")
# Extra option sets that reach other emitters: the GEMM template, and tuned configs.
VARIANTS = {"zoo-blocks": ({"matmul_template": "on"},)}


def _digest(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _model_specs():
    sys.path.insert(0, str(ROOT))
    from pipeline.config import load_config
    for zoo in ZOOS:
        for spec in load_config(ROOT / "configs" / f"{zoo}.toml").models:
            yield f"{zoo}/{spec.name}", zoo, spec


PIN_CASES = {name: zoo for name, zoo, _ in _model_specs()}


def kernel_contract(kernel) -> dict:
    """What the rest of kiln reads about one kernel of a module, as plain JSON (the layout of
    the untyped metadata it replaced, so the pins carry over)."""
    spec = kernel.spec
    return {"name": kernel.name, "kernel_key": kernel.kernel_key, "candidate": spec.candidate,
            "baseline": None if spec.baseline is None else json.loads(spec.baseline),
            "outputs": spec.outputs, "kind": str(spec.kind), "numels": list(spec.numels),
            "buffers": list(spec.buffers), "dtypes": list(spec.dtypes),
            "extents": list(spec.extents), "size_args": list(spec.size_args),
            "launch": spec.launch.as_json(), "ops": list(spec.ops), "bytes": spec.bytes,
            "bytes_read": spec.bytes_read, "bytes_written": spec.bytes_written}


def _tuned_configs(artifact) -> dict:
    """Synthetic tuned configs for a module's 1-D pointwise kernels: exercises the tuned path."""
    return {k.kernel_key: {"XBLOCK": 256, "num_warps": 2, "num_stages": 2}
            for k in artifact.kernels if k.spec.kind == "pointwise1d"}


def module_pins(spec) -> dict:
    """Every pin of one model: its graph key, then per target and variant the module's."""
    from compiler.api import lower
    from pipeline.tasks import capture_model
    captured = capture_model(spec)
    out = {"graph_key": captured.graph_key}
    zoo_variants = [({}, None)] + [(v, None) for v in VARIANTS.get(_zoo_of(spec), ())]
    for target in TARGETS:
        for options, _ in zoo_variants:
            art = lower(captured, options or None, target=target)
            label = target + "".join(f" {k}={v}" for k, v in sorted(options.items()))
            out[label] = _artifact_pins(art)
        if target == "cuda" and spec.name in ("mlp", "transformer_block"):
            configs = _tuned_configs(art)
            out["cuda tuned"] = _artifact_pins(lower(captured, None, target=target,
                                                     configs=configs))
    return out


def _zoo_of(spec) -> str:
    return next(zoo for name, zoo in PIN_CASES.items() if name.endswith("/" + spec.name))


def _artifact_pins(art) -> dict:
    return {"module_key": art.module_key, "source": _digest(art.source),
            "kernels": _digest([kernel_contract(k) for k in art.kernels])}


def compute(names=None) -> dict:
    return {name: module_pins(spec) for name, _, spec in _model_specs()
            if names is None or name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite tests/data/codegen_pins.json")
    args = parser.parse_args()
    pins = compute()
    text = json.dumps(pins, indent=1, sort_keys=True) + "\n"
    if args.write:
        PINS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
