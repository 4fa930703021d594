"""Item content: one vector per item from its text, through the cache; MovieLens' titles and genres."""

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.datasets.movielens import movielens_items
from freshrec.features import ContentCache
from freshrec.features.content import ItemContent
from tests.conftest import need_real_data


class Lengths:
    """A text encoder of two numbers: the text's length and its count of spaces."""

    name, dim = "lengths", 2

    def encode(self, texts):
        return np.array([[len(t), t.count(" ")] for t in texts], np.float32)


def test_the_last_row_of_an_item_wins_and_unknown_items_read_zero(tmp_path):
    items = pa.table({"item_id": ["a", "b", "a", None], "text": ["x", "y y", "zz z", "w"]})
    content = ItemContent.build(items, ContentCache(tmp_path, Lengths()))
    assert content.vectors(pa.array(["a", "b", "c"])).tolist() == [[4.0, 1.0], [3.0, 1.0], [0.0, 0.0]]
    assert [s.name for s in content.specs()] == ["content.0", "content.1"]


def test_an_items_table_without_text_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no 'text' column"):
        ItemContent.build(pa.table({"item_id": [1], "title": ["t"]}), ContentCache(tmp_path, Lengths()))


def test_movielens_items_carry_titles_and_genres():
    items = movielens_items(need_real_data("movielens-100k"))
    first = items.slice(0, 1).to_pylist()[0]
    assert items.num_rows == 1682
    assert first == {"item_id": 1, "text": "Toy Story (1995). Genres: Animation, Children's, Comedy"}
