"""The app of each worker of `freshrec serve --workers N`: uvicorn's pre-fork supervisor binds the
port once, starts N worker processes on that socket (the kernel hands each new connection to one of
them), checks that they answer and starts a new one in place of a worker that dies. Each worker
builds its app here from what the command put in its environment: the registry to follow
(`FRESHREC_SERVE_REGISTRY`) and the `ServeConfig` as JSON (`FRESHREC_SERVE_CONFIG`); each follows
the registry on its own.

>>> import os, tempfile
>>> os.environ[REGISTRY_ENV], os.environ[CONFIG_ENV] = tempfile.mkdtemp(), '{"max_candidates": 50}'
>>> type(app()).__name__
'FastAPI'
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from freshrec.serve.app import ServeConfig, create_app
from freshrec.serve.service import ModelService
from freshrec.snapshot import ModelRegistry

__all__ = ["CONFIG_ENV", "REGISTRY_ENV", "app"]

REGISTRY_ENV, CONFIG_ENV = "FRESHREC_SERVE_REGISTRY", "FRESHREC_SERVE_CONFIG"


def app() -> FastAPI:
    """One worker's app (uvicorn calls it: `freshrec.serve.workers:app`, factory=True)."""
    config = ServeConfig.model_validate_json(os.environ[CONFIG_ENV])
    return create_app(ModelService(ModelRegistry(os.environ[REGISTRY_ENV])), config)
