"""AutoML on Optuna: `RecommenderAutoML(search_space, ...).search(data)` tunes a model's configuration
by prequential trials (predict, then learn, in time order), prunes those that fall behind, runs them
in parallel processes from a resumable study file, and compares the best with the defaults on the
held-back end of the stream; `write_report` draws the search as one HTML page."""

from freshrec.automl.objective import Scored, prequential
from freshrec.automl.report import write_report
from freshrec.automl.search import RecommenderAutoML, Resources, SearchResult, auto_gpu_pool
from freshrec.automl.space import DEFAULT_SPACE, SearchSpace
from freshrec.automl.stream import Stream

__all__ = ["DEFAULT_SPACE", "RecommenderAutoML", "Resources", "Scored", "SearchResult", "SearchSpace", "Stream",
           "auto_gpu_pool", "prequential", "write_report"]
