"""`HedgeFusion`: blend the online and the offline model's probabilities with weights that follow
their recent log loss (Hedge, i.e. exponentiated weights, over a sliding window).

For each expert k (online, offline), `L_k` is the sum of its log losses (probabilities clipped to
[1e-7, 1 - 1e-7]) over the last `window` labelled events that both experts scored, and

    w_k = exp(-eta * L_k) / sum_j exp(-eta * L_j),    p = w_online * p_online + w_offline * p_offline

`eta` defaults to sqrt(8 ln 2 / window), Hedge's rate for two experts over a horizon of one window:
the log-odds of the online weight are then about sqrt(8 ln 2 * window) times the difference of the
two mean losses, 105x at the default window of 2,000, so a model better by 0.01 of log loss (what
separates two good click models) gets 0.74 of the weight, by 0.02 0.89; fewer events in the window
are less evidence and weigh less. With no such event yet the weights are equal. The window is a
ring buffer of `2 * window` floats (bounded memory); after the better expert changes, `window`
events later the weights depend on the new regime only, so the weight moves back within one
window. A new offline model inherits the window of the one it replaces. `learn` comes after the
batch is scored (prequential): the weights that scored a batch never saw its labels. Numpy only,
deterministic.

>>> import numpy as np
>>> fusion = HedgeFusion(window=100)
>>> y = np.array([1.0, 0.0] * 50)
>>> good, bad = np.where(y == 1, 0.6, 0.4), np.full(100, 0.5)
>>> fusion.predict(good[:2], bad[:2]).tolist()          # equal weights before any label
[0.55, 0.45]
>>> fusion.learn(good, bad, y)
>>> round(fusion.eta, 4), {k: round(v, 3) for k, v in fusion.weights.items()}   # 0.2355 * 100 * (0.693 - 0.511)
(0.2355, {'online': 0.987, 'offline': 0.013})
>>> fusion.predict(good[:2], None).tolist()             # no offline model yet: online only
[0.6, 0.4]
>>> [(events, round(w, 3)) for events, w in fusion.history]
[(100, 0.987)]
"""

from __future__ import annotations

import math

import numpy as np

from freshrec.metrics.streaming import EPS

__all__ = ["HISTORY_POINTS", "HedgeFusion", "default_eta"]

HISTORY_POINTS = 512
"""`history` keeps at most this many points (then every other one, at twice the spacing)."""


def default_eta(window: int) -> float:
    """Hedge's learning rate for two experts over `window` events: sqrt(8 ln 2 / window).

    >>> round(default_eta(2000), 4)
    0.0527
    """
    return math.sqrt(8 * math.log(2) / window)


def _log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return -np.where(y == 1, np.log(p), np.log1p(-p))


def _column(values, rows: int | None, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if rows is not None and len(array) != rows:
        raise ValueError(f"{len(array)} {what} for {rows} online predictions")
    return array


class HedgeFusion:
    """Online/offline blend with Hedge weights over the last `window` labelled events (see above);
    `eta` None: `default_eta(window)`."""

    def __init__(self, window: int = 2000, eta: float | None = None) -> None:
        self.window = window
        self.eta = default_eta(window) if eta is None and window >= 1 else eta
        self.events = 0
        self._losses: np.ndarray | None = None
        self._at = self._filled = self._calls = 0
        self._stride = 1
        self._history: list[tuple[int, float]] = []

    def _buffer(self) -> np.ndarray:
        """The [2, window] ring buffer of per-event losses (built, and the settings checked, at first use)."""
        if self._losses is None:
            if self.window < 1 or self.eta is None or not self.eta >= 0:
                raise ValueError(f"window must be >= 1 and eta >= 0, not {self.window} and {self.eta}")
            self._losses = np.zeros((2, self.window))
        return self._losses

    @property
    def weights(self) -> dict[str, float]:
        """{"online": w, "offline": 1 - w}: the weights `predict` uses when both models score."""
        losses = self._buffer()
        if not self._filled:
            return {"online": 0.5, "offline": 0.5}
        z = -self.eta * losses[:, : self._filled].sum(axis=1)
        w = np.exp(z - z.max())
        w_online = float(w[0] / w.sum())
        return {"online": w_online, "offline": 1.0 - w_online}

    @property
    def history(self) -> list[tuple[int, float]]:
        """(labelled events learned so far, online weight) after `learn` calls: one point per call
        until `HISTORY_POINTS`, then thinned by halves. The weight is 1.0 for a call without an
        offline model (only the online model scored)."""
        return list(self._history)

    def predict(self, p_online: np.ndarray, p_offline: np.ndarray | None) -> np.ndarray:
        """The blended probabilities (float64); `p_online` alone when `p_offline` is None."""
        online = _column(p_online, None, "")
        if p_offline is None:
            return online
        w = self.weights
        return w["online"] * online + w["offline"] * _column(p_offline, len(online), "offline predictions")

    def learn(self, p_online: np.ndarray, p_offline: np.ndarray | None, labels: np.ndarray) -> None:
        """Take in a scored batch's labels (NaN: unlabelled, left out) and both predictions."""
        online = _column(p_online, None, "")
        y = _column(labels, len(online), "labels")
        known = ~np.isnan(y)
        self.events += int(known.sum())
        if p_offline is not None:
            offline = _column(p_offline, len(online), "offline predictions")[known]
            self._push(_log_loss(online[known], y[known]), _log_loss(offline, y[known]))
        self._note(self.weights["online"] if p_offline is not None else 1.0)

    def _push(self, online: np.ndarray, offline: np.ndarray) -> None:
        losses = self._buffer()
        online, offline = online[-self.window:], offline[-self.window:]
        at = (self._at + np.arange(len(online))) % self.window
        losses[0, at], losses[1, at] = online, offline
        self._at = (self._at + len(online)) % self.window
        self._filled = min(self.window, self._filled + len(online))

    def _note(self, w_online: float) -> None:
        self._calls += 1
        if (self._calls - 1) % self._stride:
            return
        self._history.append((self.events, w_online))
        if len(self._history) > HISTORY_POINTS:
            self._history = self._history[::2]
            self._stride *= 2
