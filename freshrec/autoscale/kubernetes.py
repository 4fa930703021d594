"""`KubernetesExecutor`: the size of the trainer group that `freshrec deploy` runs on Kubernetes, the
replicas of the StatefulSet `<name>-trainer`, read and changed through its `scale` subresource with the
official client (the optional extra `freshrec[kubernetes]`). Each trainer pod is one torchrun agent: a
new replica joins the elastic group at its next rendezvous, a removed one (the highest ordinal) leaves it.
Like `LocalExecutor` it has `current()`, `scale(n)`, `finished()` and `close()` (the controller's interface).

>>> executor = KubernetesExecutor("freshrec", "recsys", api=object())
>>> executor.statefulset, executor.describe(), executor.finished()
('freshrec-trainer', 'StatefulSet recsys/freshrec-trainer (Kubernetes)', None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["KubernetesExecutor"]


class KubernetesExecutor:
    """The replicas of StatefulSet `<name>-trainer` in `namespace`. `api`: a `kubernetes.client.AppsV1Api`
    (None: one configured from the pod's service account, else from the kubeconfig)."""

    def __init__(self, name: str, namespace: str, api: Any = None) -> None:
        self.statefulset, self.namespace = f"{name}-trainer", namespace
        self.api = api if api is not None else _apps_api()

    def current(self) -> int:
        """The replicas the StatefulSet is asked for (the API leaves out a count of 0)."""
        return self._call(self.api.read_namespaced_stateful_set_scale).spec.replicas or 0

    def scale(self, n: int) -> None:
        """Ask for `n` replicas (a strategic merge patch of the scale subresource)."""
        if n < 0:
            raise ValueError(f"replicas: expected a number >= 0, got {n}")
        self._call(self.api.patch_namespaced_stateful_set_scale, {"spec": {"replicas": n}})

    def finished(self) -> None:
        """Always None: the trainer pods never end the group (the kubelet restarts one that exits)."""
        return None

    def close(self) -> None:
        """Nothing to stop: the StatefulSet keeps its replicas when the autoscaler stops."""

    def describe(self) -> str:
        """What this executor scales, for logs."""
        return f"StatefulSet {self.namespace}/{self.statefulset} (Kubernetes)"

    def _call(self, method: Callable[..., Any], *body: dict) -> Any:
        """`method(name, namespace, *body)`; RuntimeError naming the StatefulSet when the API refuses."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(self.statefulset, self.namespace, *body)
        except ApiException as error:
            why = ("not found: deploy it with `freshrec deploy`" if error.status == 404
                   else f"refused: HTTP {error.status} {error.reason}")
            raise RuntimeError(f"{self.describe()}: {why}") from None
        except HTTPError as error:
            host = self.api.api_client.configuration.host
            raise RuntimeError(f"{self.describe()}: cannot reach the API server {host} ({error})") from None


def _apps_api() -> Any:
    """An `AppsV1Api` with the in-cluster credentials, else the kubeconfig's; RuntimeError when
    neither can be loaded or the package is missing."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise RuntimeError("the Kubernetes executor needs the kubernetes package: "
                           "pip install 'freshrec[kubernetes]'") from None
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as in_cluster:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as kubeconfig:
            raise RuntimeError(f"no Kubernetes credentials: not in a pod ({in_cluster}) and no usable kubeconfig "
                               f"({kubeconfig})") from None
    return client.AppsV1Api(client.ApiClient(configuration))
