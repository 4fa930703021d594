"""`Guard`: the ASGI middleware around the whole app (cheaper than FastAPI's `@app.middleware`). It
refuses a body over `limit` bytes (413, declared or streamed), cuts a body not received within
`read_timeout` seconds of the request's headers (408: a slow client does not hold a request open),
refuses a client past its rate (429, with `rates`: `serve.max_client_rate`), and counts each
request's latency and status in the `ServingMetrics`.

A refusal is raised from the app's own read of the body as an `HTTPException`, so each path answers
it as it answers its other errors (`{"detail": ...}`).

>>> import asyncio
>>> from freshrec.metrics.prometheus import ServingMetrics
>>> async def echo(scope, receive, send):
...     body = (await receive())["body"]
...     await send({"type": "http.response.start", "status": 200, "headers": []})
...     await send({"type": "http.response.body", "body": body})
>>> async def one_chunk():
...     return {"type": "http.request", "body": b"hello", "more_body": False}
>>> sent = []
>>> async def send(message):
...     sent.append(message)
>>> guard = Guard(echo, limit=1024, read_timeout=1.0, metrics=ServingMetrics(), paths=frozenset({"/"}))
>>> asyncio.run(guard({"type": "http", "path": "/", "headers": []}, one_chunk, send))
>>> sent[1]["body"]
b'hello'
"""

from __future__ import annotations

import asyncio
import math
import time

import orjson
from fastapi import HTTPException

from freshrec.metrics.prometheus import ServingMetrics
from freshrec.serve.budget import ClientRates

__all__ = ["Guard"]

CLOSE = {"Connection": "close"}   # the rest of a refused body is not read: the connection cannot be reused


class Guard:
    """413 over `limit` bytes, 408 past `read_timeout` seconds for the body, 429 past a client's
    `rates`, metrics by path (known `paths` by name, the others as "other")."""

    def __init__(self, app, limit: int, read_timeout: float, metrics: ServingMetrics, paths: frozenset[str],
                 rates: ClientRates | None = None) -> None:
        self.app, self.limit, self.read_timeout, self.metrics, self.paths = app, limit, read_timeout, metrics, paths
        self.rates = rates

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sent(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self._guarded(scope, receive, sent)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            self.metrics.requests.labels(path, str(status[0])).inc()

    async def _guarded(self, scope, receive, send) -> None:
        if self.rates is not None:
            client = (scope.get("client") or ("",))[0]
            wait = self.rates.refused(client)
            if wait is not None:
                return await self._refuse(send, HTTPException(
                    429, f"more than {self.rates.rate:g} requests a second from {client} (serve.max_client_rate)",
                    {"Retry-After": str(max(1, math.ceil(wait))), **CLOSE}))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, self._too_large())
        seen, done, deadline = 0, False, asyncio.get_running_loop().time() + self.read_timeout

        async def guarded_receive():
            nonlocal seen, done
            if done:   # the body is in: waiting for a disconnect is not reading
                return await receive()
            try:   # asyncio's own timeout: a fraction of anyio's cost, on every request
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"request body not received within {self.read_timeout:g} s", CLOSE) from None
            seen += len(message.get("body", b""))
            done = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > self.limit:
                raise self._too_large()
            return message
        await self.app(scope, guarded_receive, send)

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"request body over {self.limit} bytes", CLOSE)

    @staticmethod
    async def _refuse(send, error: HTTPException) -> None:
        body = orjson.dumps({"detail": error.detail})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
