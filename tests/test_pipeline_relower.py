"""Lower and relower from stored graphs, with no model code: ``kiln capture`` stores the
graphs of a zoo whose factories live in a temporary directory; the factory file is then
deleted, and ``kiln relower`` (a real LocalCluster) lowers every graph again with a changed
compiler option. The new modules, loaded by name with the original modules' weights, match
eager. A graph from a torch this one cannot read is listed with the reason; one from another
torch that reads is stored again under this torch's key."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.commands import stored_models, stored_targets
from pipeline.config import ModelSpec
from pipeline.tasks import capture_task, restore_task

REPO = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "convnet", "transformer_block")


def _zoo(tmp_path: Path) -> Path:
    """A zoo config next to its own copy of the tiny zoo's code (``tinyzoo.py``)."""
    shutil.copy(REPO / "pipeline" / "zoo" / "tiny.py", tmp_path / "tinyzoo.py")
    models = "".join(f'[[models]]\nfactory = "tinyzoo:{m}"\n' for m in MODELS)
    config = tmp_path / "zoo.toml"
    config.write_text(f'[run]\ntargets = ["cpu"]\n[cluster]\nworkers = 2\n{models}')
    return config


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location("tinyzoo_kept", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rewrite(store, row: dict, **changes) -> None:
    """Store a graphs row like ``row`` with ``changes`` (as another torch would have)."""
    from storage import GraphRecord
    fields = {f.name: row[f.name] for f in dataclasses.fields(GraphRecord)}
    store.write("graphs", [GraphRecord(**{**fields, **changes})])


def test_capture_then_relower_without_the_model_code(tmp_path, capsys):
    from compiler.api import module_key
    from compiler.config import load_options
    from storage import Store
    config, store_dir = _zoo(tmp_path), tmp_path / "store"
    assert main(["capture", str(config), "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 model(s): 3 graph(s) stored new, 0 failed" in out
    store = Store(store_dir)
    assert store.keys("modules") == [] and len(store.keys("graphs")) == 3
    zoo = _load_module(tmp_path / "tinyzoo.py")            # the models, for eager
    (tmp_path / "tinyzoo.py").unlink()                      # no process can import it now
    graphs = {m.name: m.graph_key for m in stored_models(store)}

    # A graph stored by an older torch that this one cannot read: listed with the reason.
    row = store.get("graphs", graphs["mlp"])
    fmt = {**json.loads(row["graph_format"]), "schema": [1, 0]}
    _rewrite(store, row, graph_key="e" * 64, model="ancient", torch_version="2.1.0",
             graph_format=json.dumps(fmt))

    assert main(["relower", "--store", str(store_dir), "--target", "cpu",
                 "--option", "xblock=512"]) == 1
    captured = capsys.readouterr()
    assert "ancient" in captured.out and "GraphFormatError" in captured.out
    assert "written by torch 2.1.0" in captured.out and "schema 1.0" in captured.out
    options = load_options({"xblock": 512})
    assert options.options_hash() != load_options({}).options_hash()
    for name in MODELS:
        key = module_key(graphs[name], options, "cpu")
        assert store.has("modules", key), name
        module, args = getattr(zoo, name)()
        compiled = store.load_model(name, module)
        with torch.no_grad():
            torch.testing.assert_close(compiled(*args), module(*args), rtol=1e-4, atol=1e-4)


def test_lower_task_runs_where_the_factory_cannot_be_imported(tmp_path):
    """Capture where the factory's module is (its directory on the search path); lower in a
    fresh process whose sys.path lacks it, by graph key only."""
    _zoo(tmp_path)
    store = str(tmp_path / "store")
    spec = ModelSpec("mlp", factory="tinyzoo:mlp", search_path=(str(tmp_path),))
    graph = capture_task(spec, store)
    assert graph.status == "ok", graph.traceback
    code = ("import sys; from pipeline.tasks import LowerJob, lower_task; "
            "import importlib.util as u; assert u.find_spec('tinyzoo') is None; "
            f"r = lower_task(LowerJob('mlp', {graph.key!r}, 'cpu'), {store!r}); "
            "print(r.status, r.traceback)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.stdout.startswith("ok"), done.stdout + done.stderr


def test_a_graph_from_another_torch_is_stored_again_under_this_torch_s_key(tmp_path):
    from storage import Store
    _zoo(tmp_path)
    store = Store(tmp_path / "store")
    spec = ModelSpec("mlp", factory="tinyzoo:mlp", search_path=(str(tmp_path),))
    real = capture_task(spec, str(store.root)).key
    _rewrite(store, store.get("graphs", real), graph_key="f" * 64, torch_version="2.12.0",
             model="old_mlp")
    assert stored_models(store, ["old_mlp"])[0].graph_key == "f" * 64
    moved = restore_task(ModelSpec("old_mlp", graph_key="f" * 64), str(store.root))
    assert (moved.status, moved.key) == ("ok", real), moved.traceback
    same = restore_task(ModelSpec("mlp", graph_key=real), str(store.root))
    assert (same.status, same.key) == ("skipped", real)
    assert stored_targets(store, [real]) == ()           # nothing lowered yet
    _rewrite(store, store.get("graphs", real), graph_key="d" * 64, model="v3", program=None,
             call_json=None, constants=None, graph_format=None)   # as written before v4
    (v3,) = stored_models(store, ["v3"])
    assert v3.graph_key is None and "capture it again" in v3.problem
    with pytest.raises(KeyError, match="it holds: mlp, old_mlp, v3"):
        stored_models(store, ["nosuch"])
    assert dataclasses.replace(spec, graph_key=real).source == f"graph:{real}"
