"""`BackgroundServer`: the HTTP server in a thread of this process (for `freshrec run`, whose main
thread runs the engine), following a registry until `stop()`.

>>> import tempfile
>>> server = BackgroundServer(tempfile.mkdtemp(), port=0)
>>> server.stop() is None                 # nothing was published to serve
True
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import uvicorn

from freshrec.events.live import LiveQueue
from freshrec.features.content import ItemContent
from freshrec.serve.app import ServeConfig, create_app
from freshrec.serve.retriever import Retriever
from freshrec.serve.server import uvicorn_config
from freshrec.serve.service import ModelService
from freshrec.snapshot import ModelRegistry

__all__ = ["ADMIN_TOKEN_ENV", "BackgroundServer"]

ADMIN_TOKEN_ENV = "FRESHREC_ADMIN_TOKEN"


class BackgroundServer:
    """Serves `registry` on host:port from a daemon thread; OSError if it cannot listen."""

    def __init__(self, registry: str | Path, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 offline: str | Path | None = None, config: ServeConfig | None = None,
                 sink: LiveQueue | None = None, retrieval: str | Path | None = None,
                 content: ItemContent | None = None) -> None:
        """`offline`: the offline snapshots' registry, for Hedge-fused scores; `config`: the app's
        limits and timeouts (default: `ServeConfig()` with the admin token from $FRESHREC_ADMIN_TOKEN); `sink`:
        where `POST /events` puts the events (None: it answers 503); `retrieval`: the two-tower's registry, whose
        `Retriever` gives /recommend half of its candidates; `content`: the items' content vectors (for models
        with content features, and the two-tower's item vectors)."""
        self.service = ModelService(ModelRegistry(registry), sink=sink,
                                    offline=ModelRegistry(offline) if offline else None, content=content)
        if retrieval is not None:
            tower = ModelService(ModelRegistry(retrieval), content=content, interactions=False)
            self.service.retriever = Retriever(tower, self.service, content)
        app = create_app(self.service, config or ServeConfig(admin_token=os.environ.get(ADMIN_TOKEN_ENV)))
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self.thread = threading.Thread(target=self.server.run, name="freshrec-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"cannot serve on {host}:{port} (in use?)")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one the system chose for port 0)."""
        return self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> int | None:
        """Shut down (the requests in flight have `shutdown_timeout` seconds to finish); returns the
        version that was being served."""
        self.server.should_exit = True
        self.thread.join()
        return self.service.version
