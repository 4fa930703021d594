"""`freshrec.autoscale.manifests`: every object is valid against the Kubernetes API schemas (strict: no
unknown field), and the trainer group, servers and autoscaler are wired as the deployment needs."""

from __future__ import annotations

import pytest
import yaml

from freshrec.autoscale.manifests import manifests, render
from freshrec.config import ConfigError, FreshrecConfig, load_config, parse_config

kubernetes_validate = pytest.importorskip("kubernetes_validate")

GROUP = {"training": {"offline_interval": None}}   # a worker group does not retrain offline yet
CPU = {**GROUP, "autoscale": {"name": "recs", "namespace": "ml", "min": 2, "max": 6}}
GPU = {**GROUP, "gpu": {"type": "A100", "count": 8, "autoscale": True}}   # the article's gpu block
# the oldest Kubernetes the `kubernetes>=29` client targets, and the newest whose schemas are installed
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name'].rsplit('-', 1)[1]}": o for o in objects}


def pod(objects: list[dict], key: str) -> dict:
    return by_kind(objects)[key]["spec"]["template"]["spec"]


@pytest.mark.parametrize("data", [CPU, GPU], ids=["cpu", "gpu"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_kubernetes(data: dict, version: str) -> None:
    objects = manifests(parse_config(data), "registry.example/freshrec:0.1")
    assert len(objects) == 10
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["namespace"] == parse_config(data).autoscale.namespace


def test_the_validator_catches_a_bad_object() -> None:
    """The check above can fail: an unknown field and a wrong type are refused."""
    service = by_kind(manifests(parse_config(CPU), "img"))["Service/server"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**service, "spec": {**service["spec"], "replica": 2}}, VERSIONS[0], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**service, "spec": {**service["spec"], "ports": [{"port": "eighty"}]}},
                                     VERSIONS[0], strict=True)


def test_trainers_are_an_elastic_torchrun_group_with_pod_0_hosting_the_rendezvous() -> None:
    objects = manifests(parse_config(CPU), "img")
    statefulset, service = by_kind(objects)["StatefulSet/trainer"], by_kind(objects)["Service/trainer"]
    container = pod(objects, "StatefulSet/trainer")["containers"][0]
    command = container["command"]
    assert command[0] == "torchrun" and "--nnodes=2:6" in command and "--nproc-per-node=1" in command
    assert "--rdzv-backend=c10d" in command and "--rdzv-id=recs" in command and "--max-restarts=3" in command
    assert "--rdzv-endpoint=recs-trainer-0.recs-trainer.ml.svc.cluster.local:29400" in command
    assert "--rdzv-conf=last_call_timeout=5" in command
    assert command[command.index("-m"):] == ["-m", "freshrec.cli", "run", "--config", "/etc/freshrec/freshrec.yaml",
                                             "--state", "/state", "--quiet"]
    assert {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"} in container["env"]
    assert statefulset["spec"]["replicas"] == 2 and statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert statefulset["spec"]["serviceName"] == "recs-trainer" == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["ports"][0]["port"] == 29400
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]
    assert "resources" not in container and "nodeSelector" not in pod(objects, "StatefulSet/trainer")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts["/state"]["readOnly"] and mounts["/etc/freshrec"]["readOnly"]


def test_gpu_pods_ask_for_their_gpus_on_nodes_of_the_class() -> None:
    objects = manifests(parse_config(GPU), "img")
    spec = pod(objects, "StatefulSet/trainer")
    assert spec["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert spec["nodeSelector"] == {"freshrec.io/device-class": "A100"}
    eight = pod(manifests(parse_config(GPU), "img", ranks_per_pod=8,
                          node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}), "StatefulSet/trainer")
    assert eight["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert "--nproc-per-node=8" in eight["containers"][0]["command"]
    assert eight["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    with pytest.raises(ConfigError, match=r"gpu.type: 'RTX 4090' is not a Kubernetes label value"):
        manifests(parse_config({**GPU, "gpu": {"type": "RTX 4090", "count": 1}}), "img")


def test_servers_follow_the_registry_read_only_are_ready_on_readyz_and_alive_on_healthz() -> None:
    objects = manifests(parse_config({**CPU, "serve": {"port": 8100}}), "img", servers=3)
    deployment, service = by_kind(objects)["Deployment/server"], by_kind(objects)["Service/server"]
    container = pod(objects, "Deployment/server")["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["command"] == ["freshrec", "serve", "--registry", "/state/registry", "--config",
                                    "/etc/freshrec/freshrec.yaml", "--host", "0.0.0.0", "--port", "8100"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8100}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8100}
    assert {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]}["/state"] is True
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8100}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_autoscaler_may_scale_the_trainers_and_nothing_else() -> None:
    objects = by_kind(manifests(parse_config(CPU), "img"))
    rules = objects["Role/autoscaler"]["rules"]
    assert {(r["resources"][0], tuple(r["verbs"])) for r in rules} == {
        ("statefulsets/scale", ("get", "patch", "update")), ("statefulsets", ("get",))}
    assert all(r["apiGroups"] == ["apps"] and r["resourceNames"] == ["recs-trainer"] for r in rules)
    binding = objects["RoleBinding/autoscaler"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "recs-autoscaler", "namespace": "ml"}]
    assert binding["roleRef"]["name"] == objects["Role/autoscaler"]["metadata"]["name"]
    spec = objects["Deployment/autoscaler"]["spec"]
    assert spec["replicas"] == 1 and spec["template"]["spec"]["serviceAccountName"] == "recs-autoscaler"
    assert spec["template"]["spec"]["containers"][0]["command"] == [
        "freshrec", "autoscale", "--config", "/etc/freshrec/freshrec.yaml", "--state", "/state",
        "--executor", "kubernetes"]
    components = {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in objects.values()}
    assert components == {None, "trainer", "server", "autoscaler"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/instance"] == "recs" for o in objects.values())


SASL = {**CPU, "source": {"kind": "kafka", "kafka": {
    "bootstrap": "broker:9092", "settings": {"sasl.username": "recs", "sasl.password": "s3cret"}}}}


@pytest.mark.parametrize("data", [CPU, GPU, SASL], ids=["cpu", "gpu", "sasl"])
def test_a_secret_holds_the_config_with_serving_off_and_its_secrets(data: dict, tmp_path) -> None:
    """The pods read the config from a Secret, passwords and all (a config whose secrets read
    `<hidden>` would deploy trainers that cannot log in to the brokers)."""
    config = parse_config(data)
    objects = manifests(config, "img")
    secret = objects[0]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == f"{config.autoscale.name}-config"
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    path = tmp_path / "freshrec.yaml"
    path.write_text(secret["stringData"]["freshrec.yaml"])
    loaded = load_config(path)
    assert loaded.serve.enabled is False and config.serve.enabled is True
    assert loaded == config.model_copy(update={"serve": config.serve.model_copy(update={"enabled": False})})
    for key in ("trainer", "server", "autoscaler"):
        assert {"name": "config", "secret": {"secretName": f"{config.autoscale.name}-config"}} \
            in pod(objects, f"{'StatefulSet' if key == 'trainer' else 'Deployment'}/{key}")["volumes"]


def test_rendered_yaml_parses_back_into_the_objects() -> None:
    objects = manifests(parse_config(GPU), "img")
    text = render(objects)
    assert list(yaml.safe_load_all(text)) == objects
    assert "freshrec.yaml: |" in text and "&id" not in text   # the config as a block; no YAML aliases


def test_a_config_the_group_or_kubernetes_refuses_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="autoscale.name"):
        parse_config({"autoscale": {"name": "Recs_1"}})
    with pytest.raises(ConfigError, match=r"autoscale.name: '9recs' must start with a letter"):
        manifests(parse_config({**GROUP, "autoscale": {"name": "9recs"}}), "img")
    with pytest.raises(ConfigError, match=r"autoscale.namespace: 'ML team'"):
        manifests(parse_config({**GROUP, "autoscale": {"namespace": "ML team"}}), "img")
    with pytest.raises(ConfigError, match="training.offline_interval: a worker group does not retrain offline"):
        manifests(FreshrecConfig(), "img")
    with pytest.raises(ConfigError, match="autoscale.min: 5 is above autoscale.max 4"):
        manifests(FreshrecConfig.model_validate({**GROUP, "autoscale": {"min": 5}}), "img")


@pytest.mark.parametrize(("argument", "message"), [
    ({"storage": "50 GB"}, "storage '50 GB': expected a quantity like 50Gi"),
    ({"servers": -1}, "servers -1: expected a number >= 0"),
    ({"ranks_per_pod": 0}, "ranks_per_pod 0: expected a number >= 1"),
])
def test_bad_arguments_are_named(argument: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        manifests(parse_config(CPU), "img", **argument)
