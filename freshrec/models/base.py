"""What every online model shares: `ModelConfig`, the `OnlineModel` base and the losses.

A model is an `nn.Module` whose sparse inputs live in `DynamicEmbedding` tables (held by an
`EmbeddingCollection`) and whose dense parameters are ordinary torch parameters. Its
`forward(batch, train)` returns logits `[B]`; `train=True` admits new ids and remembers the rows
served so that `apply_gradients()` can update them after `backward()`. Training code lives in
`freshrec.train`, not here.

>>> import torch
>>> logits, labels = torch.tensor([0.0, 2.0]), torch.tensor([1.0, float("nan")])
>>> round(float(loss(logits, labels, "bce")), 4)      # NaN labels are left out
0.6931
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.checkpoint import checkpoint

from freshrec.batch import Batch
from freshrec.embedding import (
    Adagrad,
    DynamicEmbedding,
    EmbeddingCollection,
    TableConfig,
)
from freshrec.embedding.optimizers import FTRL, SGD, Adam
from freshrec.features import FeatureSpec

LOSSES = ("bce", "mse")
ROW_STEP = 0.5      # the default row learning rate times the number of sparse fields
LINEAR_STEP = 2.0   # the same for the ids' linear weights (FM column 0, LR rows)


@dataclass(frozen=True)
class ModelConfig:
    """Settings every model shares.

    - `dim`: embedding width (FM factors, deep embeddings; LR tables always have width 1);
    - `lr`: learning rate of the tables' row-wise Adagrad (and the trainer's default dense lr);
      None (the default): `ROW_STEP / fields` for a model of `fields` sparse fields, resolved
      when the model is built (`for_fields`), so that one event moves the logit about as much
      whatever the number of fields: VW's normalised updates share the step among an example's
      features in the same way. Chosen on the given data sets (`bench/versus_vw.py`);
    - `init_std`: standard deviation of new rows; `seed`: seeds rows and dense initialisation;
    - `admit_after`, `ttl_seconds`, `capacity`: table admission and eviction (see `TableConfig`);
    - `loss`: "bce" (0/1 labels, logits) or "mse" (ratings, the output is the prediction);
    - `initial_accumulator`: the tables' Adagrad accumulators start here (0: the first step of a
      row moves each coordinate by `lr`, whatever its gradient's size; the default 0.1 damps the
      first steps of rare ids: +0.01 AUC on the Criteo head against 0, with the default rates);
    - `row_dtype`: how the tables store rows ("float32", "bfloat16", "float16"; the optimizer
      state stays float32);
    - `ordinal_levels`: for a label that is one level of a graded outcome (`Batch.targets`, e.g.
      the label rating >= 4 of 1-5 stars), the other levels as auxiliary tasks: P(target >= l) =
      sigmoid(logit - offset_l), a learned offset per level (`ordinal_offsets`), trained beside
      the label's BCE when batches carry targets (e.g. (2, 3, 5)); the output stays the label's
      logit. BCE models only.
    """

    dim: int = 16
    lr: float | None = None
    init_std: float = 0.01
    seed: int = 0
    admit_after: int = 1
    ttl_seconds: float | None = None
    capacity: int | None = None
    loss: str = "bce"
    initial_accumulator: float = 0.1
    ordinal_levels: tuple[float, ...] = ()
    row_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, not {self.dim}")
        if (self.lr is not None and not self.lr > 0) or not self.init_std >= 0:
            raise ValueError(f"lr must be > 0 and init_std >= 0, not {self.lr} and {self.init_std}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {LOSSES}")
        levels = tuple(float(level) for level in self.ordinal_levels)
        object.__setattr__(self, "ordinal_levels", levels)  # a JSON list read back is a tuple again
        if levels and (self.loss != "bce" or len(set(levels)) != len(levels)
                       or not all(math.isfinite(level) for level in levels)):
            raise ValueError(f"ordinal_levels must be distinct finite numbers of a bce model, not {levels}")

    def for_fields(self, fields: int) -> ModelConfig:
        """This config with its automatic settings (`lr` None) resolved for a model of `fields`
        sparse fields.

        >>> ModelConfig().for_fields(10).lr, ModelConfig(lr=0.3).for_fields(10).lr
        (0.05, 0.3)
        """
        return self if self.lr is not None else replace(self, lr=ROW_STEP / max(fields, 1))

    def table(self, dim: int, optimizer: SGD | Adagrad | Adam | FTRL | None = None) -> TableConfig:
        """The template `TableConfig` of this model's tables (row-wise Adagrad by default)."""
        return TableConfig(dim=dim, dtype=self.row_dtype, init_std=self.init_std, seed=self.seed,
                           admit_after=self.admit_after,
                           ttl_seconds=self.ttl_seconds, capacity=self.capacity,
                           optimizer=optimizer or Adagrad(lr=self.lr, initial_accumulator=self.initial_accumulator))


def loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean BCE-with-logits (`kind="bce"`) or mean squared error ("mse") over the labelled rows
    (NaN labels are left out); 0 with a gradient of 0 when no row is labelled."""
    known = ~torch.isnan(labels)
    if not bool(known.all()):
        logits, labels = logits[known], labels[known]
    if not len(labels):
        return logits.sum() * 0.0
    if kind == "bce":
        return functional.binary_cross_entropy_with_logits(logits, labels)
    return functional.mse_loss(logits, labels)


def training_loss(model: OnlineModel, output: torch.Tensor, batch: Batch) -> torch.Tensor:
    """`loss` on the labels, plus one BCE term per `ordinal_levels` level on `batch.targets` (the
    mean over the rows with a target of the sum over levels) when the model and batch have them."""
    value = loss(output, batch.labels, model.config.loss)
    levels = model.config.ordinal_levels
    if not levels or batch.targets is None:
        return value
    known = ~torch.isnan(batch.targets)
    if not bool(known.any()):
        return value
    targets = batch.targets[known].unsqueeze(1)
    graded = (targets >= torch.tensor(levels, dtype=targets.dtype, device=targets.device)).to(output.dtype)
    logits = output[known].unsqueeze(1) - model.ordinal_offsets
    aux = functional.binary_cross_entropy_with_logits(logits, graded, reduction="sum") / len(targets)
    return value + aux


@torch.no_grad()
def probabilities(model: OnlineModel, batch: Batch) -> np.ndarray:
    """The model's scores of `batch` as numpy (probabilities for "bce", predictions for "mse"),
    in eval mode, without admitting ids or learning."""
    model.eval()
    output = model(batch.to(model.device), train=False)
    return (torch.sigmoid(output) if model.config.loss == "bce" else output).float().cpu().numpy()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generator seeded, restoring it afterwards (so building a
    model is reproducible and does not disturb the caller's random stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def split_specs(specs: Sequence[FeatureSpec]) -> tuple[tuple[FeatureSpec, ...], tuple[FeatureSpec, ...]]:
    """(sparse specs, dense specs), each in the given order (the order `FeaturePipeline` uses)."""
    return tuple(s for s in specs if s.is_sparse), tuple(s for s in specs if not s.is_sparse)


def mlp(width: int, hidden: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear + ReLU (+ dropout) layers of the `hidden` widths, from `width` inputs (no head)."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers)


def tower(module: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
          checkpointed: bool) -> torch.Tensor:
    """`module(x)`; `checkpointed` (while autograd records) keeps none of its activations for
    backward but the input, and recomputes them there: less memory for one more forward, the same
    gradients (`torch.utils.checkpoint`, non-reentrant; dropout's random draws are replayed).

    >>> deep = mlp(4, (8, 8))
    >>> x = torch.ones(2, 4)
    >>> bool(torch.equal(tower(deep, x, checkpointed=True), deep(x)))
    True
    """
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


def zero_linear(width: int) -> nn.Linear:
    """`nn.Linear(width, 1, bias=False)` with a zero weight (also fine for `width` 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "initializing zero-element tensors" for width 0
        layer = nn.Linear(width, 1, bias=False)
    nn.init.zeros_(layer.weight)
    return layer


class OnlineModel(nn.Module):
    """Base of the online models: sparse features through `self.embeddings`, dense through torch.

    Subclasses set `self.embeddings` (an `EmbeddingCollection`) and implement `forward`.
    """

    config: ModelConfig
    embeddings: EmbeddingCollection

    def __init__(self, specs: Sequence[FeatureSpec], config: ModelConfig) -> None:
        super().__init__()
        self.config = config.for_fields(sum(s.is_sparse for s in specs))
        self.specs = tuple(specs)
        self.sparse_specs, self.dense_specs = split_specs(specs)
        self.dense_keys = tuple(s.name for s in self.dense_specs)
        self._device = torch.device("cpu")
        if config.ordinal_levels:
            self.ordinal_offsets = nn.Parameter(torch.zeros(len(config.ordinal_levels)))

    @property
    def tables(self) -> dict[str, DynamicEmbedding]:
        return self.embeddings.tables

    @property
    def device(self) -> torch.device:
        """Where the dense parameters and the tables' rows live (`place`); batches go there too."""
        return self._device

    def place(self, device: torch.device | str) -> OnlineModel:
        """Move the dense parameters and the tables' rows and optimizer state to `device` (the
        tables' id index stays on the host: a batch's ids are looked up there); returns self.

        >>> from freshrec.events.event import FieldKind
        >>> from freshrec.features import FeatureSpec
        >>> from freshrec.models.fm import OnlineFM
        >>> OnlineFM([FeatureSpec("user_id", FieldKind.CATEGORICAL)]).place("cpu").device
        device(type='cpu')
        """
        self._device = torch.device(device)
        self.to(self._device)
        for table in self.tables.values():
            table.place(self._device)
        return self

    @property
    def live_ids(self) -> int:
        """Rows held by all tables."""
        return sum(table.live for table in self.tables.values())

    @property
    def evicted_ids(self) -> int:
        """Rows all tables have evicted so far (eviction and TTL)."""
        return sum(table.evicted for table in self.tables.values())

    def check(self, batch: Batch) -> float:
        """Refuse a batch whose dense columns differ from the model's; returns `now`, the batch's
        latest event time (for the tables' TTL bookkeeping)."""
        if batch.dense_keys != self.dense_keys:
            raise ValueError(f"the batch has dense columns {batch.dense_keys}, the model {self.dense_keys}")
        if not len(batch):
            return 0.0
        now = float(batch.ts.max())
        return now if now == now else 0.0

    def apply_gradients(self, events: int = 1) -> None:
        """Row-wise optimizer step on the table rows served by the last training forward, whose
        loss averaged `events` events."""
        self.embeddings.apply_gradients(events)

    def served_gradients(self) -> list[torch.Tensor | None]:
        return self.embeddings.served_gradients()

    def discard_gradients(self) -> None:
        self.embeddings.discard_gradients()
