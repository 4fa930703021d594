"""The import-order contract in pyproject.toml (`[tool.importlinter]`): folders follow the data
path, a package imports only the layers below it. Checked with import-linter's `lint-imports`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-c", LINT, "--config", "pyproject.toml", "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _layers() -> list[str]:
    (contract,) = read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"]
    assert contract["type"] == "layers" and contract["containers"] == ["freshrec"]
    return contract["layers"]


def test_freshrec_keeps_its_layers() -> None:
    done = _lint(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 1 kept, 0 broken." in done.stdout
    assert int(re.search(r"Analyzed (\d+) files", done.stdout).group(1)) > 50


def test_an_import_up_the_layers_breaks_the_contract(tmp_path: Path) -> None:
    """The same layers over a package of empty modules in which `events` imports `engine`."""
    package = tmp_path / "shadow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    layers = _layers()
    for layer in layers:
        for tail in re.split(r"[|:]", layer):
            (package / f"{tail.strip().strip('()')}.py").write_text("")
    (package / "events.py").write_text("from shadow import engine\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.importlinter]\nroot_package = "shadow"\n\n[[tool.importlinter.contracts]]\n'
        f'name = "shadow layers"\ntype = "layers"\ncontainers = ["shadow"]\nexhaustive = true\n'
        f'layers = {json.dumps(layers)}\n')
    done = _lint(tmp_path, tmp_path)
    assert done.returncode == 1 and "Contracts: 0 kept, 1 broken." in done.stdout, done.stdout + done.stderr
    assert "shadow.events -> shadow.engine" in done.stdout
