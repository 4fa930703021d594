"""Prequential retrieval: recall/NDCG of the two-tower and of popularity + co-occurrence, cold-start AUC."""

import pytest

from freshrec.automl.stream import Stream
from freshrec.evaluate.retrieval import RetrievalEvalConfig, replay_retrieval
from freshrec.events.datasets.movielens import FIELDS, open_movielens
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.simulator import Simulator, SimulatorConfig
from tests.conftest import need_real_data


def test_counts_and_ranges_on_a_simulated_stream():
    source = Simulator(SimulatorConfig(total_events=2000, batch_size=2000, n_users=40, n_items=60))
    result = replay_retrieval(next(iter(source)).table, source.fields, None,
                              RetrievalEvalConfig(k=60, batch_size=100, history=5))
    assert result["events"] == 2000
    for name in ("two_tower", "popular_cooc"):
        assert 0 < result[name]["recall"] <= 1 and 0 < result[name]["ndcg"] <= result[name]["recall"]
    assert 0 < result["cold_events"] and 0 <= result["cold_auc"] <= 1


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="k, batch_size"):
        RetrievalEvalConfig(k=0)


@pytest.mark.integration
def test_two_tower_recall_beats_popularity_and_cooccurrence_on_movielens():
    table = Stream.read(open_movielens(need_real_data("movielens-100k"), MemoryDeadLetters())).table
    result = replay_retrieval(table, FIELDS, None, RetrievalEvalConfig(k=50))
    assert result["two_tower"]["recall"] > result["popular_cooc"]["recall"]
