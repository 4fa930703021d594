from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models import (
    DCNConfig,
    DCNv2,
    DeepFM,
    DeepFMConfig,
    FMConfig,
    LogisticRegression,
    LRConfig,
    ModelConfig,
    OnlineFM,
    build_model,
)
from freshrec.models.base import loss, training_loss

CAT, MULTI, DENSE = FieldKind.CATEGORICAL, FieldKind.MULTI_CATEGORICAL, FieldKind.DENSE
SPECS = [FeatureSpec("user_id", CAT), FeatureSpec("genres", MULTI), FeatureSpec("price", DENSE),
         FeatureSpec("age", DENSE)]
GENRES = [[5, 6], [], [7, 5, 8]]


def _batch(users=(11, 12, 11), genres=GENRES, dense=None) -> Batch:
    rows = len(users)
    values = list(users) + [g for bag in genres for g in bag]
    lengths = [1] * rows + [len(bag) for bag in genres]
    dense = torch.tensor([[1.0, -0.5], [0.0, 2.0], [3.0, 1.0]]) if dense is None else dense
    return Batch(SparseFeatures(["user_id", "genres"], torch.tensor(values), torch.tensor(lengths, dtype=torch.int32)),
                 dense=dense, labels=torch.tensor([1.0, 0.0, 1.0]),
                 ts=torch.tensor([1.0, 5.0, 3.0], dtype=torch.float64),
                 dense_keys=("price", "age"))


def test_fm_forward_is_the_fm_formula() -> None:
    fm = OnlineFM(SPECS, FMConfig(dim=3, init_std=0.5))
    with torch.no_grad():
        fm.dense_weight.copy_(torch.tensor([[0.3, -0.2]]))
        fm.bias.fill_(0.1)
    batch = _batch()
    logits = fm(batch, train=True).detach()
    table = fm.table
    assert table.config.dim == 4 and table.live == 6  # users 11, 12 and genres 5..8: one table
    users = [11, 12, 11]
    for row in range(3):
        ids = np.array([users[row]] + GENRES[row])
        rows = table.gather(table.slots(ids, 0.0, train=False)).double()
        w, v = rows[:, 0], rows[:, 1:]
        pairs = sum(float(v[i] @ v[j]) for i, j in itertools.combinations(range(len(ids)), 2))
        expected = 0.1 + float(torch.tensor([0.3, -0.2]).double() @ batch.dense[row].double()) + float(w.sum()) + pairs
        assert float(logits[row]) == pytest.approx(expected, abs=1e-5)


def test_fm_now_is_the_latest_event_time() -> None:
    fm = OnlineFM(SPECS, FMConfig(dim=2))
    fm(_batch(), train=True)
    delta = fm.table.delta_since(0)
    assert set(delta.last_seen.tolist()) == {5.0}


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "dcn"])
def test_models_score_learn_and_do_not_insert_when_predicting(name: str) -> None:
    model = build_model(name, SPECS, ModelConfig(dim=4, seed=3))
    batch = _batch()
    before = model(batch, train=False)
    assert before.shape == (3,) and model.live_ids == 0  # predicting inserts nothing
    logits = model(batch, train=True)
    assert model.live_ids == 6
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).backward()
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in model.served_gradients())
    model.apply_gradients()
    assert all(table.version == 1 for table in model.tables.values())


def test_same_seed_same_initial_weights() -> None:
    a, b = DeepFM(SPECS, DeepFMConfig(dim=4, seed=7)), DeepFM(SPECS, DeepFMConfig(dim=4, seed=7))
    c = DeepFM(SPECS, DeepFMConfig(dim=4, seed=8))
    batch = _batch()
    assert torch.equal(a(batch, train=True), b(batch, train=True))
    assert not torch.equal(a(batch, train=False), c(batch, train=True))


def test_lr_tables_and_ftrl() -> None:
    model = LogisticRegression(SPECS, LRConfig(ftrl=True, lr=0.1, l1=0.5))
    assert list(model.tables) == ["lr"]   # one table for every field: ids are salted by field
    assert model.tables["lr"].config.dim == 1
    assert model.tables["lr"].config.optimizer.alpha == 0.1
    logits = model(_batch(), train=True)
    assert torch.equal(logits, torch.zeros(3))  # FTRL rows start at zero, dense weights too


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcn_structures(structure: str) -> None:
    model = DCNv2(SPECS, DCNConfig(dim=4, cross_layers=2, hidden=(8, 4), structure=structure))
    assert len(model.cross.layers) == 2 and model.cross.layers[0].in_features == 2 * 4 + 2
    assert model.head.in_features == (4 if structure == "stacked" else 4 + 10)
    assert model(_batch(), train=True).shape == (3,)


def test_models_without_dense_or_sparse_features() -> None:
    sparse_only = [FeatureSpec("user_id", CAT)]
    batch = Batch(SparseFeatures(["user_id"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32)),
                  dense=torch.zeros(2, 0), labels=torch.ones(2), ts=torch.zeros(2, dtype=torch.float64))
    for name in ("lr", "fm", "deepfm", "dcn"):
        assert build_model(name, sparse_only)(batch, train=True).shape == (2,)
    dense_only = [FeatureSpec("x", DENSE)]
    batch = Batch(SparseFeatures([], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32)),
                  dense=torch.ones(2, 1), labels=torch.ones(2), ts=torch.zeros(2, dtype=torch.float64),
                  dense_keys=("x",))
    for name in ("lr", "fm", "deepfm", "dcn"):
        assert build_model(name, dense_only)(batch, train=True).shape == (2,)


def test_bad_configs_and_batches() -> None:
    with pytest.raises(ValueError, match="dim must be >= 1"):
        FMConfig(dim=0)
    with pytest.raises(ValueError, match="loss"):
        FMConfig(loss="hinge")
    with pytest.raises(ValueError, match="structure"):
        DCNConfig(structure="diagonal")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("svm", SPECS)
    with pytest.raises(ValueError, match="dense columns"):
        OnlineFM(SPECS[:3])(_batch(), train=False)


def test_build_model_keeps_shared_settings() -> None:
    model = build_model("dcn", SPECS, ModelConfig(dim=5, lr=0.2, seed=4, admit_after=2))
    assert isinstance(model.config, DCNConfig)
    assert (model.config.dim, model.config.lr, model.config.seed, model.config.admit_after) == (5, 0.2, 4, 2)
    assert model.tables["user_id"].config.admit_after == 2


def test_fm_linear_lr_steps_column_0_only() -> None:
    """`linear_lr` sets the Adagrad step of the linear weights (column 0); the factors keep `lr`."""
    with pytest.raises(ValueError, match="linear_lr"):
        FMConfig(linear_lr=0.0)
    moved = {}
    for linear_lr in (None, 0.5):
        model = OnlineFM(SPECS, FMConfig(dim=4, lr=0.1, linear_lr=linear_lr, init_std=0.01, initial_accumulator=0.0))
        batch = _batch()
        output = model(batch, train=True)
        row = model.table.slots(np.array([11]), 0.0, train=False)
        before = model.table.gather(row).clone()
        torch.nn.functional.binary_cross_entropy_with_logits(output, batch.labels).backward()
        model.apply_gradients()
        moved[linear_lr] = model.table.gather(row) - before
    # the first Adagrad step moves each coordinate with a non-zero gradient by exactly its lr
    torch.testing.assert_close(moved[None][0, 0].abs(), torch.tensor(0.1))
    torch.testing.assert_close(moved[0.5][0, 0].abs(), torch.tensor(0.5))
    assert float(moved[0.5][0, 1:].abs().sum()) > 0.0
    torch.testing.assert_close(moved[0.5][0, 1:], moved[None][0, 1:])


def test_ordinal_levels_config() -> None:
    assert FMConfig(ordinal_levels=[2, 3, 5]).ordinal_levels == (2.0, 3.0, 5.0)  # a JSON list comes back a tuple
    for bad in [dict(ordinal_levels=(2, 2)), dict(ordinal_levels=(float("nan"),)),
                dict(ordinal_levels=(2,), loss="mse")]:
        with pytest.raises(ValueError, match="ordinal_levels"):
            FMConfig(**bad)


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "dcn"])
def test_ordinal_levels_learn_offsets_beside_the_label(name: str) -> None:
    """P(target >= l) = sigmoid(logit - offset_l): with targets 1-5 and levels (2, 5), the offset
    of 2 (nearly every target reaches it) goes down and that of 5 goes up; the label's logit is
    still the output."""
    model = build_model(name, SPECS, ModelConfig(dim=4, lr=0.1, ordinal_levels=(2, 5)))
    optimizer = torch.optim.Adagrad(list(model.parameters()), lr=0.1)
    base = _batch()
    rated = Batch(base.sparse, base.dense, base.labels, base.ts, base.dense_keys, torch.tensor([4.0, 3.0, 4.0]))
    for _ in range(20):
        optimizer.zero_grad()
        model.zero_grad()
        training_loss(model, model(rated, train=True), rated).backward()
        model.apply_gradients()
        optimizer.step()
    low, high = model.ordinal_offsets.tolist()
    assert low < -0.5 and high > 0.5
    without = training_loss(model, model(base, train=False), base)
    torch.testing.assert_close(without, loss(model(base, train=False), base.labels, "bce"))


def test_deepfm_drops_units_when_learning_and_none_when_scoring() -> None:
    model = DeepFM(SPECS, DeepFMConfig(dim=3, hidden=(32,), dropout=0.5, init_std=0.5))
    batch = _batch()
    model(batch, train=True)   # admits the ids
    scored = model(batch, train=False).detach()
    torch.manual_seed(1)
    learning = [model(batch, train=True).detach() for _ in range(3)]
    assert not torch.equal(learning[0], learning[1])   # dropout masks differ
    assert torch.equal(model(batch, train=False).detach(), scored)   # back to eval: no dropout
    model.train()   # the module's own mode does not decide: `train=` does
    assert torch.equal(model(batch, train=False).detach(), scored)
