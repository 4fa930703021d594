"""The Kubernetes objects of a freshrec deployment (`freshrec deploy`), plain dicts named `<name>-...`
after `autoscale.name`, in `autoscale.namespace`:

- Secret `<name>-config`: `freshrec.yaml`, the group's config (serve.enabled false), at /etc/freshrec; a
  Secret, not a ConfigMap, as the file carries the config's secrets (a librdkafka `sasl.password`),
  which the pods must read and which a ConfigMap shows to whoever may read ConfigMaps;
- PersistentVolumeClaim `<name>-state` (ReadWriteMany): the state every rank and server shares, at /state;
- headless Service + StatefulSet `<name>-trainer`: one torchrun agent per pod, `--nnodes=MIN:MAX` from
  autoscale.min/max, `ranks_per_pod` ranks each (one per GPU); the c10d rendezvous lives on pod 0, which
  a scale-down never removes (a StatefulSet removes the highest ordinal first);
- Deployment + Service `<name>-server`: `freshrec serve` following /state/registry (mounted read-only);
- ServiceAccount, Role, RoleBinding, Deployment `<name>-autoscaler`: `freshrec autoscale --executor
  kubernetes`, allowed to read and scale the trainer StatefulSet and nothing else.

GPU pods (gpu.count >= 1) ask for `ranks_per_pod` `nvidia.com/gpu` and, as GPU node labels differ between
clusters (`nvidia.com/gpu.product` holds names like NVIDIA-A100-SXM4-80GB), are placed by `node_selector`:
by default `{"freshrec.io/device-class": gpu.type}`, a label to put on your GPU nodes.

>>> from freshrec.config import FreshrecConfig
>>> objects = manifests(FreshrecConfig.model_validate({"training": {"offline_interval": None}}), "freshrec:0.1")
>>> print(*(o["kind"] for o in objects))
Secret PersistentVolumeClaim Service StatefulSet Deployment Service ServiceAccount Role RoleBinding Deployment
>>> objects[3]["spec"]["template"]["spec"]["containers"][0]["command"][:3]
['torchrun', '--nnodes=1:4', '--nproc-per-node=1']
"""

from __future__ import annotations

import hashlib
import re

import yaml

from freshrec.config import ConfigError, FreshrecConfig, show_config

__all__ = ["CONFIG_FILE", "RENDEZVOUS_PORT", "STATE_DIR", "manifests", "render"]

RENDEZVOUS_PORT = 29400
CONFIG_FILE, STATE_DIR = "/etc/freshrec/freshrec.yaml", "/state"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")


def manifests(config: FreshrecConfig, image: str, *, servers: int = 2, storage: str = "50Gi", ranks_per_pod: int = 1,
              node_selector: dict[str, str] | None = None, cluster_domain: str = "cluster.local") -> list[dict]:
    """The objects that run `config` from `image` (see the module docstring): `servers` server pods,
    a state volume of `storage`; `cluster_domain` completes pod 0's DNS name, the rendezvous endpoint
    (torchrun's agent on pod 0 hosts it when the name is its own FQDN). `ConfigError` for a config a
    worker group cannot run or whose names Kubernetes refuses, ValueError naming a bad argument."""
    gpus = config.gpu.count >= 1
    _check(config, image, servers, storage, ranks_per_pod, by_gpu_type=gpus and node_selector is None)
    if node_selector is None and gpus:
        node_selector = {"freshrec.io/device-class": config.gpu.type}
    group = config.model_copy(update={"serve": config.serve.model_copy(update={"enabled": False})})
    name, namespace, text = config.autoscale.name, config.autoscale.namespace, show_config(group, secrets=True)
    checksum = {"freshrec.io/config-sha256": hashlib.sha256(text.encode()).hexdigest()}

    def meta(suffix: str, component: str | None = None) -> dict:
        labels = {"app.kubernetes.io/name": "freshrec", "app.kubernetes.io/instance": name}
        labels.update({"app.kubernetes.io/component": component} if component else {})
        return {"name": f"{name}-{suffix}", "namespace": namespace, "labels": labels}

    def workload(kind: str, component: str, replicas: int, pod: dict, **spec: object) -> dict:
        labels = meta(component, component)["labels"]
        template = {"metadata": {"labels": labels, "annotations": checksum}, "spec": pod}
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta(component, component),
                "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, **spec, "template": template}}

    def volumes(state_read_only: bool) -> tuple[list[dict], list[dict]]:
        return ([{"name": "config", "secret": {"secretName": f"{name}-config"}},
                 {"name": "state", "persistentVolumeClaim": {"claimName": f"{name}-state"}}],
                [{"name": "config", "mountPath": CONFIG_FILE.rsplit("/", 1)[0], "readOnly": True},
                 {"name": "state", "mountPath": STATE_DIR, "readOnly": state_read_only}])

    endpoint = f"{name}-trainer-0.{name}-trainer.{namespace}.svc.{cluster_domain}:{RENDEZVOUS_PORT}"
    writable = volumes(False)
    trainer = _trainer_pod(config, image, endpoint, ranks_per_pod, node_selector, gpus, writable)
    server = _server_pod(config, image, volumes(True))
    autoscaler = {"serviceAccountName": f"{name}-autoscaler", "volumes": writable[0], "containers": [{
        "name": "autoscaler", "image": image, "volumeMounts": writable[1],
        "command": ["freshrec", "autoscale", "--config", CONFIG_FILE, "--state", STATE_DIR,
                    "--executor", "kubernetes"]}]}
    account = {"kind": "ServiceAccount", "name": f"{name}-autoscaler", "namespace": namespace}
    scaled = {"apiGroups": ["apps"], "resourceNames": [f"{name}-trainer"]}
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("config"), "type": "Opaque",
         "stringData": {"freshrec.yaml": text}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("state"),
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": storage}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("trainer", "trainer"),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                  "selector": meta("trainer", "trainer")["labels"],
                  "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}]}},
        workload("StatefulSet", "trainer", config.autoscale.min, trainer, serviceName=f"{name}-trainer",
                 podManagementPolicy="Parallel"),
        workload("Deployment", "server", servers, server),
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("server", "server"),
         "spec": {"type": "ClusterIP", "selector": meta("server", "server")["labels"],
                  "ports": [{"name": "http", "port": 80, "targetPort": config.serve.port}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("autoscaler", "autoscaler")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("autoscaler", "autoscaler"),
         "rules": [{**scaled, "resources": ["statefulsets/scale"], "verbs": ["get", "patch", "update"]},
                   {**scaled, "resources": ["statefulsets"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": meta("autoscaler", "autoscaler"), "subjects": [account],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-autoscaler"}},
        workload("Deployment", "autoscaler", 1, autoscaler, strategy={"type": "Recreate"}),
    ]


def render(objects: list[dict]) -> str:
    """`objects` as one multi-document YAML stream (`kubectl apply -f`), keys in their order,
    multi-line strings (the config) as literal blocks.

    >>> print(render([{"kind": "ConfigMap", "data": {"a.yaml": "x: 1\\n"}}, {"kind": "Service"}]), end="")
    kind: ConfigMap
    data:
      a.yaml: |
        x: 1
    ---
    kind: Service
    """
    return yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, multi-line strings as literal blocks, shared values written out (no &id001)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def _trainer_pod(config: FreshrecConfig, image: str, endpoint: str, ranks_per_pod: int,
                 node_selector: dict[str, str] | None, gpus: bool, volumes: tuple[list[dict], list[dict]]) -> dict:
    """The pod of one torchrun agent: `ranks_per_pod` ranks of the elastic group."""
    a, t = config.autoscale, config.training
    command = ["torchrun", f"--nnodes={a.min}:{a.max}", f"--nproc-per-node={ranks_per_pod}", "--rdzv-backend=c10d",
               f"--rdzv-endpoint={endpoint}", f"--rdzv-id={a.name}", f"--max-restarts={t.max_restarts}",
               "--rdzv-conf=last_call_timeout=5",
               "-m", "freshrec.cli", "run", "--config", CONFIG_FILE, "--state", STATE_DIR, "--quiet"]
    container = {"name": "trainer", "image": image, "command": command,
                 "env": [{"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"}],
                 "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}],
                 "volumeMounts": [*volumes[1], {"name": "shm", "mountPath": "/dev/shm"}]}
    pod = {"automountServiceAccountToken": False, "containers": [container],
           "volumes": [*volumes[0], {"name": "shm", "emptyDir": {"medium": "Memory"}}]}   # NCCL, gloo: > 64Mi
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": ranks_per_pod}}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    return pod


def _probe(path: str, port: int, **timing: int) -> dict:
    """An HTTP GET probe of the server's `path`."""
    return {"httpGet": {"path": path, "port": port}, "timeoutSeconds": 5, **timing}


def _server_pod(config: FreshrecConfig, image: str, volumes: tuple[list[dict], list[dict]]) -> dict:
    """A server: waits for the trainers' registry, then serves it on serve.port; ready (/readyz) once it
    has loaded a model, alive (/healthz) while it answers."""
    port, registry = config.serve.port, f"{STATE_DIR}/registry"
    wait = {"name": "wait-for-registry", "image": image, "volumeMounts": volumes[1],
            "command": ["sh", "-c", f"until [ -d {registry} ]; do echo waiting for {registry}; sleep 5; done"]}
    server = {"name": "server", "image": image, "volumeMounts": volumes[1],
              "command": ["freshrec", "serve", "--registry", registry, "--config", CONFIG_FILE,
                          "--host", "0.0.0.0", "--port", str(port)],
              "ports": [{"name": "http", "containerPort": port}],
              "readinessProbe": _probe("/readyz", port, periodSeconds=5),   # no traffic before a model is loaded
              "livenessProbe": _probe("/healthz", port, periodSeconds=10, failureThreshold=6)}   # numba compiles
    return {"automountServiceAccountToken": False, "initContainers": [wait], "containers": [server],
            "volumes": volumes[0]}


def _check(config: FreshrecConfig, image: str, servers: int, storage: str, ranks_per_pod: int,
           by_gpu_type: bool) -> None:
    """ConfigError for what the group or Kubernetes refuses in `config` (`by_gpu_type`: gpu.type is a
    node label value); ValueError for a bad argument."""
    a = config.autoscale
    lines = list(dict.fromkeys(config.problems() + config.group_problems()))
    if not a.name[0].isalpha():
        lines.append(f"autoscale.name: {a.name!r} must start with a letter (it names Kubernetes Services)")
    if not _DNS_LABEL.fullmatch(a.namespace):
        lines.append(f"autoscale.namespace: {a.namespace!r} is not a Kubernetes namespace (lower-case letters, "
                     "digits and '-', at most 63)")
    if by_gpu_type and not _LABEL_VALUE.fullmatch(config.gpu.type):
        lines.append(f"gpu.type: {config.gpu.type!r} is not a Kubernetes label value (letters, digits, '-', '_', "
                     "'.', at most 63), which the trainers' default node selector needs: pass a node selector")
    if lines:
        raise ConfigError(lines)
    for bad, message in [(not image.strip(), f"image {image!r}: expected a container image"),
                         (servers < 0, f"servers {servers}: expected a number >= 0"),
                         (not _QUANTITY.fullmatch(storage), f"storage {storage!r}: expected a quantity like 50Gi"),
                         (ranks_per_pod < 1, f"ranks_per_pod {ranks_per_pod}: expected a number >= 1")]:
        if bad:
            raise ValueError(message)
