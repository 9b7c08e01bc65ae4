"""Shared pytest wiring: tests marked ``gpu`` are skipped on machines without CUDA, and the
tiny zoo is baked once for the whole session (``tiny_bake``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bake(tmp_path_factory) -> SimpleNamespace:
    """``python -m pipeline.cli run configs/zoo-tiny.toml`` into a fresh store, with Dask's
    performance report, in a subprocess (not a terminal: its output is plain text); once a
    session, since each bake starts a Dask cluster (about 25 s on two cores). ``root``,
    ``report`` and the ``CompletedProcess`` as ``done``. Tests only read the store: one that
    edits it works on a copy."""
    base = tmp_path_factory.mktemp("tiny-bake")
    root, report = base / "store", base / "dask-report.html"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(REPO / "configs" / "zoo-tiny.toml"),
         "--store", str(root), "--dask-report", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return SimpleNamespace(root=root, report=report, done=done)
