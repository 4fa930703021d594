"""`freshrec devices`: this machine (the CPU without NVML), a recorded-style NVML answer of 8 A100 in
two NVLink islands with the article's gpu block, and the refusals (exit 2, one line naming the key)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from freshrec.cli import app
from freshrec.devices import inventory


def dgx_answer(path: Path) -> Path:
    """8 x A100-SXM4-80GB as NVML names them, NVLinked (NV12) within 0-3 and 4-7, SYS across."""
    pairs = [{"a": a, "b": b, "level": 10 if a // 4 == b // 4 else 50, "nvlinks": 12 if a // 4 == b // 4 else 0}
             for a in range(8) for b in range(a + 1, 8)]
    gpus = [{"index": i, "name": "NVIDIA A100-SXM4-80GB", "uuid": f"GPU-{i:08x}", "bus_id": f"00000000:{i:02X}:00.0",
             "memory_bytes": 81920 << 20, "capability": [8, 0]} for i in range(8)]
    path.write_bytes(orjson.dumps({"driver": "550.54.15", "gpus": gpus, "pairs": pairs}))
    return path


def article(path: Path, count: int = 8) -> Path:
    path.write_text(f"gpu:\n  type: A100\n  count: {count}\n  autoscale: true\n")
    return path


def devices(*args: str):
    return CliRunner().invoke(app, ["devices", *map(str, args)])


@pytest.mark.skipif(bool(inventory().gpus), reason="checks the fallback of a machine without NVML or GPU")
def test_this_machine_without_nvml_is_its_cpu():
    done = devices("--json")
    assert done.exit_code == 0, done.stderr
    out = orjson.loads(done.stdout.splitlines()[-1])
    assert [(d["kind"], d["class"]) for d in out["devices"]] == [("cpu", "CPU")] and out["topology"] is None
    assert out["placement"]["trainer"] == ["cpu"] and out["placement"]["offline"] == "CPU"
    shown = devices()
    assert shown.exit_code == 0 and "trainer: the CPU (CPU)" in shown.stdout


def test_a_recorded_answer_with_the_articles_block(tmp_path: Path):
    done = devices("--config", article(tmp_path / "a.yaml"), "--nvml-answer", dgx_answer(tmp_path / "dgx.json"),
                   "--json")
    assert done.exit_code == 0, done.stderr
    out = orjson.loads(done.stdout.splitlines()[-1])
    assert {(d["class"], d["capability"], d["memory_bytes"]) for d in out["devices"]} == {("A100", "8.0", 81920 << 20)}
    assert out["topology"].splitlines()[1].split()[:6] == ["GPU0", "X", "NV12", "NV12", "NV12", "SYS"]
    placement = out["placement"]
    assert placement["trainer"] == [list(range(8))] and placement["scale"] == [1, 4]
    assert placement["classes"] == {"A100": {"cost_per_hour": 2.9, "speed": 1.0, "tier": "hot"}}
    shown = devices("--config", article(tmp_path / "four.yaml", 4), "--nvml-answer", tmp_path / "dgx.json")
    assert shown.exit_code == 0, shown.stderr
    for line in ("GPU4  SYS", "trainer: GPUs 0,1,2,3 (A100)", "offline retraining: A100", "note: gpu.autoscale"):
        assert line in shown.stdout


def test_what_the_machine_cannot_hold_or_a_bad_answer_exits_2_naming_it(tmp_path: Path):
    answer = dgx_answer(tmp_path / "dgx.json")
    done = devices("--config", article(tmp_path / "a.yaml", 16), "--nvml-answer", answer)
    assert done.exit_code == 2
    assert f"gpu.count: 16 x A100 asked for, but this machine has 8 (A100 x8) (--nvml-answer {answer})" in done.stderr
    (tmp_path / "broken.json").write_text("{not json")
    done = devices("--nvml-answer", tmp_path / "broken.json")
    assert done.exit_code == 2 and f"--nvml-answer {tmp_path / 'broken.json'}:" in done.stderr
    (tmp_path / "list.json").write_text("[]")
    done = devices("--nvml-answer", tmp_path / "list.json")
    assert done.exit_code == 2 and "expected a JSON object (driver, gpus, pairs), got list" in done.stderr
    (tmp_path / "partial.json").write_text('{"driver": "550.54.15", "gpus": [{"index": 0}], "pairs": []}')
    done = devices("--nvml-answer", tmp_path / "partial.json")
    assert done.exit_code == 2 and "not an NVML answer of read_nvml" in done.stderr
