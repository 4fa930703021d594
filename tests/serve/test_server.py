"""The server's settings: timeouts, connection cap and drain, over real sockets to uvicorn in a
thread (a slow client's headers or body get a 408, an idle keep-alive connection is closed, a request
past the cap gets a 503, a stop lets the requests in flight finish but not past its deadline), HTTPS
with a certificate, and the /events token from the config."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import HeldQueue, wait_until

from freshrec.config import ConfigError, parse_config
from freshrec.engine.build import serve_config
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import ServeConfig
from freshrec.serve.background import BackgroundServer

PATIENCE = 30.0   # seconds a test waits for what must happen; never a measure


def _server(tmp_path: Path, sink: LiveQueue | None = None, **settings) -> BackgroundServer:
    return BackgroundServer(tmp_path / "registry", port=0, config=ServeConfig(**settings), sink=sink)


def _until_closed(port: int, sent: bytes) -> bytes:
    """What the server answers to `sent` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as connection:
        connection.sendall(sent)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def _status_and_detail(answer: bytes) -> tuple[bytes, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)["detail"]


def test_headers_not_sent_in_time_get_a_408_and_the_connection_is_closed(tmp_path: Path) -> None:
    server = _server(tmp_path, read_timeout=0.2)
    try:
        status, detail = _status_and_detail(_until_closed(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"))
    finally:
        server.stop()
    assert status == b"HTTP/1.1 408 Request Timeout" and detail == "request headers not received within 0.2 s"


def test_a_body_not_sent_in_time_gets_a_408(tmp_path: Path) -> None:
    server = _server(tmp_path, sink=LiveQueue(FIELDS), read_timeout=0.2)
    try:
        started = (b"POST /events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
                   b'{"user": "u1", ')
        status, detail = _status_and_detail(_until_closed(server.port, started))
    finally:
        server.stop()
    assert status == b"HTTP/1.1 408 Request Timeout" and detail == "request body not received within 0.2 s"


def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    server = _server(tmp_path, keep_alive_timeout=0.2)
    try:
        answer = _until_closed(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")   # returns once closed
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" not in answer.lower()


def test_a_request_past_the_connection_cap_gets_a_503(tmp_path: Path) -> None:
    server = _server(tmp_path, max_connections=1, keep_alive_timeout=PATIENCE)
    first, second = (http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE) for _ in range(2))
    try:
        first.request("GET", "/healthz")
        assert first.getresponse().read() and first.sock is not None        # served, and kept open
        second.request("GET", "/healthz")
        answer = second.getresponse()
        assert answer.status == 503 and answer.read() == b"Service Unavailable"
    finally:
        first.close()
        second.close()
        server.stop()


def _post_events(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
    connection.request("POST", "/events", body=b'{"user": "u1", "item": "i1", "label": 1}',
                       headers={"content-type": "application/json"})
    return connection.getresponse().status


def test_a_stop_lets_the_requests_in_flight_finish(tmp_path: Path) -> None:
    queue = HeldQueue()
    server = _server(tmp_path, sink=queue, shutdown_timeout=PATIENCE)
    with ThreadPoolExecutor(2) as pool:
        posting = pool.submit(_post_events, server.port)
        assert queue.entered.wait(PATIENCE)                  # the request is in flight
        stopping = pool.submit(server.stop)
        wait_until(lambda: not server.server.servers[0].is_serving(), "the server no longer accepting")
        queue.go.set()
        assert posting.result(PATIENCE) == 202               # it finished
        stopping.result(PATIENCE)
    assert len(queue) == 1


def test_a_stop_cancels_what_is_still_running_at_its_deadline(tmp_path: Path) -> None:
    server = _server(tmp_path, sink=LiveQueue(FIELDS), read_timeout=PATIENCE * 10, shutdown_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as connection:
        connection.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{")   # never finished
        wait_until(lambda: server.server.server_state.tasks, "the request in flight")
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        stopping.join(PATIENCE)
    assert not stopping.is_alive()


def test_an_events_token_variable_named_but_unset_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("EVENTS_TOKEN", raising=False)
    config = parse_config({"serve": {"events_token_env": "EVENTS_TOKEN"}})
    with pytest.raises(ConfigError, match=r"serve.events_token_env: \$EVENTS_TOKEN is unset or empty"):
        serve_config(config)                                     # never an open /events by a missing export
    monkeypatch.setenv("EVENTS_TOKEN", "ev")
    assert serve_config(config).events_token == "ev"
    assert serve_config(parse_config({})).events_token is None   # none named: open, as before


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (Debian's openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_with_a_certificate_the_server_speaks_https_only(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server = _server(tmp_path, tls_certfile=str(cert), tls_keyfile=str(key))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=PATIENCE)
        connection.request("GET", "/healthz")
        assert json.loads(connection.getresponse().read()) == {"status": "starting", "ready": False, "version": None}
        connection.close()   # (an open keep-alive connection holds the server's shutdown for seconds)
        with pytest.raises((http.client.HTTPException, ConnectionError)):   # plain HTTP: no answer
            plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE)
            plain.request("GET", "/healthz")
            plain.getresponse()
    finally:
        server.stop()


def test_tls_settings_come_in_pairs_of_files_that_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HTTPS needs both serve.tls_certfile and serve.tls_keyfile"):
        parse_config({"serve": {"tls_certfile": "cert.pem"}})
    with pytest.raises(ConfigError, match=r"serve.tls_certfile: no file .*nope.pem"):
        serve_config(parse_config({"serve": {"tls_certfile": str(tmp_path / "nope.pem"),
                                             "tls_keyfile": str(tmp_path / "nope.key")}}))
    assert parse_config({"serve": {"tls_certfile": "c.pem", "tls_keyfile": "k.pem", "port": 443}}).serve.url() == \
        "https://127.0.0.1:443"
