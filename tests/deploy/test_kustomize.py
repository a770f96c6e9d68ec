"""Every kustomization renders, validates against the Kubernetes schemas offline, and
says what deploy/README.md and the program expect."""

from __future__ import annotations

import base64
import copy
import re
import tomllib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from relay.config import Settings
from tests.deploy.crd_schemas import SCHEMAS
from tests.deploy.manifests import (
    KUBERNETES_VERSIONS,
    PLACEHOLDER_PREFIX,
    ROOT,
    Obj,
    find,
    find_all,
    matches,
    relay_container,
    relay_deployment,
    secret_template,
)
from tests.deploy.promql import metric_names

OVERLAYS = ("dev", "production")
_PROBES = ("startup", "liveness", "readiness")


def _validate(obj: Obj, version: str) -> None:
    if obj["kind"] in SCHEMAS:
        jsonschema.validate(obj, SCHEMAS[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_rendered_object_validates(
    renders: dict[str, list[Obj]], name: str, version: str
) -> None:
    objs = renders[name]
    assert objs, f"{name} renders nothing"
    for obj in objs:
        _validate(obj, version)


def test_the_secret_template_validates_and_holds_placeholders_only() -> None:
    secret = secret_template()
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    values = secret["stringData"]
    assert values and all(v.startswith(PLACEHOLDER_PREFIX) for v in values.values()), values
    # Every key is a relay setting that is a secret.
    fields = Settings.model_fields
    for key in values:
        section, _, name = key.removeprefix("RELAY_").lower().partition("__")
        model = fields[section].annotation
        assert model is not None and name in model.model_fields, f"{key} is no relay setting"


def test_the_validation_catches_a_misspelt_field(renders: dict[str, list[Obj]]) -> None:
    deployment = copy.deepcopy(relay_deployment(renders["production"]))
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFilesytem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    rule = copy.deepcopy(find(renders["production"], "PrometheusRule", "relay"))
    rule["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, SCHEMAS["PrometheusRule"])


def test_the_config_map_is_config_relay_toml(renders: dict[str, list[Obj]]) -> None:
    for name in OVERLAYS:
        config = find(renders[name], "ConfigMap", "relay-config")
        assert config["data"] == {"relay.toml": (ROOT / "config" / "relay.toml").read_text()}


# relay's Deployments and their container: the workers, and `relay analytics` where an
# overlay includes deploy/analytics.
_LOCKED_DOWN = {"relay": "relay", "relay-analytics": "analytics"}


def _relay_pods(objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    pods = []
    for deployment in find_all(objs, "Deployment"):
        name = deployment["metadata"]["name"]
        if name in _LOCKED_DOWN:
            pod = deployment["spec"]["template"]["spec"]
            (container,) = [c for c in pod["containers"] if c["name"] == _LOCKED_DOWN[name]]
            pods.append((pod, container))
    return pods


def test_the_pod_is_locked_down(renders: dict[str, list[Obj]]) -> None:
    assert len(_relay_pods(renders["production"])) == 2, "production runs the analytics"
    checked = [(name, *pair) for name in OVERLAYS for pair in _relay_pods(renders[name])]
    for name, pod, container in checked:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        account = find(renders[name], "ServiceAccount", pod["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        # production's relay journals to a volume of its own (RELAY_JOURNAL__PATH)
        journal = name == "production" and container["name"] == "relay"
        assert writable == ({"/tmp", "/var/lib/relay/journal"} if journal else {"/tmp"})


def test_the_probes_point_at_relay_endpoints(renders: dict[str, list[Obj]]) -> None:
    container = relay_container(renders["production"])
    paths = {kind: container[f"{kind}Probe"]["httpGet"]["path"] for kind in _PROBES}
    assert paths == {"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
    for kind in _PROBES:
        assert container[f"{kind}Probe"]["httpGet"]["port"] == "http"


def _effective_settings(objs: list[Obj], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """relay's settings as the pod gets them: relay.toml, then the Deployment's env."""
    container = relay_container(objs)
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env.update(find(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({item["name"]: item["value"] for item in container["env"]})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    toml = tomllib.loads(find(objs, "ConfigMap", "relay-config")["data"]["relay.toml"])
    return Settings(**toml)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_grace_period_covers_the_pause_and_relays_drain(
    renders: dict[str, list[Obj]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = renders[name]
    settings = _effective_settings(objs, monkeypatch)
    pod = relay_deployment(objs)["spec"]["template"]["spec"]
    pause_s = relay_container(objs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause_s >= 5, "endpoints need a few seconds to drop the pod"
    assert pod["terminationGracePeriodSeconds"] > pause_s + settings.shutdown_grace_s
    # The pod listens where the manifest's port, probes and Service expect.
    assert settings.http.port == relay_container(objs)["ports"][0]["containerPort"]
    assert settings.http.host == "0.0.0.0"


def _pod_labels(objs: list[Obj], name: str) -> dict[str, str]:
    labels: dict[str, str] = find(objs, "Deployment", name)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


@pytest.mark.parametrize("name", OVERLAYS)
def test_selectors_pick_the_relay_pods_and_nothing_else(
    renders: dict[str, list[Obj]], name: str
) -> None:
    objs = renders[name]
    relay = _pod_labels(objs, "relay")
    deployment = relay_deployment(objs)
    assert matches(deployment["spec"]["selector"]["matchLabels"], relay)
    service = find(objs, "Service", "relay")
    assert service["spec"]["selector"] and matches(service["spec"]["selector"], relay)
    assert matches(find(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], relay)
    policy = find(objs, "NetworkPolicy", "relay")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], relay)
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            if "podSelector" in peer:  # a peer is never relay itself
                assert not matches(peer["podSelector"]["matchLabels"], relay), peer
    for constraint in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert matches(constraint["labelSelector"]["matchLabels"], relay)


def _egress_ports(rule: Obj) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


def test_the_dev_network_policy_lets_relay_reach_the_dev_redis(
    renders: dict[str, list[Obj]],
) -> None:
    objs = renders["dev"]
    redis_pod = _pod_labels(objs, "relay-redis")
    policy = find(objs, "NetworkPolicy", "relay")
    to_redis = [
        rule
        for rule in policy["spec"]["egress"]
        if ("TCP", 6379) in _egress_ports(rule)
        and any(
            matches(p.get("podSelector", {}).get("matchLabels", {}), redis_pod) for p in rule["to"]
        )
    ]
    assert to_redis, "no egress rule reaches the dev Redis pod"
    secret = find(objs, "Secret", "relay-credentials")
    service = find(objs, "Service", "relay-redis")
    assert matches(service["spec"]["selector"], redis_pod)
    assert service["metadata"]["name"] in _decoded(secret)["RELAY_REDIS__URL"]


def _decoded(secret: Obj) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.mark.parametrize("name", OVERLAYS)
def test_egress_is_dns_redis_and_livekit_only(renders: dict[str, list[Obj]], name: str) -> None:
    policy = find(renders[name], "NetworkPolicy", "relay")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    rules = policy["spec"]["egress"]
    assert len(rules) == 3 and all(rule.get("to") for rule in rules), rules
    dns, redis, livekit = (_egress_ports(rule) for rule in rules)
    assert dns == {("UDP", 53), ("TCP", 53)}
    assert redis == {("TCP", 6379)}
    assert ("TCP", 443) in livekit and ("UDP", 50000) in livekit
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_dev_runs_one_replica_and_production_three_or_more(
    renders: dict[str, list[Obj]],
) -> None:
    assert relay_deployment(renders["dev"])["spec"]["replicas"] == 1
    production = renders["production"]
    assert "replicas" not in relay_deployment(production)["spec"], "the HPA owns replicas"
    hpa = find(production, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "relay",
    }
    assert hpa["spec"]["minReplicas"] == 3
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert relay_container(production)["resources"]["requests"]["cpu"], "CPU % needs a request"
    assert find_all(renders["dev"], "HorizontalPodAutoscaler") == []


def _adapter_rule() -> dict[str, Any]:
    """deploy/README.md's Prometheus adapter rule for hpa-rooms.yaml (its externalRules)."""
    readme = (ROOT / "deploy" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if "externalRules:" in b]
    (rule,) = yaml.safe_load(block)["externalRules"]
    assert isinstance(rule, dict)
    return rule


def test_the_optional_rooms_hpa_scales_on_the_deployments_wanted_rooms(
    renders: dict[str, list[Obj]], exported: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hpa: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "overlays" / "production" / "hpa-rooms.yaml").read_text()
    )
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)
    # The shared wanted set (every replica reports it), divided by the replicas: an
    # External metric with an AverageValue target. A per-process count (leases held)
    # never shows the rooms nobody holds.
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    name = metric["external"]["metric"]["name"]
    assert name == "relay_deployment_rooms_wanted" and name in exported
    assert metric["external"]["target"]["type"] == "AverageValue"
    # The adapter serves that name from that series, one value per namespace: the
    # maximum, since every replica reports the same set.
    rule = _adapter_rule()
    assert rule["name"]["as"] == name
    assert metric_names(rule["seriesQuery"]) == {name}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    assert rule["metricsQuery"].startswith("max(<<.Series>>{<<.LabelMatchers>>})")
    # The target: 80 % of what a production pod holds (workers x max_rooms).
    settings = _effective_settings(renders["production"], monkeypatch)
    per_pod = settings.workers * settings.max_rooms
    assert float(metric["external"]["target"]["averageValue"]) == 0.8 * per_pod


def test_production_scrapes_the_service_port(renders: dict[str, list[Obj]]) -> None:
    objs = renders["production"]
    monitor = find(objs, "ServiceMonitor", "relay")
    service = find(objs, "Service", "relay")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    dashboard = find(objs, "ConfigMap", "relay-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_secret_template_is_not_applied_by_any_kustomization(
    renders: dict[str, list[Obj]],
) -> None:
    # `kubectl apply -k` must never overwrite the real credentials with placeholders.
    for objs in renders.values():
        for secret in find_all(objs, "Secret"):
            assert PLACEHOLDER_PREFIX not in str(secret)
    assert find_all(renders["production"], "Secret") == []


def test_the_optional_public_ingress_exposes_only_ingest_and_the_webhook(
    renders: dict[str, list[Obj]],
) -> None:
    ingress: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "overlays" / "production" / "ingress-public.yaml").read_text()
    )
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(ingress, version, strict=True)
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {p["path"] for p in paths} == {"/v1/ingest", "/v1/forwarder.js", "/v1/livekit/webhook"}
    service = find(renders["production"], "Service", "relay")
    (port,) = service["spec"]["ports"]
    for path in paths:
        assert path["pathType"] == "Exact", path
        assert path["backend"]["service"] == {"name": "relay", "port": {"name": port["name"]}}


def test_the_analytics_reach_dns_and_redis_only_and_serve_only_metrics(
    renders: dict[str, list[Obj]],
) -> None:
    objs = renders["production"]
    policy = find(objs, "NetworkPolicy", "relay-analytics")
    assert matches(
        policy["spec"]["podSelector"]["matchLabels"], _pod_labels(objs, "relay-analytics")
    )
    assert not matches(policy["spec"]["podSelector"]["matchLabels"], _pod_labels(objs, "relay"))
    dns, redis = (_egress_ports(rule) for rule in policy["spec"]["egress"])
    assert dns == {("UDP", 53), ("TCP", 53)} and redis == {("TCP", 6379)}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    service = find(objs, "Service", "relay-analytics")
    monitor = find(objs, "ServiceMonitor", "relay-analytics")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert matches(service["spec"]["selector"], _pod_labels(objs, "relay-analytics"))
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
