"""The analytics alerts (deploy/analytics/monitoring/prometheusrule.yaml): the component
renders them, promtool accepts them and their unit tests pass, the threshold patch of
deploy/README.md changes what fires, they read only metrics the processes export, and
every alert has its runbook."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.deploy.crd_schemas import SCHEMAS
from tests.deploy.manifests import DEPLOY, KUSTOMIZATIONS, Obj, find, render
from tests.deploy.promql import metric_names
from tests.deploy.test_rules import README, _anchors, _promtool

UNIT_TESTS = Path(__file__).with_name("promtool") / "analytics.test.yaml"
RULES_FILE = "analytics-rules.yaml"  # the name analytics.test.yaml loads
COMPONENT = DEPLOY / "analytics" / "monitoring"
RULE_NAME = "relay-analytics"
# Series Prometheus adds to every target itself, not on any /metrics page.
PROMETHEUS_SERIES = {"up"}
THRESHOLDS = {
    "relay_analytics:turn_response_p90_max_seconds": 3,
    "relay_analytics:turn_response_min_turns": 20,
    "relay_analytics:unanswered_min_sessions": 5,
    "relay_analytics:behind_max_seconds": 120,
}


def _analytics_rule(objs: list[Obj]) -> Obj:
    return find(objs, "PrometheusRule", RULE_NAME)


def _rules(rule: Obj) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _rules_dir(rule: Obj, directory: Path) -> Path:
    (directory / RULES_FILE).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return directory


def _kustomization(directory: Path, **fields: Any) -> Path:
    """A kustomization in `directory` (outside the repository: kustomize wants the paths
    it loads relative)."""
    body: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    for key, value in fields.items():
        paths = key in ("resources", "components")
        body[key] = [os.path.relpath(path, directory) for path in value] if paths else value
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return directory


def test_the_component_renders_the_rule_beside_its_service_monitor(
    kubectl: str, renders: dict[str, list[Obj]], tmp_path: Path
) -> None:
    alone = render(kubectl, _kustomization(tmp_path, components=[COMPONENT]))
    assert sorted(obj["kind"] for obj in alone) == ["PrometheusRule", "ServiceMonitor"]
    for obj in alone:
        jsonschema.validate(obj, SCHEMAS[obj["kind"]])
    production = _analytics_rule(renders["production"])
    assert production["metadata"]["namespace"] == "relay"
    assert production["spec"] == _analytics_rule(alone)["spec"]
    # relay's own rules are still there, apart.
    assert find(renders["production"], "PrometheusRule", "relay")["spec"] != production["spec"]


def test_the_thresholds_come_first_with_the_documented_defaults(
    renders: dict[str, list[Obj]],
) -> None:
    rules = _rules(_analytics_rule(renders["production"]))
    first = {r["record"]: r["expr"] for r in rules[: len(THRESHOLDS)]}
    assert first == {name: f"vector({value})" for name, value in THRESHOLDS.items()}
    readme = README.read_text()
    for name in THRESHOLDS:
        assert f"`{name}`" in readme, f"{name} is not in deploy/README.md"


def test_promtool_checks_the_analytics_rules(
    promtool: str, renders: dict[str, list[Obj]], tmp_path: Path
) -> None:
    directory = _rules_dir(_analytics_rule(renders["production"]), tmp_path)
    done = _promtool(promtool, "check", "rules", RULES_FILE, cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_analytics_alerts_pass_their_promtool_unit_tests(
    promtool: str, renders: dict[str, list[Obj]], tmp_path: Path
) -> None:
    directory = _rules_dir(_analytics_rule(renders["production"]), tmp_path)
    done = _promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr


def _readme_patch() -> list[dict[str, Any]]:
    """The `patches:` of deploy/README.md's example that changes an analytics threshold."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if f"name: {RULE_NAME}" in b and "kind: PrometheusRule" in b]
    patches: list[dict[str, Any]] = yaml.safe_load(block)["patches"]
    return patches


def test_the_readme_threshold_patch_changes_what_fires(
    kubectl: str, promtool: str, tmp_path: Path
) -> None:
    # The README raises the reply latency threshold to 5 s: the unit test's 4.6 s p90 no
    # longer fires, so promtool fails that test (and only that alert's).
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    _kustomization(overlay, resources=[KUSTOMIZATIONS["production"]], patches=_readme_patch())
    rule = _analytics_rule(render(kubectl, overlay))
    assert _rules(rule)[0]["expr"] == "vector(5)"
    done = _promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=_rules_dir(rule, tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "RelayAnalyticsTurnLatencyHigh" in output, output
    failed = set(re.findall(r"alertname: (\w+)", output))
    assert failed == {"RelayAnalyticsTurnLatencyHigh"}, output


def test_every_analytics_alert_has_a_unit_test(renders: dict[str, list[Obj]]) -> None:
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    alerts = {r["alert"] for r in _rules(_analytics_rule(renders["production"])) if "alert" in r}
    assert len(alerts) == 6 and alerts <= tested, f"alerts without a unit test: {alerts - tested}"


def test_the_analytics_rules_read_only_exported_metrics(
    renders: dict[str, list[Obj]], analytics_exported: set[str], exported: set[str]
) -> None:
    # The conversation metrics come from `relay analytics`' own scrape; the session ends
    # (relay_events_received_total) from relay's; `up` from Prometheus.
    rules = _rules(_analytics_rule(renders["production"]))
    recorded = {r["record"] for r in rules if "record" in r}
    read = set().union(*(metric_names(r["expr"]) for r in rules))
    assert read - recorded - PROMETHEUS_SERIES - analytics_exported - exported == set()
    assert "relay_events_received_total" in read & exported
    analytics_own = {
        "relay_turn_response_seconds_bucket",
        "relay_turn_response_seconds_count",
        "relay_sessions_total",
        "relay_speaking_seconds_total",
        "relay_analytics_behind_seconds",
    }
    assert analytics_own <= read & analytics_exported


def test_the_down_alert_names_the_job_prometheus_gives_the_analytics(
    renders: dict[str, list[Obj]],
) -> None:
    # The Prometheus Operator names a ServiceMonitor's job after the Service (no jobLabel).
    objs = renders["production"]
    monitor = find(objs, "ServiceMonitor", "relay-analytics")
    assert "jobLabel" not in monitor["spec"]
    service = find(objs, "Service", "relay-analytics")
    (down,) = [r for r in _rules(_analytics_rule(objs)) if r.get("alert") == "RelayAnalyticsDown"]
    jobs = set(re.findall(r'up\{job="([^"]+)"\}', down["expr"]))
    assert jobs == {service["metadata"]["name"]}


def test_every_analytics_alert_has_a_runbook_section(renders: dict[str, list[Obj]]) -> None:
    anchors = _anchors(README.read_text())
    for rule in _rules(_analytics_rule(renders["production"])):
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "deploy/README.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]
