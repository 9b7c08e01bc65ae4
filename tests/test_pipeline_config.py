"""Zoo configs: valid files load into the dataclasses; every bad key is named in the error.

No cluster here; see test_pipeline_run.py for runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import (ConfigError, DynamicDim, cuda_arch, gpu_targets, load_config,
                             lower_target, parse_config)

REPO = Path(__file__).resolve().parent.parent
MLP = {"factory": "pipeline.zoo.tiny:mlp"}


def parse(data: dict, base_dir: Path | None = None):
    return parse_config(data, "zoo.toml", base_dir=base_dir)


def error_of(data: dict, base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir)
    return str(info.value)


def test_tiny_zoo_config_loads():
    cfg = load_config(REPO / "configs" / "zoo-tiny.toml")
    assert cfg.name == "zoo-tiny"
    assert [m.name for m in cfg.models] == ["mlp", "convnet", "transformer_block"]
    assert all(m.dtype == "float32" and m.factory.startswith("pipeline.zoo.tiny:")
               for m in cfg.models)
    assert cfg.targets == ("cpu", "sm_90")
    assert cfg.cluster.workers == 2 and cfg.cluster.scheduler is None
    assert cfg.tasks.timeout("capture") == 120 and cfg.tasks.retries == 2
    assert not cfg.tuning.enabled


def test_defaults_and_full_model_entry():
    cfg = parse({"models": [{**MLP, "name": "mlp_dyn", "dtype": "bfloat16",
                             "kwargs": {"batch": 4},
                             "dynamic": [{"input": 0, "dim": 0, "min": 2, "max": 64,
                                          "name": "batch"}]}],
                 "compiler": {"xblock": 512}})
    (model,) = cfg.models
    assert model.name == "mlp_dyn" and model.dtype == "bfloat16"
    assert model.kwargs == {"batch": 4}
    assert model.dynamic == (DynamicDim(input=0, dim=0, min=2, max=64, name="batch"),)
    assert cfg.compiler_options == {"xblock": 512}
    assert cfg.targets == ("cpu",) and cfg.store is None
    assert cfg.tasks.timeout("lower") == 600.0
    hash(model)   # specs travel to workers and key the graph memo: they must be hashable


@pytest.mark.parametrize("data, key, words", [
    ({"models": [MLP, {**MLP, "name": "b", "dtype": "float33"}]},
     "models[1].dtype", "float33"),
    ({"models": [{**MLP, "dtyp": "float32"}]}, "models[0].dtyp", "unknown key"),
    ({"models": [{"name": "x"}]}, "models[0]", "exactly one of 'factory'"),
    ({"models": [{**MLP, "pt2": "a.pt2"}]}, "models[0]", "exactly one of 'factory'"),
    ({"models": [{"factory": "pipeline.zoo.tiny.mlp"}]}, "models[0].factory",
     "package.module:function"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "min": 8, "max": 4}]}]},
     "models[0].dynamic[0].max", "must be >= min"),
    ({"models": [{**MLP, "dynamic": [{"max": 4}]}]}, "models[0].dynamic[0].dim", "required"),
    ({"models": [{**MLP, "kwargs": [1]}]}, "models[0].kwargs", "expected a table"),
    ({"models": [MLP], "run": {"targets": ["cpu", "sm90"]}}, "run.targets[1]", "sm_90"),
    ({"models": [MLP], "run": {"targets": "cpu"}}, "run.targets", "expected an array"),
    ({"models": [MLP], "run": {"stor": "x"}}, "run.stor", "unknown key"),
    ({"models": [MLP], "cluster": {"workers": 0}}, "cluster.workers", ">= 1"),
    ({"models": [MLP], "cluster": {"workers": True}}, "cluster.workers", "got bool"),
    ({"models": [MLP], "cluster": {"scheduler": "host:8786"}}, "cluster.scheduler", "tcp://"),
    ({"models": [MLP], "tasks": {"timeout_s": {"lower": -1}}}, "tasks.timeout_s.lower", ">="),
    ({"models": [MLP], "tasks": {"timeout_s": {"link": 5}}}, "tasks.timeout_s.link",
     "unknown key"),
    ({"models": [MLP], "tuning": {"budget_s": "1h"}}, "tuning.budget_s", "expected a number"),
    ({"models": [MLP], "tuning": {"enabled": True}}, "tuning.enabled",
     "add a GPU architecture"),
    ({"models": [MLP], "tuning": {"space": "nope"}}, "tuning.space", "no such search-space"),
    ({"models": [MLP], "run": {"targets": ["sm_60"]}}, "run.targets[0]", "older than sm_70"),
    ({"models": [MLP], "compiler": {"xblok": 512}}, "compiler", "xblok"),
    ({"models": [MLP], "modles": []}, "modles", "unknown key"),
    ({"models": []}, "models", "non-empty"),
    ({"models": [MLP, MLP]}, "models", "two models are named 'mlp'"),
])
def test_errors_name_the_bad_key(data, key, words):
    message = error_of(data)
    assert message.startswith(f"zoo.toml: {key}:"), message
    assert words in message


def test_pt2_paths_resolve_against_the_config_directory(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "b.pt2").write_bytes(b"x")
    (tmp_path / "zoo" / "a.pt2").write_bytes(b"x")
    (tmp_path / "one.pt2").write_bytes(b"x")
    cfg = parse({"models": [{"pt2": "one.pt2"}, {"pt2": "zoo", "name": "dir"}]}, tmp_path)
    assert [m.name for m in cfg.models] == ["one", "dir/a", "dir/b"]
    assert cfg.models[1].pt2 == str(tmp_path / "zoo" / "a.pt2")
    assert all(m.dtype is None and m.factory is None for m in cfg.models)


def test_pt2_errors_name_the_key(tmp_path):
    assert "models[0].pt2: no such file" in error_of({"models": [{"pt2": "gone.pt2"}]},
                                                      tmp_path)
    (tmp_path / "empty").mkdir()
    assert "holds no .pt2 files" in error_of({"models": [{"pt2": "empty"}]}, tmp_path)
    (tmp_path / "m.pt2").write_bytes(b"x")
    message = error_of({"models": [{"pt2": "m.pt2", "dtype": "float16"}]}, tmp_path)
    assert "models[0].dtype: applies to factory models only" in message


def test_load_config_reports_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_lower_target_shares_one_cuda_module_across_architectures():
    assert {lower_target(t) for t in ("sm_80", "sm_90", "sm_90a")} == {"cuda"}
    assert lower_target("cpu") == "cpu"


def test_kwargs_travel_as_canonical_json():
    cfg = parse({"models": [{**MLP, "kwargs": {"b": 2, "a": 1}}]})
    assert cfg.models[0].kwargs_json == json.dumps({"a": 1, "b": 2}, sort_keys=True)


def test_tuning_space_by_name_or_by_path_relative_to_the_config(tmp_path):
    cfg = parse({"models": [MLP], "run": {"targets": ["cpu", "sm_90", "sm_80"]},
                 "tuning": {"enabled": True, "budget_s": 5}})
    assert cfg.tuning.enabled and cfg.tuning.space == "default" and cfg.tuning.budget_s == 5.0
    assert gpu_targets(cfg) == ("sm_90", "sm_80") and cuda_arch("sm_90a") == 90
    default = REPO / "configs" / "autotune" / "default.toml"
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine.toml").write_text(default.read_text())
    cfg = parse({"models": [MLP], "tuning": {"space": "spaces/mine.toml"}}, tmp_path)
    assert cfg.tuning.space == str(tmp_path / "spaces" / "mine.toml")
    (tmp_path / "bad.toml").write_text("[pointwise1d]\nXBLOK = [128]\n")
    message = error_of({"models": [MLP], "tuning": {"space": "bad.toml"}}, tmp_path)
    assert message.startswith("zoo.toml: tuning.space:") and "XBLOK" in message
