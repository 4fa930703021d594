"""The README's Python examples run as written (the `## In Python` section, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    section = re.search(r"^## In Python\n(.*?)^## ", README.read_text(), re.S | re.M).group(1)
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _run(code: str, namespace: dict) -> dict:
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_train_serve_and_predict_through_the_public_face(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = _run(_examples()[0], {})
    assert done["figures"]["learned"] == 10_000 and 0.5 < done["figures"]["auc"] < 1.0
    answer = done["answer"]
    assert answer["version"] == done["engine"].registry.latest() and answer["items"] == [2226, 1347, 7]
    assert len(set(answer["scores"])) == 3 and all(0.0 < s < 1.0 for s in answer["scores"])
    assert (tmp_path / "py-state" / "registry").is_dir()


def test_the_parts_underneath() -> None:
    ingest_example, table_example = _examples()[1:]
    namespace = _run(ingest_example, {})
    assert len(namespace["micro"]) == -(-len(namespace["batch"]) // 512)
    assert namespace["batch"].sparse.keys()[:2] == ["user_id", "item_id"]
    _run(table_example, namespace)
    assert namespace["user_table"].live == 2 and len(namespace["delta"].ids) == 2
