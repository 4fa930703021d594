"""What the joiner is told (`JoinConfig`) and what it counts (`JoinStats`).

An action at event time `a` joins the impression at `t` with the same key when
`t - skew <= a < t + window`: the attribution window is closed at its start and open at its end,
so an action exactly `window` seconds after its impression is too late. The watermark is the
largest event ts seen minus `allowed_lateness` (or more, where `Joiner.advance` says so); an event
whose ts is below it is late.

>>> config = JoinConfig(window=600.0, key="impression_id", positive_kinds=("click", "watch"),
...                     thresholds={"watch": ("watch_seconds", 30.0)})
>>> config.key_columns, config.thresholds
(('impression_id',), (('watch', 'watch_seconds', 30.0),))
>>> JoinConfig(skew=5.0, window=5.0)
Traceback (most recent call last):
...
ValueError: skew must be in [0, window): 5.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["JoinConfig", "JoinStats"]


@dataclass(frozen=True)
class JoinConfig:
    """How impressions and their later actions are joined (seconds are event time).

    `window`: attribution window after the impression. `allowed_lateness`: how far the watermark
    trails the largest ts seen; early actions wait this long for their impression. `key`:
    "impression_id", or columns such as ("user_id", "item_id") where events carry no id (then a
    second impression of the pair within the window is a duplicate). `positive_kinds`: action
    kinds that make the impression positive (label 1.0). `thresholds`: kind -> (column, minimum):
    an action of that kind counts only when its column is at least the minimum (e.g.
    {"watch": ("watch_seconds", 30.0), "rating": ("label", 4.0)}); actions that do not count are
    ignored. `skew`: how far an action's ts may precede its impression's (two loggers' clocks) and
    still join. `max_pending`: hard cap on the impressions held, and on the early actions
    buffered; past it the oldest are closed at once (impressions as negatives). `impression_kind`:
    the kind of impression rows, every other kind is an action. `name`: the `source` of the
    chunks of examples the joiner emits.
    """

    window: float = 1800.0
    allowed_lateness: float = 60.0
    key: str | tuple[str, ...] = ("user_id", "item_id")
    positive_kinds: tuple[str, ...] = ("click", "purchase")
    thresholds: Mapping[str, tuple[str, float]] | tuple[tuple[str, str, float], ...] = ()
    skew: float = 0.0
    max_pending: int = 1_000_000
    impression_kind: str = "impression"
    name: str = "join"

    def __post_init__(self) -> None:
        thresholds = self.thresholds
        if isinstance(thresholds, Mapping):
            thresholds = tuple((kind, column, minimum) for kind, (column, minimum) in thresholds.items())
        object.__setattr__(self, "thresholds", tuple(sorted((k, c, float(m)) for k, c, m in thresholds)))
        object.__setattr__(self, "positive_kinds", tuple(self.positive_kinds))
        if not isinstance(self.key, str):
            object.__setattr__(self, "key", tuple(self.key))
        self._check()

    def _check(self) -> None:
        if not self.window > 0:
            raise ValueError(f"window must be positive: {self.window}")
        if not self.allowed_lateness >= 0:
            raise ValueError(f"allowed_lateness must be >= 0: {self.allowed_lateness}")
        if not 0 <= self.skew < self.window:
            raise ValueError(f"skew must be in [0, window): {self.skew}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1: {self.max_pending}")
        if not self.key_columns:
            raise ValueError("key names no column")
        if self.impression_kind in self.positive_kinds:
            raise ValueError(f"{self.impression_kind!r} is the impression kind, not an action kind")
        if unknown := sorted({k for k, _, _ in self.thresholds} - set(self.positive_kinds)):
            raise ValueError(f"thresholds for kinds not in positive_kinds: {unknown}")

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns whose values make the join key."""
        return (self.key,) if isinstance(self.key, str) else self.key


@dataclass
class JoinStats:
    """Counts of what became of every row; each row lands in exactly one outcome.

    Impression rows: `impressions` = `positives` + `negatives` + `duplicate_impressions` +
    `late_impressions` + `invalid_impressions` + `Joiner.pending`. Action rows: `actions` =
    `positives` + `duplicate_actions` + `late_actions` + `orphan_actions` + `ignored_actions` +
    `invalid_actions` + `Joiner.buffered` (each positive consumed one action).

    Outcomes: `positives` (examples with label 1.0), `negatives` (label 0.0: the window closed
    with no counting action, or the impression was closed early by the cap), `duplicate_*`
    (dropped: an impression whose window overlaps a held one of the same key; an action for an
    impression already positive), `late_*` (ts below the watermark and nothing open to join:
    dead-lettered "late_event"), `orphan_actions` (on time, but no impression claimed them before
    the watermark passed: dead-lettered "orphan_action"), `ignored_actions` (kinds or values the
    label rule does not count), `invalid_*` (no key, or no finite ts: dead-lettered "missing_id"
    or "bad_time").

    Details, not outcomes: `evicted_impressions` (negatives closed early by `max_pending`),
    `evicted_actions` (orphans dropped early by `max_pending`), `early_actions` (actions that
    arrived before their impression and joined it when it came), `skewed_actions` (joined with a
    ts before their impression's), `out_of_order` (valid rows whose ts was below the largest ts
    seen before them, late ones included).
    """

    impressions: int = 0
    actions: int = 0
    positives: int = 0
    negatives: int = 0
    duplicate_impressions: int = 0
    late_impressions: int = 0
    invalid_impressions: int = 0
    duplicate_actions: int = 0
    late_actions: int = 0
    orphan_actions: int = 0
    ignored_actions: int = 0
    invalid_actions: int = 0
    evicted_impressions: int = 0
    evicted_actions: int = 0
    early_actions: int = 0
    skewed_actions: int = 0
    out_of_order: int = 0
