"""The online joiner: impressions and their delayed actions (click, purchase, watch, rating),
joined by impression id or by (user, item) within an attribution window, into labelled
examples; positives when the action comes, negatives when the event-time watermark closes the
window; late, duplicate and out-of-order events handled and counted; memory bounded by the
window; checkpoints as plain arrays."""

from freshrec.join.config import JoinConfig, JoinStats
from freshrec.join.example import Example, example_chunk, examples
from freshrec.join.joiner import Joiner

__all__ = ["Example", "JoinConfig", "JoinStats", "Joiner", "example_chunk", "examples"]
