"""A deterministic event simulator (a `Source`) with a known click model, and a Criteo writer.

Users and items carry latent vectors. Item popularity and user activity follow a power law
(weight `U ** -exponent`, U uniform, capped at the rank-1 weight: Zipf rank-frequency with that
exponent). New users and items arrive at fixed rates per second of event time; user vectors
drift as a random walk with step `drift * sqrt(dt)` per coordinate. A click happens with

    p = sigmoid(bias + u . v + popularity * (log w_item - zipf))

which `Simulator.click_probability` returns for any (user, item), so a model's AUC can be
compared with the oracle's. Ids are the entities' indices (user 0, 1, ...).

Determinism: every draw comes from `SeedSequence((seed, stream, index))`: entity attributes
in blocks of 4096 (index = block), the events of chunk k and the drift step from chunk k to
k + 1 (index = k). Chunk k covers event time `[start_ts + k*D, start_ts + (k+1)*D)`,
`D = batch_size / events_per_second`, with `batch_size` events of a Poisson process
conditioned on that count. User vectors are fixed within a chunk (drift moves in steps of D);
arrivals are exact per event. Seek is exact for any event number n: chunk `n // batch_size`
is regenerated and cut at `n % batch_size`. Reaching chunk k replays k drift steps (one draw
of `users x dim` normals each, about 1 ms for 10k users of dim 8); seeking back starts over.

>>> sim = Simulator(SimulatorConfig(n_users=100, n_items=50, batch_size=1000, total_events=2500))
>>> [len(c) for c in sim], sim.position()
([1000, 1000, 500], {'event': 2500})
>>> sim.seek({"event": 1700}); chunk = next(iter(sim))
>>> len(chunk), int(chunk.positions[0]), chunk.table.column_names[4:]
(300, 1700, ['item_category', 'user_segment', 'hour', 'price'])
>>> p = sim.click_probability(chunk.column("user_id").to_numpy(), chunk.column("item_id").to_numpy())
>>> bool(((p > 0) & (p < 1)).all())
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from freshrec.events.event import ITEM, USER, EventChunk, Field, FieldKind
from freshrec.events.source import Position

_BLOCK = 4096
_USERS, _ITEMS, _EVENTS, _DRIFT, _PROTO, _CRITEO = range(6)
COLUMNS = ("ts", "user_id", "item_id", "label", "item_category", "user_segment", "hour", "price")
FIELDS = (Field(USER, FieldKind.CATEGORICAL, "user"), Field(ITEM, FieldKind.CATEGORICAL, "item"),
          Field("item_category", FieldKind.CATEGORICAL, "item"),
          Field("user_segment", FieldKind.CATEGORICAL, "user"),
          Field("hour", FieldKind.CATEGORICAL), Field("price", FieldKind.DENSE, "item"))


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate. Rates are per second of event time; `total_events=None` never ends.

    `zipf` / `user_zipf`: power-law exponents of item popularity / user activity. `drift`:
    random-walk scale of user vectors per sqrt(second). `affinity`: std of `u . v` at start.
    """

    n_users: int = 10_000
    n_items: int = 5_000
    dim: int = 8
    new_user_rate: float = 1.0
    new_item_rate: float = 0.5
    drift: float = 0.02
    events_per_second: float = 1_000.0
    zipf: float = 1.0
    user_zipf: float = 0.8
    seed: int = 0
    batch_size: int = 65_536
    total_events: int | None = None
    start_ts: float = 1_700_000_000.0
    bias: float = -3.0
    affinity: float = 1.5
    popularity: float = 0.3
    n_categories: int = 32
    n_segments: int = 8

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "dim", "batch_size", "n_categories", "n_segments",
                     "events_per_second", "zipf", "user_zipf"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("new_user_rate", "new_item_rate", "drift", "seed", "affinity", "popularity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.total_events is not None and self.total_events < 0:
            raise ValueError(f"total_events must be >= 0 or None, got {self.total_events}")

    @property
    def chunk_seconds(self) -> float:
        """Event time covered by one chunk of `batch_size` events."""
        return self.batch_size / self.events_per_second


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence((seed, stream, index)))


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros((capacity,) + array.shape[1:], dtype=array.dtype)
    out[:len(array)] = array
    return out


@numba.njit(nogil=True, cache=True)
def _sample(cum, guide, uniform, count):
    """`min(searchsorted(cum, u * cum[count - 1], "right"), count - 1)` per event, starting each
    search from a guide table (`guide[b]`: first index past `b / len(guide)` of the mass)."""
    out = np.empty(len(uniform), np.int64)
    scale = len(guide) / cum[-1]
    for e in range(len(uniform)):
        top = count[e] - 1
        r = uniform[e] * cum[top]
        i = guide[min(int(r * scale), len(guide) - 1)]
        while i > 0 and cum[i - 1] > r:
            i -= 1
        while i < top and cum[i] <= r:
            i += 1
        out[e] = min(i, top)
    return out


@numba.njit(nogil=True, cache=True)
def _affinity(user_vec, item_vec, users, items):
    out = np.empty(len(users), np.float64)
    for e in range(len(users)):
        s = 0.0
        for d in range(user_vec.shape[1]):
            s += user_vec[users[e], d] * item_vec[items[e], d]
        out[e] = s
    return out


class _Population:
    """Users or items, materialised in seeded blocks into arrays that double in capacity."""

    def __init__(self, seed: int, stream: int, n0: int, exponent: float, scale: float,
                 centers: np.ndarray) -> None:
        self.seed, self.stream, self.n0, self.exponent = seed, stream, n0, exponent
        self.scale, self.centers = scale, centers
        self.size, self.guide, self.cum, self.log_weight = 0, np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        self.vec = np.zeros((0, centers.shape[0]), np.float32)
        self.group, self.price = np.zeros(0, np.int64), np.zeros(0, np.float32)

    def ensure(self, n: int) -> None:
        """Materialise entities up to index `n - 1` (whole blocks)."""
        while self.size < n:
            self._append(self.size // _BLOCK)

    def _append(self, block: int) -> None:
        rng = _rng(self.seed, self.stream, block)
        log_w = -self.exponent * np.log(np.maximum(rng.random(_BLOCK), 1.0 / self.n0))
        vec = rng.standard_normal((_BLOCK, self.centers.shape[0]), dtype=np.float32)
        vec *= np.float32(self.scale)
        price = np.exp(rng.normal(3.0, 1.0, _BLOCK)).astype(np.float32)
        lo, hi = self.size, self.size + _BLOCK
        if hi > len(self.cum):
            capacity = max(2 * len(self.cum), hi)
            self.cum, self.log_weight, self.vec, self.group, self.price = (
                _grow(a, capacity) for a in (self.cum, self.log_weight, self.vec, self.group, self.price))
        self.cum[lo:hi] = np.cumsum(np.exp(log_w)) + (self.cum[lo - 1] if lo else 0.0)
        self.log_weight[lo:hi], self.vec[lo:hi], self.price[lo:hi] = log_w, vec, price
        self.group[lo:hi] = np.argmax(vec @ self.centers, axis=1)
        self.size = hi
        self.guide = np.searchsorted(self.cum[:hi], np.arange(hi) * (self.cum[hi - 1] / hi), "right")

    def sample(self, uniform: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Index `i < count[e]` drawn with probability proportional to weight, per event e."""
        return _sample(self.cum[:self.size], self.guide, uniform, count)

    def check(self, ids: np.ndarray, what: str) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise IndexError(f"{what} ids must be in 0..{self.size - 1}")


class Simulator:
    """A `Source` of simulated impressions with clicks drawn from a known model.

    Positions are `{"event": n}`, the number of events handed out so far. The state (user
    vectors) is built lazily on first use; see the module docstring for seek costs.
    """

    name = "simulator"
    fields = FIELDS
    has_event_time = True
    kind = "impression"

    def __init__(self, config: SimulatorConfig = SimulatorConfig()) -> None:
        self.config = config
        self._next = self._committed = self._step = 0
        self._users: _Population | None = None
        self._items: _Population | None = None
        self._last_chunk: int | None = None

    def __iter__(self) -> Iterator[EventChunk]:
        size, total = self.config.batch_size, self.config.total_events
        while total is None or self._next < total:
            k, start = divmod(self._next, size)
            stop = size if total is None else min(size, total - k * size)
            arrays = self._draw(k)
            table = pa.table({name: arrays[name][start:stop] for name in COLUMNS})
            positions = np.arange(k * size + start, k * size + stop, dtype=np.int64)
            self._next = k * size + stop
            yield EventChunk(table, positions, self.name, self.kind)

    def position(self) -> Position:
        return {"event": self._next}

    def commit(self, position: Position) -> None:
        self._committed = int(position["event"])

    def committed(self) -> Position:
        return {"event": self._committed}

    def seek(self, position: Position) -> None:
        event, total = int(position["event"]), self.config.total_events
        if event < 0 or (total is not None and event > total):
            raise ValueError(f"position {event} is outside 0..{total if total is not None else 'inf'}")
        self._next, self._last_chunk = event, None

    def click_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True p(click) of each (user, item) pair, in the state of the last chunk generated
        (before any, of the chunk at the current position)."""
        chunk = self._last_chunk if self._last_chunk is not None else self._next // self.config.batch_size
        self._advance(chunk)
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        self._users.check(users, "user")
        self._items.check(items, "item")
        return 1.0 / (1.0 + np.exp(-self._logit(users, items)[0]))

    def _logit(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        affinity = _affinity(self._users.vec, self._items.vec, users, items)
        pop = cfg.popularity * (self._items.log_weight[items] - cfg.zipf)
        return cfg.bias + affinity + pop, affinity

    def _advance(self, chunk: int) -> None:
        """Bring the user state to the one chunk `chunk` is drawn from."""
        if self._users is None or self._step > chunk:
            cfg, segments = self.config, self.config.n_segments
            centers = _rng(cfg.seed, _PROTO, 0).standard_normal((cfg.dim, segments + cfg.n_categories))
            centers = centers.astype(np.float32)
            self._users = _Population(cfg.seed, _USERS, cfg.n_users, cfg.user_zipf, cfg.affinity,
                                      centers[:, :segments])
            self._items = _Population(cfg.seed, _ITEMS, cfg.n_items, cfg.zipf, cfg.dim ** -0.5,
                                      centers[:, segments:])
            self._step = 0
        while self._step < chunk:
            self._drift_step(self._step)
            self._step += 1

    def _count(self, n0: int, rate: float, elapsed: np.ndarray) -> np.ndarray:
        return n0 + np.floor(rate * elapsed).astype(np.int64)

    def _drift_step(self, step: int) -> None:
        cfg = self.config
        n = int(self._count(cfg.n_users, cfg.new_user_rate, np.float64((step + 1) * cfg.chunk_seconds)))
        self._users.ensure(n)
        if cfg.drift > 0:
            noise = _rng(cfg.seed, _DRIFT, step).standard_normal((n, cfg.dim), dtype=np.float32)
            noise *= np.float32(cfg.drift * math.sqrt(cfg.chunk_seconds))
            self._users.vec[:n] += noise

    def _draw(self, k: int) -> dict[str, np.ndarray]:
        """All `batch_size` events of chunk k as columns, plus `affinity` and `*_log_weight`."""
        cfg, size = self.config, self.config.batch_size
        self._advance(k)
        self._last_chunk = k
        rng = _rng(cfg.seed, _EVENTS, k)
        gaps = np.cumsum(rng.standard_exponential(size + 1))
        elapsed = (k + gaps[:size] / gaps[size]) * cfg.chunk_seconds
        n_users = self._count(cfg.n_users, cfg.new_user_rate, elapsed)
        n_items = self._count(cfg.n_items, cfg.new_item_rate, elapsed)
        self._users.ensure(int(n_users[-1]))
        self._items.ensure(int(n_items[-1]))
        users = self._users.sample(rng.random(size), n_users)
        items = self._items.sample(rng.random(size), n_items)
        logit, affinity = self._logit(users, items)
        label = rng.random(size, dtype=np.float32) < 1.0 / (1.0 + np.exp(-logit))
        ts = cfg.start_ts + elapsed
        return {"ts": ts, "user_id": users, "item_id": items, "label": label.astype(np.float32),
                "item_category": self._items.group[items], "user_segment": self._users.group[users],
                "hour": (ts // 3600 % 24).astype(np.int64), "price": self._items.price[items],
                "affinity": affinity, "user_log_weight": self._users.log_weight[users],
                "item_log_weight": self._items.log_weight[items]}


# ----------------------------------------------------------------------------- Criteo writer

_ROW_BYTES = 2 + 13 * 21 + 26 * 9  # label, 13 x (tab, sign, 19 digits), 26 x (tab, 8 hex), newline
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_CARDS = np.geomspace(3, 100_000, 16).astype(np.uint64)
_NOISE = np.array([1.0, 4.0, 16.0, 64.0, 256.0, 1024.0])
_SALTS = np.random.default_rng(0x5EED).integers(0, 2**63, 26).astype(np.uint64)


@numba.njit(inline="always")
def _mix(h):
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@numba.njit(inline="always")
def _put_int(v, out, p):
    if v < 0:
        out[p] = 45
        p += 1
        v = -v
    n, t = 1, v
    while t >= 10:
        t //= 10
        n += 1
    for d in range(n - 1, -1, -1):
        out[p + d] = 48 + v % 10
        v //= 10
    return p + n


@numba.njit(inline="always")
def _row_values(ev, i, row, key, n_segments, iv, cv):
    """I1..I13 into `iv` and the raw values behind C1..C26 into `cv` for event i."""
    user, item, category, segment, hour, ts, price, affinity, item_lw, user_lw = ev
    u, it = np.uint64(user[i]), np.uint64(item[i])
    iv[0], iv[1] = hour[i], int(math.floor(2.0 * affinity[i] + 0.5))  # I2 < 0: disliked item
    iv[2], iv[3], iv[4], iv[5] = int(price[i]), int(2.0 * item_lw[i]), int(2.0 * user_lw[i]), category[i]
    for j in range(6):
        h = _mix((row | np.uint64(40 + j)) ^ key) >> np.uint64(11)
        iv[6 + j] = int(-math.log(1.0 - h * 2.0**-53) * _NOISE[j])
    iv[12] = np.int64(_mix((row | np.uint64(46)) ^ key) % np.uint64(13)) - 6
    cv[0], cv[1], cv[2], cv[3], cv[4] = u, it, category[i], segment[i], hour[i]
    cv[5], cv[6], cv[7] = np.uint64(ts[i] // 86_400), u >> np.uint64(4), it >> np.uint64(4)
    cv[8], cv[9] = category[i] * n_segments + segment[i], np.uint64(math.log(price[i]) * 4.0 + 64.0)
    for j in range(12):
        cv[10 + j] = _mix((it if j % 2 == 0 else u) ^ _SALTS[j]) % _CARDS[j]
    for j in range(4):
        cv[22 + j] = _mix((row | np.uint64(50 + j)) ^ key) % _CARDS[12 + j]


@numba.njit(nogil=True, cache=True)
def _write_rows(ev, labels, n_segments, first_row, key, int_cut, cat_cut, out):
    """Format events as Criteo TSV lines into `out`; a cell is empty when its hash < the cut."""
    iv, cv, p = np.empty(13, np.int64), np.empty(26, np.uint64), 0
    for i in range(len(labels)):
        row = np.uint64(first_row + i) << np.uint64(6)
        _row_values(ev, i, row, key, n_segments, iv, cv)
        out[p] = 49 if labels[i] > 0.5 else 48
        p += 1
        for j in range(13):
            out[p] = 9
            p += 1
            if _mix((row | np.uint64(j)) ^ key) >= int_cut:
                p = _put_int(iv[j], out, p)
        for j in range(26):
            out[p] = 9
            p += 1
            if _mix((row | np.uint64(13 + j)) ^ key) >= cat_cut:
                h = _mix(cv[j] ^ _SALTS[j])
                for d in range(8):
                    out[p + d] = _HEX[(h >> np.uint64(28 - 4 * d)) & np.uint64(15)]
                p += 8
        out[p] = 10
        p += 1
    return p


def write_criteo_tsv(path: str | os.PathLike[str], rows: int, seed: int, *,
                     int_missing: float = 0.2, cat_missing: float = 0.1) -> None:
    """Write `rows` simulated impressions as a Criteo DAC file (label, I1..I13, C1..C26).

    Features come from the simulated users, items and context (I2 is twice the true affinity,
    rounded, so it may be negative; C1/C2 are user/item), so the label is learnable. Each I
    cell is empty with probability `int_missing`, each C cell with `cat_missing`.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "day_0.txt"
    >>> write_criteo_tsv(path, rows=1000, seed=1)
    >>> lines = path.read_text().splitlines()
    >>> len(lines), {len(line.split("\\t")) for line in lines}
    (1000, {40})
    """
    config = SimulatorConfig(seed=seed, total_events=rows)
    sim, size = Simulator(config), config.batch_size
    key = np.uint64(_mix(np.uint64((seed * 0x9E3779B97F4A7C15 + _CRITEO) % 2**64)))
    int_cut, cat_cut = (np.uint64(min(int(r * 2.0**64), 2**64 - 1)) for r in (int_missing, cat_missing))
    buffer = np.empty(size * _ROW_BYTES, np.uint8)
    with open(path, "wb") as out:
        for k in range(-(-rows // size)):
            n = min(size, rows - k * size)
            a = {name: column[:n] for name, column in sim._draw(k).items()}
            ev = tuple(a[c] for c in ("user_id", "item_id", "item_category", "user_segment", "hour",
                                      "ts", "price", "affinity", "item_log_weight", "user_log_weight"))
            end = _write_rows(ev, a["label"], config.n_segments, k * size, key, int_cut, cat_cut, buffer)
            out.write(buffer[:end].data)
