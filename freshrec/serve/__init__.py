"""Serving: the `ModelService` that follows the registry (hot swap, parameter sync), the
`AttachedService` that scores a trainer's shared tables, candidate retrieval (popularity and
co-occurrence; the ANN `ItemIndex` over item embeddings), and the FastAPI app (`create_app`)."""

from freshrec.serve.ann import IndexConfig, ItemIndex
from freshrec.serve.app import ServeConfig, create_app
from freshrec.serve.attached import AttachedService
from freshrec.serve.candidates import CandidateConfig, CandidateIndex
from freshrec.serve.replica import Replica
from freshrec.serve.service import ModelService, Scored

__all__ = ["AttachedService", "CandidateConfig", "CandidateIndex", "IndexConfig", "ItemIndex", "ModelService",
           "Replica", "Scored", "ServeConfig", "create_app"]
