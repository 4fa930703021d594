"""The federated parts that need no simulation: what is shared and what stays private, the packed
updates and their sums, the server's step (per-row means, differential privacy's noise, FedAdam),
the split of a stream by user and its windows of event time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from freshrec.automl.stream import Stream
from freshrec.batch import Batch, SparseFeatures
from freshrec.config import parse_config
from freshrec.engine.build import feature_specs, model_config
from freshrec.events.event import EventChunk, Field, FieldKind
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.federated import FederatedConfig
from freshrec.federated.client import ClientSetup, FreshrecClient
from freshrec.federated.plan import windows
from freshrec.federated.server import Noise, SecureRounds, inner_strategy
from freshrec.federated.space import SharedSpace, Update
from freshrec.federated.trainer import split_by_user
from freshrec.metrics.streaming import Tally
from freshrec.models import build_model
from freshrec.train import OnlineTrainer
from freshrec.train.online import Unit

FIELDS = (Field("user_id", FieldKind.CATEGORICAL, "user"), Field("item_id", FieldKind.CATEGORICAL, "item"))


def batch_of(users: list[int], items: list[int], labels: list[float]) -> Batch:
    n = len(users)
    ids = SparseFeatures(["user_id", "item_id"], torch.tensor(users + items), torch.ones(2 * n, dtype=torch.int32))
    return Batch(ids, dense=torch.zeros(n, 0), labels=torch.tensor(labels), ts=torch.arange(n, dtype=torch.float64))


def test_the_catalogue_holds_the_ids_of_fields_no_user_owns_and_never_a_user_id():
    specs = default_specs(FIELDS, dim=4)
    space = SharedSpace.of(batch_of([5, 7, 5], [7, 9, 11], [1, 0, 1]), specs, FIELDS)
    assert space.private_fields == ("user_id",)
    assert space.catalogue["item_id"].tolist() == [9, 11]   # 7 is also a user's id: it stays private


def test_adopting_the_global_arrays_sets_the_shared_part_and_keeps_the_users_rows():
    specs = default_specs(FIELDS, dim=4)
    batch = batch_of([5, 6, 5, 6], [9, 11, 11, 13], [1, 0, 1, 0])
    space = SharedSpace.of(batch, specs, FIELDS)
    model = build_model("fm", specs)
    initial = space.initial(model)
    list(OnlineTrainer(model).learn_stream([Unit(batch, [2, 2])]))
    users = model.tables["fm"].gather(model.tables["fm"].slots(np.array([5, 6]), 0.0, train=False)).clone()
    learned = space.arrays(model)
    assert not np.allclose(learned[0], initial[0])        # the item rows learned
    space.adopt(model, initial)
    assert all(np.allclose(a, b) for a, b in zip(space.arrays(model), initial))
    assert torch.equal(model.tables["fm"].gather(model.tables["fm"].slots(np.array([5, 6]), 0.0, train=False)), users)


def test_packed_updates_sum_to_the_sums_of_their_parts():
    rng = np.random.default_rng(0)
    updates = [Update([rng.normal(size=(3, 2)), rng.normal(size=1)], [np.array([1.0, 0.0, 1.0])],
                      Tally(rng.integers(0, 50, size=(2, 8)), pred=float(k), loss=2.0 * k)) for k in range(3)]
    summed = [sum(parts) for parts in zip(*(u.pack() for u in updates))]
    total = Update.unpack(summed, shared=2, tables=1)
    assert np.allclose(total.delta[0], sum(u.delta[0] for u in updates))
    assert total.touched[0].tolist() == [3.0, 0.0, 3.0]
    assert np.array_equal(total.tally.counts, sum(u.tally.counts for u in updates))
    assert (total.tally.pred, total.tally.loss) == pytest.approx((3.0, 6.0))


def rounds(noise: Noise | None = None, strategy: str = "fedavg") -> SecureRounds:
    initial = [np.zeros((2, 1)), np.zeros(1)]
    secure = SecureRounds(None, initial, [(0.0, 1.0), (1.0, 2.0)], 1.0, tables=1, noise=noise)
    secure.inner = inner_strategy(strategy, initial, clients=4, fraction=1.0, fit_config=secure.fit_config,
                                  server_lr=0.1, tau=1e-3)
    secure._sampled[1] = 2
    return secure


def aggregate(secure: SecureRounds, updates: list[Update]) -> list[np.ndarray]:
    """What `aggregate_fit` makes of `updates` when SecAgg+ hands it their mean, as it does."""
    mean = [sum(parts) / len(updates) for parts in zip(*(u.pack() for u in updates))]
    fit = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(mean), 1, {})
    parameters, _ = secure.aggregate_fit(1, [(None, fit)] * len(updates), [])
    return parameters_to_ndarrays(parameters)


def test_each_shared_row_moves_by_the_mean_update_of_the_clients_that_learned_it():
    a = Update([np.array([[1.0], [0.0]]), np.array([0.5])], [np.array([1.0, 0.0])], Tally.zeros(8))
    b = Update([np.array([[3.0], [2.0]]), np.array([1.5])], [np.array([1.0, 1.0])], Tally.zeros(8))
    secure = rounds()
    rows, dense = aggregate(secure, [a, b])
    assert rows[:, 0] == pytest.approx([2.0, 2.0])        # row 1: only b learned it, not halved
    assert dense == pytest.approx([1.0])                  # dense: the mean over the clients
    assert secure.records[0].answered == 2 and not secure.records[0].halted


def test_with_differential_privacy_the_step_is_the_sum_over_the_sampled_clients_plus_noise():
    big = 20_000
    updates = [Update([np.full((big, 1), 0.5), np.array([0.0])], [], Tally.zeros(8)) for _ in range(2)]
    secure = rounds(Noise(multiplier=1.0, clip=0.4))
    secure.current = [np.zeros((big, 1)), np.zeros(1)]
    secure.inner = inner_strategy("fedavg", secure.current, 4, 1.0, secure.fit_config, 0.1, 1e-3)
    np.random.seed(0)
    rows, _ = aggregate(secure, updates)
    assert rows.mean() == pytest.approx(0.5, abs=0.01)               # (0.5 + 0.5) / 2 sampled
    assert rows.std() == pytest.approx(1.0 * 0.4 / 2, rel=0.05)      # noise x clip / sampled


def test_fedadam_takes_its_adaptive_step_with_the_mean_update_as_pseudo_gradient():
    delta = np.array([1e-2, -1e-3])
    a = Update([delta[:, None], np.array([0.0])], [np.array([1.0, 1.0])], Tally.zeros(8))
    rows, _ = aggregate(rounds(strategy="fedadam"), [a, a])
    eta = 0.1 * np.sqrt(1 - 0.99 ** 2) / (1 - 0.9 ** 2)               # Flower's bias-corrected rate, round 1
    m, v = 0.1 * delta, 0.01 * delta ** 2                            # beta_1 0.9, beta_2 0.99, from zero
    assert rows[:, 0] == pytest.approx(eta * m / (np.sqrt(v) + 1e-3))


def test_the_stream_splits_by_user_into_disjoint_clients_of_similar_size(tmp_path):
    stream = Stream.read(Simulator(SimulatorConfig(total_events=4000, batch_size=1000)))
    split_by_user(stream, 4, tmp_path)
    parts = [Stream.load(tmp_path / f"{k}.arrow") for k in range(4)]
    users = [set(p.table.column("user_id").to_pylist()) for p in parts]
    assert sum(len(p) for p in parts) == 4000
    assert all(not (users[i] & users[j]) for i in range(4) for j in range(i + 1, 4))
    assert min(len(p) for p in parts) > 4000 / 4 * 0.7


def test_windows_hold_equal_numbers_of_events_and_cover_the_stream():
    ts = np.sort(np.random.default_rng(1).exponential(size=1000))
    counts = [int(((ts >= a) & (ts < b)).sum()) for a, b in windows(ts, 4)]
    assert counts == [250, 250, 250, 250]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("clients", 1, "clients: must be >= 2"), ("fraction", 1.5, "fraction: must be in (0, 1]"),
    ("strategy", "fedprox", "strategy: must be one of ('fedavg', 'fedadam')"), ("noise", 0.0, "noise: must be > 0"),
    ("dropout", 1.0, "dropout: must be in [0, 1)")])
def test_a_bad_setting_is_named(key, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        FederatedConfig(**{key: value})




def client_of(tmp_path, clip: float | None):
    """Client 0 of a two-client split of a simulated stream (in a fresh context), the global arrays to
    start from and client 0's event times."""
    settings = parse_config({"model": {"name": "fm", "dim": 4}})
    stream = Stream.read(Simulator(SimulatorConfig(total_events=2000, batch_size=1000)))
    split_by_user(stream, 2, tmp_path)
    specs = feature_specs(settings, stream.fields)
    whole = FeaturePipeline(specs).build(EventChunk(stream.table, stream.positions, stream.name))
    space = SharedSpace.of(whole, specs, stream.fields)
    initial = space.initial(build_model("fm", specs, model_config(settings)))
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    mine = Stream.load(tmp_path / "0.arrow").table.column("ts").to_numpy()
    return FreshrecClient(ClientSetup(settings, space, clip), context, tmp_path / "0.arrow"), initial, mine


def fit(client, initial, start, end, eval_from, server_round):
    arrays, weight, _ = client.fit(initial, {"window_start": start, "window_end": end, "eval_from": eval_from,
                                             "round": server_round})
    assert weight == 1                          # the server does not learn how many events a client holds
    return Update.unpack(arrays, len(initial), 0 if client.setup.clip else len(client.setup.space.catalogue))


def test_a_client_with_nothing_new_answers_zeros_with_differential_privacy_too(tmp_path):
    client, initial, ts = client_of(tmp_path, clip=0.5)
    update = fit(client, initial, ts[0] - 20, ts[0] - 10, ts[0], 1)
    assert all(not d.any() for d in update.delta) and update.tally.rows == 0


def test_a_client_scores_every_evaluation_event_once_across_the_windows_it_missed(tmp_path):
    client, initial, ts = client_of(tmp_path, clip=None)
    cut1, cut2, eval_from = np.quantile(ts, [0.3, 0.6, 0.5])
    first = fit(client, initial, ts[0], cut1, eval_from, 1)
    last = fit(client, initial, cut2, ts[-1] + 1, eval_from, 3)     # round 2's window [cut1, cut2) missed
    assert first.tally.rows + last.tally.rows == int((ts >= eval_from).sum())
    assert last.touched[0].any() and np.abs(last.delta[0]).sum() > 0


@pytest.mark.parametrize("node_config", [{}, {"data": "/no/such/events.arrow"}])
def test_a_supernode_without_its_events_file_is_told_how_to_name_it(node_config):
    from freshrec.federated.deploy import _client

    context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={"plan": "x"})
    with pytest.raises(ValueError, match=r"names no events file .* --node-config 'data="):
        _client(context)
