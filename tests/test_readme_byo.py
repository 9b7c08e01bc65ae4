"""The README's "bring your own model" section runs as written, from a directory outside
the repo, through a `kiln` launcher like the installed console script (whose sys.path holds
neither the project directory nor the working directory: issue 14, item 5)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What pip writes as the `kiln` console script.
CONSOLE_SCRIPT = """import re, sys
from pipeline.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_bring_your_own_model_runs_as_written_outside_the_repo(tmp_path):
    section = readme_section("Bring your own model")
    files = re.findall(r"`([\w.]+)`:\n\n```\w*\n(.*?)```", section, re.S)
    assert [name for name, _ in files] == ["mymodels.py", "my.toml", "serve.py"]
    commands = re.findall(r"^    ((?:kiln|python) .*)$", section, re.M)
    assert commands == ["kiln run my.toml --dry-run", "kiln run my.toml", "python serve.py"]

    project, bin_dir = tmp_path / "myproj", tmp_path / "bin"
    project.mkdir(), bin_dir.mkdir()
    for name, body in files:
        (project / name).write_text(body)
    (bin_dir / "kiln").write_text(CONSOLE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}     # kiln installed; the project is not
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        argv = ([sys.executable, str(bin_dir / "kiln")] if argv[0] == "kiln"
                else [sys.executable]) + argv[1:]
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True,
                              timeout=400)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
        outputs.append(done)
    assert "checks: all 1 model(s) load" in outputs[0].stdout
    assert "all models done" in outputs[1].stdout and outputs[1].stderr.count("FAILED") == 0
    assert outputs[2].stdout.strip().endswith("torch.Size([8, 10])")
