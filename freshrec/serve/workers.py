"""The app of each worker of `freshrec serve --workers N`: uvicorn's pre-fork supervisor binds the
port once, starts N worker processes on that socket (the kernel hands each new connection to one of
them), checks that they answer and starts a new one in place of a worker that dies. Each worker
builds its app here from what the command put in its environment: the registry to follow
(`FRESHREC_SERVE_REGISTRY`) and/or the share to attach to (`FRESHREC_SERVE_ATTACH`), the retrieval model's
registry (`FRESHREC_SERVE_RETRIEVAL`), the items' content (`FRESHREC_SERVE_CONTENT`, a `ContentSource` as JSON),
and the
`ServeConfig` as JSON (`FRESHREC_SERVE_CONFIG`); each follows them on its own (attached workers all
map the same tables: the memory is not multiplied by N). Each connection's protocol is made here too
(`protocol`), with that config's timeouts (`freshrec.serve.server`). On Linux a worker ends with its
supervisor (`end_with_supervisor`): a supervisor killed with SIGKILL leaves no worker holding the port.

>>> import os, tempfile
>>> os.environ[REGISTRY_ENV], os.environ[CONFIG_ENV] = tempfile.mkdtemp(), '{"max_candidates": 50}'
>>> isinstance(app(), FastAPI)
True
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from freshrec.features.content import ItemContent, item_content, read_items
from freshrec.serve.app import ServeConfig, create_app
from freshrec.serve.attached import AttachedService
from freshrec.serve.retriever import Retriever
from freshrec.serve.server import DeadlineProtocol, http_protocol
from freshrec.serve.service import ModelService
from freshrec.share import SharedArea
from freshrec.snapshot import ModelRegistry

__all__ = ["ATTACH_ENV", "CONFIG_ENV", "CONTENT_ENV", "REGISTRY_ENV", "RETRIEVAL_ENV", "SUPERVISOR_ENV",
           "ContentSource", "app", "end_with_supervisor", "open_service", "protocol"]

REGISTRY_ENV, ATTACH_ENV, CONFIG_ENV = "FRESHREC_SERVE_REGISTRY", "FRESHREC_SERVE_ATTACH", "FRESHREC_SERVE_CONFIG"
RETRIEVAL_ENV, CONTENT_ENV = "FRESHREC_SERVE_RETRIEVAL", "FRESHREC_SERVE_CONTENT"
SUPERVISOR_ENV = "FRESHREC_SERVE_SUPERVISOR"   # the supervisor's pid
_PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


@dataclass(frozen=True)
class ContentSource:
    """The items' content: an `items` file of item_id and `text_columns`, encoded by `text_model` (default:
    all-MiniLM-L6-v2), for models with content features and the two-tower's item vectors."""

    items: str
    text_columns: tuple[str, ...] = ("text",)
    text_model: str | None = None

    def load(self) -> ItemContent:
        return item_content(read_items(self.items, self.text_columns), self.text_model)


def open_service(registry: str | Path | None, attach: str | None, retrieval: str | Path | None = None,
                 content: ItemContent | None = None) -> ModelService:
    """The service of `freshrec serve`: attached to share `attach` (with the registry's interactions
    for the candidates, when given), else following `registry`; with `retrieval` (the two-tower's registry),
    its `Retriever`; `content`: the items' content vectors, for models that read them."""
    if attach is not None:
        service = AttachedService(SharedArea(attach), ModelRegistry(registry) if registry else None, content=content)
    else:
        service = ModelService(ModelRegistry(registry), content=content)
    if retrieval is not None:
        service.retriever = Retriever(ModelService(ModelRegistry(retrieval), content=content, interactions=False),
                                      service, content)
    return service


@functools.cache
def _config() -> ServeConfig:
    return ServeConfig.model_validate_json(os.environ[CONFIG_ENV])


def end_with_supervisor() -> None:
    """Have the kernel send this worker SIGTERM when its supervisor (pid `FRESHREC_SERVE_SUPERVISOR`) dies,
    however it dies: uvicorn's supervisor stops its workers when it is asked to, but one killed with SIGKILL
    (or by the OOM killer) would leave them serving, orphaned, on its port. `SystemExit` when the supervisor
    is already gone. Linux only (`prctl(PR_SET_PDEATHSIG)`); elsewhere, and outside a worker (no
    such variable), nothing."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != int(supervisor):   # it died before the kernel was told
        raise SystemExit(f"freshrec serve: the supervisor (pid {supervisor}) is gone; this worker ends")


def app() -> FastAPI:
    """One worker's app (`freshrec.cli.serve.worker_app` calls it in each worker), in a worker that
    ends with its supervisor."""
    end_with_supervisor()
    content = os.environ.get(CONTENT_ENV)
    items = ContentSource(**json.loads(content)).load() if content else None
    return create_app(open_service(os.environ.get(REGISTRY_ENV), os.environ.get(ATTACH_ENV),
                                   os.environ.get(RETRIEVAL_ENV), items), _config())


def protocol(**connection) -> DeadlineProtocol:
    """One connection's protocol in a worker (uvicorn calls it: `--http freshrec.serve.workers:protocol`)."""
    return http_protocol(_config())(**connection)
