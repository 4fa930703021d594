"""Find MovieLens-100k locally or download it from GroupLens, verified by sha256 and cached.

Order: `$FRESHREC_DATA/movielens-100k`, then the cache, then a download of the publisher's
zip (https://files.grouplens.org/datasets/movielens/ml-100k.zip). Each extracted file must
match the publisher's checksum, or nothing is cached.

>>> import tempfile, pathlib
>>> empty = pathlib.Path(tempfile.mkdtemp())
>>> find_local_movielens(empty, empty) is None
True
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from freshrec.events.datasets.movielens import FILES

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}
FOLDER = "movielens-100k"


class FetchError(RuntimeError):
    """The data set could not be downloaded or did not match its checksum."""


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def find_local_movielens(data_root: Path, cache: Path) -> Path | None:
    """The first folder holding ml-100k: the shared data root, then the cache."""
    for folder in (data_root / FOLDER, cache / FOLDER):
        if _complete(folder):
            return folder
    return None


def extract_verified(archive: bytes, target: Path) -> Path:
    """Unpack u.data/u.item/u.user from the zip bytes into `target`, checking each sha256."""
    staging = Path(tempfile.mkdtemp(prefix="freshrec-ml100k-"))
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            for name, digest in SHA256.items():
                data = zf.read(f"ml-100k/{name}")
                if hashlib.sha256(data).hexdigest() != digest:
                    raise FetchError(f"{name} from {URL} does not match its sha256 {digest}")
                (staging / name).write_bytes(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)
    except (KeyError, zipfile.BadZipFile) as err:
        raise FetchError(f"{URL} is not the ml-100k archive: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_movielens(data_root: Path, cache: Path, timeout: float = 20.0) -> Path:
    """A local ml-100k folder, downloading (and caching) it when not found locally."""
    found = find_local_movielens(data_root, cache)
    if found is not None:
        return found
    try:
        with urllib.request.urlopen(URL, timeout=timeout) as response:
            archive = response.read()
    except OSError as err:
        raise FetchError(f"cannot download {URL}: {err}") from err
    return extract_verified(archive, cache / FOLDER)
