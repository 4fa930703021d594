"""`RetrievalTrainer`: learns a `TwoTower` online from interactions, a sampled softmax over in-batch and
uniformly sampled negatives (mixed negative sampling, Yang et al. 2020) with the sampling-bias correction
of Yi et al. 2019: each candidate's logit minus the log of its expected count among the candidates, from a
streaming estimate of how often each item occurs (`FrequencyEstimate`). Without the correction, popular
items, which are negatives more often, would be pushed down in proportion to their popularity.

Each row of a batch is one interaction (user, item): the positive of its row, the other rows' items and the
sampled catalogue items its negatives (a row's own item elsewhere in the candidates is masked out).

>>> import torch
>>> from freshrec.batch import Batch, SparseFeatures
>>> from freshrec.events.event import FieldKind
>>> from freshrec.features import FeatureSpec
>>> from freshrec.models.two_tower import TwoTower, TwoTowerConfig
>>> model = TwoTower([FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL)],
...                  TwoTowerConfig(dim=8, out_dim=4, history_field=""))
>>> catalogue = Catalogue(content_dim=0)
>>> trainer = RetrievalTrainer(model, catalogue, RetrievalConfig(negatives=4))
>>> batch = Batch(SparseFeatures(["user_id", "item_id"], torch.tensor([1, 2, 1, 10, 11, 12]),
...                              torch.ones(6, dtype=torch.int32)),
...               dense=torch.zeros(3, 0), labels=torch.ones(3), ts=torch.zeros(3, dtype=torch.float64))
>>> step = trainer.learn(batch)
>>> step["rows"], len(catalogue), step["loss"] > 0
(3, 3, True)
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional

from freshrec.batch import Batch
from freshrec.events.event import ITEM, USER, EventChunk, Field, FieldKind
from freshrec.features import FeaturePipeline, FeatureSpec
from freshrec.features.content import ItemContent
from freshrec.models.two_tower import TwoTower, TwoTowerConfig

HISTORY = "history"
"""The field of a user's recent items (a list of item ids, on the item table)."""


@dataclass(frozen=True)
class RetrievalConfig:
    """- `negatives`: catalogue items sampled uniformly per batch beside the in-batch ones (0: in-batch only);
    - `correct_bias`: subtract log(expected count) from each candidate's logit (the logQ correction);
    - `lr`: Adagrad learning rate of the towers' dense weights (the tables keep the model's `lr`);
    - `frequency_buckets`, `frequency_decay`: the `FrequencyEstimate`'s hash buckets and averaging rate;
    - `seed`: of the negative sampling."""

    negatives: int = 256
    correct_bias: bool = True
    lr: float = 0.05
    frequency_buckets: int = 1 << 20
    frequency_decay: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.negatives < 0 or not self.lr > 0 or not 0 < self.frequency_decay <= 1:
            raise ValueError(f"negatives must be >= 0, lr > 0 and frequency_decay in (0, 1], not {self.negatives},"
                             f" {self.lr} and {self.frequency_decay}")


class FrequencyEstimate:
    """How often each item occurs, per training step, from the stream (Yi et al. 2019, algorithm 2): per hash
    bucket, the step of its last sighting and a moving average of the gap between sightings; the
    probability that a step holds the item is 1 / gap.

    >>> estimate = FrequencyEstimate(buckets=64, decay=0.5)
    >>> for step in range(1, 9):
    ...     estimate.update(np.array([5] + ([6] if step % 4 == 0 else [])), step)
    >>> estimate.probability(np.array([5, 6, 7])).round(2).tolist()    # every step, every 4th, never
    [1.0, 0.25, 0.0]
    """

    def __init__(self, buckets: int = 1 << 20, decay: float = 0.05) -> None:
        self.buckets, self.decay = buckets, decay
        self.last = np.zeros(buckets, np.float64)
        self.gap = np.zeros(buckets, np.float64)

    def update(self, keys: np.ndarray, step: int) -> None:
        """Record the items `keys` (hashed ids) seen at training step `step` (steps count from 1)."""
        slots = np.unique(np.asarray(keys, np.int64) % self.buckets)
        seen = self.last[slots] > 0
        gaps = step - self.last[slots]
        fresh = self.gap[slots] == 0
        self.gap[slots] = np.where(~seen, 0.0, np.where(fresh, gaps, (1 - self.decay) * self.gap[slots]
                                                        + self.decay * gaps))
        self.last[slots] = step

    def probability(self, keys: np.ndarray) -> np.ndarray:
        """Per key, the estimated probability that a step holds it (0 for an item seen at most once: no gap
        yet; 1 for one seen every step)."""
        gap = self.gap[np.asarray(keys, np.int64) % self.buckets]
        return np.where(gap > 0, 1.0 / np.maximum(gap, 1.0), 0.0)


class Catalogue:
    """The items known so far: their hashed ids (`keys`) and content vectors, in order of arrival; where
    sampled negatives come from and what an ANN index holds."""

    def __init__(self, content_dim: int) -> None:
        self.content_dim = content_dim
        self.keys = np.zeros(0, np.int64)
        self.content = np.zeros((0, content_dim), np.float32)
        self._position: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, keys: np.ndarray, content: np.ndarray) -> Catalogue:
        """The catalogue of `keys` (in order of arrival) with their `content` rows (e.g. as saved)."""
        catalogue = cls(content.shape[1])
        catalogue.keys, catalogue.content = np.asarray(keys, np.int64), np.asarray(content, np.float32)
        catalogue._position = {key: position for position, key in enumerate(catalogue.keys.tolist())}
        return catalogue

    def add(self, keys: np.ndarray, content: np.ndarray | None = None) -> np.ndarray:
        """Add the items of `keys` not known yet (with their content rows); returns the keys added."""
        keys = np.asarray(keys, np.int64)
        unique, first = np.unique(keys, return_index=True)
        new = np.array([k not in self._position for k in unique.tolist()], bool)
        added, rows = unique[new], first[new]
        for offset, key in enumerate(added.tolist()):
            self._position[key] = len(self.keys) + offset
        vectors = (np.zeros((len(added), self.content_dim), np.float32) if content is None
                   else np.asarray(content, np.float32)[rows])
        self.keys = np.concatenate([self.keys, added])
        self.content = np.concatenate([self.content, vectors])
        return added

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Each key's position (its row of `keys` and `content`), -1 for an unknown key."""
        return np.fromiter((self._position.get(k, -1) for k in np.asarray(keys, np.int64).tolist()), np.int64,
                           len(keys))

    def content_of(self, keys: np.ndarray) -> np.ndarray:
        """The content rows of known `keys`."""
        return self.content[self.positions(keys)]


class RetrievalTrainer:
    """Learns `model` from batches of interactions (see the module docstring); `catalogue` gathers the items
    seen (with their content, the batches' dense columns)."""

    def __init__(self, model: TwoTower, catalogue: Catalogue, config: RetrievalConfig | None = None) -> None:
        self.model, self.catalogue = model, catalogue
        self.config = config or RetrievalConfig()
        self.frequency = FrequencyEstimate(self.config.frequency_buckets, self.config.frequency_decay)
        self.optimizer = torch.optim.Adagrad(model.parameters(), lr=self.config.lr)
        self.rng = np.random.default_rng(self.config.seed)
        self.steps = 0

    def learn(self, batch: Batch) -> dict:
        """One step on the batch's interactions; returns `{"rows", "loss", "negatives"}`."""
        model = self.model
        items = batch.sparse[model.config.item_field].values.numpy()
        if len(items) != len(batch):
            raise ValueError(f"two-tower: every row needs exactly one {model.config.item_field}")
        self.catalogue.add(items, batch.dense.numpy())
        self.steps += 1
        self.frequency.update(items, self.steps)
        model.train()
        users, positives = model.towers(batch, train=True)
        rows = self._negatives()
        sampled = self.catalogue.keys[rows]
        candidates = np.concatenate([items, sampled])
        vectors = positives if not len(rows) else torch.cat([positives, model.item_vectors(
            sampled, torch.from_numpy(self.catalogue.content[rows]))])
        logits = users @ vectors.T / model.config.temperature
        if self.config.correct_bias:
            logits = logits - torch.from_numpy(self._log_expected(candidates)).to(logits.dtype)
        same = torch.from_numpy(items[:, None] == candidates[None, :])
        same[torch.arange(len(items)), torch.arange(len(items))] = False
        logits = logits.masked_fill(same, -math.inf)
        value = functional.cross_entropy(logits, torch.arange(len(items)))
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        self.optimizer.step()
        model.apply_gradients(len(items))
        return {"rows": len(items), "loss": float(value.detach()), "negatives": len(candidates) - 1}

    def _negatives(self) -> np.ndarray:
        """Catalogue positions of this step's uniform negatives."""
        count = min(self.config.negatives, len(self.catalogue))
        return self.rng.integers(0, len(self.catalogue), count) if count else np.zeros(0, np.int64)

    def _log_expected(self, candidates: np.ndarray) -> np.ndarray:
        """log of each candidate's expected count among a step's candidates: in the batch (the streaming
        frequency) plus among the uniform samples."""
        uniform = min(self.config.negatives, len(self.catalogue)) / max(len(self.catalogue), 1)
        return np.log(self.frequency.probability(candidates) + uniform + 1e-6).astype(np.float32)


def retrieval_specs(fields: Sequence[Field], content: ItemContent | None, history: bool) -> list[FeatureSpec]:
    """A two-tower's inputs for a stream of `fields`: the user-owned fields, the item id, the user's history
    (the `history` field, on the item table) and the content columns."""
    specs = [FeatureSpec(f.name, f.kind) for f in fields if f.owner == "user"]
    specs.append(FeatureSpec(ITEM, FieldKind.CATEGORICAL))
    if history:
        specs.append(FeatureSpec(HISTORY, FieldKind.MULTI_CATEGORICAL, table=ITEM, missing="drop"))
    return specs + (content.specs() if content is not None else [])


class RetrievalLearner:
    """A `TwoTower` learning a stream of interactions, each row a positive: rows become batches with the user's
    recent items as of the batch (`history` of them, oldest first) and the items' content, are learned by a
    `RetrievalTrainer`, then remembered (the users' histories and consumed items, as hashed ids).

    >>> from freshrec.events.simulator import Simulator, SimulatorConfig
    >>> source = Simulator(SimulatorConfig(total_events=600, batch_size=600, n_users=20, n_items=30))
    >>> learner = RetrievalLearner.build(source.fields, history=5, model=TwoTowerConfig(dim=8, out_dim=8))
    >>> steps = learner.learn(next(iter(source)).table, batch_size=200)
    >>> len(steps), len(learner.trainer.catalogue) <= 30, learner.model.user_keys[-1]
    (3, True, 'history')
    """

    def __init__(self, model: TwoTower, content: ItemContent | None = None, history: int = 20,
                 training: RetrievalConfig | None = None) -> None:
        self.model, self.content, self.history = model, content, history
        self.pipeline = FeaturePipeline([s for s in model.specs if s.is_sparse])
        self.trainer = RetrievalTrainer(model, Catalogue(model.content_dim), training)
        self.recent: dict[object, deque] = defaultdict(lambda: deque(maxlen=max(history, 1)))
        self.consumed: dict[object, set[int]] = defaultdict(set)

    @classmethod
    def build(cls, fields: Sequence[Field], content: ItemContent | None = None, history: int = 20,
              model: TwoTowerConfig | None = None, training: RetrievalConfig | None = None) -> RetrievalLearner:
        """A learner of a new two-tower over the stream's `fields` (and `content`)."""
        config = replace(model or TwoTowerConfig(), history_field=HISTORY if history else "", history_length=history)
        return cls(TwoTower(retrieval_specs(fields, content, history > 0), config), content, history, training)

    def batch(self, rows: pa.Table) -> Batch:
        """The rows' batch: the user's history as of now, the items' content as dense columns."""
        if self.model.config.history_field:
            users = rows.column(USER).to_pylist()
            lists = [list(self.recent[u]) if u in self.recent else [] for u in users]
            rows = rows.append_column(HISTORY, pa.array(lists, pa.list_(rows.column(ITEM).type)))
        batch = self.pipeline.build(EventChunk(rows, np.arange(rows.num_rows), "retrieval"))
        dense = (torch.from_numpy(self.content.vectors(rows.column(ITEM).combine_chunks()))
                 if self.content is not None else torch.zeros(len(batch), 0))
        return replace(batch, dense=dense, dense_keys=self.model.dense_keys)

    def remember(self, rows: pa.Table, keys: np.ndarray) -> None:
        """Note the rows' interactions (`keys`: their items' hashed ids) in the users' histories."""
        for user, item, key in zip(rows.column(USER).to_pylist(), rows.column(ITEM).to_pylist(), keys.tolist()):
            self.recent[user].append(item)
            self.consumed[user].add(key)

    def learn(self, rows: pa.Table, batch_size: int = 256) -> list[dict]:
        """Learn the rows in batches of `batch_size`, each remembered once learned; the steps."""
        steps = []
        for start in range(0, rows.num_rows, batch_size):
            part = rows.slice(start, batch_size)
            batch = self.batch(part)
            steps.append(self.trainer.learn(batch))
            self.remember(part, batch.sparse[ITEM].values.numpy())
        return steps
