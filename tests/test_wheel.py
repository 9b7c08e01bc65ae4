"""kiln as users install it: a wheel, in a fresh virtual environment, run outside the repo.

The wheel must carry everything kiln reads at run time (the shipped TOML files above all:
compiler defaults, search spaces, the tiny zoo). The venv sees the machine's packages
(torch, Triton, Dask) but not the checkout: every kiln module must come from the wheel,
which the test checks before trusting anything else it sees.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with kiln's wheel installed (no dependencies fetched: they are the machine's)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    leftover = not (ROOT / "build").exists()   # setuptools builds in the source tree
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                       check=True, capture_output=True, timeout=300)
    finally:
        if leftover:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = dist.glob("kiln-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # outside the checkout: on PYTHONPATH, its kiln.egg-info (the wheel build writes one)
    # reads as kiln installed already, and pip skips the wheel
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300,
                   env=_outside_env())
    return env_dir


def _outside_env() -> dict:
    """This process's environment less what would point a child at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KILN_CACHE_DIR")}


def _run(env_dir: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = _outside_env()
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_every_kiln_module_comes_from_the_wheel(installed, tmp_path):
    probe = ("import compiler, pipeline, storage, kiln_configs\n"
             "from compiler.config import config_file\n"
             "for m in (compiler, pipeline, storage, kiln_configs): print(m.__file__)\n"
             "print(config_file('compiler.toml'))\n"
             "print(config_file('autotune', 'default.toml'))\n")
    out = _run(installed, tmp_path, "python", "-c", probe)
    assert out.returncode == 0, out.stderr
    paths = out.stdout.split()
    assert len(paths) == 6 and all(p.startswith(str(installed)) for p in paths), paths


def test_compile_module_runs_from_the_wheel(installed, tmp_path):
    script = ("import torch, compiler\n"
              "torch.manual_seed(0)\n"
              "m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU()).eval()\n"
              "x = torch.randn(4, 16)\n"
              "c = compiler.compile_module(m, (x,))\n"
              "torch.testing.assert_close(c(x), m(x), rtol=1e-4, atol=1e-5)\n"
              "print('kernels', c.kernel_count)\n")
    out = _run(installed, tmp_path, "python", "-c", script)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith("kernels ") and int(out.stdout.split()[-1]) >= 1


def test_kiln_runs_the_shipped_tiny_zoo(installed, tmp_path):
    """``kiln run`` with no config takes the zoo shipped in the wheel."""
    dry = _run(installed, tmp_path, "kiln", "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "mlp" in dry.stdout and "convnet" in dry.stdout
    run = _run(installed, tmp_path, "kiln", "run", "--store", str(tmp_path / "store"))
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    assert (tmp_path / "store" / "modules").is_dir()
    ls = _run(installed, tmp_path, "kiln", "store", "ls", "modules", "--store",
              str(tmp_path / "store"))
    assert ls.returncode == 0 and len(ls.stdout.strip().splitlines()) >= 6, ls.stdout
