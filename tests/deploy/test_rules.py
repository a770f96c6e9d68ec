"""The alert and recording rules: promtool accepts them, their unit tests pass, they read
only metrics a running relay exports, and every alert has its runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, Obj, find
from tests.deploy.promql import metric_names, summed_deployment_wide

UNIT_TESTS = Path(__file__).with_name("promtool") / "alerts.test.yaml"
README = DEPLOY / "README.md"
PROMTOOL_TIMEOUT_S = 60


def _groups(renders: dict[str, list[Obj]]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = find(renders["production"], "PrometheusRule", "relay")["spec"][
        "groups"
    ]
    return groups


def _rules(renders: dict[str, list[Obj]]) -> list[dict[str, Any]]:
    return [rule for group in _groups(renders) for rule in group["rules"]]


@pytest.fixture
def rules_dir(renders: dict[str, list[Obj]], tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, with the unit tests beside it."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": _groups(renders)}))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def _promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )


def test_promtool_checks_the_rules(promtool: str, rules_dir: Path) -> None:
    done = _promtool(promtool, "check", "rules", "rules.yaml", cwd=rules_dir)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_pass_their_promtool_unit_tests(promtool: str, rules_dir: Path) -> None:
    done = _promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=rules_dir)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_fails_a_test_whose_alert_does_not_fire(promtool: str, rules_dir: Path) -> None:
    broken = UNIT_TESTS.read_text().replace("values: '100000x5'", "values: '900000x5'", 1)
    (rules_dir / "broken.test.yaml").write_text(broken)
    done = _promtool(promtool, "test", "rules", "broken.test.yaml", cwd=rules_dir)
    assert done.returncode != 0 and "RelayBufferFilling" in done.stdout + done.stderr


def test_every_alert_has_a_unit_test(renders: dict[str, list[Obj]]) -> None:
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    alerts = {rule["alert"] for rule in _rules(renders) if "alert" in rule}
    assert alerts and alerts <= tested, f"alerts without a unit test: {alerts - tested}"


def test_the_rules_read_only_metrics_relay_exports(
    renders: dict[str, list[Obj]], exported: set[str]
) -> None:
    recorded = {rule["record"] for rule in _rules(renders) if "record" in rule}
    read = set().union(*(metric_names(rule["expr"]) for rule in _rules(renders)))
    assert read, "no metric names found in the rules"
    assert read - recorded - exported == set()


def test_the_rules_never_sum_a_deployment_wide_gauge(renders: dict[str, list[Obj]]) -> None:
    # Every worker (with --workers N) and every replica reports them alike.
    summed = {
        rule.get("alert", rule.get("record")): summed_deployment_wide(rule["expr"])
        for rule in _rules(renders)
    }
    assert {name: found for name, found in summed.items() if found} == {}


def test_the_deployment_wide_check_sees_a_sum() -> None:
    assert summed_deployment_wide("sum by (pod) (relay_rooms_coverage_ratio) < 1") == {
        "relay_rooms_coverage_ratio"
    }
    assert summed_deployment_wide(
        "x / clamp_min(relay_deployment_rooms_wanted, 1) + min(relay_rooms_coverage_ratio)"
    ) == {"relay_deployment_rooms_wanted"}
    assert summed_deployment_wide('min by (ns) (relay_rooms_coverage_ratio{pod="a"}) < 1') == set()


def test_the_name_check_sees_a_misspelt_metric(exported: set[str]) -> None:
    expr = 'sum by (pod) (rate(relay_events_recieved_total{kind="x"}[5m])) > 0'
    assert metric_names(expr) - exported == {"relay_events_recieved_total"}


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_has_a_runbook_section(renders: dict[str, list[Obj]]) -> None:
    anchors = _anchors(README.read_text())
    for rule in _rules(renders):
        if "alert" not in rule:
            continue
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "deploy/README.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
