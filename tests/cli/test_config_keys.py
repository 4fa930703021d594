"""Every key of `freshrec config show` changes what `freshrec run` builds (source, engine, model,
offline schedule, joiner, log, server), and `config check` refuses exactly what `run --config` refuses.

`run` goes through the real command and the real `build_engine`; only the loop itself, the HTTP
server, the Kafka client and the MovieLens download are replaced by recorders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import freshrec.cli.serve as cli_serve
import freshrec.cluster.launch as launch
import freshrec.engine.build as build
import freshrec.engine.run as engine_run
import freshrec.engine.watch as watch
import freshrec.events.kafka as kafka
import freshrec.serve.background as background
from freshrec.cli import app
from freshrec.config import FreshrecConfig, show_config
from freshrec.events.datasets.fetch import FetchError
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.simulator import Simulator, SimulatorConfig

LEVELS = {"features.target": "dense_0", "model.ordinal_levels": [2.0]}
CSV = {"source.format": "csv", "source.columns": {"user": "u", "item": "i", "time": "t"}}
KAFKA = {"source.kind": "kafka"}
LR = {"model.name": "lr"}
JOIN = {"join.window": "30s"}
ARMS = {"experiment.arms": [{"name": "a", "traffic": 1.0}]}
TLS = {"serve.tls_certfile": __file__, "serve.tls_keyfile": __file__}   # files that are there (no server reads them)
GROUP = {"serve.enabled": False, "training.offline_interval": None}   # what a worker group needs beside it
NO_TEXT = {"retrieval.content": False}   # "data" is no MovieLens folder: no titles
RETRIEVAL = {"retrieval.enabled": True, **NO_TEXT}
ITEMS = Path(__file__).parent / "items.csv"   # two items' text, encoded once into the content cache
SIMULATED_TWO_TOWER = {"retrieval.enabled": True, "source.format": "simulator"}   # no text: ids alone
# key: (the settings it needs beside it, a value other than the default)
CHANGES: dict[str, tuple[dict[str, Any], Any]] = {
    "source": ({}, {"format": "criteo", "data": "data"}),
    "source.kind": ({}, "kafka"),
    "source.format": ({}, "criteo"),
    "source.data": ({}, "elsewhere"),
    "source.columns": (CSV, {"user": "u2", "item": "i", "time": "t"}),
    **{f"source.columns.{key}": (CSV, value) for key, value in [
        ("user", "u2"), ("item", "i2"), ("time", "t2"), ("label", "r>=4"), ("categorical", ["c"]),
        ("dense", ["d"]), ("multi", ["m"]), ("separator", ";"), ("delimiter", "\t")]},
    "source.limit": ({}, 5),
    "source.fallback": ({}, "simulator"),
    "source.chunk_rows": ({}, 100),
    "source.speed": ({"serve.enabled": False}, 1000.0),   # the stream, not the live events beside it
    "source.kafka": (KAFKA, {"topic": "other"}),
    **{f"source.kafka.{key}": (KAFKA, value) for key, value in [
        ("bootstrap", "broker:9092"), ("topic", "other"), ("group", "g2"), ("settings", {"acks": "all"}),
        ("idle_timeout", "5s"), ("max_delay", "50ms")]},
    "join": ({}, {"window": "30s"}),
    "join.window": ({}, "30s"),
    "join.allowed_lateness": (JOIN, "1s"),
    "join.key": (JOIN, ["impression_id"]),
    "features": ({}, {"fields": {"item_id": {"table": "user_id"}}}),
    "features.target": (LEVELS, "dense_1"),
    "features.fields": ({}, {"item_id": {"table": "user_id"}}),
    "model": ({}, {"dim": 8}),
    **{f"model.{key}": ({}, value) for key, value in [
        ("name", "lr"), ("dim", 8), ("lr", 0.1), ("seed", 3), ("loss", "mse"), ("admit_after", 2), ("ttl", "1d"),
        ("capacity", 1000)]},
    "model.checkpoint_towers": ({"model.name": "deepfm"}, True),
    "model.hidden": ({"model.name": "deepfm"}, [16]),
    "model.cross_layers": ({"model.name": "dcn"}, 1),
    "model.ordinal_levels": (LEVELS, [3.0]),
    "embedding": ({}, {"initial_accumulator": 0.5}),
    "embedding.optimizer": (LR, "ftrl"),
    "embedding.initial_accumulator": ({}, 0.5),
    "embedding.row_dtype": ({}, "bfloat16"),
    "embedding.linear_lr": ({}, 0.3),
    "training": ({}, {"epochs": 1}),
    **{f"training.{key}": ({}, value) for key, value in [
        ("online_batch_size", 64), ("online_batch_window", "10s"), ("offline_interval", None), ("offline_events", 1000),
        ("offline_window", "7d"), ("checkpoint_events", 10), ("dense_lr", 0.01),
        ("epochs", 1), ("holdout_fraction", 0.2), ("patience", 2), ("warm_start", False)]},
    "training.workers": (GROUP, 2),
    "training.max_restarts": ({**GROUP, "training.workers": 2}, 5),
    "sync": ({}, {"full_interval": "1m"}),
    "sync.sync_interval": ({}, "5s"),
    "sync.full_interval": ({}, "1m"),
    "sync.share": ({}, "shop"),
    "serve": ({}, {"port": 8123}),
    **{f"serve.{key}": ({}, value) for key, value in [
        ("enabled", False), ("host", "0.0.0.0"), ("port", 8123), ("max_candidates", 50), ("max_body_bytes", 4096),
        ("recommend_candidates", 20), ("admin_token_env", "OTHER_TOKEN"), ("events_token_env", "OTHER_TOKEN"),
        ("read_timeout", "10s"), ("keep_alive_timeout", "1s"), ("max_connections", 50), ("shutdown_timeout", "1s"),
        ("max_new_ids", 5.0), ("max_client_rate", 100.0), ("retrieval_reindex", "10s")]},
    "serve.tls_certfile": (TLS, str(Path(__file__).parents[2] / "README.md")),
    "serve.tls_keyfile": (TLS, str(Path(__file__).parents[2] / "README.md")),
    "retrieval": ({}, {"enabled": True, "content": False}),
    "retrieval.enabled": (NO_TEXT, True),
    **{f"retrieval.{key}": (RETRIEVAL, value) for key, value in [
        ("positives", "labelled"), ("history", 5), ("dim", 8), ("out_dim", 8), ("hidden", [16]), ("temperature", 0.1),
        ("id_dropout", 0.5), ("negatives", 16), ("lr", 0.1), ("batch_size", 64)]},
    "retrieval.content": ({**RETRIEVAL, "retrieval.content": True, "content.items": str(ITEMS)}, False),
    "content": (SIMULATED_TWO_TOWER, {"items": str(ITEMS)}),
    "content.items": (SIMULATED_TWO_TOWER, str(ITEMS)),
    "content.text_columns": ({"features.content": True, "content.items": str(ITEMS)}, ["text", "tags"]),
    "features.content": ({"content.items": str(ITEMS)}, True),
    "experiment": ({}, {"arms": [{"name": "a", "traffic": 1.0}]}),
    "experiment.arms": ({}, [{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5, "follow": "frozen"}]),
    "experiment.salt": (ARMS, "another"),
    "experiment.log": (ARMS, "arms-log"),
    "fusion": ({}, {"strategy": "rebase"}),
    "fusion.strategy": ({}, "rebase"),
    "fusion.window_events": ({}, 10),
    "fusion.eta": ({}, 0.5),
    "log": ({}, {"roll_bytes": 4096}),
    "log.roll_bytes": ({}, 4096),
    "log.roll_seconds": ({}, "1m"),
    "log.retention": ({"training.offline_window": "1m"}, "1m"),
    "gpu": ({}, {"count": 8}),
    "gpu.type": ({}, "A100"),
    "gpu.count": ({}, 8),
    "gpu.autoscale": ({}, True),
    "gpu.device": ({}, "cpu"),
    "gpu.precision": ({}, "bf16"),
    "alerts": ({}, {"staleness": "1m"}),
    **{f"alerts.{key}": ({}, value) for key, value in [
        ("staleness", "1m"), ("stalled", "5m"), ("auc_drop", 0.1), ("drift_threshold", 10.0), ("drift_delta", 0.01),
        ("dead_letter_rate", 0.05), ("webhook", "http://hooks.example/freshrec")]},
}


class Consumer(Simulator):
    """What the Kafka source gives the command: a stream with its own dead letters."""

    dead_letters = MemoryDeadLetters()


def keys(node: dict, prefix: str = "") -> list[str]:
    """Every key path of a nested mapping, sections and leaves."""
    found = []
    for name, value in node.items():
        found.append(prefix + name)
        if isinstance(value, dict) and name not in ("settings", "fields"):
            found += keys(value, f"{prefix}{name}.")
    return found


def nested(changes: dict[str, Any]) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    data: dict = {}
    for path, value in changes.items():
        *parents, name = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value
    return data


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Recorders in place of the loop, the server, the port check, Kafka and the download."""
    seen: dict = {}

    def open_source(fmt, path, letters, batch_size, mapping, simulator):
        seen["open"] = (fmt, str(path), batch_size, mapping, simulator)
        return Simulator(SimulatorConfig(n_users=20, n_items=10, batch_size=50, total_events=100))

    class Server:
        def __init__(self, registry, port, host, offline, config, sink, retrieval, content):
            seen["server"] = (port, host, offline and Path(offline).name, config,   # not the state folder (by run)
                              retrieval and Path(retrieval).name, content and content.matrix.tobytes())

        def stop(self):
            return None

    def engine(source, settings, state, on_chunk=None, content=None):
        made = engine_run.build_engine(source, settings, state, publish=False, content=content)
        retrain = made.retrain
        seen["engine"] = (type(source).__name__, getattr(source, "limit", None), made.config, made.specs,
                          type(made.trainer.model).__name__, made.trainer.model.config,
                          made.joiner.config if made.joiner else None, made.log.roll_bytes, made.log.roll_seconds,
                          made.pipeline.target, _two_tower(made.retrieval),
                          retrain and (retrain.fusion, retrain.runner.trainer.config,
                                       retrain.hedge and (retrain.hedge.window, retrain.hedge.eta)))
        made.log.close()
        return {"rows": 1, "events": 1, "restored_from": None}

    def failing_fetch(*args):
        raise FetchError("no network here")

    def torchrun(command):
        seen["group"] = command[2:6]          # torchrun's flags: workers and restarts
        state = Path(command[command.index("--state") + 1])
        (state / launch.FIGURES).write_text('{"rows": 1, "events": 1}')
        return 0

    def loop_watch(alerts, *args, drift=None, **kwargs):
        seen["watch"] = ({k: v for k, v in vars(alerts).items() if not k.startswith("_")},
                         drift and (drift.delta, drift.threshold))
        return real_watch(alerts, *args, drift=drift, **kwargs)

    real_watch = watch.LoopWatch
    monkeypatch.setattr(watch, "LoopWatch", loop_watch)
    monkeypatch.setattr(launch.subprocess, "call", torchrun)
    monkeypatch.setattr(build, "open_source", open_source)
    monkeypatch.setattr(build, "fetch_movielens", failing_fetch)
    monkeypatch.setattr(engine_run, "run", engine)
    monkeypatch.setattr(background, "BackgroundServer", Server)
    monkeypatch.setattr(cli_serve, "check_port", lambda host, port: seen.setdefault("port", (host, port)))
    monkeypatch.setattr(kafka, "create_topic", lambda *args: None)
    monkeypatch.setattr(kafka, "KafkaSink", lambda *args: None)
    monkeypatch.setattr(kafka, "KafkaSource", lambda *args, **kwargs: seen.setdefault("kafka", (args, kwargs))
                        and Consumer(SimulatorConfig(n_users=5, n_items=5, batch_size=50, total_events=50)))
    monkeypatch.setenv("OTHER_TOKEN", "secret")
    return seen


def _two_tower(stage) -> tuple | None:
    """What the retrieval stage was built with."""
    if stage is None:
        return None
    learner = stage.learner
    content = learner.content.matrix.tobytes() if learner.content is not None else None
    return (stage.positives, stage.batch_size, learner.history, learner.model.config, learner.trainer.config, content)


def run_with(tmp_path: Path, recorded: dict, changes: dict[str, Any], name: str) -> tuple[int, str, dict]:
    """`freshrec run --config FILE` where FILE holds `changes` (with `source.data` given, so the
    download is tried only for `source.fallback`); (exit code, stderr, what was built)."""
    changes = {"source.data": "data", **changes} if "source.fallback" not in changes else changes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(nested(changes)))
    recorded.clear()
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--state", str(tmp_path / name), "--quiet"])
    return result.exit_code, result.stderr, dict(recorded)


NOT_RUN = ("autoscale", "devices")
"""Sections `freshrec run` does not read: `freshrec autoscale` does (tests/autoscale walks their keys)."""


def test_every_key_of_config_show_is_walked():
    with_columns = FreshrecConfig.model_validate(nested(CSV))   # source.columns' keys show once it is set
    shown = {*keys(yaml.safe_load(show_config(FreshrecConfig()))), *keys(yaml.safe_load(show_config(with_columns)))}
    shown = {key for key in shown if key.split(".")[0] not in NOT_RUN}
    assert sorted(shown) == sorted(CHANGES), "a key of config show has no entry in CHANGES (or an entry is stale)"


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_each_key_changes_what_run_builds(tmp_path: Path, recorded: dict, key: str):
    companions, value = CHANGES[key]
    before = run_with(tmp_path, recorded, companions, "before")
    after = run_with(tmp_path, recorded, {**companions, key: value}, "after")
    assert before[0] == 0 or key == "source.fallback", before[1]
    assert after[0] == 0, after[1]
    assert before != after, f"{key}: {value!r} changed nothing"


@pytest.mark.parametrize("text", [
    "gpus: 8\n",
    "model: {dim: 0}\n",
    "embedding: {optimizer: sgd}\n",
    "embedding: {optimizer: ftrl}\n",
    "model: {ordinal_levels: [2, 3]}\n",
    "source: {format: csv}\n",
    "source: {format: csv, columns: {user: u, item: i, time: t, label: 'r=>4'}}\n",
    "source: {kind: kafka, limit: 10}\n",
    "source: {kind: simulator}\n",
    "training: {offline_interval: 6x}\n",
    "alerts: {webhook: 'ftp://hooks.example'}\n",
    "alerts: {auc_drop: 2}\n",
    "autoscale: {min: 3, max: 2}\n",
    "features: {content: true}\nsource: {format: simulator}\n",
    "training: {workers: 2, offline_interval: null}\nserve: {enabled: false}\nretrieval: {enabled: true}\n",
])
def test_config_check_refuses_exactly_what_run_refuses(tmp_path: Path, recorded: dict, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    check = CliRunner().invoke(app, ["config", "check", str(path)])
    run = CliRunner().invoke(app, ["run", "--config", str(path), "--state", str(tmp_path / "state"), "--quiet"])
    assert check.exit_code == run.exit_code == 2
    assert run.stderr == "error: " + "; ".join(check.stderr.strip().splitlines()) + "\n"
    assert "engine" not in recorded


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_config_check_accepts_what_run_accepts(tmp_path: Path, key: str):
    companions, value = CHANGES[key]
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(nested({**companions, key: value})))
    assert CliRunner().invoke(app, ["config", "check", str(path)]).exit_code == 0


def test_an_items_file_run_cannot_read_is_named(tmp_path: Path, recorded: dict):
    (tmp_path / "no-text.csv").write_text("item_id,title\n1,a\n")
    for items, why in ((tmp_path / "missing.csv", "not found"), (tmp_path / "no-text.csv", "no column 'text'")):
        code, err, built = run_with(tmp_path, recorded, {"features.content": True, "content.items": str(items)}, "x")
        assert code == 2 and err.startswith("error: content.items: ") and why in err and "engine" not in built


def test_run_builds_the_items_content_once_for_its_server_and_its_engine(tmp_path: Path, recorded: dict,
                                                                        monkeypatch: pytest.MonkeyPatch):
    built = []
    real = build.item_content
    monkeypatch.setattr(build, "item_content", lambda *args, **kwargs: built.append(real(*args, **kwargs)) or built[-1])
    code, err, _ = run_with(tmp_path, recorded, {"features.content": True, "content.items": str(ITEMS)}, "content")
    assert code == 0, err
    assert len(built) == 1
