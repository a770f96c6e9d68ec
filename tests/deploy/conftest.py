"""Fixtures of the deploy tests: the renders, promtool, and one run of the manifest."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.manifest_run import (
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    ManifestRun,
    run_analytics_manifest,
    run_manifest,
    run_supervised_manifest,
)
from tests.deploy.manifests import (
    KUSTOMIZATIONS,
    ROOT,
    Obj,
    kubectl_path,
    render,
    secret_template,
    skip_or_fail,
)
from tests.fixtures.netns import NetNS, start_devserver, start_redis

INSTALL_PROMTOOL = ROOT / "scripts" / "install-promtool.sh"
INSTALL_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def kubectl() -> str:
    return kubectl_path()


@pytest.fixture(scope="session")
def renders(kubectl: str) -> dict[str, list[Obj]]:
    """Every kustomization rendered once: {"base"|"dev"|"production": objects}."""
    return {name: render(kubectl, path) for name, path in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, installed from Debian's prometheus package the first time."""
    path = shutil.which("promtool")
    if path is None:
        done = subprocess.run(
            ["bash", str(INSTALL_PROMTOOL)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        path = shutil.which("promtool")
        if path is None:
            skip_or_fail(f"promtool is missing and could not be installed: {done.stderr[-500:]}")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def manifest_run(e2e_ns: NetNS, renders: dict[str, list[Obj]]) -> Iterator[ManifestRun]:
    """The production Deployment's container run once against a Redis and the dev server
    (with the test's LiveKit key and secret) in the namespace."""
    redis = start_redis(e2e_ns)
    server = start_devserver(e2e_ns, api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET)
    workdir = Path(tempfile.mkdtemp(prefix="relay-deploy-", dir="/tmp"))
    urls = (server.ws_url, redis.url)
    objs = renders["production"]
    try:
        run = run_manifest(e2e_ns, objs, secret_template(), urls, workdir)
        run.analytics = run_analytics_manifest(e2e_ns, objs, secret_template(), redis.url, workdir)
        run.supervised = run_supervised_manifest(e2e_ns, objs, secret_template(), urls, workdir)
        yield run
    finally:
        server.proc.stop()
        redis.proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def exported(manifest_run: ManifestRun) -> set[str]:
    """Every metric name the running relay's /metrics page shows: single-process (the
    Deployment as shipped), and with RELAY_WORKERS=2 (the supervisor's own series)."""
    from tests.deploy.promql import exported_names

    assert manifest_run.metrics_text, f"no /metrics scrape: {manifest_run.log()}"
    supervised = manifest_run.supervised
    assert supervised is not None and supervised.metrics_text, (
        f"no /metrics scrape with every worker up: {supervised.log() if supervised else ''}"
    )
    return exported_names(manifest_run.metrics_text) | exported_names(supervised.metrics_text)


@pytest.fixture(scope="session")
def analytics_exported(manifest_run: ManifestRun) -> set[str]:
    """Every metric name `relay analytics`' own /metrics page shows."""
    from tests.deploy.promql import exported_names

    analytics = manifest_run.analytics
    assert analytics is not None and analytics.metrics_text, (
        f"no analytics /metrics scrape: {analytics.log() if analytics else ''}"
    )
    return exported_names(analytics.metrics_text)
