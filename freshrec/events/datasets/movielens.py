"""MovieLens-100k: ratings (`u.data`) joined with movie genres (`u.item`) and user
demographics (`u.user`), replayed in timestamp order.

Each event: `user_id`, `item_id` (ints), `ts`, `label` = rating >= `positive_from` (4 by
default), the raw `rating` (a regression target, not a feature), and the feature fields
`genres` (multi-categorical), `age`, `sex`, `occupation`, `zip3` (first three digits of the zip
code; categorical).

Bad rating lines go to the dead-letter sink with their line in `u.data`: a wrong column
count, a missing id, a non-number, an unparseable time, or a rating outside 1..5
(`bad_label`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freshrec.events.datasets.delimited import read_text_csv, reject_empty_lines
from freshrec.events.deadletter import DeadLetterSink, MemoryDeadLetters
from freshrec.events.event import ITEM, LABEL, TS, USER, Field, FieldKind
from freshrec.events.source import TableReplay
from freshrec.events.validate import RowChecks

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
          "Sci-Fi", "Thriller", "War", "Western")
FIELDS = (Field(USER, FieldKind.CATEGORICAL, "user"), Field(ITEM, FieldKind.CATEGORICAL, "item"),
          Field("genres", FieldKind.MULTI_CATEGORICAL, "item"), Field("age", FieldKind.CATEGORICAL, "user"),
          Field("sex", FieldKind.CATEGORICAL, "user"), Field("occupation", FieldKind.CATEGORICAL, "user"),
          Field("zip3", FieldKind.CATEGORICAL, "user"))
FILES = ("u.data", "u.item", "u.user")
NAME = "movielens-100k"


def _genre_lists(items: pa.Table) -> pa.Array:
    """The 19 genre flag columns of u.item -> one list<string> per movie (vectorised)."""
    flags = np.stack([pc.equal(items.column(f"g{i}"), "1").fill_null(False).to_numpy(zero_copy_only=False)
                      for i in range(len(GENRES))], axis=1)
    offsets = np.zeros(len(flags) + 1, np.int32)
    np.cumsum(flags.sum(axis=1), out=offsets[1:])
    names = pa.array(np.array(GENRES, dtype=object)[np.nonzero(flags)[1]], pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), names)


def _lookup(ids: pa.Array, keys: pa.Array, values: pa.Array) -> pa.Array:
    """`values` of the row whose key equals each id (null where absent); vectorised."""
    index = pc.index_in(ids, value_set=keys)
    return pc.take(values, index)


def _side_table(path: Path, columns: list[str], dead_letters: DeadLetterSink,
                encoding: str = "utf8") -> tuple[pa.Table, pa.Array]:
    """A `|`-separated side table and its integer key column (bad keys dead-lettered, then null)."""
    source = f"{NAME}/{path.name}"
    rows = read_text_csv(path, source, dead_letters, "|", tuple(columns), encoding=encoding)
    checks = RowChecks(rows.table.num_rows)
    keys = checks.integers(rows.table.column(columns[0]).combine_chunks(), columns[0], required=True)
    dead_letters.put_many(checks.letters(source, rows.lines, rows.raw))
    return rows.table, keys


def open_movielens(path: str | Path, dead_letters: DeadLetterSink, batch_size: int = 65_536,
                   positive_from: float = 4.0) -> TableReplay:
    """The ml-100k folder (holding u.data, u.item, u.user) as a time-ordered replay."""
    root = Path(path)
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{NAME}: {', '.join(missing)} not found in {root}")
    rows = read_text_csv(root / "u.data", NAME, dead_letters, "\t", (USER, ITEM, "rating", TS))
    ratings, lines = rows.table, rows.lines
    checks = RowChecks(ratings.num_rows)
    reject_empty_lines(checks, ratings)
    user = checks.integers(ratings.column(USER).combine_chunks(), USER, required=True)
    item = checks.integers(ratings.column(ITEM).combine_chunks(), ITEM, required=True)
    rating = checks.floats(ratings.column("rating").combine_chunks(), "rating")
    in_range = pc.fill_null(pc.and_(pc.greater_equal(rating, 1), pc.less_equal(rating, 5)), False)
    checks.reject(~in_range.to_numpy(zero_copy_only=False), "bad_label",
                  lambda r: f"rating={ratings.column('rating')[r].as_py()!r} is not in 1..5")
    ts = checks.times(ratings.column(TS).combine_chunks(), TS)
    dead_letters.put_many(checks.letters(NAME, lines, rows.raw))
    items, item_ids = _side_table(root / "u.item", ["movie_id", "title", "release_date", "video_date",
                                                    "url"] + [f"g{i}" for i in range(len(GENRES))],
                                  dead_letters, encoding="latin-1")
    users, user_ids = _side_table(root / "u.user", ["user_id", "age", "sex", "occupation", "zip"],
                                  dead_letters)
    table = pa.table({
        TS: ts, USER: user, ITEM: item,
        LABEL: pc.cast(pc.greater_equal(rating, positive_from), pa.float32()),
        "rating": rating,
        "genres": _lookup(item, item_ids, _genre_lists(items)),
        "age": _lookup(user, user_ids, users.column("age").combine_chunks()),
        "sex": _lookup(user, user_ids, users.column("sex").combine_chunks()),
        "occupation": _lookup(user, user_ids, users.column("occupation").combine_chunks()),
        "zip3": _lookup(user, user_ids, pc.utf8_slice_codeunits(users.column("zip").combine_chunks(), 0, 3)),
    }).filter(pa.array(~checks.bad))
    return TableReplay(table, lines[~checks.bad], NAME, FIELDS, batch_size, kind="rating")


def movielens_items(path: str | Path) -> pa.Table:
    """The movies of `u.item` as item content: `item_id` (int64) and `text`, the title (with its year) and
    genres, e.g. "Toy Story (1995). Genres: Animation, Children's, Comedy" (what a text encoder embeds).
    Lines that do not parse are left out (the ratings' reader dead-letters them)."""
    rows = read_text_csv(Path(path) / "u.item", f"{NAME}/u.item", MemoryDeadLetters(), "|",
                         ("movie_id", "title", "release_date", "video_date", "url") + tuple(
                             f"g{i}" for i in range(len(GENRES))), encoding="latin-1").table
    ids = pc.cast(rows.column("movie_id"), pa.int64(), safe=False)
    genres = _genre_lists(rows).to_pylist()
    text = [f"{title}. Genres: {', '.join(g)}" for title, g in zip(rows.column("title").to_pylist(), genres)]
    table = pa.table({ITEM: ids, "text": pa.array(text, pa.string())})
    return table.filter(pc.is_valid(table.column(ITEM)))
