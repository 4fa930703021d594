"""The fused step (`FusedStep`) against the `OnlineFM` and `LogisticRegression` modules, against the
formula itself, and a chunk of micro-batches against the same micro-batches learned one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.batch import Batch, SparseFeatures
from freshrec.embedding.table import DynamicEmbedding
from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models.lr import LogisticRegression, LRConfig
from freshrec.train.fused import LEARNED, NO_LABELS, NOT_FINITE, FusedStep, fused_model

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
    """The module's way: forward, mean BCE over labelled rows, backward, row-wise (per event: the
    mean's gradients times the labelled rows) + dense Adagrad."""
    logits = model(batch, train=True)
    known = ~torch.isnan(batch.labels)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], batch.labels[known])
    optimizer.zero_grad()
    loss.backward()
    model.apply_gradients(int(known.sum()))
    optimizer.step()
    return torch.sigmoid(logits.detach())


def table_rows(table: DynamicEmbedding, ids: np.ndarray) -> torch.Tensor:
    return table.gather(table.slots(ids, 0.0, train=False))


def all_ids() -> np.ndarray:
    return np.arange(101, 425, dtype=np.int64)


def learned_fm(rng: np.random.Generator, batches: int, rows: int, admit_after: int = 1):
    """An FM and its fused step after `batches` batches of `rows` rows."""
    model, optimizer = online_fm(admit_after)
    fast = FusedStep(model, optimizer)
    for _ in range(batches):
        fast.learn(make_batch(rng, rows))
    return model, fast


def scores(step: FusedStep, batch: Batch, sizes=None) -> torch.Tensor:
    probabilities, _ = step.learn(batch, sizes)
    return torch.from_numpy(probabilities)


def test_predictions_agree_with_the_module_on_the_same_weights():
    rng = np.random.default_rng(0)
    model, fast = learned_fm(rng, 6, 64, admit_after=2)  # some ids stay without a row: slot -1
    batch = make_batch(rng, 64)
    batch.sparse.values()[:5] = torch.arange(5000, 5005)  # never seen: no row, read as zeros
    with torch.no_grad():
        expected = torch.sigmoid(model(batch))
    assert (model.table.slots(batch.sparse.values().numpy(), 0.0, train=False) < 0).any()
    torch.testing.assert_close(scores(fast, batch), expected, atol=1e-5, rtol=0)
    assert float(model.bias.detach().abs()) > 0 and float(model.dense_weight.detach().abs().sum()) > 0


@pytest.mark.parametrize("admit_after", [1, 2])
def test_a_learning_step_equals_module_backward_and_the_same_optimizers(admit_after):
    rng = np.random.default_rng(1)
    model, optimizer = online_fm(admit_after)
    twin, twin_optimizer = online_fm(admit_after)
    fast = FusedStep(model, optimizer)
    for step in range(5):
        labels = rng.integers(0, 2, 48).astype(np.float32)
        if step == 3:
            labels[::3] = np.nan  # unlabelled rows are scored but not learned from
        batch = make_batch(rng, 48, labels)
        torch.testing.assert_close(scores(fast, batch), module_step(twin, twin_optimizer, batch), atol=1e-5, rtol=0)
        assert model.table.live == twin.table.live
        torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(model.dense_weight, twin.dense_weight, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.bias, twin.bias, atol=1e-5, rtol=0)
    assert model.table.version == twin.table.version == 5
    changed, twin_changed = model.table.delta_since(3), twin.table.delta_since(3)
    assert sorted(changed.ids.tolist()) == sorted(twin_changed.ids.tolist())


def test_only_the_models_features_are_read_in_its_order_whatever_the_batch_holds():
    rng = np.random.default_rng(2)
    model, optimizer = online_fm()
    twin, twin_optimizer = online_fm()
    batch = make_batch(rng, 32, keys=("tags", "extra", "item", "user"))
    torch.testing.assert_close(scores(FusedStep(model, optimizer), batch), module_step(twin, twin_optimizer, batch))
    torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                               atol=1e-5, rtol=0)


def warmed_fm():
    """An FM whose table holds a row for every id `make_batch` draws (so that resolving a chunk at
    once or micro-batch by micro-batch admits nothing), always the same one."""
    return learned_fm(np.random.default_rng(99), 1, 400)


@pytest.mark.parametrize("sizes", [[1] * 40, [3, 1, 16, 1, 1, 18], [40]])
def test_a_chunk_of_micro_batches_learns_as_the_micro_batches_one_by_one(sizes):
    rng = np.random.default_rng(6)
    (model, fast), (twin, twin_fast) = warmed_fm(), warmed_fm()
    labels = rng.integers(0, 2, 40).astype(np.float32)
    labels[5:8] = np.nan        # a micro-batch of size 1 at row 5..7 has no label: scored only
    chunk = make_batch(rng, 40, labels)
    together, outcome = fast.learn(chunk, sizes)
    one_by_one = np.concatenate([twin_fast.learn(part)[0] for part in chunk.split(sizes)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6, rtol=0)
    torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(model.bias, twin.bias, atol=1e-6, rtol=0)
    assert model.table.version == twin.table.version
    assert (outcome == NO_LABELS).sum() == (3 if sizes[0] == 1 else 0)
    if len(sizes) > 1:   # learning event by event moved the scores within the chunk
        assert not np.allclose(together, warmed_fm()[1].learn(chunk)[0], atol=1e-4)


@pytest.mark.parametrize("ftrl", [False, True])
def test_logistic_regression_takes_the_modules_step(ftrl):
    """Rows start at zero: the chunk's ids are admitted at once, the module's micro-batch by micro-batch."""
    rng = np.random.default_rng(7)

    def build():
        model = LogisticRegression(SPECS, LRConfig(lr=0.1, init_std=0.0, ftrl=ftrl, l1=0.01 if ftrl else 0.0))
        return model, torch.optim.Adagrad(list(model.parameters()), lr=0.1)
    (model, optimizer), (twin, twin_optimizer) = build(), build()
    assert fused_model(model)
    fast = FusedStep(model, optimizer)
    for _ in range(4):
        batch = make_batch(rng, 24)
        torch.testing.assert_close(scores(fast, batch, [8, 1, 15]), torch.cat(
            [module_step(twin, twin_optimizer, part) for part in batch.split([8, 1, 15])]), atol=1e-5, rtol=0)
    for name, table in model.tables.items():
        torch.testing.assert_close(table_rows(table, all_ids()), table_rows(twin.tables[name], all_ids()),
                                   atol=1e-5, rtol=0)
        assert table.version == twin.tables[name].version == 12


def test_models_the_step_does_not_learn_are_refused():
    from freshrec.models import build_model
    from freshrec.models.fm import FMConfig, OnlineFM

    deep = build_model("deepfm", SPECS)
    mse = OnlineFM(SPECS, FMConfig(dim=4, loss="mse"))
    assert not fused_model(deep) and not fused_model(mse)
    with pytest.raises(ValueError, match="does not learn OnlineFM"):
        FusedStep(mse, torch.optim.Adagrad(list(mse.parameters()), lr=0.1))
    model, optimizer = online_fm()
    with pytest.raises(ValueError, match=r"micro-batches of \[3, 3\] rows for a chunk of 5"):
        FusedStep(model, optimizer).learn(make_batch(np.random.default_rng(0), 5), [3, 3])


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


def test_predictions_follow_the_formula():
    rng = np.random.default_rng(3)
    model, fast = learned_fm(rng, 3, 40)
    batch = make_batch(rng, 40)
    fast.learn(make_batch(np.random.default_rng(3), 0))   # an empty chunk learns nothing
    expected = torch.sigmoid(reference_logits(model.table, model.dense_weight.detach()[0], model.bias.detach(), batch))
    torch.testing.assert_close(scores(fast, batch).double(), expected, atol=1e-5, rtol=0)


def test_a_non_finite_micro_batch_changes_nothing_and_is_counted_the_others_learn():
    rng = np.random.default_rng(4)
    model, fast = learned_fm(rng, 1, 32)
    slots = model.table.slots(all_ids(), 0.0, train=False)
    before = (model.table.gather(slots), model.dense_weight.detach().clone(), model.bias.detach().clone())
    bad = make_batch(rng, 32)
    bad.dense[5, 0] = float("inf")
    assert fast.learn(bad, [8, 24])[1].tolist() == [NOT_FINITE, LEARNED]
    assert fast.skipped == 1 and model.table.version == 2
    assert not torch.equal(model.table.gather(slots), before[0])   # the second micro-batch learned
    bad.dense[9, 0] = float("nan")
    before = (model.table.gather(slots), model.dense_weight.detach().clone(), model.bias.detach().clone())
    assert fast.learn(bad)[1].tolist() == [NOT_FINITE]
    assert torch.equal(model.table.gather(slots), before[0])
    assert torch.equal(model.dense_weight.detach(), before[1]) and torch.equal(model.bias.detach(), before[2])


def test_new_ids_mid_stream_get_rows_and_move_toward_their_rate():
    rng = np.random.default_rng(5)
    model, fast = learned_fm(rng, 5, 64)
    newcomer = make_batch(rng, 64, np.ones(64, np.float32))
    values = newcomer.sparse.values().clone()
    values[:64] = 999  # every row's user is a new id, always clicked
    newcomer = Batch(SparseFeatures(list(SPARSE), values, newcomer.sparse.lengths()), newcomer.dense,
                     newcomer.labels, newcomer.ts, newcomer.dense_keys)
    first = scores(fast, newcomer).mean()
    for _ in range(10):
        fast.learn(newcomer)
    assert model.table.slots(np.array([999]), 0.0, train=False)[0] >= 0
    with torch.no_grad():
        assert torch.sigmoid(model(newcomer)).mean() > first + 0.2


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
    fast = FusedStep(model, optimizer)
    for step in range(6):
        plain = make_batch(rng, 40)
        targets = rng.integers(1, 6, 40).astype(np.float32)
        targets[::5] = np.nan
        batch = Batch(plain.sparse, plain.dense, torch.from_numpy((targets >= 4).astype(np.float32)), plain.ts,
                      plain.dense_keys, None if step == 4 else torch.from_numpy(targets))
        got = scores(fast, batch)
        logits = twin(batch, train=True)
        twin_optimizer.zero_grad()
        training_loss(twin, logits, batch).backward()
        twin.apply_gradients(len(batch))   # every row labelled
        twin_optimizer.step()
        torch.testing.assert_close(got, torch.sigmoid(logits.detach()), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.ordinal_offsets, twin.ordinal_offsets, atol=1e-5, rtol=0)
        torch.testing.assert_close(table_rows(model.table, all_ids()), table_rows(twin.table, all_ids()),
                                   atol=1e-5, rtol=0)
    offsets = model.ordinal_offsets.tolist()
    assert offsets[0] < offsets[1] < 0 < offsets[2]
    assert [int(optimizer.state[p]["step"]) for p in (model.ordinal_offsets, model.bias)] == [5, 6]
