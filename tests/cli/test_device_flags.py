"""`--device` and `--precision` that this machine cannot honour are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from freshrec.cli import app

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA")


@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "cuda"], "gpu.device: cuda asked for (--device), but torch sees no CUDA device here"),
    (["--device", "cuda:1"], "gpu.device: cuda:1 asked for (--device)"),
    (["--precision", "fp16"], "gpu.precision: fp16 needs a GPU (its gradient scaler)"),
    (["--device", "tpu"], "--device (gpu.device): must be auto, cpu, cuda or cuda:N, not 'tpu'"),
    (["--precision", "int8"], "--precision (gpu.precision): expected one of 'fp32', 'bf16' or 'fp16', got 'int8'"),
])
def test_run_refuses_what_this_machine_cannot_do(tmp_path: Path, flags: list[str], message: str) -> None:
    done = CliRunner().invoke(app, ["run", "--format", "simulator", "--limit", "100", "--no-serve",
                                    "--state", str(tmp_path / "state"), *flags])
    assert done.exit_code == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "state" / "checkpoints").exists()
