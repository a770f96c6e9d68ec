"""Network namespaces for the dev tools: WebRTC needs a real interface.

libwebrtc gathers no loopback candidates, so the dev server, Redis, the relay and the
SDK clients run inside a private network namespace (`relay-test-<pid>-<n>`) joined to
this one by a veth pair: the host end has `host_addr`, the namespace end `addr`, both
in a /30 of 10.213.0.0/16, IPv6 off on both ends, no route anywhere else. The test
process (outside the namespace) reaches the namespace only over that link, so it can
call the dev server's HTTP API, read Redis, or receive webhooks on `host_addr`.

A namespace belongs to a process (or thread), so SDK clients cannot run in the test
process: `NetNS.spawn` starts commands inside it (`ip netns exec`), each in its own
session under `timeout`, tracked by PID and stopped by PID on teardown, which also runs
when a test fails. Launchers for Redis and the dev server are in relay.dev.launch.

For people, the same as a command (root and iproute2 needed):

    python -m relay.dev.netns up NAME [INDEX]   # host end 10.213.INDEX.1, inside .2
    python -m relay.dev.netns exec NAME CMD...  # CMD inside NAME
    python -m relay.dev.netns down NAME         # stop what runs inside by PID, delete
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from relay.dev.processes import ManagedProcess, pid_alive, signal_group, signal_pids

SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
DEFAULT_PROC_TIMEOUT_S = 300.0
DOWN_GRACE_S = 5.0

_counter = itertools.count()
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# A line of a process's stdout may be long: an actor's result lists every event it sent.
STDOUT_LINE_LIMIT = 16 * 1024 * 1024


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


def used_networks() -> list[Network]:
    """The IPv4 networks of every interface address in this namespace."""
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    nets: list[Network] = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A free /30 in 10.213.0.0/16, starting from a slot derived from `seed`."""
    used = used_networks()
    slots = list(SUBNET.subnets(new_prefix=30))
    for i in range(len(slots)):
        candidate = slots[(seed + i) % len(slots)]
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise NetNSUnavailable("no free /30 left in 10.213.0.0/16")


@dataclass
class NetNS:
    """A network namespace with one veth link to this one; see the module docstring."""

    name: str
    addr: str
    host_addr: str
    host_if: str
    procs: list[ManagedProcess] = field(default_factory=list)
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
    ) -> ManagedProcess:
        """Start `argv` inside the namespace in a new session; stopped on `close()`."""
        popen = subprocess.Popen(
            self.exec_argv(argv, timeout_s),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        proc = ManagedProcess(name or Path(argv[0]).name, popen)
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
        done = self.run([sys.executable, "-m", "relay.dev.ports", self.addr])
        if done.returncode != 0:
            raise RuntimeError(f"no free port in {self.name}: {done.stderr.strip()}")
        return int(done.stdout.strip())

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
            limit=STDOUT_LINE_LIMIT,
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
            signal_group(pid, signal.SIGKILL)
        self.pids.clear()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        delete_netns(self.name, self.host_if)


def create_netns(prefix: str = "relay-test") -> NetNS:
    """Create `<prefix>-<pid>-<n>` with a veth link; raise NetNSUnavailable if impossible."""
    remove_stale_namespaces(prefix)
    n = next(_counter)
    name = f"{prefix}-{os.getpid()}-{n}"
    tag = f"{os.getpid() % 100000}x{n % 100}"
    return _create(name, f"rlh{tag}", f"rln{tag}", _pick_subnet(os.getpid() * 7 + n))


def _create(name: str, host_if: str, ns_if: str, subnet: ipaddress.IPv4Network) -> NetNS:
    reason = unavailable_reason()
    if reason is not None:
        raise NetNSUnavailable(reason)
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
        if name.startswith(f"{prefix}-") and owner.isdigit() and not pid_alive(int(owner)):
            delete_netns(name)
            removed.append(name)
    return removed


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


# -- named namespaces, for people (`python -m relay.dev.netns`) -----------------------


def link_names(name: str) -> tuple[str, str]:
    """The host and namespace interface names of namespace `name` (15 characters max)."""
    tag = f"{zlib.crc32(name.encode()):08x}"
    return f"rlh{tag}", f"rln{tag}"


def up(name: str, index: int | None = None) -> NetNS:
    """Namespace `name` with its link in 10.213.INDEX.0/30 (a free /30 when None)."""
    listed = _run(["ip", "netns", "list"], check=False).stdout.split()
    if name in listed:
        raise NetNSUnavailable(f"namespace {name} exists already: `down` it first")
    if index is None:
        subnet = _pick_subnet(zlib.crc32(name.encode()))
    elif 0 <= index <= 255:
        subnet = ipaddress.IPv4Network(f"10.213.{index}.0/30")
        if any(subnet.overlaps(net) for net in used_networks()):
            raise NetNSUnavailable(f"10.213.{index}.0/30 is in use here: pick another INDEX")
    else:
        raise NetNSUnavailable(f"INDEX must be 0-255, not {index}")
    return _create(name, *link_names(name), subnet)


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes inside namespace `name` (none when it does not exist)."""
    out = _run(["ip", "netns", "pids", name], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def down(name: str, grace_s: float = DOWN_GRACE_S) -> None:
    """Stop every process inside `name` by PID (SIGTERM, SIGKILL after `grace_s`), then
    delete it and its link; idempotent. Deleting alone leaves those processes running."""
    signal_pids(namespace_pids(name), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while namespace_pids(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_pids(namespace_pids(name), signal.SIGKILL)
    delete_netns(name, link_names(name)[0])


USAGE = "usage: python -m relay.dev.netns up NAME [INDEX] | exec NAME CMD... | down NAME"
ARGS = {"up": (1, 2), "down": (1, 1), "exec": (2, sys.maxsize)}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    least, most = ARGS.get(command, (1, 0))
    if not least <= len(rest) <= most:
        print(USAGE, file=sys.stderr)
        return 2
    reason = unavailable_reason()
    if reason is not None:
        print(f"relay.dev.netns: {reason}", file=sys.stderr)
        return 2
    if command == "exec":
        os.execvp("ip", ["ip", "netns", "exec", *rest])
    if command == "down":
        down(rest[0])
        return 0
    try:
        index = int(rest[1]) if len(rest) > 1 else None
        ns = up(rest[0], index)
    except ValueError:
        print(f"relay.dev.netns: INDEX must be a number 0-255, not {rest[1]!r}", file=sys.stderr)
        return 2
    except NetNSUnavailable as exc:
        print(f"relay.dev.netns: {exc}", file=sys.stderr)
        return 2
    print(f"namespace {ns.name}: address {ns.addr} (host end {ns.host_addr})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
