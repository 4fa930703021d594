"""The fused FM path (`FastFM`) against the `OnlineFM` module and against the formula itself."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.embedding.optimizers import Adagrad
from freshrec.embedding.table import DynamicEmbedding, TableConfig
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.train.fm_fast import FastFM

SPARSE = ("user", "item", "tags")
SPECS = [FeatureSpec("user", FieldKind.CATEGORICAL, dim=4), FeatureSpec("item", FieldKind.CATEGORICAL, dim=4),
         FeatureSpec("tags", FieldKind.MULTI_CATEGORICAL, dim=4), FeatureSpec("x1", FieldKind.DENSE),
         FeatureSpec("x2", FieldKind.DENSE)]


def make_batch(rng: np.random.Generator, rows: int, labels: np.ndarray | None = None,
               keys: tuple[str, ...] = SPARSE) -> Batch:
    """Ids from small pools (repeats within and across rows; `tags` holds 0-3 ids a row, at times
    the same id twice), two dense columns, 0/1 labels."""
    values, lengths = [], []
    for k, key in enumerate(keys):
        per_row = rng.integers(0, 4, rows) if key == "tags" else np.ones(rows, np.int64)
        values.append(rng.integers(1, 25, per_row.sum()) + 100 * (k + 1))
        lengths.append(per_row)
    sparse = SparseFeatures(list(keys), torch.from_numpy(np.concatenate(values).astype(np.int64)),
                            torch.from_numpy(np.concatenate(lengths).astype(np.int32)))
    y = rng.integers(0, 2, rows).astype(np.float32) if labels is None else labels
    return Batch(sparse, torch.from_numpy(rng.normal(size=(rows, 2)).astype(np.float32)),
                 torch.from_numpy(y), torch.arange(rows, dtype=torch.float64), ("x1", "x2"))


def online_fm(admit_after: int = 1):
    fm = pytest.importorskip("freshrec.models.fm")
    model = fm.OnlineFM(SPECS, fm.FMConfig(dim=4, lr=0.1, init_std=0.1, admit_after=admit_after))
    return model, torch.optim.Adagrad([model.dense_weight, model.bias], lr=0.1)


def module_step(model, optimizer, batch: Batch) -> torch.Tensor:
    """The module's way: forward, mean BCE over labelled rows, backward, row-wise + dense Adagrad."""
    logits = model(batch, train=True)
    known = ~torch.isnan(batch.labels)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], batch.labels[known])
    optimizer.zero_grad()
    loss.backward()
    model.apply_gradients()
    optimizer.step()
    return torch.sigmoid(logits.detach())


def table_rows(table: DynamicEmbedding, ids: np.ndarray) -> torch.Tensor:
    return table.gather(table.slots(ids, 0.0, train=False))


def all_ids() -> np.ndarray:
    return np.arange(101, 425, dtype=np.int64)


def test_predictions_agree_with_the_module_on_the_same_weights():
    rng = np.random.default_rng(0)
    model, optimizer = online_fm(admit_after=2)  # some ids stay without a row: slot -1
    fast = FastFM(model, optimizer)
    for _ in range(6):
        fast.learn(make_batch(rng, 64))
    batch = make_batch(rng, 64)
    batch.sparse.values()[:5] = torch.arange(5000, 5005)  # never seen: no row, read as zeros
    with torch.no_grad():
        expected = torch.sigmoid(model(batch))
    assert (model.table.slots(batch.sparse.values().numpy(), 0.0, train=False) < 0).any()
    torch.testing.assert_close(fast.predict(batch), expected, atol=1e-5, rtol=0)
    assert float(model.bias.detach().abs()) > 0 and float(model.dense_weight.detach().abs().sum()) > 0


@pytest.mark.parametrize("admit_after", [1, 2])
def test_a_learning_step_equals_module_backward_and_the_same_optimizers(admit_after):
    rng = np.random.default_rng(1)
    model, optimizer = online_fm(admit_after)
    twin, twin_optimizer = online_fm(admit_after)
    fast = FastFM(model, optimizer)
    for step in range(5):
        labels = rng.integers(0, 2, 48).astype(np.float32)
        if step == 3:
            labels[::3] = np.nan  # unlabelled rows are scored but not learned from
        batch = make_batch(rng, 48, labels)
        torch.testing.assert_close(fast.learn(batch), module_step(twin, twin_optimizer, batch), atol=1e-5, rtol=0)
        assert model.table.live == twin.table.live
        torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(model.dense_weight, twin.dense_weight, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.bias, twin.bias, atol=1e-5, rtol=0)
    assert model.table.version == twin.table.version == 5


def test_only_the_models_features_are_read_in_its_order_whatever_the_batch_holds():
    rng = np.random.default_rng(2)
    model, optimizer = online_fm()
    twin, twin_optimizer = online_fm()
    batch = make_batch(rng, 32, keys=("tags", "extra", "item", "user"))
    torch.testing.assert_close(FastFM(model, optimizer).learn(batch), module_step(twin, twin_optimizer, batch))
    torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                               atol=1e-5, rtol=0)


def reference_logits(table: DynamicEmbedding, weight: torch.Tensor, bias: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The formula, one row at a time, in float64."""
    values, lengths = batch.sparse.values().numpy(), batch.sparse.lengths().numpy()
    rows = table.gather(table.slots(values, 0.0, train=False)).double()
    bag = np.repeat(np.arange(len(lengths)) % len(batch), lengths)
    out = []
    for b in range(len(batch)):
        mine = rows[torch.from_numpy(bag == b)]
        v = mine[:, 1:]
        pair = 0.5 * ((v.sum(0) ** 2) - (v ** 2).sum(0)).sum()
        out.append(float(bias) + float(batch.dense[b].double() @ weight.double()) + mine[:, 0].sum() + pair)
    return torch.tensor(out)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_predictions_follow_the_formula(dtype):
    """Host float32 rows are read in place; other storage through a gathered copy."""
    rng = np.random.default_rng(3)
    table = DynamicEmbedding(TableConfig(dim=5, dtype=dtype, init_std=0.3, optimizer=Adagrad(lr=0.1)))
    weights = SimpleNamespace(table=table, dense_weight=torch.zeros(1, 2, requires_grad=True),
                              bias=torch.zeros(1, requires_grad=True))
    fast = FastFM(weights, torch.optim.Adagrad([weights.dense_weight, weights.bias], lr=0.1))
    for _ in range(3):
        fast.learn(make_batch(rng, 40))
    batch = make_batch(rng, 40)
    expected = torch.sigmoid(reference_logits(table, weights.dense_weight.detach()[0], weights.bias.detach(), batch))
    torch.testing.assert_close(fast.predict(batch).double(), expected, atol=1e-5, rtol=0)


def test_a_non_finite_batch_changes_nothing_and_is_counted():
    rng = np.random.default_rng(4)
    model, optimizer = online_fm()
    fast = FastFM(model, optimizer)
    fast.learn(make_batch(rng, 32))
    slots = model.table.slots(all_ids(), 0.0, train=False)
    before = (model.table.gather(slots), model.dense_weight.detach().clone(), model.bias.detach().clone())
    bad = make_batch(rng, 32)
    bad.dense[5, 0] = float("inf")
    fast.learn(bad)
    assert fast.skipped == 1
    assert torch.equal(model.table.gather(slots), before[0])
    assert torch.equal(model.dense_weight.detach(), before[1]) and torch.equal(model.bias.detach(), before[2])


def test_new_ids_mid_stream_get_rows_and_move_toward_their_rate():
    rng = np.random.default_rng(5)
    model, optimizer = online_fm()
    fast = FastFM(model, optimizer)
    for _ in range(5):
        fast.learn(make_batch(rng, 64))
    newcomer = make_batch(rng, 64, np.ones(64, np.float32))
    values = newcomer.sparse.values().clone()
    values[:64] = 999  # every row's user is a new id, always clicked
    newcomer = Batch(SparseFeatures(list(SPARSE), values, newcomer.sparse.lengths()), newcomer.dense,
                     newcomer.labels, newcomer.ts, newcomer.dense_keys)
    first = fast.learn(newcomer).mean()
    for _ in range(10):
        fast.learn(newcomer)
    assert model.table.slots(np.array([999]), 0.0, train=False)[0] >= 0
    assert fast.predict(newcomer).mean() > first + 0.2


def test_ordinal_levels_take_the_module_step():
    """With `ordinal_levels` the fused step adds the levels' terms and steps their offsets as
    `training_loss` + backward + Adagrad do; rows without a target learn the label only."""
    fm = pytest.importorskip("freshrec.models.fm")
    from freshrec.models.base import training_loss

    def build():
        model = fm.OnlineFM(SPECS, fm.FMConfig(dim=4, lr=0.1, init_std=0.1, ordinal_levels=(2, 3, 5)))
        return model, torch.optim.Adagrad(list(model.parameters()), lr=0.1)

    rng = np.random.default_rng(9)
    (model, optimizer), (twin, twin_optimizer) = build(), build()
    fast = FastFM(model, optimizer)
    for step in range(6):
        plain = make_batch(rng, 40)
        targets = rng.integers(1, 6, 40).astype(np.float32)
        targets[::5] = np.nan
        batch = Batch(plain.sparse, plain.dense, torch.from_numpy((targets >= 4).astype(np.float32)), plain.ts,
                      plain.dense_keys, None if step == 4 else torch.from_numpy(targets))
        scores = fast.learn(batch)
        logits = twin(batch, train=True)
        twin_optimizer.zero_grad()
        training_loss(twin, logits, batch).backward()
        twin.apply_gradients()
        twin_optimizer.step()
        torch.testing.assert_close(scores, torch.sigmoid(logits.detach()), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.ordinal_offsets, twin.ordinal_offsets, atol=1e-5, rtol=0)
        torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                                   atol=1e-5, rtol=0)
    offsets = model.ordinal_offsets.tolist()
    assert offsets[0] < offsets[1] < 0 < offsets[2]
    assert [int(optimizer.state[p]["step"]) for p in (model.ordinal_offsets, model.bias)] == [5, 6]
