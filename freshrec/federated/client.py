"""The federated client: freshrec's online trainer on one client's events, as a Flower `ClientApp`.

Each round the server names a window of event time. A sampled client first learns the events of the
windows it missed (its own model, as the device would have learned them then), adopts the global
shared arrays, learns the window's events - every micro-batch scored before it is learned, as
`freshrec run` does - and answers with its update of the shared arrays, which rows it touched and the
score histogram of its events in the evaluation part of the stream (`SharedSpace`, `Update`). Its
whole model, private rows included, stays in the client's `Context` between rounds and never leaves.

The app's mods: Flower's `secaggplus_mod` masks the answer (SecAgg+); `dropout_mod` makes clients
vanish mid-round (after the key exchange, before uploading) to exercise SecAgg+'s recovery; with an
audit folder, `audit_mods` write what the app produced and what left the client.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import clip_inputs_inplace, get_norm

from freshrec.automl.stream import Stream
from freshrec.config import FreshrecConfig
from freshrec.engine.build import feature_specs, model_config, trainer_config
from freshrec.engine.loop import chunk_scores, featurised
from freshrec.events.source import TableReplay
from freshrec.features import FeaturePipeline
from freshrec.federated.space import BINS, SharedSpace, Update
from freshrec.metrics import PrequentialMetrics
from freshrec.models import build_model
from freshrec.models.base import OnlineModel
from freshrec.train import OnlineTrainer

__all__ = ["ClientSetup", "FreshrecClient", "audit_mods", "client_app", "client_mods", "dropout_mod"]

STATE = "freshrec"
DROPPED_OUT = "dropped out of round"


@dataclass(frozen=True)
class ClientSetup:
    """What every client is given: the run's `settings`, the `space`, the clipping norm of differential
    privacy (None: off), the histogram `bins` and the audit folder."""

    settings: FreshrecConfig
    space: SharedSpace
    clip: float | None = None
    bins: int = BINS
    audit: Path | None = None


@lru_cache(maxsize=64)
def _events(path: Path) -> Stream:
    return Stream.load(path)


class FreshrecClient(NumPyClient):
    """One client's round (see the module docstring) on the events in the file `events` (a saved
    `Stream`: in a deployment, the data on the device)."""

    def __init__(self, setup: ClientSetup, context: Context, events: Path) -> None:
        self.setup, self.context = setup, context
        self.events = _events(events)
        self.specs = feature_specs(setup.settings, self.events.fields)
        self.pipeline = FeaturePipeline(self.specs, setup.settings.features.target)

    def fit(self, parameters, config):
        setup, events = self.setup, self.events
        model = build_model(setup.settings.model.name, self.specs, model_config(setup.settings))
        learned_until = self._restore(model)
        trainer = OnlineTrainer(model, trainer_config(setup.settings))
        start, end, eval_from = (float(config[k]) for k in ("window_start", "window_end", "eval_from"))
        metrics = PrequentialMetrics(bins=setup.bins, window_events=None)
        self._learn(trainer, events, learned_until, start, eval_from, metrics)   # the windows it missed
        setup.space.adopt(model, parameters)
        batches = self._learn(trainer, events, max(start, learned_until), end, eval_from, metrics)
        delta = [after - before for after, before in zip(setup.space.arrays(model), parameters)]
        if setup.clip is not None and get_norm(delta) > setup.clip:   # a client with nothing new sends zeros
            clip_inputs_inplace(delta, setup.clip)
        touched = [] if setup.clip is not None else setup.space.touched(batches)
        self._save(model, end, int(config["round"]))
        return Update(delta, touched, metrics.total).pack(), 1, {}

    def _learn(self, trainer: OnlineTrainer, events: Stream, start: float, end: float, eval_from: float,
               metrics: PrequentialMetrics):
        """Learn the events with start <= ts < end, scoring each micro-batch first; the scores of
        those from `eval_from` on go to `metrics`. Returns their featurised batches."""
        ts = events.table.column("ts")
        rows = events.table.filter(pc.and_(pc.greater_equal(ts, start), pc.less(ts, end)))
        if rows.num_rows == 0:
            return []
        settings, t = self.setup.settings, self.setup.settings.training
        replay = TableReplay(rows, np.arange(rows.num_rows), events.name, events.fields,
                             batch_size=settings.source.chunk_rows)
        wholes = []
        for work in featurised(replay, self.pipeline, t.online_batch_size, batch_window=t.online_batch_window):
            ((_, steps, _),) = trainer.learn_stream([work])
            scores, batch = np.nan_to_num(chunk_scores(steps), nan=0.5), work.whole
            late = batch.ts.numpy() >= eval_from
            metrics.update(scores[late], batch.labels.numpy()[late])
            wholes.append(batch)
        return wholes

    def _restore(self, model: OnlineModel) -> float:
        """Load this client's model from its context; returns the event time it has learned up to."""
        record = self.context.state.config_records.get(STATE)
        if record is None:
            return float("-inf")
        arrays = np.load(io.BytesIO(record["model"]))
        for name, table in model.tables.items():
            prefix = f"table/{name}/"
            table.load_state_dict({k.removeprefix(prefix): arrays[k] for k in arrays.files if k.startswith(prefix)})
        model.load_state_dict({k.removeprefix("dense/"): torch.from_numpy(np.array(arrays[k])) for k in arrays.files
                               if k.startswith("dense/")})
        return float(record["learned_until"])

    def _save(self, model: OnlineModel, learned_until: float, server_round: int) -> None:
        states = {name: table.state_dict() for name, table in model.tables.items()}
        out = {f"table/{name}/{k}": v for name, state in states.items() for k, v in state.items()}
        out.update({f"dense/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()})
        buffer = io.BytesIO()
        np.savez(buffer, **out)
        self.context.state.config_records[STATE] = ConfigRecord({"model": buffer.getvalue(),
                                                                 "learned_until": float(learned_until)})
        if self.setup.audit is not None:
            np.save(self.setup.audit / f"node-{self.context.node_id}-round-{server_round}-private.npy",
                    self._private_rows(model, states))

    def _private_rows(self, model: OnlineModel, states: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
        """Every row this client keeps that is not a catalogue row (its users' rows among them), from
        the tables' `states`, as float32 rows of the widest table (narrower ones zero-padded)."""
        space, rows, stored_in = self.setup.space, [], self.setup.space.tables(model)
        for name, state in states.items():
            shared = [space.catalogue[key] for key, stored in stored_in.items() if stored == name]
            rows.append(state["rows"][~np.isin(state["ids"], np.concatenate([np.zeros(0, np.int64), *shared]))])
        width = max(r.shape[1] for r in rows)
        return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows]).astype(np.float32)


def dropout_mod(rate: float, seed: int) -> Callable:
    """A mod that makes a client vanish after the key exchange of a round, before it uploads its masked
    update, with probability `rate` (drawn from `seed`, the round and the client: the same run, the
    same dropouts)."""
    def mod(msg: Message, context: Context, call_next) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and configs.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS:
            draw = random.Random(f"{seed}/{msg.metadata.group_id}/{context.node_config['partition-id']}").random()
            if draw < rate:
                raise ConnectionError(f"client {context.node_config['partition-id']} {DROPPED_OUT} "
                                      f"{msg.metadata.group_id}")
        return call_next(msg, context)
    return mod


def _arrays_of(msg: Message) -> dict[str, np.ndarray]:
    """Every array and byte string a message carries, by record and key (masked vectors decoded)."""
    out: dict[str, np.ndarray] = {}
    for name, record in msg.content.array_records.items():
        for key, array in record.items():
            out[f"arrays/{name}/{key}"] = array.numpy()
    for name, record in msg.content.config_records.items():
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                if isinstance(v, bytes):
                    decoded = bytes_to_ndarray(v) if key == Key.MASKED_PARAMETERS else np.frombuffer(v, np.uint8)
                    out[f"config/{name}/{key}/{i}"] = decoded
                elif isinstance(v, (int, float)):
                    out[f"config/{name}/{key}/{i}"] = np.array([v])
    return out


def audit_mods(directory: Path) -> tuple[Callable, Callable]:
    """(outer, inner): the outer mod writes every message that leaves the client (what the server
    receives), the inner one the update the app produced before SecAgg+ masked it, as `.npz` files
    named by node, round and stage in `directory`."""
    def write(msg: Message, context: Context, stage: str, arrays: dict[str, np.ndarray]) -> None:
        np.savez(directory / f"node-{context.node_id}-round-{msg.metadata.group_id}-{stage}.npz", **arrays)

    def outer(msg: Message, context: Context, call_next) -> Message:
        stage = (msg.content.config_records.get(RECORD_KEY_CONFIGS) or {}).get(Key.STAGE, "fit")
        reply = call_next(msg, context)      # SecAgg+ takes the stage out of the message
        write(msg, context, f"{stage}-sent", _arrays_of(reply))
        return reply

    def inner(msg: Message, context: Context, call_next) -> Message:
        reply = call_next(msg, context)
        if not reply.has_error():
            produced = parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, keep_input=True).parameters)
            write(msg, context, "cleartext", {f"{i}": a for i, a in enumerate(produced)})
        return reply
    return outer, inner


def client_mods(audit: Path | None = None, dropout: float = 0.0, seed: int = 0) -> list[Callable]:
    """A client's mods: SecAgg+, simulated dropouts outside it and audits around both, as asked."""
    mods = [dropout_mod(dropout, seed)] if dropout > 0 else []
    mods.append(secaggplus_mod)
    if audit is not None:
        outer, inner = audit_mods(audit)
        mods = [outer, *mods, inner]
    return mods


def client_app(setup: ClientSetup, data: Path, dropout: float = 0.0, seed: int = 0) -> ClientApp:
    """The simulation's `ClientApp`: client k learns `data`/<k>.arrow, k its partition id."""
    def client_fn(context: Context):
        return FreshrecClient(setup, context, data / f"{context.node_config['partition-id']}.arrow").to_client()
    return ClientApp(client_fn=client_fn, mods=client_mods(setup.audit, dropout, seed))

