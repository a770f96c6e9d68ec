"""The deploy/ tree as data: rendered overlays, the objects in them, the Secret template."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Every kustomization an operator may apply or build on.
KUSTOMIZATIONS = {
    "base": DEPLOY / "base",
    "dev": DEPLOY / "overlays" / "dev",
    "production": DEPLOY / "overlays" / "production",
}
SECRET_TEMPLATE = DEPLOY / "base" / "secret.template.yaml"
PLACEHOLDER_PREFIX = "REPLACE_ME"
# The Kubernetes versions the manifests are validated against: the oldest supported
# (the preStop `sleep` action is on by default from 1.30) and the newest whose schemas
# kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
RENDER_TIMEOUT_S = 60

Obj = dict[str, Any]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip here; with CI=true what the deploy tests need must be there, so fail."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def kubectl_path() -> str:
    path = shutil.which("kubectl")
    if path is None:
        skip_or_fail("kubectl is not installed: the kustomize renders cannot be checked")
    assert path is not None
    return path


def render(kubectl: str, directory: Path) -> list[Obj]:
    """`kubectl kustomize DIRECTORY` as a list of objects."""
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed: {done.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def _named(obj: Obj, name: str) -> bool:
    """`name`, or `name` with the hash suffix kustomize gives generated objects."""
    return re.fullmatch(re.escape(name) + r"(-[a-z0-9]{10})?", obj["metadata"]["name"]) is not None


def find(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The one object of `kind` (and, if given, of that name, hash suffix or not)."""
    found = [o for o in objs if o["kind"] == kind and (name is None or _named(o, name))]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def find_all(objs: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] == kind]


def relay_deployment(objs: list[Obj]) -> Obj:
    return find(objs, "Deployment", "relay")


def relay_container(objs: list[Obj]) -> Obj:
    containers: list[Obj] = relay_deployment(objs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "relay")


def secret_template() -> Obj:
    data: Obj = yaml.safe_load(SECRET_TEMPLATE.read_text())
    return data


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A label selector's matchLabels (or a Service selector) picks these labels."""
    return all(labels.get(key) == value for key, value in selector.items())
