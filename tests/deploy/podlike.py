"""Run the production Deployment's relay container as a local process, as a kubelet would.

From the rendered manifest: the command (the image's ENTRYPOINT and the container's
args, deploy/Dockerfile), the environment (the image's ENV, then envFrom, then env), the
ConfigMap volumes as files, the probes' paths and ports, the grace period. The process
runs inside the test's network namespace (so the manifest's own port is free), in a
mount namespace whose root filesystem is read-only except /tmp (readOnlyRootFilesystem
and the /tmp emptyDir), with no capabilities and no_new_privs (capabilities drop ALL,
allowPrivilegeEscalation false), as the manifest's user where this machine lets that
user run its Python.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy import dockerfile
from tests.deploy.manifests import Obj, find

IMAGE_VENV = "/opt/relay"  # where deploy/Dockerfile installs relay


@dataclass
class PodSpec:
    """What the test takes from the manifest."""

    argv: list[str]
    env: dict[str, str]
    files: dict[str, dict[str, str]]  # mountPath -> {file name: content}
    port: int
    probes: dict[str, Obj]  # startup/liveness/readiness -> probe
    grace_s: int
    pre_stop_s: int
    run_as_user: int
    run_as_group: int
    port_name: str = "http"
    # emptyDir mountPaths besides /tmp -> sizeLimit: a tmpfs there, writable by the user.
    empty_dirs: dict[str, str] = field(default_factory=dict)


def _image_argv(container: Obj) -> list[str]:
    image = dockerfile.parse()
    entrypoint = image.final.last("ENTRYPOINT")
    cmd = image.final.last("CMD")
    command = container.get("command") or (entrypoint.exec_form() if entrypoint else [])
    if "args" in container:
        args = list(container["args"])
    elif "command" in container:
        args = []  # a command without args drops the image's CMD (Kubernetes rules)
    else:
        args = cmd.exec_form() if cmd else []
    return [*command, *args]


def _env_from(objs: list[Obj], container: Obj, secret: Obj) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            assert name == secret["metadata"]["name"], f"envFrom names Secret {name!r}"
            env.update(secret["stringData"])
        else:
            raise AssertionError(f"unexpected envFrom source {source}")
    for item in container.get("env", []):
        assert "value" in item, f"env {item['name']}: only literal values are handled here"
        env[item["name"]] = item["value"]
    return env


def _empty_dirs(pod: Obj, container: Obj) -> dict[str, str]:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    return {
        mount["mountPath"]: volumes[mount["name"]]["emptyDir"].get("sizeLimit", "64Mi")
        for mount in container.get("volumeMounts", [])
        if "emptyDir" in volumes[mount["name"]] and mount["mountPath"] != "/tmp"
    }


def _files(objs: list[Obj], pod: Obj, container: Obj) -> dict[str, dict[str, str]]:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            config_map = find(objs, "ConfigMap", volume["configMap"]["name"])
            files[mount["mountPath"]] = dict(config_map["data"])
        else:
            assert "emptyDir" in volume, f"volume {mount['name']}: unexpected kind"
    return files


def pod_spec(
    objs: list[Obj], secret: Obj, names: tuple[str, str, str] = ("relay", "relay", "http")
) -> PodSpec:
    """`names`: the Deployment, its container and the port the probes use."""
    deployment_name, container_name, port_name = names
    deployment = find(objs, "Deployment", deployment_name)
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == container_name)
    probes = {
        kind: container[f"{kind}Probe"]
        for kind in ("startup", "liveness", "readiness")
        if f"{kind}Probe" in container
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return PodSpec(
        argv=_image_argv(container),
        env=_env_from(objs, container, secret),
        files=_files(objs, pod, container),
        empty_dirs=_empty_dirs(pod, container),
        port=ports[port_name],
        port_name=port_name,
        probes=probes,
        grace_s=pod["terminationGracePeriodSeconds"],
        pre_stop_s=container.get("lifecycle", {})
        .get("preStop", {})
        .get("sleep", {})
        .get("seconds", 0),
        run_as_user=pod["securityContext"]["runAsUser"],
        run_as_group=pod["securityContext"]["runAsGroup"],
    )


def image_env() -> dict[str, str]:
    """The image's ENV, its paths moved to this machine (the venv for /opt/relay)."""
    image = dockerfile.parse()
    env = {}
    for key, value in image.env(image.final).items():
        value = value.replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        env[key] = value.replace(IMAGE_VENV, sys.prefix)
    return env


def write_files(spec: PodSpec, root: Path) -> dict[str, str]:
    """The ConfigMap volumes as files under `root`, readable by any user (a ConfigMap
    volume's files are 0644): {mountPath: local directory}."""
    local = {}
    root.chmod(0o755)
    for index, (mount_path, files) in enumerate(spec.files.items()):
        directory = root / f"volume-{index}"
        directory.mkdir(mode=0o755)
        for name, content in files.items():
            (directory / name).write_text(content)
            (directory / name).chmod(0o644)
        local[mount_path] = str(directory)
    return local


def local_argv(argv: list[str], mounts: Mapping[str, str]) -> list[str]:
    """The container's argv with mounted paths moved to their local directories."""
    moved = []
    for word in argv:
        for mount_path, directory in mounts.items():
            if word == mount_path or word.startswith(mount_path.rstrip("/") + "/"):
                word = directory + word[len(mount_path.rstrip("/")) :]
        moved.append(word)
    return moved


def _mount_point(path: Path) -> str:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def _under_tmp(path: Path) -> bool:
    return Path("/tmp") in path.resolve().parents


def _others_can_run_python() -> bool:
    """Whether a user other than root can reach this machine's Python and the venv
    (a Python under root's 0700 home cannot run as the manifest's user)."""
    for start in (Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable))):
        for directory in [start, *start.parents]:
            mode = directory.stat().st_mode
            if directory.is_dir() and not mode & stat.S_IXOTH:
                return False
    return True


def confine(argv: list[str], spec: PodSpec, read_only: list[Path]) -> tuple[list[str], str]:
    """`argv` wrapped: a private mount namespace whose `/` (and the mounts holding
    `read_only`) are read-only and /tmp writable, then setpriv dropping every capability
    and, where possible, switching to the manifest's user. Returns (argv, as whom)."""
    mounts = sorted({"/", *(_mount_point(path) for path in read_only)} - {"/tmp"})
    script = ["set -e", "mount --make-rprivate /"]
    if not os.path.ismount("/tmp"):
        script.append("mount --bind /tmp /tmp")  # its own mount: stays writable
    for path, size in spec.empty_dirs.items():  # an emptyDir: its own writable mount
        quoted = shlex.quote(path)
        size_k = _kibibytes(size)
        script += [f"mkdir -p {quoted} 2>/dev/null || test -d {quoted}",
                   f"mount -t tmpfs -o mode=1777,size={size_k}k tmpfs {quoted}"]  # fmt: skip
    script += [f"mount -o remount,bind,ro {shlex.quote(m)}" for m in mounts]
    # A checkout (and its venv) under /tmp, as a CI clone may be: read-only too.
    for path in sorted({str(p.resolve()) for p in read_only if _under_tmp(p)}):
        quoted = shlex.quote(path)
        script += [f"mount --bind {quoted} {quoted}", f"mount -o remount,bind,ro {quoted}"]
    script.append('exec "$@"')
    privileges = ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    who = "root without capabilities"
    if _others_can_run_python():
        uid, gid = spec.run_as_user, spec.run_as_group
        privileges = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *privileges]
        who = f"uid {uid}"
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]
    return [*wrapper, "sh", "setpriv", *privileges, *argv], who


def _kibibytes(quantity: str) -> int:
    units = {"Ki": 1, "Mi": 1024, "Gi": 1024 * 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


def probe_url(host: str, spec: PodSpec, probe: dict[str, Any]) -> str:
    get = probe["httpGet"]
    port = spec.port if get["port"] == spec.port_name else int(get["port"])
    return f"http://{host}:{port}{get['path']}"
