"""The service follows the registry: deltas in order, gaps, torn versions, pins."""

from __future__ import annotations

import gc
import shutil
import weakref

import numpy as np
import pytest
import torch

from freshrec.serve import ModelService, Replica


def _same(served: np.ndarray, own: np.ndarray) -> None:
    """Scored one request at a time vs in one batch: equal up to float32 summation order."""
    np.testing.assert_allclose(served, own, rtol=1e-6, atol=1e-7)


def _probe(trained, service: ModelService) -> tuple[np.ndarray, np.ndarray]:
    """The service's and the trainer's scores for the last chunk's (user, item) pairs."""
    table = trained.chunks[-1].table.slice(0, 50).to_pydict()
    served = []
    for i in range(50):
        context = {k: table[k][i] for k in ("item_category", "user_segment", "hour", "price")}
        served.append(service.predict(table["user_id"][i], context, [(table["item_id"][i], {})])[1][0])
    with torch.no_grad():
        trained.trainer.model.eval()
        own = torch.sigmoid(trained.trainer.model(trained.pipeline.build(trained.chunks[-1].slice(0, 50))))
        trained.trainer.model.train()
    return np.array(served, np.float32), own.numpy()


def test_served_predictions_equal_the_trainers_after_every_delta(trained) -> None:
    service = ModelService(trained.registry)
    kinds = [trained.learn(chunk) for chunk in trained.chunks[:-1]]
    assert kinds == ["full"] + ["delta"] * (len(trained.chunks) - 2)
    assert service.sync() == trained.publisher.version == len(trained.chunks) - 1
    served, own = _probe(trained, service)
    _same(served, own)
    assert service.metrics.swaps.labels("delta")._value.get() == len(trained.chunks) - 2
    assert service.candidates.observed == sum(len(c) for c in trained.chunks[:-1])  # full + deltas
    assert len(service.freshness) == 1          # the first request served by the new version
    assert 0 <= service.freshness[0] < 60


def test_a_torn_version_is_refused_and_the_previous_one_keeps_serving(trained) -> None:
    for chunk in trained.chunks[:3]:
        trained.learn(chunk)
    service = ModelService(trained.registry)
    assert service.sync() == 3
    trained.learn(trained.chunks[3])
    torn = next(trained.registry.path("delta", 4).glob("table.*"))
    torn.write_bytes(torn.read_bytes()[:-10])
    assert service.sync() == 3
    assert service.metrics.sync_errors.labels("CorruptVersion")._value.get() == 1
    assert service.predict("u1", {}, [("i1", {})])[0] == 3
    assert service.behind == "serving version 3: version 4 was refused; waiting for a full snapshot"
    assert trained.registry.full_wanted() and service.metrics.behind._value.get() == 1
    assert trained.learn(trained.chunks[4]) == "full"   # asked for: at the next publish, not in 300 s
    assert not trained.registry.full_wanted()
    assert service.sync() == 5 and service.behind is None and service.metrics.behind._value.get() == 0
    served, own = _probe(trained, service)
    _same(served, own)


def test_a_gap_with_no_full_snapshot_after_it_leaves_the_server_behind_until_one_comes(trained) -> None:
    for chunk in trained.chunks[:2]:
        trained.learn(chunk)
    service = ModelService(trained.registry)
    assert service.sync() == 2 and service.behind is None
    trained.learn(trained.chunks[2])
    shutil.rmtree(trained.registry.path("delta", 3))   # pruned, or lost: delta 4 does not follow 2
    trained.registry.want_full = lambda after, reason: None   # a registry this server may not write
    trained.learn(trained.chunks[3])
    assert service.sync() == 2 and service.behind == ("serving version 2: delta 4 does not follow it; "
                                                      "waiting for a full snapshot")
    trained.publisher.publish_full()                   # a delta 5 and the full snapshot 5
    assert service.sync() == 5 and service.behind is None


def test_a_missing_delta_is_a_gap_recovered_from_the_next_full_snapshot(trained) -> None:
    for chunk in trained.chunks[:2]:
        trained.learn(chunk)
    service = ModelService(trained.registry)
    assert service.sync() == 2
    trained.learn(trained.chunks[2])
    shutil.rmtree(trained.registry.path("delta", 3))
    trained.learn(trained.chunks[3])
    assert service.sync() == 2
    trained.publisher.publish_full()
    trained.learn(trained.chunks[4])
    assert service.sync() == 6
    _same(*_probe(trained, service))


def test_pin_rollback_and_follow_again(trained) -> None:
    for chunk in trained.chunks[:3]:
        trained.learn(chunk)
    trained.publisher.publish_full()            # 4
    trained.learn(trained.chunks[3])            # 5
    service = ModelService(trained.registry)
    assert service.sync() == 5
    assert trained.registry.rollback() == 4 and service.sync() == 4
    assert trained.registry.rollback() == 1 and service.sync() == 1
    trained.registry.unpin()
    assert service.sync() == 5


def test_scores_flag_cold_starts_and_a_score_that_is_not_finite_is_refused(trained, monkeypatch) -> None:
    trained.learn(trained.chunks[0])
    service = ModelService(trained.registry)
    service.sync()
    seen = trained.chunks[0].table.slice(0, 1).to_pylist()[0]
    scored = service.score(seen["user_id"], {}, [(seen["item_id"], {}), ("new", {})])
    assert (scored.cold_user, scored.cold_items, scored.items) == (False, ["new"], [seen["item_id"], "new"])
    assert service.score("stranger", {}, [("new", {})]).cold_user
    monkeypatch.setattr(Replica, "score_with_cold", lambda replica, rows: (np.full(rows.n, np.nan, np.float32), {}))
    with pytest.raises(ValueError, match="scores of these values are not finite"):
        service.score(seen["user_id"], {}, [("new", {})])


def test_garbage_cycles_left_by_requests_are_freed_not_frozen_at_a_new_version(trained) -> None:
    """After each new version the sync thread moves the live objects out of the collector's reach
    (`gc.freeze`); cycles that requests left behind must be collected first, or every version
    would keep them for good (a server taking ten versions a second grew without end)."""
    service = ModelService(trained.registry)
    trained.learn(trained.chunks[0])
    service.sync_safely()

    class Cycle:
        pass

    gc.disable()   # (no automatic collection may free it before the sync does)
    try:
        garbage = Cycle()
        garbage.itself = garbage
        alive = weakref.ref(garbage)
        del garbage
        trained.learn(trained.chunks[1])
        service.sync_safely()
        assert service.version == 2
        assert alive() is None, "a garbage cycle was frozen instead of freed"
    finally:
        gc.enable()
        gc.unfreeze()
