"""A server attached to the trainer's shared tables scores what the trainer holds, at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from freshrec.features import FeaturePipeline
from freshrec.models import ModelConfig, build_model
from freshrec.serve import ServeConfig, create_app
from freshrec.serve.attached import AttachedService
from freshrec.share import SharedArea, ShareWriter
from freshrec.train import OnlineTrainer


def _scores(service: AttachedService, trainer: OnlineTrainer, pipeline: FeaturePipeline, chunk):
    """The service's and the trainer's own scores for the chunk's first 30 (user, item) pairs."""
    table = chunk.table.slice(0, 30).to_pydict()
    served = []
    for i in range(30):
        context = {k: table[k][i] for k in ("item_category", "user_segment", "hour", "price")}
        served.append(service.predict(table["user_id"][i], context, [(table["item_id"][i], {})])[1][0])
    with torch.no_grad():
        trainer.model.eval()
        output = trainer.model(pipeline.build(chunk.slice(0, 30)))
        trainer.model.train()
    return np.array(served, np.float32), torch.sigmoid(output).numpy()


def _learn_shared(name: str, model: str, trained, tmp_path: Path):
    sim_chunks = trained.chunks
    specs = trained.trainer.model.specs
    trainer = OnlineTrainer(build_model(model, specs, ModelConfig(dim=4)))
    writer = ShareWriter(SharedArea(name, root=tmp_path), trainer.model)
    service = AttachedService(SharedArea(name, root=tmp_path))
    for chunk in sim_chunks[:-1]:
        trainer.learn(trained.pipeline.build(chunk))
        writer.publish(events=len(chunk), entered=time.time())
        assert service.sync() == writer.version
    return trainer, writer, service


def test_an_attached_fm_scores_what_the_trainer_holds(trained, tmp_path: Path) -> None:
    trainer, writer, service = _learn_shared("fm", "fm", trained, tmp_path)
    served, own = _scores(service, trainer, trained.pipeline, trained.chunks[-1])
    np.testing.assert_allclose(served, own, rtol=1e-5, atol=1e-6)
    assert service.metrics.swaps.labels("shared")._value.get() == len(trained.chunks) - 1   # one a sync
    writer.close()


def test_an_attached_deep_model_scores_what_the_trainer_holds(trained, tmp_path: Path) -> None:
    trainer, writer, service = _learn_shared("deepfm", "deepfm", trained, tmp_path)
    served, own = _scores(service, trainer, trained.pipeline, trained.chunks[-1])
    np.testing.assert_allclose(served, own, rtol=1e-5, atol=1e-6)
    writer.close()


def test_rows_stepped_after_the_last_dense_copy_are_served_at_once(trained, tmp_path: Path) -> None:
    trainer, writer, service = _learn_shared("rows", "fm", trained, tmp_path)
    last = trained.chunks[-1]
    before, _ = _scores(service, trainer, trained.pipeline, last)
    trainer.learn(trained.pipeline.build(last))        # rows step in place; no publish, no sync
    after, _ = _scores(service, trainer, trained.pipeline, last)
    assert np.abs(after - before).max() > 1e-4
    writer.close()


def test_freshness_is_measured_from_the_trainers_block(trained, tmp_path: Path) -> None:
    _, writer, service = _learn_shared("fresh", "fm", trained, tmp_path)
    service.predict("u1", {}, [("i1", {})])
    fresh = service.describe()["freshness_s"]
    assert fresh["n"] == 1 and 0 <= fresh["p50"]
    writer.close()


def test_candidates_come_from_the_registry_beside_the_share(trained, tmp_path: Path) -> None:
    writer = ShareWriter(SharedArea("cands", root=tmp_path), trained.trainer.model)
    for chunk in trained.chunks:
        trained.learn(chunk)
        writer.publish(events=len(chunk), entered=None)
    service = AttachedService(SharedArea("cands", root=tmp_path), trained.registry)
    service.sync()
    assert service.candidates.observed == sum(len(c) for c in trained.chunks)
    top = service.recommend(trained.chunks[0].table.column("user_id")[0].as_py(), {}, k=5)
    assert top.version == writer.version and len(top.items) == 5
    writer.close()


def test_pinning_is_refused_with_a_reason(trained, tmp_path: Path) -> None:
    writer = ShareWriter(SharedArea("pin", root=tmp_path), trained.trainer.model)
    service = AttachedService(SharedArea("pin", root=tmp_path))
    with TestClient(create_app(service, ServeConfig(admin_token="t"))) as client:
        answer = client.post("/admin/rollback", headers={"Authorization": "Bearer t"})
    assert answer.status_code == 409 and "--attach" in answer.json()["detail"]
    writer.close()


def test_a_server_waits_for_a_trainer_to_share(trained, tmp_path: Path) -> None:
    service = AttachedService(SharedArea("later", root=tmp_path))
    assert service.sync() is None
    writer = ShareWriter(SharedArea("later", root=tmp_path), trained.trainer.model)
    assert service.sync() == writer.version
    writer.close()


def test_a_generation_whose_dense_block_is_mid_write_is_served_once_it_is_readable(trained, tmp_path: Path) -> None:
    writer = ShareWriter(SharedArea("later-dense", root=tmp_path), trained.trainer.model)
    block = np.memmap(SharedArea("later-dense", root=tmp_path).path / "gen-1/dense", np.int64, "r+", shape=(1,))
    block[0] += 1                                          # the trainer caught mid-write
    service = AttachedService(SharedArea("later-dense", root=tmp_path))
    assert service.sync() is None
    block[0] += 1                                          # the write finished
    assert service.sync() == writer.version
    writer.close()
