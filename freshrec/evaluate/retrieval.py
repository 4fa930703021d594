"""Prequential retrieval evaluation: each interaction's item against the top k retrieved for its user just
before it, by the online two-tower model (through the ANN `ItemIndex`, as `/recommend` retrieves) and by the
serving candidate sources, recent popularity + co-occurrence (`CandidateIndex`), on the same stream; items the
user already interacted with are never retrieved. Then the batch is learned and the index updated.

- recall@k: the share of interactions whose item was among the k retrieved; NDCG@k: 1 / log2(rank + 2) when
  it was (one relevant item per interaction);
- cold-start AUC: on interactions with an item among its first `cold_events` ones, the chance that the
  two-tower scores the item above a random catalogue item the user has not interacted with (ties half),
  averaged over those interactions (`cold_auc`); and above a random item that is itself still cold
  (`cold_auc_among_cold`: which new item the user takes, where popularity says little and content most).
  `content` (item content vectors) or ids alone make the difference.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> source = Simulator(SimulatorConfig(total_events=3000, batch_size=3000, n_users=50, n_items=80))
>>> table = next(iter(source)).table
>>> result = replay_retrieval(table, source.fields, None, RetrievalEvalConfig(k=10, batch_size=200))
>>> sorted(result), result["events"]
(['cold_auc', 'cold_auc_among_cold', 'cold_events', 'events', 'popular_cooc', 'seconds', 'two_tower'], 3000)
>>> 0 <= result["two_tower"]["recall"] <= 1 and 0 <= result["cold_auc"] <= 1
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from freshrec.events.event import ITEM, TS, USER, Field
from freshrec.features.content import ItemContent
from freshrec.models.two_tower import TwoTower, TwoTowerConfig
from freshrec.serve.ann import ItemIndex
from freshrec.serve.candidates import CandidateIndex
from freshrec.train.retrieval import Catalogue, RetrievalConfig, RetrievalLearner


@dataclass(frozen=True)
class RetrievalEvalConfig:
    """- `k`: items retrieved per interaction; `batch_size`: interactions per step (scored, then learned);
    - `history`: the user's recent items the user tower pools; `cold_events`: an item's first interactions
      that count as cold start; `auc_negatives`: random items each cold interaction is compared with;
      `warmup`: the stream's first interactions are learned but not counted in the cold-start AUC (at the
      start every item is new to a model that knows nothing yet);
    - `model`, `training`: the two-tower's and its trainer's settings; `seed`: of the AUC's samples."""

    k: int = 50
    batch_size: int = 256
    history: int = 20
    cold_events: int = 20
    auc_negatives: int = 100
    warmup: int = 0
    model: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    training: RetrievalConfig = field(default_factory=RetrievalConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.k, self.batch_size, self.cold_events, self.auc_negatives) < 1 or self.history < 0:
            raise ValueError("k, batch_size, cold_events and auc_negatives must be >= 1 and history >= 0")


class _Tally:
    """recall@k and NDCG@k of one retriever."""

    def __init__(self) -> None:
        self.hits, self.gain, self.events = 0, 0.0, 0

    def add(self, rank: int | None) -> None:
        self.events += 1
        if rank is not None:
            self.hits += 1
            self.gain += 1.0 / math.log2(rank + 2)

    def summary(self) -> dict:
        return {"recall": self.hits / max(self.events, 1), "ndcg": self.gain / max(self.events, 1)}


def replay_retrieval(table: pa.Table, fields: Sequence[Field], content: ItemContent | None,
                     config: RetrievalEvalConfig | None = None, baseline: bool = True) -> dict:
    """Replay the time-ordered interactions of `table` (see the module docstring): `two_tower` and (with
    `baseline`) `popular_cooc` recall/NDCG at k, `cold_auc` of the two-tower, counts and seconds."""
    config = config or RetrievalEvalConfig()
    started = time.perf_counter()
    learner = RetrievalLearner.build(fields, content, config.history, config.model, config.training)
    model, catalogue = learner.model, learner.trainer.catalogue
    index = ItemIndex(model.out_dim)
    counts = np.zeros(0, np.int64)   # interactions so far per catalogue position
    candidates = CandidateIndex() if baseline else None
    tallies = {"two_tower": _Tally(), "popular_cooc": _Tally()}
    cold_scores: dict[str, list[float]] = {"cold_auc": [], "cold_auc_among_cold": []}
    rng = np.random.default_rng(config.seed)
    for start in range(0, table.num_rows, config.batch_size):
        rows = table.slice(start, config.batch_size)
        users = rows.column(USER).to_pylist()
        batch = learner.batch(rows)
        keys = batch.sparse[ITEM].values.numpy()
        with torch.no_grad():
            model.eval()
            queries = model.towers(batch)[0]
        consumed = [learner.consumed[u] for u in users]
        _score_retrieval(index, queries.numpy(), keys, consumed, config.k, tallies["two_tower"])
        if candidates is not None:
            for user, item in zip(users, rows.column(ITEM).to_pylist()):
                ranked = candidates.candidates(str(user), config.k)
                tallies["popular_cooc"].add(ranked.index(str(item)) if str(item) in ranked else None)
        before = np.append(counts, 0)[catalogue.positions(keys)]   # position -1 (a new item): the 0 appended
        cold = (before < config.cold_events) & (start >= config.warmup)
        if cold.any() and len(catalogue):
            still_cold = np.flatnonzero(counts < config.cold_events)
            for name, pool in (("cold_auc", np.arange(len(catalogue))), ("cold_auc_among_cold", still_cold)):
                cold_scores[name] += _cold_auc(model, catalogue, pool, queries[cold], keys[cold], batch.dense[cold],
                                               [c for c, is_cold in zip(consumed, cold) if is_cold],
                                               config.auc_negatives, rng)
        learner.trainer.learn(batch)
        learner.remember(rows, keys)
        counts = np.concatenate([counts, np.zeros(len(catalogue) - len(counts), np.int64)])
        np.add.at(counts, catalogue.positions(keys), 1)
        if candidates is not None:
            candidates.observe(pa.table({TS: rows.column(TS), USER: rows.column(USER), ITEM: rows.column(ITEM)}))
        with torch.no_grad():
            index.replace(catalogue.keys, model.item_vectors(catalogue.keys, torch.from_numpy(catalogue.content))
                          .numpy())
    result = {"events": table.num_rows, "two_tower": tallies["two_tower"].summary(),
              **{name: float(np.mean(scores)) if scores else None for name, scores in cold_scores.items()},
              "cold_events": len(cold_scores["cold_auc"]),
              "seconds": time.perf_counter() - started}
    if baseline:
        result["popular_cooc"] = tallies["popular_cooc"].summary()
    return result


def _score_retrieval(index: ItemIndex, queries: np.ndarray, keys: np.ndarray, consumed: list[set[int]], k: int,
                     tally: _Tally) -> None:
    """Add each interaction's rank among the index's top k for its query (None when absent or no index)."""
    if not len(index):
        for _ in keys:
            tally.add(None)
        return
    found, _ = index.search(queries, k, exclude=consumed)
    for row, key in zip(found, keys.tolist()):
        where = np.flatnonzero(row == key)
        tally.add(int(where[0]) if len(where) else None)


def _cold_auc(model: TwoTower, catalogue: Catalogue, pool: np.ndarray, queries: torch.Tensor, keys: np.ndarray,
              content: torch.Tensor, consumed: list[set[int]], negatives: int, rng: np.random.Generator) -> list[float]:
    """Per cold interaction, the share of unconsumed items sampled from `pool` (catalogue positions) scored
    below its item."""
    if not len(pool):
        return []
    with torch.no_grad():
        positives = (queries * model.item_vectors(keys, content)).sum(1).numpy()
        sample = pool[rng.integers(0, len(pool), (len(keys), negatives))]
        sampled = catalogue.keys[sample]
        vectors = model.item_vectors(sampled.reshape(-1), torch.from_numpy(catalogue.content[sample.reshape(-1)]))
        scores = (vectors.view(len(keys), negatives, -1) * queries[:, None, :]).sum(2).numpy()
    out = []
    for score, positive, negs, seen, key in zip(scores, positives, sampled, consumed, keys.tolist()):
        keep = np.array([n not in seen and n != key for n in negs.tolist()])
        if keep.any():
            s = score[keep]
            out.append(float(((s < positive).sum() + 0.5 * (s == positive).sum()) / len(s)))
    return out
