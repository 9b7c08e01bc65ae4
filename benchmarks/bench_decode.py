"""A Llama-style decode loop, ms per token at several KV lengths: eager, torch.compile
(``mode="reduce-overhead", dynamic=True``: CUDA graphs, cudagraph trees) and kiln (with its
per-size CUDA graphs, and without graphs), in one process on one GPU.

Two caches, because they behave differently under CUDA graphs:

    dynamic   transformers' DynamicCache: the KV length grows by one every token, so every
              step is a new size. The timed loop repeats ``steps`` lengths; the ``growing``
              rows then decode ``steps * repeats`` tokens once past them, every size new. kiln compiles once (the length is a symbol), but a size
              seen once runs its kernels directly and the length dim cannot be padded
              (attention reduces over it: compiler/graph_padding.py refuses), so no graph
              replays; Inductor's cudagraph trees record a graph per new size.
    static    transformers' static cache held as buffers (its export recipe): decode steps
              all have chunk length 1, written at ``cache_position``; kiln captures that
              size once and replays it for every token after (docs/cuda-graphs.md).

For each KV length L: the cache is prefilled to L (eagerly, outside the timing), then
``--steps`` greedy decode steps (each step's argmax is the next token, no host sync) are
timed with CUDA events around the whole loop, ``--repeats`` times from the same prefill;
the median is printed as ms/token. Compile and warm-up (a decode loop at the first
length, untimed) come first, so the table shows steady state after the first few sizes.

    python benchmarks/bench_decode.py [--lengths 128,512,2048] [--steps 32] [--layers 4]
        [--hidden 1024] [--caches dynamic,static] [--model llama|block] [--json out.json]

Without transformers (or with ``--model block``), a hand-written Llama-style block (RoPE-free attention with a KV cache
of tensors, MLP) stands in. ``--device cpu`` (tiny sizes, Triton's interpreter, no
torch.compile) only checks this script's logic; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from compiler.capture_pytree import leaf_shapes  # noqa: E402

try:
    import transformers
except ImportError:          # the hand-written block below stands in
    transformers = None


class _Block(torch.nn.Module):
    """A Llama-style layer stack with a KV cache of plain tensors: (ids, k, v) -> (logits,
    k, v), the cache concatenated along its length (dim 2) as DynamicCache does."""

    def __init__(self, vocab: int, hidden: int, heads: int, layers: int):
        super().__init__()
        self.heads, self.embed = heads, torch.nn.Embedding(vocab, hidden)
        self.qkv = torch.nn.ModuleList(
            torch.nn.Linear(hidden, 3 * hidden) for _ in range(layers))
        self.mlp = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Linear(hidden, 4 * hidden), torch.nn.SiLU(),
            torch.nn.Linear(4 * hidden, hidden)) for _ in range(layers))
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids, k, v):
        x, ks, vs = self.embed(ids), [], []
        b, n, h = x.shape
        for i, (qkv, mlp) in enumerate(zip(self.qkv, self.mlp)):
            q, kn, vn = qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
            kc, vc = torch.cat([k[i], kn], 2), torch.cat([v[i], vn], 2)
            att = torch.nn.functional.scaled_dot_product_attention(q, kc, vc)
            x = x + att.transpose(1, 2).reshape(b, n, h)
            x = x + mlp(x)
            ks.append(kc), vs.append(vc)
        return self.head(x), torch.stack(ks), torch.stack(vs)


def build(args, device: str, dtype: torch.dtype):
    torch.manual_seed(0)
    if args.model == "block":
        return _Block(args.vocab, args.hidden, args.heads, args.layers).to(device, dtype).eval()
    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=max(1, args.heads // 4), max_position_embeddings=8192)
    return transformers.LlamaForCausalLM(config).to(device, dtype).eval()


class DynamicLoop:
    """Greedy decoding with a growing cache: transformers' DynamicCache or _Block's tensors."""

    def __init__(self, model, args, device):
        self.model, self.args, self.device = model, args, device
        self.hf = args.model == "llama"

    def prefill(self, length: int):
        ids = torch.randint(3, self.args.vocab, (self.args.batch, length), device=self.device)
        with torch.no_grad():
            if self.hf:
                return ids[:, -1:], self.model(ids).past_key_values
            b, heads, hd = self.args.batch, self.args.heads, self.args.hidden // self.args.heads
            empty = torch.zeros(self.args.layers, b, heads, 0, hd, device=self.device,
                                dtype=self.model.head.weight.dtype)
            _, k, v = self.model(ids, empty, empty)
            return ids[:, -1:], (k, v)

    def kwargs(self, token, cache) -> dict:
        if self.hf:
            name = "cache" if "cache" in _params(self.model) else "past_key_values"
            return {"input_ids": token, name: cache}
        return {"ids": token, "k": cache[0], "v": cache[1]}

    def dynamic_shapes(self, cache):
        if self.hf:
            name = "cache" if "cache" in _params(self.model) else "past_key_values"
            return {"input_ids": None, name: leaf_shapes(cache, {2: Dim.DYNAMIC})}
        return {"ids": None, "k": {3: Dim.DYNAMIC}, "v": {3: Dim.DYNAMIC}}

    def step(self, fn, token, cache):
        out = fn(**self.kwargs(token, cache))
        if self.hf:
            return out.logits[:, -1:].argmax(-1), out.past_key_values
        return out[0][:, -1:].argmax(-1), (out[1], out[2])


def _params(model) -> set:
    import inspect
    return set(inspect.signature(model.forward).parameters)


def static_module(model, args, max_len: int):
    """transformers' static-cache export recipe, positions given explicitly (as in
    tests/test_llm_decode.py), or None where this transformers has none."""
    try:
        from transformers.integrations.executorch import TorchExportableModuleWithStaticCache
    except ImportError:
        return None
    model.generation_config.cache_implementation = "static"
    name = "cache" if "cache" in _params(model) else "past_key_values"

    class StaticCacheLM(TorchExportableModuleWithStaticCache):
        def forward(self, input_ids, cache_position):
            for layer in self.static_cache.layers:
                layer.cumulative_length.copy_(cache_position[0])
            return self.model(input_ids=input_ids, position_ids=cache_position.unsqueeze(0),
                              use_cache=True, **{name: self.static_cache}).logits
    return StaticCacheLM(model, batch_size=args.batch, max_cache_len=max_len).eval()


def time_loop(run, repeats: int, steps: int, device: str) -> float:
    """Median ms per token of ``run()`` (which decodes ``steps`` tokens)."""
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / steps)
        else:
            t0 = time.perf_counter()
            run()
            times.append(1e3 * (time.perf_counter() - t0) / steps)
    return statistics.median(times)


def bench_dynamic(model, args, device) -> list[dict]:
    loop = DynamicLoop(model, args, device)
    token, example = loop.prefill(args.lengths[0])
    systems = {"eager": model}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        systems["kiln"] = compiler.compile_module(
            model, (), example_kwargs=loop.kwargs(token, example),
            dynamic_shapes=loop.dynamic_shapes(example))
        systems["kiln_no_graphs"] = compiler.compile_module(
            model, (), options={"cuda_graphs": False}, example_kwargs=loop.kwargs(token, example),
            dynamic_shapes=loop.dynamic_shapes(example))
    if device == "cuda" and not args.no_inductor:
        systems["reduce_overhead"] = _copied_out(
            torch.compile(model, mode="reduce-overhead", dynamic=True))
    return _run_systems("dynamic", systems, loop, args, device)


def _copied_out(compiled):
    """``compiled`` with its outputs copied out of its CUDA graphs' memory. cudagraph trees
    overwrite a replay's outputs at the next replay, so a loop that feeds one step's cache
    into the next fails ("accessing tensor output of CUDAGraphs that has been overwritten")
    unless the caller copies it first: the price a user of reduce-overhead pays with a
    growing cache, so it is timed."""
    def call(**kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return copy.deepcopy(compiled(**kwargs))
    return call


def _run_systems(cache: str, systems: dict, loop, args, device) -> list[dict]:
    rows = []
    for name, fn in systems.items():
        def decode(token, state, steps=args.steps):
            with torch.no_grad():
                for _ in range(steps):
                    token, state = loop.step(fn, token, state)
            return token
        try:
            token, state = loop.prefill(args.lengths[0])         # warm-up: the first sizes
            decode(token, state)
            for length in args.lengths:
                prefilled = loop.prefill(length)
                ms = time_loop(lambda: decode(prefilled[0], copy.deepcopy(prefilled[1])),
                               args.repeats, args.steps, device)
                rows.append(_row(cache, name, length, ms, fn))
                _print(rows[-1])
                if cache == "dynamic":
                    rows.append(_growing(loop, fn, decode, length, args, device, name))
                    _print(rows[-1])
        except Exception as err:     # noqa: BLE001 - a failing system is reported, run goes on
            rows.append({"cache": cache, "system": name,
                         "error": f"{type(err).__name__}: {err}"[:300]})
            _print(rows[-1])
    return rows


class StaticLoop:
    """Greedy decoding into a static cache: chunk 1 at ``cache_position`` each step."""

    def __init__(self, module, args, device):
        self.module, self.args, self.device, self.position = module, args, device, 0

    def prefill(self, length: int):
        ids = torch.randint(3, self.args.vocab, (self.args.batch, length), device=self.device)
        with torch.no_grad():
            self.module(input_ids=ids, cache_position=torch.arange(length, device=self.device))
        return ids[:, -1:], length

    def step(self, fn, token, position):
        logits = fn(input_ids=token, cache_position=torch.tensor([position], device=self.device))
        return logits[:, -1:].argmax(-1), position + 1


def bench_static(model, args, device) -> list[dict]:
    module = static_module(model, args, max(args.lengths) + args.steps + 8)
    if module is None:
        return [{"cache": "static", "error": "this transformers has no static-cache recipe"}]
    for buf in module.buffers():
        if buf.is_floating_point():
            buf.normal_()
    loop = StaticLoop(module, args, device)
    chunk = Dim("chunk", min=1, max=16)
    kwargs = {"input_ids": torch.randint(3, args.vocab, (args.batch, 4), device=device),
              "cache_position": torch.arange(4, device=device)}
    shapes = {"input_ids": {1: chunk}, "cache_position": {0: chunk}}
    systems = {"eager": module}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        systems["kiln"] = compiler.compile_module(module, (), example_kwargs=kwargs,
                                                  dynamic_shapes=shapes)
        systems["kiln_no_graphs"] = compiler.compile_module(
            module, (), options={"cuda_graphs": False}, example_kwargs=kwargs,
            dynamic_shapes=shapes)
    if device == "cuda" and not args.no_inductor:
        systems["reduce_overhead"] = torch.compile(module, mode="reduce-overhead", dynamic=True)
    return _run_systems("static", systems, loop, args, device)


def _growing(loop, fn, decode, length: int, args, device: str, name: str) -> dict:
    """ms per token over ``steps * repeats`` tokens decoded once from a prefill past the
    lengths the repeated loop used: every step a size never seen before, as in a real
    decode (the repeated loop replays its ``steps`` lengths, which any graph cache of
    ``steps`` entries turns into replays)."""
    start = length + args.steps + 1
    prefilled = loop.prefill(start)
    n = args.steps * args.repeats
    ms = time_loop(lambda: decode(prefilled[0], prefilled[1], n), 1, n, device)
    return _row("growing", name, start, ms, fn)


def _row(cache, name, length, ms, fn) -> dict:
    row = {"cache": cache, "system": name, "kv_len": length, "ms_per_token": round(ms, 4)}
    graphs = getattr(fn, "_graph", None)
    pool = getattr(graphs, "pool", None)
    if pool is not None:
        row.update(graphs=len(pool), captures=pool.captures, evictions=pool.evictions,
                   failed=len(graphs.failed))
    return row


def _print(row: dict) -> None:
    """Each row as it lands, so a run cut by its time limit still shows what it measured."""
    if "error" in row:
        print(f"{row['cache']:8} {row.get('system', ''):16} error: {row['error']}", flush=True)
    else:
        print(f"{row['cache']:8} {row['system']:16} L={row['kv_len']:<6d} "
              f"{row['ms_per_token']:.3f} ms/token", flush=True)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'cache':8} {'system':16} {'kv_len':>7} {'ms/token':>9}  kiln pool")
    for r in rows:
        if "error" in r:
            continue
        pool = f"graphs={r['graphs']} captures={r['captures']}" if "graphs" in r else ""
        print(f"{r['cache']:8} {r['system']:16} {r['kv_len']:7d} {r['ms_per_token']:9.3f}  {pool}")
    for cache in ("dynamic", "growing", "static"):
        base = {r["kv_len"]: r["ms_per_token"] for r in rows
                if r.get("cache") == cache and r.get("system") == "reduce_overhead"}
        for r in rows:
            if r.get("cache") == cache and r.get("system") == "kiln" and r["kv_len"] in base:
                print(f"{cache}: kiln vs reduce-overhead at L={r['kv_len']}: "
                      f"{base[r['kv_len']] / r['ms_per_token']:.2f}x speed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--lengths", default="128,512,2048")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--caches", default="dynamic,static")
    p.add_argument("--model", choices=("llama", "block"),
                   default="llama" if transformers is not None else "block",
                   help="transformers' LlamaForCausalLM, or the hand-written block")
    p.add_argument("--no-inductor", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.lengths = [int(x) for x in args.lengths.split(",")]
    if args.device == "cpu":     # logic check only: tiny and short
        args.layers, args.hidden, args.heads, args.vocab = 1, 32, 4, 96
        args.steps, args.repeats = min(args.steps, 2), 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build(args, args.device, dtype)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{name} torch {torch.__version__} transformers "
          f"{getattr(transformers, '__version__', 'absent')} layers={args.layers} "
          f"hidden={args.hidden} batch={args.batch} {dtype}", flush=True)
    rows = []
    for cache in args.caches.split(","):      # in the order given: a time limit cuts the last
        if cache == "dynamic":
            rows += bench_dynamic(model, args, args.device)
        elif cache == "static" and args.model == "llama":
            rows += bench_static(model, args, args.device)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    return 0 if rows and not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
