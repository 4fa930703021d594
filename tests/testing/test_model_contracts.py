"""Every model in `MODELS`, on the fused and the module path of `OnlineTrainer`, passes
`freshrec.testing.check_model`, and so does the retrieval model (`RETRIEVAL_MODELS`, learned pointwise here);
and each check fails on a model registered to break it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.models import MODELS, LogisticRegression, LRConfig
from freshrec.models.factory import RETRIEVAL_MODELS
from freshrec.testing import (
    check_learn_keeps_its_batch,
    check_model,
    check_same_seed_same_run,
    check_snapshot_round_trip,
    check_unseen_ids,
)
from freshrec.train import TrainerConfig


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "module"])
@pytest.mark.parametrize("name", [*MODELS, *RETRIEVAL_MODELS])
def test_every_model_passes_the_contract(name: str, fused: bool) -> None:
    assert check_model(name, TrainerConfig(fused=fused)) == [
        "learn_keeps_its_batch", "unseen_ids", "snapshot_round_trip", "same_seed_same_run"]


class ScalesItsInput(LogisticRegression):
    def forward(self, batch, train=False):
        if train:
            batch.dense.mul_(0.5)
        return super().forward(batch, train)


class FixedVocabulary(LogisticRegression):
    """Knows the ids of the first batch it sees, like a table sized up front."""

    def forward(self, batch, train=False):
        ids = set(batch.sparse.values().tolist())
        self.vocabulary = getattr(self, "vocabulary", ids)
        if ids - self.vocabulary:
            raise KeyError(f"{len(ids - self.vocabulary)} ids outside the vocabulary")
        return super().forward(batch, train)


class UnsavedShift(LogisticRegression):
    """Learns a shift that is a plain attribute, so no snapshot carries it."""

    def forward(self, batch, train=False):
        self.shift = getattr(self, "shift", 0.0) + (0.01 if train else 0.0)
        return super().forward(batch, train) + self.shift


class Unseeded(LogisticRegression):
    """An offset drawn from fresh entropy, whatever the seed (saved, so snapshots agree)."""

    def __init__(self, specs, config=None) -> None:
        super().__init__(specs, config)
        self.register_buffer("offset", torch.tensor(float(np.random.default_rng().normal())))

    def forward(self, batch, train=False):
        return super().forward(batch, train) + self.offset


@pytest.mark.parametrize(("model", "check", "error", "message"), [
    (ScalesItsInput, check_learn_keeps_its_batch, AssertionError, "learn changed its batch's dense"),
    (FixedVocabulary, check_unseen_ids, KeyError, "outside the vocabulary"),
    (UnsavedShift, check_snapshot_round_trip, AssertionError, "after a snapshot round trip"),
    (Unseeded, check_same_seed_same_run, AssertionError, "two runs with the same seed differ"),
])
def test_each_model_check_fails_on_a_model_that_breaks_it(monkeypatch: pytest.MonkeyPatch, model, check,
                                                           error: type[Exception], message: str) -> None:
    monkeypatch.setitem(MODELS, "broken", (model, LRConfig))
    with pytest.raises(error, match=message):
        check("broken")
