"""The app of each worker of `freshrec serve --workers N`: uvicorn's pre-fork supervisor binds the
port once, starts N worker processes on that socket (the kernel hands each new connection to one of
them), checks that they answer and starts a new one in place of a worker that dies. Each worker
builds its app here from what the command put in its environment: the registry to follow
(`FRESHREC_SERVE_REGISTRY`) and/or the share to attach to (`FRESHREC_SERVE_ATTACH`), and the
`ServeConfig` as JSON (`FRESHREC_SERVE_CONFIG`); each follows them on its own (attached workers all
map the same tables: the memory is not multiplied by N). Each connection's protocol is made here too
(`protocol`), with that config's timeouts (`freshrec.serve.server`).

>>> import os, tempfile
>>> os.environ[REGISTRY_ENV], os.environ[CONFIG_ENV] = tempfile.mkdtemp(), '{"max_candidates": 50}'
>>> isinstance(app(), FastAPI)
True
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from fastapi import FastAPI

from freshrec.serve.app import ServeConfig, create_app
from freshrec.serve.attached import AttachedService
from freshrec.serve.server import DeadlineProtocol, http_protocol
from freshrec.serve.service import ModelService
from freshrec.share import SharedArea
from freshrec.snapshot import ModelRegistry

__all__ = ["ATTACH_ENV", "CONFIG_ENV", "REGISTRY_ENV", "app", "open_service", "protocol"]

REGISTRY_ENV, ATTACH_ENV, CONFIG_ENV = "FRESHREC_SERVE_REGISTRY", "FRESHREC_SERVE_ATTACH", "FRESHREC_SERVE_CONFIG"


def open_service(registry: str | Path | None, attach: str | None) -> ModelService:
    """The service of `freshrec serve`: attached to share `attach` (with the registry's interactions
    for the candidates, when given), else following `registry`."""
    if attach is not None:
        return AttachedService(SharedArea(attach), ModelRegistry(registry) if registry else None)
    return ModelService(ModelRegistry(registry))


@functools.cache
def _config() -> ServeConfig:
    return ServeConfig.model_validate_json(os.environ[CONFIG_ENV])


def app() -> FastAPI:
    """One worker's app (uvicorn calls it: `freshrec.serve.workers:app`, factory=True)."""
    return create_app(open_service(os.environ.get(REGISTRY_ENV), os.environ.get(ATTACH_ENV)), _config())


def protocol(**connection) -> DeadlineProtocol:
    """One connection's protocol in a worker (uvicorn calls it: `--http freshrec.serve.workers:protocol`)."""
    return http_protocol(_config())(**connection)
