"""Network-namespace harness for the dev server: WebRTC needs a real interface.

libwebrtc gathers no loopback candidates, so the dev server, Redis, the relay and the
SDK clients run inside a private network namespace (`relay-test-<pid>-<n>`) joined to
this one by a veth pair: the host end has `host_addr`, the namespace end `addr`, both
in a /30 of 10.213.0.0/16, IPv6 off on both ends, no route anywhere else. The test
process (outside the namespace) reaches the namespace only over that link, so it can
call the dev server's HTTP API, read Redis, or receive webhooks on `host_addr`.

A namespace belongs to a process (or thread), so SDK clients cannot run in the test
process: `NetNS.spawn` starts commands inside it (`ip netns exec`), each in its own
session under `timeout`, tracked by PID and stopped by PID on teardown, which also runs
when a test fails.

Used by `relay demo`, the benchmarks and the tests (tests/fixtures/netns.py adds the
pytest fixtures). Needs Linux, root (CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from livekit import api

SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
DEFAULT_PROC_TIMEOUT_S = 300.0
STOP_GRACE_S = 3.0
DEV_API_KEY = "devkey"
DEV_API_SECRET = "devsecret-0123456789-0123456789-0123456789"

_counter = itertools.count()


class NetNSUnavailable(RuntimeError):
    """This machine or user cannot create network namespaces."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=20)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be created here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_NET_ADMIN)"
    return None


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A free /30 in 10.213.0.0/16, starting from a slot derived from `seed`."""
    used = _used_networks()
    slots = list(SUBNET.subnets(new_prefix=30))
    for i in range(len(slots)):
        candidate = slots[(seed + i) % len(slots)]
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise NetNSUnavailable("no free /30 left in 10.213.0.0/16")


@dataclass
class NsProcess:
    """A process started inside a namespace; `pid` leads its own session."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the command (once, through `timeout`), SIGKILL its group after `grace_s`."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(grace_s)
        # Children that outlived their leader still carry its process group id.
        _signal_group(self.pid, signal.SIGKILL)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return self.popen.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class NetNS:
    """A network namespace with one veth link to this one; see the module docstring."""

    name: str
    addr: str
    host_addr: str
    host_if: str
    procs: list[NsProcess] = field(default_factory=list)
    # Session leaders started elsewhere (asyncio subprocesses), killed if still tracked.
    pids: set[int] = field(default_factory=set)

    def exec_argv(
        self, argv: Sequence[str], timeout_s: float = DEFAULT_PROC_TIMEOUT_S
    ) -> list[str]:
        """`argv` run inside the namespace, killed by `timeout` after `timeout_s`.

        `--foreground`: a signal to `timeout` reaches the command once. Without it, timeout
        also re-sends it to its whole process group, so the command would get it twice
        (and the relay takes a second SIGTERM as "exit now")."""
        timeout = ["timeout", "--foreground", "-k", "5", str(timeout_s)]
        return ["ip", "netns", "exec", self.name, *timeout, *argv]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        name: str = "",
        timeout_s: float = DEFAULT_PROC_TIMEOUT_S,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = None,
        env: dict[str, str] | None = None,
    ) -> NsProcess:
        """Start `argv` inside the namespace in a new session; stopped on `close()`."""
        popen = subprocess.Popen(
            self.exec_argv(argv, timeout_s),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        proc = NsProcess(name or Path(argv[0]).name, popen)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the namespace to completion."""
        return subprocess.run(
            self.exec_argv(argv, timeout_s),
            capture_output=True,
            text=True,
            timeout=timeout_s + 10,
            check=False,
        )

    def free_port(self) -> int:
        """A TCP port free on `addr` inside the namespace (asked of the kernel there)."""
        code = "import socket;s=socket.socket();s.bind(('%s',0));print(s.getsockname()[1])"
        out = self.run([sys.executable, "-c", code % self.addr]).stdout.strip()
        return int(out)

    async def spawn_async(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout_s: float = DEFAULT_PROC_TIMEOUT_S,
    ) -> asyncio.subprocess.Process:
        """`spawn` for asyncio callers: stdin/stdout piped, in a new session, its process
        group killed on `close()` unless `untrack_pid` says it was reaped."""
        proc = await asyncio.create_subprocess_exec(
            *self.exec_argv(argv, timeout_s),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.track_pid(proc.pid)
        return proc

    def track_pid(self, pid: int) -> None:
        """Kill this process group on `close()` unless `untrack_pid` says it was reaped."""
        self.pids.add(pid)

    def untrack_pid(self, pid: int) -> None:
        self.pids.discard(pid)

    def close(self) -> None:
        """Stop every process (newest first), then delete the namespace and the link."""
        for pid in sorted(self.pids):
            _signal_group(pid, signal.SIGKILL)
        self.pids.clear()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        delete_netns(self.name, self.host_if)


def create_netns(prefix: str = "relay-test") -> NetNS:
    """Create `<prefix>-<pid>-<n>` with a veth link; raise NetNSUnavailable if impossible."""
    reason = unavailable_reason()
    if reason is not None:
        raise NetNSUnavailable(reason)
    remove_stale_namespaces(prefix)
    n = next(_counter)
    name = f"{prefix}-{os.getpid()}-{n}"
    tag = f"{os.getpid() % 100000}x{n % 100}"
    host_if, ns_if = f"rlh{tag}", f"rln{tag}"
    subnet = _pick_subnet(os.getpid() * 7 + n)
    host_ip, ns_ip = list(subnet.hosts())
    try:
        _setup(name, host_if, ns_if, f"{host_ip}/30", f"{ns_ip}/30")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        delete_netns(name, host_if)
        detail = getattr(exc, "stderr", "") or str(exc)
        raise NetNSUnavailable(f"could not set up namespace {name}: {detail.strip()}") from exc
    return NetNS(name=name, addr=str(ns_ip), host_addr=str(host_ip), host_if=host_if)


def _setup(name: str, host_if: str, ns_if: str, host_cidr: str, ns_cidr: str) -> None:
    in_ns = ["ip", "netns", "exec", name]
    _run(["ip", "netns", "add", name])
    _run([*in_ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    _run([*in_ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
    _run([*in_ns, "ip", "link", "set", "lo", "up"])
    _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
    _run(["sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1"], check=False)
    _run(["ip", "link", "set", ns_if, "netns", name])
    _run(["ip", "addr", "add", host_cidr, "dev", host_if])
    _run(["ip", "link", "set", host_if, "up"])
    _run([*in_ns, "sysctl", "-qw", f"net.ipv6.conf.{ns_if}.disable_ipv6=1"], check=False)
    _run([*in_ns, "ip", "addr", "add", ns_cidr, "dev", ns_if])
    _run([*in_ns, "ip", "link", "set", ns_if, "up"])


def remove_stale_namespaces(prefix: str = "relay-test") -> list[str]:
    """Delete `<prefix>-<pid>-<n>` namespaces whose creating process is gone (a killed
    run); returns their names. Processes still inside die by their `timeout`."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name.removeprefix(f"{prefix}-").split("-")[0]
        if name.startswith(f"{prefix}-") and owner.isdigit() and not _pid_alive(int(owner)):
            delete_netns(name)
            removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_netns(name: str, host_if: str | None = None) -> None:
    """Delete the namespace (which removes its veth end and so the pair); idempotent."""
    _run(["ip", "netns", "del", name], check=False)
    if host_if is not None:
        _run(["ip", "link", "del", host_if], check=False)


@contextlib.contextmanager
def netns_context(prefix: str = "relay-test") -> Iterator[NetNS]:
    """A namespace for the `with` block, torn down on exit, also on error."""
    ns = create_netns(prefix)
    try:
        yield ns
    finally:
        ns.close()


def wait_for_line(proc: NsProcess, needle: bytes, timeout_s: float) -> bytes:
    """Read `proc`'s stdout until a line contains `needle`; raise if it exits or stalls."""
    assert proc.popen.stdout is not None
    fd = proc.popen.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines():
                if needle in line:
                    _drain(proc)
                    return line
        elif not proc.alive():
            break
    raise RuntimeError(f"{proc.name} (pid {proc.pid}) not ready: {buf.decode(errors='replace')}")


def _drain(proc: NsProcess) -> None:
    """Keep reading `proc`'s stdout so a chatty process never blocks on a full pipe."""
    stream = proc.popen.stdout
    if stream is not None:
        threading.Thread(target=lambda: stream.read(), daemon=True).start()


@dataclass(frozen=True)
class RedisServer:
    proc: NsProcess
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def start_redis(ns: NetNS, port: int | None = None, timeout_s: float = 10.0) -> RedisServer:
    """A private redis-server inside `ns` on its address (no persistence)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise NetNSUnavailable("redis-server is not installed")
    port = port or ns.free_port()
    argv = [exe, "--port", str(port), "--bind", ns.addr, "--save", "", "--appendonly", "no"]
    proc = ns.spawn([*argv, "--protected-mode", "no"], name="redis-server")
    wait_for_line(proc, b"Ready to accept connections", timeout_s)
    return RedisServer(proc=proc, host=ns.addr, port=port)


@dataclass(frozen=True)
class DevServer:
    """A `relay.dev.server` process inside a namespace."""

    proc: NsProcess
    host: str
    port: int
    api_key: str
    api_secret: str

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(
        self,
        identity: str,
        room: str,
        *,
        kind: str = "standard",
        ttl: timedelta = timedelta(minutes=10),
        **grants: Any,
    ) -> str:
        """A join token; `grants` are VideoGrants fields (hidden=True, ...)."""
        video = api.VideoGrants(room_join=True, room=room, **grants)
        token = api.AccessToken(self.api_key, self.api_secret).with_identity(identity)
        return str(token.with_kind(kind).with_grants(video).with_ttl(ttl).to_jwt())  # type: ignore[arg-type]


def start_devserver(
    ns: NetNS,
    *,
    port: int | None = None,
    api_key: str = DEV_API_KEY,
    api_secret: str = DEV_API_SECRET,
    webhook_urls: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    timeout_s: float = 20.0,
) -> DevServer:
    """Start `python -m relay.dev.server` on `ns.addr` and wait for its ready line."""
    port = port or ns.free_port()
    argv = [sys.executable, "-m", "relay.dev.server", "--host", ns.addr, "--port", str(port)]
    argv += ["--api-key", api_key, "--api-secret", api_secret, *extra_args]
    for url in webhook_urls:
        argv += ["--webhook", url]
    proc = ns.spawn(argv, name="devserver", stderr=None)
    wait_for_line(proc, b"devserver ready", timeout_s)
    return DevServer(proc=proc, host=ns.addr, port=port, api_key=api_key, api_secret=api_secret)


def free_host_port(host: str) -> int:
    """A TCP port free on `host` in this (the test's) namespace."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
