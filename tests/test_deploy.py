"""Serving from a store ``kiln run`` filled: ``Store.load_model`` by name, with no capture and
no compile, and misses that say what differs (``storage.deploy``)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from compiler.convention import CallConvention
from pipeline.zoo import tiny
from storage import Store
from storage.deploy import ModelMissError, Wanted, choose, explain

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def baked(tiny_bake) -> Path:
    """A store ``kiln run configs/zoo-tiny.toml`` filled (cpu and sm_90 modules), shared with
    the other readers of the session's bake (``conftest.tiny_bake``)."""
    return tiny_bake.root


# What serving must never do; each raises if called (the fresh process below patches them).
_FORBID = """
import subprocess, torch, triton
import compiler.capture, compiler.api
from compiler.kernels import precompile
def forbidden(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"serving called {what}")
    return fail
torch.export.export = forbidden("torch.export.export")
compiler.capture.capture_module = forbidden("kiln's capture")
compiler.api.capture_module = forbidden("kiln's capture")
triton.compile = forbidden("triton.compile")
precompile.CompilePool.__init__ = forbidden("the compile pool")
_popen = subprocess.Popen.__init__
def no_compiler(self, args, *rest, **kwargs):
    if any(tool in str(args) for tool in ("gcc", "cc1", "clang")):
        raise AssertionError("serving ran a C compiler")
    return _popen(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = no_compiler
"""


# Imports a load must not pay for (each costs 0.1-0.4 s): sympy (dynamic-shape padding
# only), pandas (pyarrow converts timestamps with it where installed), pyarrow's dataset
# scan and compute, torch.export's and dynamo's machinery.
_HEAVY_MODULES = ("sympy", "pandas", "pyarrow.dataset", "pyarrow.compute", "torch._dynamo")
_HEAVY = (f"heavy = [m for m in {_HEAVY_MODULES!r} if m in set(sys.modules) - before]; "
          "assert not heavy, f'loading imported {heavy}'")


@pytest.mark.parametrize("name", ["mlp", "convnet", "transformer_block"])
def test_a_fresh_process_loads_by_name_and_matches_eager(baked, name):
    script = _FORBID + textwrap.dedent(f"""
        import storage
        from pipeline.zoo import tiny
        module, args = tiny.{name}()
        model = storage.Store({str(baked)!r}).load_model({name!r}, module)
        assert model.cache_hit
        with torch.no_grad():
            for seed in (1, 2):
                torch.manual_seed(seed)
                fresh = tuple(torch.randn_like(a) for a in args)
                torch.testing.assert_close(model(*fresh), module(*fresh), rtol=1e-4, atol=1e-5)
        print("ok", model.kernel_count)
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[1]) >= 1


def test_loading_does_not_import_what_serving_does_not_need(baked):
    """A spy on the import system records every attempt, so a lazy import counts even
    where the package is not installed (pandas is not, in CI)."""
    script = textwrap.dedent(f"""
        import sys, torch, storage
        from pipeline.zoo import tiny
        HEAVY = {_HEAVY_MODULES!r}
        tried = []
        class Spy:
            def find_spec(self, name, path=None, target=None):
                if name in HEAVY:
                    tried.append(name)
                return None
        module, args = tiny.convnet()
        assert not [m for m in HEAVY if m in sys.modules], "imported before loading"
        sys.meta_path.insert(0, Spy())
        model = storage.Store({str(baked)!r}).load_model("convnet", module)
        with torch.no_grad():
            model(*args)
        print("tried", sorted(set(tried)))
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "tried []", out.stdout


def test_the_loaded_model_uses_the_live_weights(baked):
    module, (x,) = tiny.mlp()
    model = Store(baked).load_model("mlp", module)
    with torch.no_grad():
        module.fc2.weight.mul_(2.0)
        torch.testing.assert_close(model(x), module(x), rtol=1e-4, atol=1e-5)


def _here(**changes) -> Wanted:
    return dataclasses.replace(Wanted.here("cpu", tiny.mlp()[0]), **changes)


def test_no_such_name_lists_what_the_store_holds(baked):
    with pytest.raises(ModelMissError, match=r"no model named 'resnet' .*holds convnet, mlp, "
                                             r"transformer_block"):
        Store(baked).load_model("resnet", tiny.mlp()[0])


@pytest.mark.parametrize("change, message", [
    ({"torch": "9.9.0"}, r"stored by torch 2\.\d+\.\d+\S*, running torch 9\.9\.0"),
    ({"triton": "0.1"}, r"stored by Triton \S+, running Triton 0\.1"),
    ({"kiln": "9.0.0"}, r"stored by kiln 0\.1\.0, running kiln 9\.0\.0"),
    ({"target": "cuda", "arch": "sm_80", "device_name": "NVIDIA A100"},
     r"stored for sm_90, this GPU is sm_80"),
    ({"dtypes": (("fc1.weight", "torch.float64"),)},
     r"stored for float32 parameters, the module's are float64 \(fc1\.weight\)"),
])
def test_every_kind_of_miss_names_the_difference(baked, change, message):
    store, wanted = Store(baked), _here(**change)
    row, rows = choose(store, "mlp", wanted)
    assert row is None
    text = explain(store, "mlp", wanted, rows)
    assert "is stored, but not for this process" in text
    assert re.search(message, text), text


def test_a_module_of_another_dtype_is_a_miss_naming_the_parameter(baked):
    module = tiny.mlp()[0].double()
    with pytest.raises(ModelMissError, match=r"float64 \(fc1\.weight\)"):
        Store(baked).load_model("mlp", module)


def test_a_parameter_of_another_shape_is_refused_by_name(baked):
    module = tiny.MLP(features=64, hidden=96).eval()
    with pytest.raises(ModelMissError, match=r"fc1\.weight.*\[96, 64\].*\[128, 64\]"):
        Store(baked).load_model("mlp", module)


def test_a_flipped_byte_in_the_wrapper_is_refused_before_it_runs(baked, tmp_path):
    import shutil
    copy = tmp_path / "store"
    shutil.copytree(baked, copy)
    store = Store(copy)
    row, _ = choose(store, "mlp", _here())
    marker = tmp_path / "ran"
    for path in sorted((copy / "modules").glob("*.parquet")):
        table = pq.read_table(path)
        keys = table.column("module_key").to_pylist()
        if row["module_key"] not in keys:
            continue
        sources = table.column("source").to_pylist()
        k = keys.index(row["module_key"])
        # the edit would run at import: write a file
        sources[k] = sources[k].replace("import torch\n",
                                        f"import torch\nopen({str(marker)!r}, 'w')\n", 1)
        table = table.set_column(table.schema.get_field_index("source"), "source",
                                 pa.array(sources, pa.string()))
        pq.write_table(table, path)
    with pytest.warns(Warning), pytest.raises(ModelMissError):
        store.load_model("mlp", tiny.mlp()[0])
    assert not marker.exists()


def test_the_calling_convention_round_trips_through_json():
    from compiler.capture import capture_module

    class KwModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.table = torch.arange(6.0).reshape(2, 3)     # a lifted constant

        def forward(self, x, *, scale):
            return {"y": self.lin(x) * scale.sum(), "t": self.table + 1}

    module = KwModel().eval()
    x, scale = torch.randn(2, 4), torch.randn(3)
    captured = capture_module(module, (x,), {"scale": scale})
    back = CallConvention.from_json(captured.convention.to_json(), module)
    assert back.inputs == captured.inputs and back.in_spec == captured.in_spec
    assert back.out_spec == captured.out_spec
    assert captured.constants and all(torch.equal(back.constants[k], v)
                                      for k, v in captured.constants.items())
    flat = back.flatten_call(module, (x,), {"scale": scale})
    out = back.finish_call(module, captured.gm(*flat))
    ref = module(x, scale=scale)
    torch.testing.assert_close(out["y"], ref["y"])
    torch.testing.assert_close(out["t"], ref["t"])


def test_modules_name_their_model_and_keep_their_call(baked):
    rows = Store(baked).query("modules", columns=["model", "target", "meta_json"]).to_pylist()
    assert {r["model"] for r in rows} == {"mlp", "convnet", "transformer_block"}
    assert {r["target"] for r in rows} == {"cpu", "cuda"}
    for row in rows:    # captured on CPU, called where the module runs
        call = json.loads(json.loads(row["meta_json"])["call"])
        assert {s["device"] for s in call["inputs"]} == {row["target"]}


# ----------------------------------------------------------------------------- GPU
_GPU_ZOO = """
[run]
name = "deploy-gpu"
targets = ["{arch}"]
[cluster]
workers = 2
[[models]]
factory = "pipeline.zoo.tiny:mlp"
[[models]]
factory = "pipeline.zoo.tiny:convnet"
[[models]]
factory = "pipeline.zoo.tiny:transformer_block"
"""


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mlp", "convnet", "transformer_block"])
def test_a_gpu_process_serves_stored_cubins_without_triton(tmp_path_factory, name):
    """On the card: kiln run for its architecture, then a fresh process where importing
    Triton fails loads by name, runs every kernel from its stored cubin (Triton's cache stays
    empty), matches eager, and is bit-identical to the same module compiled by Triton."""
    major, minor = torch.cuda.get_device_capability()
    root = tmp_path_factory.getbasetemp() / "gpu-deploy"
    store = root / "store"
    if not store.exists():
        config = root / "zoo.toml"
        root.mkdir(exist_ok=True)
        config.write_text(_GPU_ZOO.format(arch=f"sm_{major}{minor}"))
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config),
                              "--store", str(store)], cwd=ROOT, capture_output=True,
                             text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    triton_cache = root / f"triton-{name}"
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules["triton"] = None          # any import of Triton raises ImportError
        import storage
        from pipeline.zoo import tiny
        module, args = tiny.{name}()
        module = module.cuda()
        args = tuple(a.cuda() for a in args)
        before = set(sys.modules)
        model = storage.Store({str(store)!r}).load_model({name!r}, module)
        import threading    # cuBLAS's warm-up thread (storage.warm) ended inside load_model
        assert not [t for t in threading.enumerate() if t.name == "kiln-warm-blas"]
        with torch.no_grad():
            out = model(*args)
            {_HEAVY}
            torch.testing.assert_close(out, module(*args), rtol=1e-3, atol=1e-4)
            # the second call captures the CUDA graph, the third replays it
            assert torch.equal(model(*args), out) and torch.equal(model(*args), out)
            torch.save(out.cpu(), {str(root / (name + '.pt'))!r})
        print("ok")
        """)
    env = {**os.environ, "TRITON_CACHE_DIR": str(triton_cache)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
    assert not triton_cache.exists() or not any(triton_cache.rglob("*"))
    module, args = getattr(tiny, name)()
    module = module.cuda()
    key = choose(Store(store), name, Wanted.here("cuda", module))[0]["module_key"]
    jit = Store(store).load(key, binaries=False)   # the same source, compiled by Triton
    from compiler.convention import CallConvention
    conv = CallConvention.from_json(jit.artifact.meta["call"], module)
    with torch.no_grad():
        ref = conv.finish_call(module, jit(conv.flatten_call(module, tuple(a.cuda() for a in args))))
    assert torch.equal(torch.load(root / f"{name}.pt"), ref.cpu())
