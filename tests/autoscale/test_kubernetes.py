"""`KubernetesExecutor` through the official client against a stand-in for the API server: a small HTTP
server on 127.0.0.1 answering the StatefulSet scale subresource (GET and PATCH) of one StatefulSet."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from freshrec.autoscale.kubernetes import KubernetesExecutor

client = pytest.importorskip("kubernetes.client")

NAMESPACE = "ml"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/recs-trainer/scale"


class ApiServer(ThreadingHTTPServer):
    """Holds the replicas of `recs-trainer` and the PATCH requests it was sent."""

    def __init__(self, replicas: int | None) -> None:
        super().__init__(("127.0.0.1", 0), ScaleHandler)
        self.replicas, self.patches = replicas, []


class ScaleHandler(BaseHTTPRequestHandler):
    server: ApiServer

    def do_GET(self) -> None:
        self.answer()

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == SCALE_PATH:
            self.server.patches.append((self.headers["Content-Type"], body))
            self.server.replicas = body["spec"]["replicas"]
        self.answer()

    def answer(self) -> None:
        if self.path != SCALE_PATH:
            self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                            "code": 404, "message": "statefulsets.apps not found"})
            return
        replicas = self.server.replicas
        spec = {} if replicas is None else {"replicas": replicas}   # the API leaves out 0
        self.send(200, {"kind": "Scale", "apiVersion": "autoscaling/v1",
                        "metadata": {"name": "recs-trainer", "namespace": NAMESPACE},
                        "spec": spec, "status": {"replicas": replicas or 0}})

    def send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    server = ApiServer(replicas=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def apps_api(server: ApiServer) -> client.AppsV1Api:
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    configuration.retries = 0   # a refused connection fails at once
    return client.AppsV1Api(client.ApiClient(configuration))


def test_current_reads_and_scale_patches_the_trainer_statefulset(api_server: ApiServer) -> None:
    executor = KubernetesExecutor("recs", NAMESPACE, api=apps_api(api_server))
    assert executor.current() == 2
    executor.scale(3)
    assert len(api_server.patches) == 1
    content_type, body = api_server.patches[0]
    assert body == {"spec": {"replicas": 3}}
    assert content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json")
    assert executor.current() == 3
    executor.scale(0)
    assert api_server.patches[-1][1] == {"spec": {"replicas": 0}}
    api_server.replicas = None
    assert executor.current() == 0
    with pytest.raises(ValueError, match="replicas: expected a number >= 0, got -1"):
        executor.scale(-1)
    assert executor.describe() == "StatefulSet ml/recs-trainer (Kubernetes)"
    assert executor.finished() is None   # the controller's interface: a StatefulSet never ends the group
    executor.close()
    assert api_server.replicas is None and len(api_server.patches) == 2   # closing leaves the replicas alone


def test_a_missing_statefulset_is_named(api_server: ApiServer) -> None:
    executor = KubernetesExecutor("other", NAMESPACE, api=apps_api(api_server))
    with pytest.raises(RuntimeError, match=r"StatefulSet ml/other-trainer \(Kubernetes\): not found: deploy it"):
        executor.current()
    with pytest.raises(RuntimeError, match="StatefulSet ml/other-trainer"):
        executor.scale(3)
    assert api_server.patches == []


def test_an_unreachable_api_server_is_named(api_server: ApiServer) -> None:
    api = apps_api(api_server)
    api_server.shutdown()
    api_server.server_close()   # the port is closed now: connections are refused (the fixture's stop is a no-op)
    executor = KubernetesExecutor("recs", NAMESPACE, api=api)
    with pytest.raises(RuntimeError, match=r"cannot reach the API server http://127.0.0.1:\d+"):
        executor.current()


def test_without_credentials_or_the_package_the_error_says_what_is_missing(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    with pytest.raises(RuntimeError, match=r"no Kubernetes credentials: not in a pod .* and no usable kubeconfig"):
        KubernetesExecutor("recs", NAMESPACE)
    monkeypatch.setitem(sys.modules, "kubernetes", None)   # as if the extra were not installed
    with pytest.raises(RuntimeError, match=r"pip install 'freshrec\[kubernetes\]'"):
        KubernetesExecutor("recs", NAMESPACE)
