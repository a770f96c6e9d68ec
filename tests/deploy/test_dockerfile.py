"""deploy/Dockerfile: hadolint passes, it is built as deploy/README.md says, it agrees
with the Deployment, and the dependencies it installs are pyproject's."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import relay
from tests.deploy import dockerfile
from tests.deploy.dependencies import (
    IMAGE_EXTRAS,
    read_pins,
    runtime_closure,
)
from tests.deploy.manifests import ROOT, Obj, relay_container, relay_deployment

HADOLINT = Path(sys.prefix) / "bin" / "hadolint"
DOCKERIGNORE = dockerfile.DOCKERFILE.with_name("Dockerfile.dockerignore")


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes() -> None:
    done = _hadolint(dockerfile.DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nCMD relay run\n")
    done = _hadolint(bad)
    assert done.returncode != 0 and "DL3007" in done.stdout, done.stdout


def test_two_slim_stages_and_nothing_to_compile_with_in_the_last() -> None:
    image = dockerfile.parse()
    assert len(image.stages) == 2 and image.stages[0].name == "build"
    for stage in image.stages:
        assert stage.base.startswith("python:") and "-slim" in stage.base, stage.base
    final_runs = " ".join(i.value for i in image.final.all("RUN"))
    for word in ("apt-get", "gcc", "build-essential", "pip wheel"):
        assert word not in final_runs, f"the final stage runs {word}"
    assert "--no-index" in final_runs, "the final stage installs only the built wheels"
    assert "[dev]" not in dockerfile.DOCKERFILE.read_text(), "no dev extra in the image"
    assert not any(i.keyword == "HEALTHCHECK" for s in image.stages for i in s.instructions)


def test_the_versions_are_build_arguments_matching_pyproject() -> None:
    image = dockerfile.parse()
    for stage in image.stages:
        args = dict(i.value.partition("=")[::2] for i in stage.all("ARG"))
        assert args.get("RELAY_VERSION") == _project()["version"] == relay.__version__
    python = image.global_args["PYTHON_VERSION"]
    requires = SpecifierSet(str(_project()["requires-python"]))
    assert Version(python) in requires, f"PYTHON_VERSION {python} outside {requires}"
    assert "${PYTHON_VERSION}" in image.final.base


def test_the_image_runs_what_the_deployment_expects(renders: dict[str, list[Obj]]) -> None:
    image = dockerfile.parse()
    final = image.final
    user = final.last("USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    pod = relay_deployment(renders["production"])["spec"]["template"]["spec"]
    assert (int(uid), int(gid)) == (
        pod["securityContext"]["runAsUser"],
        pod["securityContext"]["runAsGroup"],
    )
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert entrypoint.exec_form() == ["relay"] and cmd.exec_form() == ["run"]
    exposed = final.last("EXPOSE")
    container = relay_container(renders["production"])
    assert exposed is not None and int(exposed.value) == container["ports"][0]["containerPort"]
    volume = final.last("VOLUME")
    assert volume is not None and volume.exec_form() == ["/tmp"]
    assert image.env(final)["HOME"] == "/tmp", "HOME must be writable on a read-only root"


def test_the_build_copies_what_the_wheel_needs_and_the_context_admits_it() -> None:
    build = dockerfile.parse().stages[0]
    copied = {word for i in build.all("COPY") for word in i.words()[:-1]}
    project = _project()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {"pyproject.toml", str(project["readme"]), "deploy/requirements.txt"}
    needed |= {pattern.rstrip("*") for pattern in packages["packages"]["find"]["include"]}
    assert needed <= copied, f"not copied: {needed - copied}"
    admitted = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert copied <= admitted, f"excluded from the build context: {copied - admitted}"


def test_the_pinned_dependencies_are_pyprojects() -> None:
    pins = read_pins()
    closure = runtime_closure()
    assert set(pins) == set(closure), (
        f"deploy/requirements.txt and pyproject.toml disagree: missing "
        f"{sorted(set(closure) - set(pins))}, extra {sorted(set(pins) - set(closure))}; "
        "regenerate: .venv/bin/python -m tests.deploy.dependencies > deploy/requirements.txt"
    )
    for name, requirements in closure.items():
        for requirement in requirements:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{name}=={pins[name]} does not satisfy {requirement}"
            )


def test_the_image_installs_relay_with_the_pinned_extras() -> None:
    installs = " ".join(i.value for i in dockerfile.parse().final.all("RUN"))
    assert f'"relay[{",".join(IMAGE_EXTRAS)}]==${{RELAY_VERSION}}"' in installs, installs


def test_no_dev_dependency_is_pinned_for_the_image() -> None:
    dev = _project()["optional-dependencies"]
    assert isinstance(dev, dict)
    assert not {"dev", "devkit"} & set(IMAGE_EXTRAS)
    dev_names = {canonicalize_name(Requirement(line).name) for line in dev["dev"]}
    # A dev dependency the runtime also needs (opentelemetry-proto, under the exporter) is
    # pinned; one it does not need (pytest, ruff, aiortc) is not.
    dev_only = dev_names - set(runtime_closure())
    assert dev_only and dev_only & set(read_pins()) == set()


@pytest.mark.parametrize("line", ["livekit>=1.0", "# a comment only"])
def test_the_pins_reader_refuses_loose_lines(tmp_path: Path, line: str) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(line + "\n")
    if line.startswith("#"):
        assert read_pins(path) == {}
    else:
        with pytest.raises(ValueError, match="not pinned"):
            read_pins(path)
