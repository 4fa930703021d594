"""How uvicorn runs the app: the one place where `ServeConfig`'s server settings become uvicorn's.

- `read_timeout`: a connection that has not sent a request's headers within it (from its opening,
  or from the first byte of its next request) gets a 408 and is closed (`DeadlineProtocol`: uvicorn
  alone waits for them forever); the body has as long again (`Guard`, 408);
- `keep_alive_timeout`: an idle keep-alive connection is closed after it;
- `max_connections`: uvicorn's `limit_concurrency`: a request that finds this many other connections
  (or requests in progress) open gets a 503 (uvicorn's, text/plain) at once instead of a queue;
- `shutdown_timeout`: on SIGTERM (or `BackgroundServer.stop`) the server stops accepting, lets the
  requests in flight finish, and cancels those still running after this many seconds;
- `tls_certfile`, `tls_keyfile`: HTTPS (uvicorn's TLS) with this certificate and key.

>>> import tempfile
>>> from freshrec.serve.app import ServeConfig, create_app
>>> from freshrec.serve.service import ModelService
>>> from freshrec.snapshot import ModelRegistry
>>> app = create_app(ModelService(ModelRegistry(tempfile.mkdtemp())), ServeConfig(max_connections=64))
>>> config = uvicorn_config(app, "127.0.0.1", 8000)
>>> config.limit_concurrency, config.timeout_graceful_shutdown     # uvicorn counts the connection asking too
(65, 10)
>>> uvicorn_flags(ServeConfig(shutdown_timeout=2.5))
['--http', 'freshrec.serve.workers:protocol', '--limit-concurrency', '1001', '--timeout-graceful-shutdown', '3']
"""

from __future__ import annotations

import asyncio
import functools
import math

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from freshrec.serve.app import ServeConfig

__all__ = ["DeadlineProtocol", "http_protocol", "uvicorn_config", "uvicorn_flags"]


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with a deadline on each request's headers (408, then
    closed) and its own keep-alive timeout."""

    def __init__(self, *args, read_timeout: float, keep_alive_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = keep_alive_timeout
        self.read_timeout = read_timeout
        self._headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._expect_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect_headers()

    def on_headers_complete(self) -> None:
        self._headers_in()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        super().connection_lost(exc)

    def _expect_headers(self) -> None:
        if self._headers_due is None:
            self._headers_due = self.loop.call_later(self.read_timeout, self._headers_late)

    def _headers_in(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _headers_late(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            body = orjson.dumps({"detail": f"request headers not received within {self.read_timeout:g} s"})
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()


def http_protocol(config: ServeConfig) -> functools.partial:
    """The protocol factory uvicorn makes each connection's protocol with, under `config`'s timeouts."""
    return functools.partial(DeadlineProtocol, read_timeout=config.read_timeout,
                             keep_alive_timeout=config.keep_alive_timeout)


def uvicorn_config(app: FastAPI, host: str, port: int, **options) -> uvicorn.Config:
    """uvicorn's config to serve `app` (made by `create_app`, its `ServeConfig` on `app.serve_config`)
    on host:port; `options`: uvicorn's others (e.g. `lifespan="on"`)."""
    config: ServeConfig = app.serve_config
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=http_protocol(config),
                          limit_concurrency=_limit_concurrency(config),
                          timeout_graceful_shutdown=_whole_seconds(config.shutdown_timeout),
                          ssl_certfile=config.tls_certfile, ssl_keyfile=config.tls_keyfile, **options)


def uvicorn_flags(config: ServeConfig) -> list[str]:
    """The same settings as flags of uvicorn's command (`freshrec serve --workers N`, whose workers
    build their protocol from the `ServeConfig` in their environment: `workers.protocol`)."""
    tls = ["--ssl-certfile", config.tls_certfile, "--ssl-keyfile", config.tls_keyfile] if config.tls_certfile else []
    return ["--http", "freshrec.serve.workers:protocol", "--limit-concurrency", str(_limit_concurrency(config)),
            "--timeout-graceful-shutdown", str(_whole_seconds(config.shutdown_timeout)), *tls]


def _limit_concurrency(config: ServeConfig) -> int:
    """uvicorn's limit for `max_connections`: it counts the connection asking among those open."""
    return config.max_connections + 1


def _whole_seconds(seconds: float) -> int:
    """uvicorn's command takes whole seconds for the shutdown deadline: rounded up."""
    return math.ceil(seconds)
