"""Deployment you can trust (issue 12, items 3-5): the README's deployment commands run as
written (a signed bake, an export, ``kiln store why``, ``load_model``); a signed store
refuses unsigned and re-signed rows; a tampered wrapper or cubin is refused before anything
of it runs; an export holds only what serves its models."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.zoo import tiny
from storage import Store, TamperedRowWarning
from storage.artifacts import kernel_binaries
from storage.cli import store_main
from storage.deploy import ModelMissError
from storage.integrity import row_hashes
from storage.signing import MARKER, StoreKey, StoreKeyError, with_signatures

ROOT = Path(__file__).resolve().parent.parent
# What pip writes as the `kiln` console script (the guard matters: Dask's worker processes
# are spawned, and import the main script again).
CONSOLE_SCRIPT = (f"#!{sys.executable}\nimport sys\nfrom pipeline.cli import main\n"
                  f"if __name__ == '__main__':\n    sys.exit(main())\n")


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> SimpleNamespace:
    """The README's deployment section run as written, from a directory outside the repo:
    a signed tiny-zoo bake (``zoo-store``), its export for sm_90 (``mlp-store``), ``why``
    and ``serve.py``. About 15 s: the one bake of this module."""
    section = readme_section("Deployment")
    commands = re.findall(r"^    (\S.*)$", section.split("```")[0], re.M)
    serve = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    work, bin_dir = tmp_path_factory.mktemp("deploy"), tmp_path_factory.mktemp("bin")
    (work / "serve.py").write_text(serve)
    (bin_dir / "kiln").write_text(CONSOLE_SCRIPT)
    (bin_dir / "kiln").chmod(stat.S_IRWXU)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_STORE_KEY")}
    env.update(PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{env['PATH']}")
    script = "set -e\n" + "".join(f"echo '>>> {c.split('#')[0].strip()}'\n{c}\n"
                                  for c in commands)
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SimpleNamespace(work=work, zoo=work / "zoo-store", export=work / "mlp-store",
                           key=(work / "store.key").read_bytes().strip(), out=done.stdout)


def test_the_readme_deployment_runs_as_written(deployed):
    out = deployed.out
    assert re.search(r"export: mlp for sm_90 -> .*mlp-store \(signed with key [0-9a-f]{16}\)",
                     out)
    assert "model 'mlp' is stored and serves this device" in out
    assert out.strip().endswith("torch.Size([8, 64])")
    assert (deployed.zoo / MARKER).exists() and (deployed.export / MARKER).exists()


def _matches_eager(model, module, args) -> None:
    with torch.no_grad():
        for seed in (1, 2):
            torch.manual_seed(seed)
            fresh = tuple(torch.randn_like(a) for a in args)
            torch.testing.assert_close(model(*fresh), module(*fresh), rtol=1e-4, atol=1e-5)


def test_a_signed_store_serves_with_its_key_and_refuses_without(deployed):
    module, args = tiny.mlp()
    _matches_eager(Store(deployed.zoo, key=deployed.key).load_model("mlp", module),
                   module, args)
    with pytest.raises(StoreKeyError, match=r"store .*zoo-store is signed \(key "
                                            r"[0-9a-f]{16}\); set KILN_STORE_KEY_FILE"):
        Store(deployed.zoo, key=None).load_model("mlp", module)
    assert Store(deployed.zoo, key=deployed.key).verify().ok


def test_the_export_holds_only_the_exported_model_and_serves_it(deployed):
    zoo, export = Store(deployed.zoo, key=deployed.key), Store(deployed.export, key=deployed.key)
    mlp = zoo.query("modules", pc.field("model") == "mlp")
    assert (sorted(export.query("modules").column("module_key").to_pylist())
            == sorted(mlp.column("module_key").to_pylist()))              # cpu and cuda
    assert set(export.query("graphs").column("model").to_pylist()) == {"mlp"}
    kernels = {k for keys in mlp.column("kernel_keys").to_pylist() for k in keys}
    assert set(export.keys("kernels")) == kernels
    binaries = export.query("binaries", columns=["kernel_key", "arch", "status"]).to_pylist()
    assert binaries and {(b["arch"], b["status"]) for b in binaries} == {("sm_90", "ok")}
    assert {b["kernel_key"] for b in binaries} <= kernels
    assert export.verify().ok
    module, args = tiny.mlp()
    _matches_eager(export.load_model("mlp", module), module, args)


def test_export_names_unknown_models_and_what_the_store_holds(deployed, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("KILN_STORE_KEY", deployed.key.decode())
    out = tmp_path / "out"
    status = store_main(["--store", str(deployed.zoo), "export", "mlp", "resnet", "--arch",
                         "sm_90", "--out", str(out)])
    assert status == 1 and not out.exists()
    assert re.search(r"no model named resnet in store .* \(it holds convnet, mlp, "
                     r"transformer_block\)", capsys.readouterr().err)


def test_why_exits_0_when_the_model_serves_and_1_saying_why_not(deployed, capsys,
                                                                 monkeypatch):
    why = ["--store", str(deployed.export), "why"]
    assert store_main(why + ["mlp", "--device", "cpu"]) == 2      # signed: no key, refused
    assert "is signed" in capsys.readouterr().err
    monkeypatch.setenv("KILN_STORE_KEY", deployed.key.decode())
    assert store_main(why + ["mlp", "--device", "cpu"]) == 0
    assert "model 'mlp' is stored and serves this device" in capsys.readouterr().out
    assert store_main(why + ["convnet", "--device", "cpu"]) == 1
    assert "no model named 'convnet' in store" in capsys.readouterr().out


# --- tampering: a copy of the signed store, one row edited -----------------------------------

def _edit_row(root: Path, kind: str, key: str, edit: Callable[[dict], None],
              rehash: bool) -> list[str]:
    """Apply ``edit`` to the row ``key`` of ``kind`` in every file holding it; with
    ``rehash``, store the content hash of the edited row (what anyone can compute without
    the key). Returns the files edited."""
    key_column = {"modules": "module_key", "binaries": "binary_key"}[kind]
    edited = []
    for path in sorted((root / kind).glob("*.parquet")):
        table = pq.read_table(path)
        rows = table.to_pylist()
        hits = [row for row in rows if row[key_column] == key]
        for row in hits:
            edit(row)
        if not hits:
            continue
        table = pa.Table.from_pylist(rows, schema=table.schema)
        if rehash:
            table = table.set_column(table.schema.get_field_index("content_hash"),
                                     "content_hash", pa.array(row_hashes(kind, table)))
        pq.write_table(table, path)
        edited.append(str(path))
    assert edited
    return edited


@pytest.fixture
def copy(deployed, tmp_path) -> Store:
    shutil.copytree(deployed.zoo, tmp_path / "store")
    return Store(tmp_path / "store", key=deployed.key)


def _module_key(store: Store, target: str) -> str:
    table = store.query("modules", (pc.field("model") == "mlp") & (pc.field("target") == target),
                        columns=["module_key"])
    return table.column("module_key")[0].as_py()


def _unsign(row: dict) -> None:
    row["signature"] = None


def _resign(row: dict) -> None:
    """Signed again, validly, but with a key the store was not signed with."""
    signed = with_signatures("modules", pa.Table.from_pylist([row]), StoreKey(b"x" * 32))
    row["signature"] = signed["signature"][0].as_py()


@pytest.mark.parametrize("edit, why", [(_unsign, "unsigned row (rows must be signed with key"),
                                       (_resign, "signature does not verify with key")])
def test_a_signed_store_refuses_an_unsigned_or_resigned_row_naming_key_and_file(
        copy, edit, why):
    key = _module_key(copy, "cpu")
    [path] = _edit_row(Path(copy.root), "modules", key, edit, rehash=False)
    with pytest.warns(TamperedRowWarning, match=re.escape(why)), \
            pytest.raises(ModelMissError) as miss:
        copy.load_model("mlp", tiny.mlp()[0])
    assert f"refused {path} [{key}]: {why}" in str(miss.value)
    problems = copy.verify().problems
    assert [(p.path, p.key) for p in problems] == [(path, key)]


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-fails", "rehashed-signature-fails"])
def test_a_tampered_wrapper_is_refused_before_it_runs(copy, tmp_path, rehash):
    ran = tmp_path / "ran"

    def plant(row: dict) -> None:      # runs at import, if it is ever imported
        row["source"] = row["source"].replace("import torch\n",
                                              f"import torch\nopen({str(ran)!r}, 'w')\n", 1)

    key = _module_key(copy, "cpu")
    _edit_row(Path(copy.root), "modules", key, plant, rehash)
    with pytest.warns(TamperedRowWarning), pytest.raises(ModelMissError, match=key):
        copy.load_model("mlp", tiny.mlp()[0])
    with pytest.warns(TamperedRowWarning):
        assert copy.get_artifact(key) is None
    assert not ran.exists()


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-fails", "rehashed-signature-fails"])
def test_a_tampered_cubin_is_never_handed_to_a_launcher(copy, rehash):
    artifact = copy.get_artifact(_module_key(copy, "cuda"))
    intact = kernel_binaries(copy, artifact, 90)
    assert intact, "the sm_90 build stored no binary for the mlp kernel"
    binary_key = copy.query("binaries", pc.field("kernel_key") == artifact.kernels[0].kernel_key,
                            columns=["binary_key"])["binary_key"][0].as_py()

    def flip(row: dict) -> None:
        cubin = bytearray(row["cubin"])
        cubin[len(cubin) // 2] ^= 0x01
        row["cubin"] = bytes(cubin)

    _edit_row(Path(copy.root), "binaries", binary_key, flip, rehash)
    with pytest.warns(TamperedRowWarning, match=binary_key):
        assert kernel_binaries(copy, artifact, 90) == {}


def test_a_file_left_in_the_code_dir_is_not_imported_for_the_verified_source(tmp_path):
    """Generated modules are imported from a file named by their source's hash; a file
    already there under that name (an earlier process's, or planted) is replaced unless it
    holds exactly the verified source."""
    from compiler.artifact import content_hash
    from compiler.kernels.source import load_module
    source = "VALUE = 1\n"
    (tmp_path / f"kiln_{content_hash(source)[:24]}.py").write_text("VALUE = 666\n")
    assert load_module(source, "cpu", tmp_path).VALUE == 1


def _strip_signatures(root: Path) -> None:
    """``root`` as an unsigned store: no marker, every signature column null."""
    (root / MARKER).unlink()
    for path in root.glob("*/*.parquet"):
        table = pq.read_table(path)
        if "signature" in table.column_names:
            index = table.schema.get_field_index("signature")
            table = table.set_column(index, table.schema.field(index),
                                     pa.nulls(table.num_rows, pa.string()))
            pq.write_table(table, path)


def test_exporting_an_unsigned_store_with_a_key_signs_the_copy(deployed, tmp_path):
    shutil.copytree(deployed.zoo, tmp_path / "unsigned")
    _strip_signatures(tmp_path / "unsigned")
    from storage.export import export_models
    report = export_models(Store(tmp_path / "unsigned", key=deployed.key), ["mlp"], "sm_90",
                           str(tmp_path / "out"))
    assert report.signed_with == StoreKey(deployed.key).fingerprint
    assert any("is not signed" in note for note in report.notes)
    module, args = tiny.mlp()
    _matches_eager(Store(tmp_path / "out", key=deployed.key).load_model("mlp", module),
                   module, args)


def test_deleting_the_marker_does_not_get_an_unsigned_row_signed_by_export(copy, tmp_path):
    key = _module_key(copy, "cpu")
    _edit_row(Path(copy.root), "modules", key, _unsign, rehash=False)
    (Path(copy.root) / MARKER).unlink()
    from storage.export import export_models
    with pytest.warns(TamperedRowWarning, match=key):
        export_models(copy, ["mlp"], "sm_90", str(tmp_path / "out"))
    exported = Store(tmp_path / "out", key=copy.key).keys("modules")
    assert exported and key not in exported
