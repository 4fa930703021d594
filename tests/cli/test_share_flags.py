"""`--share` and `--attach` with a bad name, a server given nothing to serve, or an attached server given
arms, are refused with the flag or key named, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from freshrec.cli import app


@pytest.mark.parametrize(("command", "message"), [
    (["serve", "--port", "8999"], "give --registry DIR (a registry to follow) or --attach NAME"),
    (["serve", "--attach", "../etc", "--port", "8999"], "--attach: share name '../etc'"),
    (["serve", "--attach", "shop", "--port", "8999", "--config", str(Path(__file__).parents[2] / "docs" /
                                                                     "experiment.yaml")],
     "experiment.arms: a server attached to shared tables (--attach) holds one model"),
    (["run", "--format", "simulator", "--limit", "100", "--no-serve", "--share", "a/b"], "--share (sync.share)"),
])
def test_bad_share_names_are_refused(tmp_path: Path, command: list[str], message: str) -> None:
    done = CliRunner().invoke(app, [*command, *(["--state", str(tmp_path / "state")] if command[0] == "run" else [])])
    assert done.exit_code == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "state" / "checkpoints").exists()
