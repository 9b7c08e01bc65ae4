"""The zoo config schema (pipeline/config_schema.py): the messages of the hand-written
validator it replaced, word for word; the JSON Schema, checked against every shipped config;
the generated reference docs/config.md, checked against the committed file.

The expected messages were recorded from the hand-written validator (kiln before issue 18)
on this corpus; the one that differs, cluster.worker's list of known keys, names the key
added since (cluster.dashboard).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, parse_config
from pipeline.config_docs import DOCS_PATH, config_main, json_schema, reference

REPO = Path(__file__).resolve().parent.parent
ZOOS = sorted((REPO / "configs").glob("zoo*.toml"))
MLP = {"factory": "pipeline.zoo.tiny:mlp"}
M = [MLP]
MODELS = ("models: expected a non-empty array of tables ([[models]] with factory = "
          "'pkg.module:function' or pt2 = 'file')")
FACTORY_ONLY = ("applies to factory models only (a .pt2 file fixes dtypes and dynamic dims "
                "at export)")

# (config, message after "zoo.toml: "); a message ending in "..." is a prefix.
MESSAGES = [
    ([1, 2], "top level: expected a table, got list"),
    ({"models": M, "run": 5}, "run: expected a table, got int"),
    ({"models": M, "run": {"name": 3}}, "run.name: expected a string, got int (3)"),
    ({"models": M, "run": {"store": ["x"]}}, "run.store: expected a string, got list (['x'])"),
    ({"models": M, "run": {"targets": "cpu"}},
     "run.targets: expected an array, got str ('cpu')"),
    ({"models": M, "run": {"targets": []}},
     "run.targets: must name at least one target (cpu, sm_80, sm_90, ...)"),
    ({"models": M, "run": {"targets": [1]}},
     "run.targets[0]: expected 'cpu' or a GPU architecture like 'sm_90', got 1"),
    ({"models": M, "run": {"targets": ["cpu", "sm90"]}},
     "run.targets[1]: expected 'cpu' or a GPU architecture like 'sm_90', got 'sm90'"),
    ({"models": M, "run": {"targets": ["sm_60"]}},
     "run.targets[0]: 'sm_60' is older than sm_70, the oldest architecture Triton "
     "compiles for"),
    ({"models": M, "run": {"targets": ["cpu", "sm_90", "cpu"]}},
     "run.targets: repeated target in ['cpu', 'sm_90', 'cpu']"),
    ({"models": M, "run": {"stor": "x"}},
     "run.stor: unknown key; known keys here: name, store, targets"),
    ({}, MODELS),
    ({"models": []}, MODELS),
    ({"models": "mlp"}, MODELS),
    ({"models": {"factory": "a.b:c"}}, MODELS),
    ({"models": [5]}, "models[0]: expected a table, got int"),
    ({"models": [{"name": "x"}]},
     "models[0]: give exactly one of 'factory' ('pkg.module:function') and 'pt2' (a "
     "file or directory)"),
    ({"models": [{**MLP, "pt2": "a.pt2"}]},
     "models[0]: give exactly one of 'factory' ('pkg.module:function') and 'pt2' (a "
     "file or directory)"),
    ({"models": [{**MLP, "name": "a b"}]},
     "models[0].name: use letters, digits and . _ - / only, got 'a b'"),
    ({"models": [{**MLP, "name": 1}]}, "models[0].name: expected a string, got int (1)"),
    ({"models": [{"factory": 1}]}, "models[0].factory: expected a string, got int (1)"),
    ({"models": [{"factory": "pipeline.zoo.tiny.mlp"}]},
     "models[0].factory: expected 'package.module:function', got 'pipeline.zoo.tiny.mlp'"),
    ({"models": [{**MLP, "dtype": "float33"}]},
     "models[0].dtype: expected one of bfloat16, float16, float32, float64; got 'float33'"),
    ({"models": [{**MLP, "dtype": 32}]}, "models[0].dtype: expected a string, got int (32)"),
    ({"models": [{**MLP, "kwargs": [1]}]},
     "models[0].kwargs: expected a table, got list ([1])"),
    ({"models": [{**MLP, "dynamic": {"dim": 0}}]},
     "models[0].dynamic: expected an array, got dict ({'dim': 0})"),
    ({"models": [{**MLP, "dynamic": [5]}]}, "models[0].dynamic[0]: expected a table, got int"),
    ({"models": [{**MLP, "dynamic": [{"max": 4}]}]},
     "models[0].dynamic[0].dim: required: which dimension of the input is dynamic"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0}]}]},
     "models[0].dynamic[0].max: required: the largest size this dim takes"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "min": 8, "max": 4}]}]},
     "models[0].dynamic[0].max: must be >= min (8), got 4"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "min": -1, "max": 4}]}]},
     "models[0].dynamic[0].min: must be >= 0, got -1"),
    ({"models": [{**MLP, "dynamic": [{"input": -1, "dim": 0, "max": 4}]}]},
     "models[0].dynamic[0].input: must be >= 0, got -1"),
    ({"models": [{**MLP, "dynamic": [{"dim": True, "max": 4}]}]},
     "models[0].dynamic[0].dim: expected an integer, got bool (True)"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "max": 4, "name": "1x"}]}]},
     "models[0].dynamic[0].name: must be an identifier, got '1x'"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "max": 4, "name": 7}]}]},
     "models[0].dynamic[0].name: expected a string, got int (7)"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "max": 4, "size": 7}]}]},
     "models[0].dynamic[0].size: unknown key; known keys here: dim, input, max, min, name"),
    ({"models": [{**MLP, "dynamic": [{"dim": 0, "max": 4}, {"dim": 1, "max": 2.5}]}]},
     "models[0].dynamic[1].max: expected an integer, got float (2.5)"),
    ({"models": [{**MLP, "dtyp": "float32"}]},
     "models[0].dtyp: unknown key; known keys here: dtype, dynamic, factory, kwargs, "
     "name, pt2"),
    ({"models": [{**MLP, "dtype": "float33", "zz": 1}]},
     "models[0].dtype: expected one of bfloat16, float16, float32, float64; got 'float33'"),
    ({"models": [MLP, {**MLP, "name": "b", "dtype": "float33"}]},
     "models[1].dtype: expected one of bfloat16, float16, float32, float64; got 'float33'"),
    ({"models": [MLP, MLP]}, "models: two models are named 'mlp'; give one a distinct name"),
    ({"models": [MLP, {"factory": "x.y:mlp"}]},
     "models: two models are named 'mlp'; give one a distinct name"),
    ({"models": M, "tuning": 1}, "tuning: expected a table, got int"),
    ({"models": M, "tuning": {"enabled": "yes"}},
     "tuning.enabled: expected true/false, got str ('yes')"),
    ({"models": M, "tuning": {"budget_s": "1h"}},
     "tuning.budget_s: expected a number, got str ('1h')"),
    ({"models": M, "tuning": {"budget_s": -1}}, "tuning.budget_s: must be >= 0, got -1"),
    ({"models": M, "tuning": {"budget_s": True}},
     "tuning.budget_s: expected a number, got bool (True)"),
    ({"models": M, "tuning": {"enabled": True}},
     "tuning.enabled: tuning times kernels on GPUs: add a GPU architecture (e.g. "
     "'sm_90') to run.targets, or set enabled = false"),
    ({"models": M, "tuning": {"space": 5}}, "tuning.space: expected a string, got int (5)"),
    ({"models": M, "tuning": {"space": "nope"}},
     "tuning.space: no such search-space file: ..."),
    ({"models": M, "tuning": {"spaces": "x"}},
     "tuning.spaces: unknown key; known keys here: budget_s, enabled, overlap, space"),
    ({"models": M, "cluster": {"workers": 0}}, "cluster.workers: must be >= 1, got 0"),
    ({"models": M, "cluster": {"workers": True}},
     "cluster.workers: expected an integer, got bool (True)"),
    ({"models": M, "cluster": {"workers": 1.5}},
     "cluster.workers: expected an integer, got float (1.5)"),
    ({"models": M, "cluster": {"gpus": -1}}, "cluster.gpus: must be >= 0, got -1"),
    ({"models": M, "cluster": {"scheduler": "host:8786"}},
     "cluster.scheduler: expected an address like 'tcp://host:8786', got 'host:8786'"),
    ({"models": M, "cluster": {"scheduler": 5}},
     "cluster.scheduler: expected a string, got int (5)"),
    ({"models": M, "cluster": {"worker": 5}},
     "cluster.worker: unknown key; known keys here: dashboard, gpus, scheduler, workers"),
    ({"models": M, "cluster": []}, "cluster: expected a table, got list"),
    ({"models": M, "tasks": {"retries": -1}}, "tasks.retries: must be >= 0, got -1"),
    ({"models": M, "tasks": {"retries": "2"}},
     "tasks.retries: expected an integer, got str ('2')"),
    ({"models": M, "tasks": {"timeout_s": 5}}, "tasks.timeout_s: expected a table, got int"),
    ({"models": M, "tasks": {"timeout_s": {"lower": -1}}},
     "tasks.timeout_s.lower: must be >= 0.001, got -1"),
    ({"models": M, "tasks": {"timeout_s": {"lower": 0}}},
     "tasks.timeout_s.lower: must be >= 0.001, got 0"),
    ({"models": M, "tasks": {"timeout_s": {"lower": "x"}}},
     "tasks.timeout_s.lower: expected a number, got str ('x')"),
    ({"models": M, "tasks": {"timeout_s": {"link": 5}}},
     "tasks.timeout_s.link: unknown key; known keys here: build, capture, lower, "
     "relower, tune"),
    ({"models": M, "tasks": {"retry": 5}},
     "tasks.retry: unknown key; known keys here: retries, timeout_s"),
    ({"models": M, "compiler": {"xblok": 512}},
     "compiler: options: unknown compiler option 'xblok'; known: attention, cache_dir, ..."),
    ({"models": M, "compiler": {"xblock": "big"}},
     "compiler: options: option 'xblock' must be int, got str ('big')"),
    ({"models": M, "compiler": 5}, "compiler: expected a table, got int"),
    ({"models": M, "modles": []},
     "modles: unknown key; known keys here: cluster, compiler, models, run, tasks, tuning"),
    ({"models": M, "zzz": 1, "aaa": 2},
     "aaa: unknown key; known keys here: cluster, compiler, models, run, tasks, tuning"),
    # Several problems: the first in the file's order (run, models, tuning, cluster, tasks).
    ({"run": {"stor": "x"}}, "run.stor: unknown key; known keys here: name, store, targets"),
    ({"models": [{**MLP, "dtype": "f"}], "tuning": {"budget_s": "x"}},
     "models[0].dtype: expected one of bfloat16, float16, float32, float64; got 'f'"),
    ({"models": M, "cluster": {"workers": 0}, "tasks": {"retries": -1}},
     "cluster.workers: must be >= 1, got 0"),
    ({"models": M, "run": {"targets": ["sm_90"]}, "tuning": {"enabled": True, "budget_s": -2}},
     "tuning.budget_s: must be >= 0, got -2"),
]

# Relative to a directory holding m.pt2, empty/ and bad.toml ({base} in the messages).
PT2_MESSAGES = [
    ({"models": [{"pt2": "gone.pt2"}]},
     "models[0].pt2: no such file or directory: {base}/gone.pt2"),
    ({"models": [{"pt2": "empty"}]},
     "models[0].pt2: directory {base}/empty holds no .pt2 files"),
    ({"models": [{"pt2": "m.pt2", "dtype": "float16"}]}, "models[0].dtype: " + FACTORY_ONLY),
    ({"models": [{"pt2": "m.pt2", "kwargs": {}}]}, "models[0].kwargs: " + FACTORY_ONLY),
    ({"models": [{"pt2": "m.pt2", "dynamic": []}]}, "models[0].dynamic: " + FACTORY_ONLY),
    ({"models": [{"pt2": "m.pt2", "name": "a b"}]},
     "models[0].name: use letters, digits and . _ - / only, got 'a b'"),
    ({"models": [{"pt2": "m.pt2", "zz": 1}]},
     "models[0].zz: unknown key; known keys here: factory, name, pt2"),
    ({"models": [{"pt2": "m.pt2"}, {"pt2": "m.pt2"}]},
     "models: two models are named 'm'; give one a distinct name"),
    ({"models": M, "tuning": {"space": "bad.toml"}},
     "tuning.space: {base}/bad.toml: [pointwise1d] unknown keys ['XBLOK']; known: "
     "['XBLOCK', 'max_elems_per_thread', 'max_tile', 'num_stages', 'num_warps']"),
    ({"models": M, "tuning": {"space": "sub/none.toml"}},
     "tuning.space: no such search-space file: {base}/sub/none.toml"),
]


def message_of(data, base_dir=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "zoo.toml", base_dir=base_dir)
    return str(info.value)


def check(message: str, expected: str) -> None:
    expected = "zoo.toml: " + expected
    if expected.endswith("..."):
        assert message.startswith(expected[:-3]), message
    else:
        assert message == expected


@pytest.mark.parametrize("data, expected", MESSAGES)
def test_messages_are_the_hand_written_validator_s(data, expected):
    check(message_of(data), expected)


def test_pt2_and_search_space_messages(tmp_path):
    (tmp_path / "m.pt2").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.toml").write_text("[pointwise1d]\nXBLOK = [128]\n")
    for data, expected in PT2_MESSAGES:
        check(message_of(data, tmp_path), expected.replace("{base}", str(tmp_path)))


@pytest.mark.parametrize("path", ZOOS, ids=lambda p: p.name)
def test_every_shipped_config_validates_against_the_schema(path):
    """Through the models (load_config) and through the JSON Schema an editor uses."""
    jsonschema = pytest.importorskip("jsonschema")
    config = load_config(path)
    assert config.models and config.targets
    data = tomllib.loads(path.read_text())
    jsonschema.Draft202012Validator(json_schema()).validate(data)


def test_the_json_schema_refuses_what_the_models_refuse():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    for data in ({"models": [{**MLP, "dtype": "float33"}]}, {"models": [{**MLP, "dtyp": 1}]},
                 {"models": M, "cluster": {"workers": 0}}, {"models": []},
                 {"models": M, "run": {"targets": ["sm90"]}}):
        assert not validator.is_valid(data), data
    assert validator.is_valid({"models": [{**MLP, "dynamic": [{"dim": 0, "max": 8}]}]})


def test_kiln_config_schema_prints_it():
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "schema"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema == json_schema()
    workers = schema["$defs"]["ClusterTable"]["properties"]["workers"]
    assert (workers["type"], workers["default"], workers["minimum"]) == ("integer", 2, 1)
    assert workers["description"].startswith("CPU worker processes")
    # Optional keys are plain types: TOML has no null.
    assert schema["$defs"]["ClusterTable"]["properties"]["gpus"] == {
        "minimum": 0, "type": "integer", "title": "Gpus",
        "description": "GPU workers of the embedded cluster, one per card (default: one per "
                       "visible GPU)."}


def test_committed_reference_is_generated_from_the_schema():
    committed = (REPO / DOCS_PATH).read_text()
    assert committed == reference(), ("docs/config.md is stale: run "
                                      "`python -m pipeline.cli config docs --out docs/config.md`")
    for key in ("`targets`", "`factory`", "`budget_s`", "`dashboard`", "`relower`", "`max`"):
        assert key in committed
    assert "(docs/config.md)" in (REPO / "README.md").read_text()


def test_every_key_has_a_meaning():
    for line in reference().splitlines():
        if line.startswith("| `"):
            assert line.rstrip(" |").split("|")[-1].strip(), line


def test_kiln_config_check(tmp_path, capsys):
    assert config_main(["check", str(REPO / "configs" / "zoo-tiny.toml")]) == 0
    assert "zoo-tiny.toml: ok (3 model(s), targets cpu, sm_90)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nfactory = "pipeline.zoo.tiny:mlp"\ndtype = "f"\n')
    assert config_main(["check", str(bad)]) == 2
    assert f"{bad}: models[0].dtype: expected one of" in capsys.readouterr().err
