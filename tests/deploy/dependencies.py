"""relay's runtime dependencies, resolved from the installed distributions.

`deploy/requirements.txt` pins what the container image installs; the tests compare it
with pyproject's `dependencies`, the extras the image installs (`IMAGE_EXTRAS`), and what
they pull in. After changing a runtime
dependency, install it (`make install`) and regenerate the pins:

    .venv/bin/python -m tests.deploy.dependencies > deploy/requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PINS_FILE = ROOT / "deploy" / "requirements.txt"
# The extras the image installs beside the dependencies: `otel`, so that `relay analytics`
# can export traces (analytics.otel) from the same image.
IMAGE_EXTRAS = ("otel",)
HEADER = """\
# The runtime dependencies the container image installs (deploy/Dockerfile), pinned:
# pyproject's `dependencies`, its `otel` extra and everything they pull in. Generated, do
# not edit:
#   .venv/bin/python -m tests.deploy.dependencies > deploy/requirements.txt
# tests/deploy/test_dockerfile.py fails when this and pyproject.toml disagree.
"""


def direct_requirements() -> list[Requirement]:
    """pyproject's runtime `dependencies` and those of `IMAGE_EXTRAS` (never `dev`: the
    image has no dev tools)."""
    with PYPROJECT.open("rb") as file:
        project = tomllib.load(file)["project"]
    lines = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def runtime_closure() -> dict[NormalizedName, list[Requirement]]:
    """Every distribution the runtime dependencies need here, with the requirements
    (specifiers) that name it: {name: [requirement, ...]}."""
    found: dict[NormalizedName, list[Requirement]] = {}
    expanded: set[tuple[NormalizedName, frozenset[str]]] = set()
    todo = direct_requirements()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        found.setdefault(name, []).append(requirement)
        key = (name, frozenset(requirement.extras))
        if key in expanded:
            continue
        expanded.add(key)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            raise LookupError(f"{requirement.name} is not installed: run `make install`") from None
        for line in requires:
            child = Requirement(line)
            if _applies(child, set(requirement.extras)):
                todo.append(child)
    return found


def read_pins(path: Path = PINS_FILE) -> dict[NormalizedName, str]:
    """`name==version` lines of a requirements file: {name: version}."""
    pins: dict[NormalizedName, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path.name}: {line!r} is not pinned with ==")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def render_pins() -> str:
    lines = [f"{name}=={metadata.version(name)}" for name in sorted(runtime_closure())]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_pins())
