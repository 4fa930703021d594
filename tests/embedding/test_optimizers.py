"""Row-wise optimizers against torch's sparse optimizers, a plain-Python FTRL, and a dict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from freshrec.embedding.optimizers import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    SlotCoalescer,
    coalesce,
    optimizer_from_name,
)
from freshrec.embedding.storage import RowStorage

# torch's sparse optimizers build COO tensors and say so on every call
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")

NUM, DIM = 12, 4


class _Table:
    """The table's side of the contract: gather unique rows and state, step, scatter back."""

    def __init__(self, optimizer, weights: np.ndarray) -> None:
        self.optimizer = optimizer
        self.weights = weights.copy()
        initial = optimizer.initial_state(weights.shape[1])
        self.state = {name: np.full((len(weights), width), initial[name], np.float32)
                      for name, width in optimizer.state_widths(weights.shape[1]).items()}

    def learn(self, slots: np.ndarray, grads: np.ndarray) -> None:
        unique, summed = coalesce(slots, grads)
        rows = self.weights[unique]
        state = {name: values[unique] for name, values in self.state.items()}
        self.optimizer.step(rows, state, summed)
        self.weights[unique] = rows
        for name, values in state.items():
            self.state[name][unique] = values


def _against_torch(ours, make_torch_optimizer, batches):
    """Run the same lookups through nn.Embedding(sparse=True) and through our table."""
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(NUM, DIM, sparse=True)
    initial = embedding.weight.detach().numpy().copy()
    table = _Table(ours.build(), initial)
    optimizer = make_torch_optimizer(embedding.parameters())
    rng = np.random.default_rng(1)
    for ids in batches:
        optimizer.zero_grad()
        upstream = torch.from_numpy(rng.normal(size=(len(ids), DIM)).astype(np.float32))
        (embedding(torch.tensor(ids)) * upstream).sum().backward()
        grad = embedding.weight.grad
        table.learn(grad._indices()[0].numpy(), grad._values().numpy())
        optimizer.step()
    return initial, embedding.weight.detach().numpy(), table


def _check_rows(initial, expected, table, batches):
    touched = np.unique(np.concatenate([np.asarray(ids) for ids in batches]))
    untouched = np.setdiff1d(np.arange(NUM), touched)
    assert len(untouched) and len(touched)
    np.testing.assert_allclose(table.weights, expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(table.weights[untouched], initial[untouched])
    assert np.array_equal(expected[untouched], initial[untouched])
    assert not np.allclose(table.weights[touched], initial[touched])


BATCHES = [[0, 3, 3, 5, 0, 3], [5, 7], [1, 7, 7, 7, 3], [0, 0, 0, 0]]


def test_sgd_matches_torch():
    initial, expected, table = _against_torch(SGD(lr=0.3), lambda p: torch.optim.SGD(p, lr=0.3), BATCHES)
    _check_rows(initial, expected, table, BATCHES)


@pytest.mark.parametrize("initial_accumulator, eps", [(0.0, 1e-10), (0.1, 1e-3)])
def test_adagrad_matches_torch(initial_accumulator, eps):
    ours = Adagrad(lr=0.2, eps=eps, initial_accumulator=initial_accumulator)
    initial, expected, table = _against_torch(ours, lambda p: torch.optim.Adagrad(
        p, lr=0.2, eps=eps, initial_accumulator_value=initial_accumulator), BATCHES)
    _check_rows(initial, expected, table, BATCHES)
    assert np.array_equal(table.state["accum"][[2, 4]], np.full((2, DIM), initial_accumulator, np.float32))


def test_adam_matches_sparse_adam_when_every_row_steps_together():
    # SparseAdam counts steps globally: touch the same rows (with repeats) in every batch
    rng = np.random.default_rng(2)
    touched = [1, 4, 6, 9]
    batches = [list(rng.permutation(touched + list(rng.choice(touched, 3)))) for _ in range(6)]
    ours = Adam(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6)
    initial, expected, table = _against_torch(ours, lambda p: torch.optim.SparseAdam(
        p, lr=0.05, betas=(0.8, 0.99), eps=1e-6), batches)
    _check_rows(initial, expected, table, batches)
    assert table.state["step"][touched].ravel().tolist() == [6.0] * 4
    assert table.state["step"][[0, 2]].ravel().tolist() == [0.0, 0.0]


def _adam_reference(w, grads, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam on one coordinate in float64, its own step count."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w -= lr * (m / (1 - beta1 ** t)) / (math.sqrt(v / (1 - beta2 ** t)) + eps)
    return w


def test_adam_bias_correction_uses_each_rows_own_step_count():
    table = _Table(Adam(lr=0.01).build(), np.zeros((3, 1), np.float32))
    history = {0: [], 1: []}
    for step, ids in enumerate([[0], [0], [0, 1], [0, 1, 1]]):
        grads = np.array([[0.5 + step], [-2.0], [-1.0]], np.float32)[: len(ids)]
        table.learn(np.array(ids), grads)
        for slot in set(ids):
            history[slot].append(float(grads[np.array(ids) == slot].sum()))
    assert table.state["step"].ravel().tolist() == [4.0, 2.0, 0.0]
    for slot in (0, 1):
        assert table.weights[slot, 0] == pytest.approx(_adam_reference(0.0, history[slot]), rel=1e-5)
    assert table.weights[2, 0] == 0.0
    # with SparseAdam's global count, row 1 would be corrected as at steps 3 and 4 instead
    assert table.weights[1, 0] != pytest.approx(_adam_reference(0.0, [0.0, 0.0] + history[1]), rel=1e-3)


def _ftrl_reference(weights, batches, alpha, beta, l1, l2):
    """McMahan et al. (2013), algorithm 1, one coordinate at a time in float64."""
    w = [[float(x) for x in row] for row in weights]
    z = [[0.0] * len(row) for row in w]
    n = [[0.0] * len(row) for row in w]
    for slots, grads in batches:
        summed = {}
        for slot, grad in zip(slots.tolist(), grads.tolist()):
            summed[slot] = [a + b for a, b in zip(summed.get(slot, [0.0] * len(grad)), grad)]
        for slot, grad in summed.items():
            for j, g in enumerate(grad):
                sigma = (math.sqrt(n[slot][j] + g * g) - math.sqrt(n[slot][j])) / alpha
                z[slot][j] += g - sigma * w[slot][j]
                n[slot][j] += g * g
                zj = z[slot][j]
                w[slot][j] = 0.0 if abs(zj) <= l1 else -(zj - math.copysign(l1, zj)) / (
                    (beta + math.sqrt(n[slot][j])) / alpha + l2)
    return np.array(w), np.array(z), np.array(n)


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.7, 0.5)])
def test_ftrl_matches_plain_python_reference(l1, l2):
    rng = np.random.default_rng(3)
    initial = rng.normal(size=(NUM, DIM)).astype(np.float32)
    batches = []
    for _ in range(8):
        slots = rng.integers(0, NUM - 2, size=10)
        batches.append((slots, rng.normal(size=(10, DIM)).astype(np.float32)))
    table = _Table(FTRL(alpha=0.3, beta=1.0, l1=l1, l2=l2).build(), initial)
    for slots, grads in batches:
        table.learn(slots, grads)
    w, z, n = _ftrl_reference(initial, batches, alpha=0.3, beta=1.0, l1=l1, l2=l2)
    np.testing.assert_allclose(table.state["n"], n, rtol=1e-5)
    np.testing.assert_allclose(table.state["z"], z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table.weights, w, rtol=1e-5, atol=1e-6)
    assert np.array_equal(table.weights[NUM - 2:], initial[NUM - 2:])
    if l1:
        touched = table.weights[: NUM - 2]
        assert np.array_equal(touched == 0.0, w[: NUM - 2] == 0.0)
        assert 0 < (touched == 0.0).sum() < touched.size


def test_ftrl_logistic_regression_learns_a_separable_problem():
    # one weight per id (dim 1): a bias id, a user id and an item id per example;
    # the label is 1 exactly when the item is even, whatever the user
    rng = np.random.default_rng(4)
    users, items = rng.integers(0, 20, size=2000), rng.integers(0, 10, size=2000)
    ids = np.stack([np.zeros(2000, np.int64), 1 + users, 21 + items], axis=1)
    labels = (items % 2 == 0).astype(np.float32)
    table = _Table(FTRL(alpha=0.5, beta=1.0, l1=0.01, l2=0.01).build(), np.zeros((31, 1), np.float32))

    def logloss():
        p = 1 / (1 + np.exp(-table.weights[ids, 0].sum(axis=1)))
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    assert logloss() == pytest.approx(math.log(2))
    for _ in range(5):
        for start in range(0, 2000, 64):
            batch = ids[start: start + 64]
            p = 1 / (1 + np.exp(-table.weights[batch, 0].sum(axis=1)))
            residual = (p - labels[start: start + 64]).astype(np.float32)
            table.learn(batch.ravel(), np.repeat(residual, 3)[:, None])
    assert logloss() < 0.05


def _dict_coalesce(slots, grads):
    summed = {}
    for slot, grad in zip(slots.tolist(), grads):
        summed[slot] = summed[slot] + grad if slot in summed else grad.copy()
    return sorted(summed), [summed[slot] for slot in sorted(summed)]


@given(st.lists(st.tuples(st.integers(-3, 2**62), st.integers(0, 5)), max_size=60), st.integers(1, 5))
def test_coalesce_matches_a_dict(pairs, dim):
    pool = sorted({slot for slot, _ in pairs})
    slots = np.array([pool[pick % len(pool)] for _, pick in pairs], dtype=np.int64)
    grads = np.random.default_rng(len(pairs)).normal(size=(len(slots), dim)).astype(np.float32)
    unique, summed = coalesce(slots, grads)
    expected_slots, expected_rows = _dict_coalesce(slots, grads)
    assert unique.dtype == np.int64 and summed.dtype == np.float32
    assert unique.tolist() == expected_slots
    assert summed.shape == (len(expected_slots), dim)
    assert np.array_equal(summed, np.array(expected_rows, np.float32).reshape(-1, dim))


def test_coalesce_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="must agree"):
        coalesce(np.array([1, 2]), np.zeros((3, 2), np.float32))


@given(st.lists(st.integers(-1, 40), max_size=80), st.integers(1, 5))
def test_slot_coalescer_sums_like_a_dict_in_first_occurrence_order(slots, dim):
    slots = np.array(slots, np.int64)
    grads = np.random.default_rng(len(slots)).normal(size=(len(slots), dim)).astype(np.float32)
    expected = {}                                                 # insertion order: first occurrence
    for slot, grad in zip(slots.tolist(), grads):
        if slot >= 0:
            expected[slot] = expected[slot] + grad if slot in expected else grad.copy()
    coalescer = SlotCoalescer()
    for _ in range(2):                                            # buffers are reused cleanly
        unique, summed = coalescer(slots, grads, 41)
        assert unique.tolist() == list(expected)
        assert summed.tobytes() == np.array(list(expected.values()), np.float32).reshape(-1, dim).tobytes()


def test_slot_coalescer_refuses_slots_beyond_the_bound():
    with pytest.raises(ValueError, match="not below the bound 3"):
        SlotCoalescer()(np.array([0, 3]), np.zeros((2, 2), np.float32), 3)


@pytest.mark.parametrize("optimizer", [SGD(lr=0.3), Adagrad(lr=0.2, initial_accumulator=0.1),
                                       Adam(lr=0.1), FTRL(alpha=0.5, l1=0.01, l2=0.1)])
def test_step_at_on_chunked_storage_matches_step_on_gathered_rows(optimizer):
    optimizer = optimizer.build()
    widths = optimizer.state_widths(DIM)
    storage = RowStorage(DIM, widths, chunk_rows=3)
    rows = storage.allocate(20)
    rng = np.random.default_rng(0)
    for name, width in widths.items():
        storage.scatter(rows, rng.uniform(0, 1, (20, width)).astype(np.float32), name)
    for _ in range(3):
        at = rng.permutation(20)[:9]
        grads = rng.normal(size=(9, DIM)).astype(np.float32)
        values = storage.gather(at).numpy()
        state = {name: storage.gather(at, name).numpy() for name in widths}
        optimizer.step(values, state, grads)
        optimizer.step_at(storage.addresses(), storage.chunk_rows, at, grads)
        assert storage.gather(at).numpy().tobytes() == values.tobytes()
        for name in widths:
            assert storage.gather(at, name).numpy().tobytes() == state[name].tobytes()


def test_state_layout_per_optimizer():
    assert SGD().build().state_widths(8) == {}
    assert Adagrad(initial_accumulator=0.1).build().initial_state(8) == {"accum": 0.1}
    assert Adam().build().state_widths(8) == {"m": 8, "v": 8, "step": 1}
    assert FTRL().build().state_widths(8) == {"z": 8, "n": 8}


def test_step_refuses_a_wrong_layout():
    optimizer = Adagrad().build()
    rows = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="grads must be float32 of shape"):
        optimizer.step(rows, {"accum": np.zeros((2, 3), np.float32)}, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"state\['accum'\] must be float32 of shape \(2, 3\)"):
        optimizer.step(rows, {"accum": np.zeros((1, 3), np.float32)}, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="state must have the keys"):
        optimizer.step(rows, {}, np.zeros((2, 3), np.float32))


def test_optimizer_from_name():
    assert optimizer_from_name("adam", lr=0.01) == Adam(lr=0.01)
    assert optimizer_from_name("SGD") == SGD()
    with pytest.raises(ValueError, match="valid names: sgd, adagrad, adam, ftrl"):
        optimizer_from_name("lamb")
    with pytest.raises(ValueError, match="adagrad has no option momentum; valid options: lr, eps"):
        optimizer_from_name("adagrad", momentum=0.9)


def test_build_refuses_bad_hyperparameters():
    with pytest.raises(ValueError, match="betas"):
        Adam(beta1=1.0).build()
    with pytest.raises(ValueError, match="alpha"):
        FTRL(alpha=0.0).build()


@pytest.mark.parametrize("optimizer", [SGD(lr=0.3), Adagrad(lr=0.2, initial_accumulator=0.1, first_column_lr=0.7),
                                       Adam(lr=0.1), FTRL(alpha=0.5, l1=0.3, l2=0.1)])
def test_torch_step_matches_the_numba_step(optimizer):
    """`step_tensors` (rows on a GPU, 16-bit rows) computes what `step` does, within float32 rounding."""
    optimizer = optimizer.build()
    widths = optimizer.state_widths(DIM)
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(9, DIM)).astype(np.float32)
    state = {name: rng.uniform(0, 1, (9, width)).astype(np.float32) for name, width in widths.items()}
    tensors = torch.from_numpy(rows.copy()), {name: torch.from_numpy(a.copy()) for name, a in state.items()}
    for _ in range(4):
        grads = rng.normal(size=(9, DIM)).astype(np.float32)
        optimizer.step(rows, state, grads)
        optimizer.step_tensors(*tensors, torch.from_numpy(grads))
    np.testing.assert_allclose(tensors[0].numpy(), rows, rtol=1e-5, atol=1e-6)
    for name in widths:
        np.testing.assert_allclose(tensors[1][name].numpy(), state[name], rtol=1e-5, atol=1e-6)
    if "z" in widths:
        assert (rows == 0).any(), "l1 must zero some weights, or the test checks no branch of FTRL's"
