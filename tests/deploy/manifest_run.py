"""One run of the production Deployment's container as a local process (tests/deploy/
podlike.py says how faithfully), with what a kubelet and Prometheus would see of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis

from relay.dev.netns import NetNS
from relay.dev.processes import ManagedProcess
from tests.deploy import podlike
from tests.deploy.manifests import ROOT, Obj

POLL_S = 0.05
ROOM = "deploy-check"  # the room the run observes, added through the admin API
OBSERVE_TIMEOUT_S = 20.0
# Test values for the Secret template's placeholders; every key of the template needs one.
ADMIN_TOKEN = "deploy-test-admin-token"
LIVEKIT_KEY = "deploy-test-key"
LIVEKIT_SECRET = "deploy-test-secret-0123456789abcdef-0123456789"
SECRET_VALUES = {
    "RELAY_LIVEKIT__API_KEY": LIVEKIT_KEY,
    "RELAY_LIVEKIT__API_SECRET": LIVEKIT_SECRET,
    "RELAY_HTTP__ADMIN_TOKEN": ADMIN_TOKEN,
    "RELAY_INGEST__SECRET": "deploy-test-ingest-secret-0123456789abcdef",
}
WRITE_PROBE = """
import errno, json, os, sys
result = {}
for where, path in (("venv", sys.prefix), ("tmp", "/tmp")):
    probe = os.path.join(path, ".write-probe-%d" % os.getpid())
    try:
        open(probe, "w").close()
        os.remove(probe)
        result[where] = "writable"
    except OSError as exc:
        result[where] = errno.errorcode.get(exc.errno or 0, str(exc))
print(json.dumps(result))
"""


@dataclass
class ManifestRun:
    spec: podlike.PodSpec
    log_path: Path
    who: str = ""
    host: str = ""
    healthy_after_s: float | None = None
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)  # url path -> answer
    admin: dict[str, int] = field(default_factory=dict)  # with/without token -> status
    public: dict[str, int] = field(default_factory=dict)  # public path -> status
    metrics_text: str = ""
    observed_after_s: float | None = None  # from the admin call to relay_rooms_observed 1
    room_events: list[str] = field(default_factory=list)  # kinds written for ROOM
    exit_code: int | None = None
    exit_after_s: float | None = None
    write_probe: dict[str, str] = field(default_factory=dict)  # where -> result
    analytics: ManifestRun | None = None  # the relay-analytics container's run
    supervised: ManifestRun | None = None  # the same container with RELAY_WORKERS=2

    def log(self) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-4000:]


def fill_secret(secret: Obj, redis_url: str) -> Obj:
    """The Secret template with its placeholders replaced by test values."""
    values = {**SECRET_VALUES, "RELAY_REDIS__URL": redis_url}
    missing = sorted(set(secret["stringData"]) - set(values))
    assert not missing, f"no test value for Secret keys {missing}: add them to SECRET_VALUES"
    return {**secret, "stringData": {key: values[key] for key in secret["stringData"]}}


def _get(
    url: str, timeout_s: float, token: str | None = None, body: dict[str, str] | None = None
) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _wait_healthy(run: ManifestRun, alive: subprocess.Popen[bytes]) -> None:
    """Poll the startup probe as the kubelet would, within its budget."""
    probe = run.spec.probes["startup"]
    budget_s = (
        probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    )
    url = podlike.probe_url(run.host, run.spec, probe)
    started = time.monotonic()
    while time.monotonic() - started < budget_s and alive.poll() is None:
        if _get(url, probe["timeoutSeconds"])[0] == 200:
            run.healthy_after_s = time.monotonic() - started
            return
        time.sleep(POLL_S)


def _probe_and_scrape(run: ManifestRun) -> None:
    for probe in run.spec.probes.values():
        url = podlike.probe_url(run.host, run.spec, probe)
        path = probe["httpGet"]["path"]
        run.answers[path] = _get(url, probe["timeoutSeconds"])
    base = f"http://{run.host}:{run.spec.port}"
    run.admin["with_token"] = _get(f"{base}/v1/rooms", 5, ADMIN_TOKEN)[0]
    run.admin["without_token"] = _get(f"{base}/v1/rooms", 5)[0]
    status, text = _get(f"{base}/metrics", 5)
    run.metrics_text = text if status == 200 else ""
    # The public paths (ingress-public.yaml), unauthenticated: served, and refused.
    run.public["/v1/forwarder.js"] = _get(f"{base}/v1/forwarder.js", 5)[0]
    run.public["/v1/ingest"] = _get(f"{base}/v1/ingest", 5, body={})[0]
    run.public["/v1/livekit/webhook"] = _get(f"{base}/v1/livekit/webhook", 5, body={})[0]


def _observe_room(run: ManifestRun) -> None:
    """Add ROOM through the admin API and wait until relay is connected to it (with a
    token it minted from the Secret's LiveKit key and secret)."""
    base = f"http://{run.host}:{run.spec.port}"
    asked = time.monotonic()
    run.admin["add_room"] = _get(f"{base}/v1/rooms", 5, ADMIN_TOKEN, {"room": ROOM})[0]
    while time.monotonic() - asked < OBSERVE_TIMEOUT_S:
        text = _get(f"{base}/metrics", 5)[1]
        if "\nrelay_rooms_observed 1.0\n" in text:
            run.observed_after_s = time.monotonic() - asked
            return
        time.sleep(POLL_S)


def _room_events(redis_url: str) -> list[str]:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        entries = client.xrange("relay:events")
    return [f[b"kind"].decode() for _, f in entries if f[b"room"] == ROOM.encode()]


def _terminate(run: ManifestRun, proc: ManagedProcess) -> None:
    """What the kubelet does after the preStop pause: one SIGTERM (`timeout`, in front of
    the command, forwards it once), then wait up to the grace period."""
    terminated = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    try:
        run.exit_code = proc.popen.wait(timeout=run.spec.grace_s)
        run.exit_after_s = time.monotonic() - terminated
    except subprocess.TimeoutExpired:
        pass


READ_ONLY = (Path(sys.prefix), ROOT, Path(os.path.realpath(sys.executable)))


def _start(ns: NetNS, run: ManifestRun, workdir: Path, name: str) -> ManagedProcess:
    """The spec's command as the kubelet would start it: its files written under
    `workdir`, confined like the container (read-only code, its user), logging to
    `run.log_path`."""
    spec = run.spec
    argv = podlike.local_argv(spec.argv, podlike.write_files(spec, workdir))
    confined, run.who = podlike.confine(argv, spec, list(READ_ONLY))
    env = {**podlike.image_env(), **spec.env}
    with run.log_path.open("wb") as log:
        return ns.spawn(confined, name=name, env=env, stdout=log.fileno(), stderr=log.fileno())


def run_manifest(
    ns: NetNS, objs: list[Obj], secret: Obj, urls: tuple[str, str], workdir: Path
) -> ManifestRun:
    """Start the container's command, probe it, scrape it, have it observe a room of
    the dev server, SIGTERM it, and say how it went. `urls`: (LiveKit, Redis)."""
    livekit_url, redis_url = urls
    spec = podlike.pod_spec(objs, fill_secret(secret, redis_url))
    spec.env["RELAY_LIVEKIT__URL"] = livekit_url  # the ConfigMap's placeholder
    run = ManifestRun(spec=spec, log_path=workdir / "relay.log", host=ns.addr)
    probe_argv, _ = podlike.confine([sys.executable, "-c", WRITE_PROBE], spec, list(READ_ONLY))
    probed = ns.run(probe_argv)
    assert probed.returncode == 0, f"the write probe failed: {probed.stderr}"
    run.write_probe = json.loads(probed.stdout)
    proc = _start(ns, run, workdir, "relay")
    try:
        _wait_healthy(run, proc.popen)
        if run.healthy_after_s is not None:
            _probe_and_scrape(run)
            _observe_room(run)
        _terminate(run, proc)
    finally:
        proc.stop()
    run.room_events = _room_events(redis_url)
    return run


def run_analytics_manifest(
    ns: NetNS, objs: list[Obj], secret: Obj, redis_url: str, workdir: Path
) -> ManifestRun:
    """The production relay-analytics container, the same way: its startup probe, one
    scrape of its own /metrics, SIGTERM."""
    names = ("relay-analytics", "analytics", "metrics")
    spec = podlike.pod_spec(objs, fill_secret(secret, redis_url), names)
    run = ManifestRun(spec=spec, log_path=workdir / "analytics.log", host=ns.addr)
    (workdir / "analytics").mkdir()
    proc = _start(ns, run, workdir / "analytics", "analytics")
    try:
        _wait_healthy(run, proc.popen)
        if run.healthy_after_s is not None:
            status, text = _get(f"http://{run.host}:{spec.port}/metrics", 5)
            run.metrics_text = text if status == 200 else ""
        _terminate(run, proc)
    finally:
        proc.stop()
    return run


SUPERVISED_WORKERS = 2
WORKERS_UP_TIMEOUT_S = 60.0  # N interpreters importing the SDK on a loaded machine


def _workers_up(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.startswith("relay_worker_up{")]
    return len(lines) == SUPERVISED_WORKERS and all(line.endswith(" 1.0") for line in lines)


def run_supervised_manifest(
    ns: NetNS, objs: list[Obj], secret: Obj, urls: tuple[str, str], workdir: Path
) -> ManifestRun:
    """The relay container with RELAY_WORKERS=2 (what deploy/base/deployment.yaml says to
    set for workers per pod): its startup probe, one scrape once every worker answers it
    (what Prometheus reads of a supervisor), SIGTERM."""
    livekit_url, redis_url = urls
    spec = podlike.pod_spec(objs, fill_secret(secret, redis_url))
    spec.env["RELAY_LIVEKIT__URL"] = livekit_url
    spec.env["RELAY_WORKERS"] = str(SUPERVISED_WORKERS)
    run = ManifestRun(spec=spec, log_path=workdir / "supervised.log", host=ns.addr)
    (workdir / "supervised").mkdir()
    proc = _start(ns, run, workdir / "supervised", "supervised")
    try:
        _wait_healthy(run, proc.popen)
        started = time.monotonic()
        while run.healthy_after_s is not None and proc.popen.poll() is None:
            status, text = _get(f"http://{run.host}:{spec.port}/metrics", 5)
            if status == 200 and _workers_up(text):
                run.metrics_text = text
                break
            if time.monotonic() - started > WORKERS_UP_TIMEOUT_S:
                break
            time.sleep(POLL_S)
        _terminate(run, proc)
    finally:
        proc.stop()
    return run
