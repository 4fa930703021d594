"""freshrec: real-time training of recommendation models.

>>> import freshrec
>>> freshrec.__version__
'0.1.0'
"""

from freshrec.batch import Batch, SparseFeatures
from freshrec.events import Event, EventChunk, Source
from freshrec.features import FeaturePipeline, FeatureSpec

__version__ = "0.1.0"
__all__ = ["Batch", "Event", "EventChunk", "FeaturePipeline", "FeatureSpec", "Source", "SparseFeatures",
           "__version__"]
