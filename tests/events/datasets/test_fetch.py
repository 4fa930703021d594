from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from freshrec.events.datasets import fetch
from freshrec.events.datasets.fetch import (
    FetchError,
    extract_verified,
    fetch_movielens,
    find_local_movielens,
)


def _archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"ml-100k/{name}", data)
    return out.getvalue()


FILES = {"u.data": b"1\t1\t5\t1\n", "u.item": b"1|x|||u" + b"|0" * 19 + b"\n", "u.user": b"1|20|M|other|123\n"}


def test_extract_verifies_every_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in FILES.items()})
    target = extract_verified(_archive(FILES), tmp_path / "cache" / "movielens-100k")
    assert (target / "u.data").read_bytes() == FILES["u.data"]
    assert find_local_movielens(tmp_path / "nowhere", tmp_path / "cache") == target


def test_a_tampered_file_is_rejected_and_nothing_cached(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="does not match its sha256"):
        extract_verified(_archive(FILES), tmp_path / "movielens-100k")
    assert not (tmp_path / "movielens-100k").exists()


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="not the ml-100k archive"):
        extract_verified(b"<html>", tmp_path / "movielens-100k")


def test_local_copy_is_preferred_and_no_network_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared" / "movielens-100k"
    shared.mkdir(parents=True)
    for name, data in FILES.items():
        (shared / name).write_bytes(data)

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded although a local copy exists")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    assert fetch_movielens(tmp_path / "shared", tmp_path / "cache") == shared


def test_download_failure_is_a_fetch_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", refused)
    with pytest.raises(FetchError, match="cannot download .*network unreachable"):
        fetch_movielens(tmp_path / "shared", tmp_path / "cache")
