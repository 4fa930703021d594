"""The joiner's rows, one after another, in numba: keyed state in record arrays, no Python
object per impression or action.

`process` runs the rules of `freshrec.join.joiner` over a chunk's rows (already sorted into
codes, float ts, 64-bit key hashes and kind codes by `freshrec.join.rows`) and `advance` moves
the watermark alone. What they hold lives in `freshrec.join.state.Held`:

- `imps` / `acts`: slots of held impressions / early actions (`IMPRESSION` / `ACTION` dtypes),
  a free slot has `seq` -1; impressions take the next free slot of a ring, actions reuse slots
  through a free list (`next`);
- `table`: key -> the heads of that key's impression list and action list (linked through
  `next`), open addressing with linear probing and backward-shift deletion (a key of 0 is empty:
  key hashes are never 0);
- `closing` / `expiring`: 4-ary heaps of (window end | ts + skew, seq, slot), ordered by
  (deadline, seq), so the order of closing is the same whatever the heap's layout; an action
  claimed early stays in `expiring` and is skipped when popped (its slot's seq no longer matches);
- `clock` [max_ts, watermark], `count` (the `SEQ` ... `KEPT` indices), `stats` (in `JoinStats`'s
  field order);
- what a call produced, for the caller to read and reset: `out` (examples in the order they
  became final: row id, label, label ts, action kind or -1), `dead` (rows dead-lettered, in order,
  with a `BAD_TIME` ... `ORPHAN_ACTION` reason) and `kept` (row index in the chunk, row id) of the
  impressions held.

The caller (`Held.reserve`) makes every array large enough for the rows of a call before it:
a row adds at most one slot, heap entry, key, example and dead letter, and the watermark closes
at most what is held.

>>> from freshrec.join.state import Held
>>> held = Held()
>>> held.reserve(3)
>>> rows = (np.array([IMPRESSION, ACTION, IMPRESSION]), np.array([0.0, 4.0, 20.0]),
...         np.array([7, 7, 9]), np.array([0, 1, 0]), np.zeros(3, np.int64), np.arange(3))
>>> process(*rows, 0, 10.0, 0.0, 0.0, 100, *held.arrays())
>>> held.out[:held.count[OUT]].tolist(), int(held.count[HELD]), held.clock.tolist()
([(0, 1.0, 4.0, 1)], 1, [20.0, 20.0])
"""

from __future__ import annotations

import numba
import numpy as np

from freshrec._words import AHEAD, prefetch

__all__ = ["ACTION", "ACTION_SLOT", "BAD_TIME", "DEAD", "DEAD_LETTER", "EXAMPLE", "HEAP", "IGNORED",
           "IMPRESSION", "IMPRESSION_SLOT", "KEY_ENTRY", "LATE_ACTION", "LATE_IMPRESSION", "MISSING_ID",
           "ORPHAN_ACTION", "OUT", "advance", "process", "rehash", "restore"]

IMPRESSION, ACTION, IGNORED = 0, 1, 2       # row codes
BAD_TIME, MISSING_ID, LATE_IMPRESSION, LATE_ACTION, ORPHAN_ACTION = range(5)   # dead-letter reasons
MAX_TS, WATERMARK = 0, 1                    # clock
SEQ, RID, HELD, PENDING, BUFFERED, IMP_NEXT, ACT_TOP, ACT_FREE, CLOSING, EXPIRING, KEYS, OUT, DEAD, \
    KEPT = range(14)                        # count
N_COUNTS = 14
(IMPRESSIONS, ACTIONS, POSITIVES, NEGATIVES, DUPLICATE_IMPRESSIONS, LATE_IMPRESSIONS, INVALID_IMPRESSIONS,
 DUPLICATE_ACTIONS, LATE_ACTIONS, ORPHAN_ACTIONS, IGNORED_ACTIONS, INVALID_ACTIONS, EVICTED_IMPRESSIONS,
 EVICTED_ACTIONS, EARLY_ACTIONS, SKEWED_ACTIONS, OUT_OF_ORDER) = range(17)   # stats, JoinStats's order

IMPRESSION_SLOT = np.dtype([("ts", np.float64), ("seq", np.int64), ("key", np.int64), ("rid", np.int64),
                            ("next", np.int64), ("positive", np.bool_)])
ACTION_SLOT = np.dtype([("ts", np.float64), ("seq", np.int64), ("key", np.int64), ("kind", np.int64),
                        ("position", np.int64), ("source", np.int64), ("next", np.int64)])
KEY_ENTRY = np.dtype([("key", np.int64), ("imps", np.int64), ("acts", np.int64)])
_ENTRY_BYTES = KEY_ENTRY.itemsize
HEAP = np.dtype([("at", np.float64), ("seq", np.int64), ("slot", np.int64)])
EXAMPLE = np.dtype([("rid", np.int64), ("label", np.float64), ("label_ts", np.float64), ("kind", np.int64)])
DEAD_LETTER = np.dtype([("reason", np.int64), ("position", np.int64), ("source", np.int64), ("kind", np.int64),
                        ("ts", np.float64), ("watermark", np.float64)])


# ---- 4-ary heaps of (at, seq, slot), smallest (at, seq) on top: a node's children are 4i+1..4i+4
# (two cache lines), so a pop walks half the levels of a binary heap; entries move into a hole
# instead of being swapped.


@numba.njit(inline="always")
def _before(at, seq, entry):
    return at < entry.at or (at == entry.at and seq < entry.seq)


@numba.njit(inline="always")
def _push(heap, count, which, at, seq, slot):
    i = count[which]
    count[which] = i + 1
    while i > 0:
        parent = heap[(i - 1) >> 2]
        if not _before(at, seq, parent):
            break
        heap[i].at, heap[i].seq, heap[i].slot = parent.at, parent.seq, parent.slot
        i = (i - 1) >> 2
    heap[i].at, heap[i].seq, heap[i].slot = at, seq, slot


@numba.njit(inline="always")
def _pop(heap, count, which):
    """Drop the top (read it first)."""
    n = count[which] - 1
    count[which] = n
    at, seq, slot = heap[n].at, heap[n].seq, heap[n].slot
    i = 0
    while True:
        first = 4 * i + 1
        if first >= n:
            break
        best = first
        for c in range(first + 1, min(first + 4, n)):
            if _before(heap[c].at, heap[c].seq, heap[best]):
                best = c
        child = heap[best]
        if at < child.at or (at == child.at and seq < child.seq):
            break
        heap[i].at, heap[i].seq, heap[i].slot = child.at, child.seq, child.slot
        i = best
    heap[i].at, heap[i].seq, heap[i].slot = at, seq, slot


# ---- key table: key -> heads of its impression and action lists


@numba.njit(inline="always")
def _probe(table, key):
    """The entry holding `key`, or the empty one where its probe run ends."""
    mask = len(table) - 1
    i = key & mask
    while table[i].key != key and table[i].key != 0:
        i = (i + 1) & mask
    return i


@numba.njit(inline="always")
def _find(table, key):
    """The entry of `key`, or -1."""
    i = _probe(table, key)
    return i if table[i].key == key else -1


@numba.njit(inline="always")
def _entry(table, count, key):
    """The entry of `key`, made (with empty lists) when it has none."""
    i = _probe(table, key)
    if table[i].key == 0:
        table[i].key, table[i].imps, table[i].acts = key, -1, -1
        count[KEYS] += 1
    return i


@numba.njit(inline="always")
def _drop_if_empty(table, count, i):
    """Delete entry `i` when both its lists are empty (moving later entries of its probe run back)."""
    if table[i].imps >= 0 or table[i].acts >= 0:
        return
    mask = len(table) - 1
    j = i
    while True:
        j = (j + 1) & mask
        if table[j].key == 0:
            break
        home = table[j].key & mask
        stays = (i < home <= j) if i <= j else (home > i or home <= j)
        if not stays:
            table[i].key, table[i].imps, table[i].acts = table[j].key, table[j].imps, table[j].acts
            i = j
    table[i].key, table[i].imps, table[i].acts = 0, -1, -1
    count[KEYS] -= 1


@numba.njit(nogil=True, cache=True)
def rehash(old, new):
    """Insert the entries of table `old` into the empty table `new`."""
    for entry in old:
        if entry.key != 0:
            i = _probe(new, entry.key)
            new[i].key, new[i].imps, new[i].acts = entry.key, entry.imps, entry.acts


# ---- slots: impressions in a ring (taken in arrival order, so those that close together, about
# as old, sit together), actions from a free list


@numba.njit(inline="always")
def _ring_slot(imps, count):
    """The first free impression slot from the ring's cursor on (`Held.reserve` keeps at least
    half the ring free)."""
    cur = count[IMP_NEXT]
    while imps[cur].seq >= 0:
        cur = cur + 1 if cur + 1 < len(imps) else 0
    count[IMP_NEXT] = cur + 1 if cur + 1 < len(imps) else 0
    return cur


@numba.njit(inline="always")
def _alloc(slots, count, top, free):
    slot = count[free]
    if slot >= 0:
        count[free] = slots[slot].next
    else:
        slot = count[top]
        count[top] += 1
    return slot


@numba.njit(inline="always")
def _release(slots, count, free, slot):
    slots[slot].seq = -1
    slots[slot].next = count[free]
    count[free] = slot


@numba.njit(inline="always")
def _unlinked(slots, head, slot):
    """The list from `head` (linked through `next`) without `slot`: its new head."""
    if head == slot:
        return slots[slot].next
    prev = head
    while slots[prev].next != slot:
        prev = slots[prev].next
    slots[prev].next = slots[slot].next
    return head


# ---- outcomes


@numba.njit(inline="always")
def _example(out, count, rid, label, label_ts, kind):
    n = count[OUT]
    out[n].rid, out[n].label, out[n].label_ts, out[n].kind = rid, label, label_ts, kind
    count[OUT] = n + 1


@numba.njit(inline="always")
def _letter(dead, count, reason, position, source, kind, ts, watermark):
    n = count[DEAD]
    dead[n].reason, dead[n].position, dead[n].source, dead[n].kind = reason, position, source, kind
    dead[n].ts, dead[n].watermark = ts, watermark
    count[DEAD] = n + 1


@numba.njit(inline="always")
def _close(imps, table, out, count, stats, slot, label_ts):
    """The impression's window closed (or the cap closed it): a negative unless positive already."""
    e = _find(table, imps[slot].key)
    table[e].imps = _unlinked(imps, table[e].imps, slot)
    _drop_if_empty(table, count, e)
    count[HELD] -= 1
    if not imps[slot].positive:
        count[PENDING] -= 1
        stats[NEGATIVES] += 1
        _example(out, count, imps[slot].rid, 0.0, label_ts, -1)
    imps[slot].seq = -1


@numba.njit(inline="always")
def _unwait(acts, table, count, slot):
    e = _find(table, acts[slot].key)
    table[e].acts = _unlinked(acts, table[e].acts, slot)
    _drop_if_empty(table, count, e)
    count[BUFFERED] -= 1
    _release(acts, count, ACT_FREE, slot)


@numba.njit(inline="always")
def _orphan(acts, table, dead, clock, count, stats, slot):
    a = acts[slot]
    _letter(dead, count, ORPHAN_ACTION, a.position, a.source, a.kind, a.ts, clock[WATERMARK])
    stats[ORPHAN_ACTIONS] += 1
    _unwait(acts, table, count, slot)


@numba.njit(inline="always")
def _positive(imps, out, count, stats, slot, ts, kind):
    stats[POSITIVES] += 1
    stats[SKEWED_ACTIONS] += ts < imps[slot].ts
    _example(out, count, imps[slot].rid, 1.0, max(ts, imps[slot].ts), kind)
    imps[slot].positive = True
    count[PENDING] -= 1


@numba.njit(inline="always")
def _advance(watermark, imps, acts, table, closing, expiring, out, dead, clock, count, stats):
    if not watermark > clock[WATERMARK]:
        return
    clock[WATERMARK] = watermark
    base, mask, ring = table.ctypes.data, len(table) - 1, len(imps)
    while count[CLOSING] > 0 and closing[0].at <= watermark:
        end, slot = closing[0].at, closing[0].slot
        # impressions close about in ring order: the key entry of one a little further on
        ahead = imps[slot + AHEAD if slot + AHEAD < ring else slot + AHEAD - ring]
        if ahead.seq >= 0:
            prefetch(base + _ENTRY_BYTES * (ahead.key & mask))
        _pop(closing, count, CLOSING)
        _close(imps, table, out, count, stats, slot, end)
    while count[EXPIRING] > 0 and expiring[0].at < watermark:
        seq, slot = expiring[0].seq, expiring[0].slot
        _pop(expiring, count, EXPIRING)
        if acts[slot].seq == seq:
            _orphan(acts, table, dead, clock, count, stats, slot)


@numba.njit(nogil=True, cache=True)
def advance(watermark, imps, acts, table, closing, expiring, out, dead, kept, clock, count, stats):
    """Move the watermark up to `watermark` (never back): windows ending at or below it close as
    negatives, early actions it passes become orphans."""
    _advance(watermark, imps, acts, table, closing, expiring, out, dead, clock, count, stats)


@numba.njit(inline="always")
def _hold(imps, table, closing, count, e, ts, seq, key, rid, positive, window):
    """Hold an impression of the key of entry `e`; its slot."""
    slot = _ring_slot(imps, count)
    imps[slot].ts, imps[slot].seq, imps[slot].key, imps[slot].rid = ts, seq, key, rid
    imps[slot].positive, imps[slot].next = positive, table[e].imps
    table[e].imps = slot
    _push(closing, count, CLOSING, ts + window, seq, slot)
    count[HELD] += 1
    count[PENDING] += not positive
    return slot


@numba.njit(inline="always")
def _wait(acts, table, expiring, count, ts, seq, key, kind, position, source, skew):
    slot = _alloc(acts, count, ACT_TOP, ACT_FREE)
    e = _entry(table, count, key)
    a = acts[slot]
    a.ts, a.seq, a.key, a.kind, a.position, a.source = ts, seq, key, kind, position, source
    a.next = table[e].acts
    table[e].acts = slot
    _push(expiring, count, EXPIRING, ts + skew, seq, slot)
    count[BUFFERED] += 1


@numba.njit(inline="always")
def _claimable(start, ts, window, skew):
    """Whether an action at `ts` joins an impression at `start`."""
    return start - skew <= ts < start + window


@numba.njit(inline="always")
def _claim(imps, acts, table, out, count, stats, slot, window, skew):
    """The new impression in `slot` takes the early actions of its key that fall in its window:
    the first (by ts, then seq) makes it positive, the others are duplicates."""
    ts = imps[slot].ts
    e = _find(table, imps[slot].key)
    first, n = -1, 0
    cur = table[e].acts
    while cur >= 0:
        a = acts[cur]
        if _claimable(ts, a.ts, window, skew):
            n += 1
            if first < 0 or a.ts < acts[first].ts or (a.ts == acts[first].ts and a.seq < acts[first].seq):
                first = cur
        cur = a.next
    if n == 0:
        return
    claimed = np.empty(n, np.int64)
    n, cur = 0, table[e].acts
    while cur >= 0:
        if _claimable(ts, acts[cur].ts, window, skew):
            claimed[n] = cur
            n += 1
        cur = acts[cur].next
    stats[EARLY_ACTIONS] += 1
    stats[DUPLICATE_ACTIONS] += n - 1
    _positive(imps, out, count, stats, slot, acts[first].ts, acts[first].kind)
    for c in claimed:
        _unwait(acts, table, count, c)


@numba.njit(inline="always")
def _impression(ts, key, position, source, window, skew, max_pending,
                imps, acts, table, closing, out, dead, clock, count, stats):
    """Hold a new impression; its row id, or -1 when it is dropped (late or a duplicate)."""
    stats[IMPRESSIONS] += 1
    if ts < clock[WATERMARK]:
        stats[LATE_IMPRESSIONS] += 1
        _letter(dead, count, LATE_IMPRESSION, position, source, -1, ts, clock[WATERMARK])
        return -1
    e = _entry(table, count, key)    # not left empty: a duplicate has a held impression
    cur = table[e].imps
    while cur >= 0:
        if abs(imps[cur].ts - ts) < window:
            stats[DUPLICATE_IMPRESSIONS] += 1
            return -1
        cur = imps[cur].next
    rid = count[RID]
    slot = _hold(imps, table, closing, count, e, ts, count[SEQ], key, rid, False, window)
    count[SEQ] += 1
    count[RID] += 1
    if table[e].acts >= 0:
        _claim(imps, acts, table, out, count, stats, slot, window, skew)
    while count[HELD] > max_pending:
        end, oldest = closing[0].at, closing[0].slot
        _pop(closing, count, CLOSING)
        stats[EVICTED_IMPRESSIONS] += not imps[oldest].positive
        _close(imps, table, out, count, stats, oldest, min(max(clock[MAX_TS], imps[oldest].ts), end))
    return rid


@numba.njit(inline="always")
def _match(imps, table, key, ts, window, skew):
    """The held impression of `key` whose window holds `ts`, else one whose skew holds it, or -1
    (windows of a key never overlap and skew < window: at most one of each)."""
    e = _find(table, key)
    if e < 0:
        return -1
    skewed, cur = -1, table[e].imps
    while cur >= 0:
        start = imps[cur].ts
        if start <= ts < start + window:
            return cur
        if start - skew <= ts < start:
            skewed = cur
        cur = imps[cur].next
    return skewed


@numba.njit(inline="always")
def _action(code, ts, key, kind, position, source, window, skew, max_pending,
            imps, acts, table, expiring, out, dead, clock, count, stats):
    stats[ACTIONS] += 1
    if code != ACTION:
        stats[IGNORED_ACTIONS] += 1
        return
    slot = _match(imps, table, key, ts, window, skew)
    if slot >= 0:
        if imps[slot].positive:
            stats[DUPLICATE_ACTIONS] += 1
        else:
            _positive(imps, out, count, stats, slot, ts, kind)
    elif ts + skew < clock[WATERMARK]:
        stats[LATE_ACTIONS] += 1
        _letter(dead, count, LATE_ACTION, position, source, kind, ts, clock[WATERMARK])
    else:
        _wait(acts, table, expiring, count, ts, count[SEQ], key, kind, position, source, skew)
        count[SEQ] += 1
        while count[BUFFERED] > max_pending:
            seq, oldest = expiring[0].seq, expiring[0].slot
            _pop(expiring, count, EXPIRING)
            if acts[oldest].seq == seq:
                stats[EVICTED_ACTIONS] += 1
                _orphan(acts, table, dead, clock, count, stats, oldest)


@numba.njit(nogil=True, cache=True)
def process(codes, ts, keys, kinds, invalid, positions, source, window, lateness, skew, max_pending,
            imps, acts, table, closing, expiring, out, dead, kept, clock, count, stats):
    """Take a chunk's rows in order. Per row: its code, ts, key hash, kind code, `invalid` (0, or
    the `BAD_TIME` / `MISSING_ID` reason + 1) and position; `source` is the chunk's source code."""
    base, mask = table.ctypes.data, len(table) - 1
    for i in range(len(codes)):
        if i + AHEAD < len(codes):   # the key entry of a later row: its cache miss overlaps this row's work
            prefetch(base + _ENTRY_BYTES * (keys[i + AHEAD] & mask))
        impression = codes[i] == IMPRESSION
        if invalid[i]:
            stats[IMPRESSIONS if impression else ACTIONS] += 1
            stats[INVALID_IMPRESSIONS if impression else INVALID_ACTIONS] += 1
            _letter(dead, count, invalid[i] - 1, positions[i], source, kinds[i], ts[i], clock[WATERMARK])
            continue
        t = ts[i]
        if t > clock[MAX_TS]:
            clock[MAX_TS] = t
            _advance(t - lateness, imps, acts, table, closing, expiring, out, dead, clock, count, stats)
        elif t < clock[MAX_TS]:
            stats[OUT_OF_ORDER] += 1
        if impression:
            rid = _impression(t, keys[i], positions[i], source, window, skew, max_pending,
                              imps, acts, table, closing, out, dead, clock, count, stats)
            if rid >= 0:
                kept[count[KEPT], 0], kept[count[KEPT], 1] = i, rid
                count[KEPT] += 1
        else:
            _action(codes[i], t, keys[i], kinds[i], positions[i], source, window, skew, max_pending,
                    imps, acts, table, expiring, out, dead, clock, count, stats)


@numba.njit(nogil=True, cache=True)
def restore(held_rows, action_rows, window, skew, imps, acts, table, closing, expiring, count):
    """Hold saved impressions and early actions again (each in `seq` order; records of the
    `IMPRESSION_SLOT` / `ACTION_SLOT` dtypes whose `next` is ignored)."""
    for r in held_rows:
        _hold(imps, table, closing, count, _entry(table, count, r.key), r.ts, r.seq, r.key, r.rid, r.positive, window)
    for r in action_rows:
        _wait(acts, table, expiring, count, r.ts, r.seq, r.key, r.kind, r.position, r.source, skew)
