"""What a compiled model's call costs the host around its CUDA-graph replay.

With graphs, a decode step is one replay; everything ``CompiledModel.__call__`` does around
it (flattening the call, binding weights and buffers, checking inputs, copying them into the
graph's buffers, cloning outputs, writing mutated buffers back) is host time no graph hides.
Here the replay is a no-op (a fake ``CudaGraphBackend``), so what is timed is that work
alone, on CPU tensors, for:

- ``llama_static``: transformers' Llama (4 layers) with its static KV cache held as buffers
  (``bench_decode.static_module``), called as a decode step is: keyword arguments, chunk 1,
  12 buffers written in place;
- ``layers_kwargs`` / ``layers_positional``: 16 Linear+LayerNorm layers (dynamic batch),
  called with ``x=...`` and positionally.

``--baseline PATH`` also runs this script against another checkout (a ``git worktree`` of an
earlier commit) in a subprocess and prints the ratio.

    python benchmarks/bench_call_host.py [--calls 500] [--baseline PATH] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_launch import Layers, _time  # noqa: E402  (same model and timing as there)


class _NoopGraph:
    def replay(self) -> None:
        pass


class NoopGraphs:
    """A ``CudaGraphBackend`` whose capture runs once and whose replay does nothing."""
    def pool_handle(self):
        return None

    def capture(self, run, pool):
        return _NoopGraph(), tuple(run())

    def synchronize(self) -> None:
        pass


def _llama_static():
    """The static-cache decode module and one decode step's keyword arguments."""
    import bench_decode as bd
    args = bd.parse_args(["--device", "cpu"])   # tiny sizes; the host work is per input
    args.layers = 4
    module = bd.static_module(bd.build(args, "cpu", torch.float32), args, 64)
    chunk = Dim("chunk", min=1, max=16)
    example = {"input_ids": torch.randint(3, args.vocab, (1, 4)),
               "cache_position": torch.arange(4)}
    step = {"input_ids": torch.randint(3, args.vocab, (1, 1)),
            "cache_position": torch.tensor([5])}
    shapes = {"input_ids": {1: chunk}, "cache_position": {0: chunk}}
    return module, (), example, shapes, (), step


def _layers(kwargs: bool):
    model, batch = Layers().eval(), Dim("batch", min=1, max=64)
    x = torch.randn(8, 64)
    if kwargs:
        return model, (), {"x": x}, {"x": {0: batch}}, (), {"x": x}
    return model, (x,), None, ({0: batch},), (x,), {}


MODELS = {"llama_static": _llama_static, "layers_kwargs": lambda: _layers(True),
          "layers_positional": lambda: _layers(False)}


def run(calls: int) -> dict:
    import compiler
    from compiler.graph_pool import DynamicGraphedCall, GraphPolicy
    torch.set_num_threads(1)
    rows = {}
    for name, make in MODELS.items():
        try:
            module, example, example_kwargs, shapes, args, kwargs = make()
        except ImportError as err:      # transformers absent: that model is skipped
            rows[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = compiler.compile_module(module, example, example_kwargs=example_kwargs,
                                         dynamic_shapes=shapes)
        fn._graph = DynamicGraphedCall(fn.compiled, fn._user, GraphPolicy(), (), NoopGraphs())
        with torch.no_grad():
            for _ in range(3):                 # run, capture, replay
                fn(*args, **kwargs)
            assert len(fn._graph.pool) == 1, "the call did not reach a replay"
            rows[name] = {"inputs": len(fn.captured.inputs),
                          "mutated": len(fn.captured.mutated_buffers),
                          "us_per_call": _time(lambda: fn(*args, **kwargs), calls, lambda: None)}
    return rows


def report(rows: dict, label: str) -> list[str]:
    lines = []
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"{label:>9} {name:<18} skipped: {row['error']}")
        else:
            lines.append(f"{label:>9} {name:<18} inputs {row['inputs']:>3} mutated "
                         f"{row['mutated']:>2} | {row['us_per_call']:8.1f} us/call around "
                         f"the replay")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--baseline", help="another checkout to run this script against")
    p.add_argument("--json")
    p.add_argument("--root", help=argparse.SUPPRESS)    # the checkout to import (baseline)
    a = p.parse_args(argv)
    # the checkout whose compiler is timed; imported before bench_decode adds this one's
    sys.path.insert(0, a.root or str(Path(__file__).resolve().parent.parent))
    rows = {"this": run(a.calls)}
    if a.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, __file__, "--calls", str(a.calls), "--root",
                            a.baseline, "--json", f"{tmp}/rows.json"], check=True,
                           stdout=subprocess.DEVNULL)
            rows["baseline"] = json.loads(Path(f"{tmp}/rows.json").read_text())["this"]
    print(f"host: {torch.get_num_threads()} thread, torch {torch.__version__}")
    for label, r in rows.items():
        print("\n".join(report(r, label)))
    if "baseline" in rows:
        for name, row in rows["this"].items():
            base = rows["baseline"].get(name, {})
            if "us_per_call" in row and "us_per_call" in base:
                print(f"{name}: {base['us_per_call'] / row['us_per_call']:.2f}x less host "
                      f"time per call than the baseline")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
