"""A River-compatible face: drop a freshrec model into `river.evaluate.progressive_val_score`.

`RiverClassifier` takes feature dicts (River's `x`): str, int and bool values are categorical (one
`FeatureSpec` each, hashed like any other field), floats are dense. The schema is read from the
first dict or frame it sees (or given as `specs`); later keys it does not know are ignored, and
absent ones read as missing (the field's missing id, or `fill` for numbers). River itself is not
needed to use it; `learn_many`/`predict_proba_many` take pandas objects.

>>> model = RiverClassifier("fm")
>>> for i in range(200):
...     model.learn_one({"user": i % 2, "price": 1.0}, i % 2 == 0)
>>> p = model.predict_proba_one({"user": 0, "price": 1.0})
>>> sorted(p), p[True] > 0.5
([False, True], True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from freshrec.batch import Batch
from freshrec.events.event import LABEL, TS, EventChunk, FieldKind
from freshrec.features import FeaturePipeline, FeatureSpec
from freshrec.models import ModelConfig, build_model
from freshrec.train.online import OnlineTrainer, TrainerConfig


def infer_specs(x: Mapping[str, Any], dim: int = 16) -> list[FeatureSpec]:
    """One spec per key: floats are dense, anything else categorical.

    >>> [(s.name, s.kind.value) for s in infer_specs({"user": "u1", "age": 31, "price": 9.5})]
    [('user', 'categorical'), ('age', 'categorical'), ('price', 'dense')]
    """
    return [FeatureSpec(str(key), FieldKind.DENSE if isinstance(value, float) else FieldKind.CATEGORICAL,
                        dim=dim) for key, value in x.items()]


class RiverClassifier:
    """`learn_one`/`predict_proba_one`, `learn_many`/`predict_proba_many` over an `OnlineTrainer`.

    `model` is a `build_model` name; `config` its `ModelConfig`; `trainer` the `TrainerConfig`;
    `specs` fixes the schema instead of reading it from the first example. Each `learn_one` is a
    micro-batch of one row; each `learn_many` one micro-batch of the frame's rows.
    """

    _supervised = True  # River's estimator flags, read by `progressive_val_score`
    _multiclass = False

    def __init__(self, model: str = "fm", config: ModelConfig | None = None,
                 trainer: TrainerConfig | None = None, specs: Sequence[FeatureSpec] | None = None) -> None:
        self.model = model
        self.config = config
        self.trainer = trainer
        self.specs = specs
        self._trainer: OnlineTrainer | None = None
        self._pipeline: FeaturePipeline | None = None
        self._seen = 0

    def _start(self, x: Mapping[str, Any]) -> None:
        config = self.config or ModelConfig()
        specs = list(self.specs) if self.specs is not None else infer_specs(x, config.dim)
        self._pipeline = FeaturePipeline(specs)
        self._trainer = OnlineTrainer(build_model(self.model, specs, config), self.trainer)

    @property
    def online(self) -> OnlineTrainer | None:
        """The trainer underneath (None before the first example)."""
        return self._trainer

    def _batch(self, rows: Sequence[Mapping[str, Any]], labels: Sequence[Any] | None) -> Batch:
        if self._pipeline is None:
            self._start(rows[0] if rows else {})
        assert self._pipeline is not None
        columns: dict[str, pa.Array] = {}
        for spec in self._pipeline.specs:
            values = [row.get(spec.source_column) for row in rows]
            if spec.is_sparse:
                columns[spec.source_column] = pa.array([None if v is None else str(v) for v in values], pa.string())
            else:
                columns[spec.source_column] = pa.array([_number(v) for v in values], pa.float64())
        ts = np.arange(self._seen, self._seen + len(rows), dtype=np.float64)
        self._seen += len(rows)
        columns[TS] = pa.array(ts)
        columns[LABEL] = pa.array([_label(y) for y in labels] if labels is not None else [None] * len(rows),
                                  pa.float32())
        return self._pipeline.build(EventChunk(pa.table(columns), np.arange(len(rows), dtype=np.int64), "river"))

    def predict_one(self, x: Mapping[str, Any]) -> bool:
        """The more likely class."""
        return self.predict_proba_one(x)[True] >= 0.5

    def learn_one(self, x: Mapping[str, Any], y: Any) -> None:
        """Learn from one example (its prediction, made first, goes into the trainer's metrics)."""
        self._trainer_learn(self._batch([x], [y]))

    def predict_proba_one(self, x: Mapping[str, Any]) -> dict[bool, float]:
        """`{False: 1 - p, True: p}`; 0.5 before any learning."""
        p = float(self._predict(self._batch([x], None))[0])
        return {False: 1.0 - p, True: p}

    def learn_many(self, X: Any, y: Any) -> None:  # noqa: N803 - River's names
        """Learn from a pandas DataFrame `X` and Series `y` as one micro-batch."""
        self._trainer_learn(self._batch(X.to_dict("records"), list(y)))

    def predict_proba_many(self, X: Any) -> Any:  # noqa: N803 - River's names
        """A DataFrame with columns False and True, indexed like `X`."""
        import pandas as pd

        p = self._predict(self._batch(X.to_dict("records"), None)).numpy().astype(np.float64)
        return pd.DataFrame({False: 1.0 - p, True: p}, index=X.index)

    def _trainer_learn(self, batch: Batch) -> None:
        assert self._trainer is not None
        self._trainer.learn(batch)

    def _predict(self, batch: Batch) -> torch.Tensor:
        assert self._trainer is not None
        return self._trainer.predict(batch)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _label(y: Any) -> float | None:
    return None if y is None else float(bool(y))


def _register_with_river() -> None:
    """Make River's metrics accept the face (`isinstance(model, river.base.Classifier)`), when
    River is installed; River stays optional."""
    try:
        from river import base
    except ImportError:  # pragma: no cover - River is a test-only dependency
        return
    base.Classifier.register(RiverClassifier)


_register_with_river()
