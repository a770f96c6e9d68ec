"""Shared pieces of the end-to-end benchmarks (bench/e2e.py, bench/rooms.py).

Everything with WebRTC runs inside a private network namespace from the harness in
`relay/dev/netns.py`: the dev server, a private Redis, `relay run`, and the SDK
load clients (`bench/lk_load.py`). The bench process stays outside and talks to the
namespace only over its veth link (Redis, the relay's /readyz and /metrics). Every
process is started by `NetNS.spawn` under `timeout`, stopped by PID, and the namespace
is deleted on exit, also on an error, Ctrl-C or SIGTERM (see `Bench`).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, cast

import redis

from relay.dev.launch import DevServer, RedisServer, start_devserver, start_redis
from relay.dev.netns import NetNS, netns_context
from relay.dev.processes import ManagedProcess

LOAD_SCRIPT = Path(__file__).resolve().parent / "lk_load.py"
NS_PREFIX = "relay-bench"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# The throughput benchmarks (e2e.py, rooms.py, workers.py) measure the relay, not its
# limits: their publishers may exceed the per-room and per-participant defaults (a
# participant 1000 events/s, a room 2000/s) with a few rooms and a high --rate.
LIMITS_OFF = {"RELAY_LIMITS__ENABLED": "false"}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


# -- processes ------------------------------------------------------------------------


def command_pid(wrapper: ManagedProcess, timeout_s: float = 5.0) -> int:
    """The command's own PID: `ip netns exec` execs `timeout`, which forks the command."""
    path = Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = path.read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise RuntimeError(f"{wrapper.name}: no child process under timeout (pid {wrapper.pid})")


def cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of `pid`, every thread included (the SDK's Rust threads too), or of
    its thread `tid` alone (`tid=pid`: the main thread, where asyncio and the relay run)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def udp_drops(pids: dict[str, int]) -> dict[str, int]:
    """UDP datagrams dropped on arrival (receive buffer full) per process, over the
    sockets each holds now: the `drops` column of the namespace's /proc/net/udp, matched
    to processes by socket inode. A drop on a WebRTC socket costs an SCTP retransmission,
    and on an ordered reliable channel every packet behind it waits (RTO >= 1 s)."""
    owner: dict[str, str] = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        owner[target[8:-1]] = name
    out = dict.fromkeys(pids, 0)
    table = Path(f"/proc/{next(iter(pids.values()))}/net/udp").read_text().splitlines()
    for line in table[1:]:
        fields = line.split()
        if len(fields) > 12 and fields[9] in owner:
            out[owner[fields[9]]] += int(fields[12])
    return out


def udp_rcvbuf_errors(pid: int) -> int:
    """The namespace's UDP RcvbufErrors counter (the netns of `pid`)."""
    lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()]
    header, values = [fields for fields in lines if fields and fields[0] == "Udp:"][:2]
    return int(values[header.index("RcvbufErrors")])


class LoadClient:
    """`bench/lk_load.py` inside the namespace, spoken to in JSON lines."""

    def __init__(self, bench: Bench, mode: str, rooms: Sequence[str], timeout_s: float) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LIVEKIT_API_KEY": bench.server.api_key,
            "LIVEKIT_API_SECRET": bench.server.api_secret,
        }
        argv = [sys.executable, str(LOAD_SCRIPT), mode, "--url", bench.server.ws_url]
        argv += ["--rooms", ",".join(rooms)]
        self.proc = bench.ns.spawn(
            argv,
            name=f"lk_load-{mode}",
            timeout_s=timeout_s,
            stdin=subprocess.PIPE,
            stderr=bench.log(f"lk_load-{mode}"),
            env=env,
        )
        self.pid = command_pid(self.proc)
        self.ready = self.read(timeout_s=60 + 2 * len(rooms))

    def read(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line on stdout (SDK chatter skipped); raise on exit or timeout."""
        stream = self.proc.popen.stdout
        assert stream is not None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([stream], [], [], min(left, 0.5))
            if not ready:
                if not self.proc.alive():
                    break
                continue
            line = stream.readline()
            if not line:
                break
            with contextlib.suppress(json.JSONDecodeError):
                message: dict[str, Any] = json.loads(line)
                if "warning" not in message:
                    return message
        raise RuntimeError(f"{self.proc.name} (pid {self.pid}) gave no answer; see its log")

    def call(self, timeout_s: float, **cmd: Any) -> dict[str, Any]:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write((json.dumps(cmd) + "\n").encode())
        stdin.flush()
        reply = self.read(timeout_s)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.proc.name}: {reply.get('error')}")
        return reply

    def close(self, grace_s: float = 10.0) -> None:
        """EOF: the client leaves its rooms and exits; stopped by PID if it does not."""
        stdin = self.proc.popen.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(grace_s)
        self.proc.stop()


@dataclass
class Relay:
    """`relay run` inside the namespace."""

    proc: ManagedProcess
    pid: int
    http: str
    prefix: str

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /readyz says every room is observed and Redis answers."""
        started = time.monotonic()
        body = ""
        while time.monotonic() - started < timeout_s:
            if not self.proc.alive():
                raise RuntimeError(f"relay exited ({self.proc.popen.returncode}); see its log")
            status, body = self.get("/readyz")
            if status == 200:
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"relay not ready in {timeout_s:.0f}s: {body}")

    def stop(self, grace_s: float = 25.0) -> int | None:
        """SIGTERM the relay itself (by PID) and let it leave and flush; then the wrapper."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(grace_s)
        return self.proc.stop()

    def loop_lag_buckets(self) -> dict[float, float]:
        """relay_event_loop_lag_seconds: cumulative count per bucket bound (s), /metrics
        (with --workers, summed over the workers' `worker` series)."""
        _, text = self.get("/metrics")
        out: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("relay_event_loop_lag_seconds_bucket{"):
                bound = float(line.split('le="', 1)[1].split('"', 1)[0])
                out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def dropped(self) -> dict[str, float]:
        """relay_events_dropped_total by reason, from /metrics (summed over workers)."""
        _, text = self.get("/metrics")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("relay_events_dropped_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                out[reason] = out.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


@dataclass
class Bench:
    """Namespace + dev server + Redis for one benchmark run; `Bench.open()` tears down."""

    ns: NetNS
    server: DevServer
    redis_server: RedisServer
    workdir: Path
    proc_timeout_s: float
    logs: list[IO[bytes]] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def open(cls, proc_timeout_s: float) -> Iterator[Bench]:
        # Teardown must run on Ctrl-C and SIGTERM, also where SIGINT was inherited ignored.
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with (
                tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir,
                netns_context(NS_PREFIX) as ns,
            ):
                # The rig lives as long as the benchmark's processes (soak: longer than
                # the 300 s `NetNS.spawn` gives by default).
                server = start_devserver(
                    ns, extra_args=["--log-level", "error"], proc_timeout_s=proc_timeout_s
                )
                redis_server = start_redis(ns, workdir=Path(workdir), proc_timeout_s=proc_timeout_s)
                bench = cls(ns, server, redis_server, Path(workdir), proc_timeout_s)
                try:
                    yield bench
                finally:
                    for log in bench.logs:
                        log.close()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)

    def log(self, name: str) -> int:
        """A log file in the work directory for a process's stderr."""
        handle = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed by open())
        self.logs.append(handle)
        return handle.fileno()

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url, socket_timeout=10)

    def start_relay(
        self,
        rooms: Sequence[str],
        prefix: str,
        ready_timeout_s: float,
        extra_env: dict[str, str] | None = None,
        name: str = "",
        argv: Sequence[str] | None = None,
    ) -> Relay:
        port = self.ns.free_port()
        env = {
            **os.environ,
            "RELAY_ROOMS": json.dumps(list(rooms)),
            "RELAY_MAX_ROOMS": str(max(50, len(rooms))),
            "RELAY_LIVEKIT__URL": self.server.ws_url,
            "RELAY_LIVEKIT__API_KEY": self.server.api_key,
            "RELAY_LIVEKIT__API_SECRET": self.server.api_secret,
            "RELAY_REDIS__URL": self.redis_server.url,
            "RELAY_REDIS__PREFIX": prefix,
            "RELAY_HTTP__HOST": self.ns.addr,
            "RELAY_HTTP__PORT": str(port),
            "RELAY_LOG__LEVEL": "warning",
            "RELAY_LOG__FORMAT": "json",
            **(extra_env or {}),
        }
        name = name or f"relay-{prefix}"
        proc = self.ns.spawn(
            list(argv or [sys.executable, "-m", "relay", "run"]),
            name=name,
            timeout_s=self.proc_timeout_s,
            stdout=self.log(name),
            stderr=subprocess.STDOUT,
            env=env,
        )
        relay = Relay(proc, command_pid(proc), f"http://{self.ns.addr}:{port}", prefix)
        relay.wait_ready(ready_timeout_s)
        return relay

    def load(self, mode: str, rooms: Sequence[str]) -> LoadClient:
        return LoadClient(self, mode, rooms, self.proc_timeout_s)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: teardown runs


# -- reading the relay's output ------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """One bench event as the relay wrote it."""

    entry_ms: int  # the stream entry id's time: Redis's clock at XADD, in ms
    received_ms: int  # the event's `ts`: the relay's SDK callback, in ms


class StreamReader:
    """Reads `<prefix>:events` incrementally and indexes bench events by event_id."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client, self.key = client, f"{prefix}:events"
        self.last = "-"
        self.found: dict[str, Written] = {}

    def poll(self) -> int:
        """Read what is new; returns how many entries were read."""
        read = 0
        while True:
            low = self.last if self.last == "-" else f"({self.last}"
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self.client.xrange(self.key, min=low, count=5000),
            )
            for entry_id, fields in entries:
                event = json.loads(fields[b"event"])
                event_id = (event.get("source") or {}).get("event_id")
                if event_id:
                    self.found[event_id] = Written(int(entry_id.split(b"-")[0]), _ts_ms(event))
            read += len(entries)
            if len(entries) < 5000:
                if entries:
                    self.last = entries[-1][0].decode()
                return read
            self.last = entries[-1][0].decode()

    def wait_for(
        self, ids: Sequence[str], quiet_s: float = 3.0, max_s: float = 60.0
    ) -> tuple[int, float]:
        """Poll until every id is found or nothing new came for `quiet_s` (bounded by
        `max_s`); returns (found, seconds waited)."""
        started = last_new = time.monotonic()
        wanted = set(ids)
        while True:
            if self.poll():
                last_new = time.monotonic()
            found = sum(1 for i in wanted if i in self.found)
            now = time.monotonic()
            if found == len(wanted) or now - last_new > quiet_s or now - started > max_s:
                return found, now - started
            time.sleep(0.2)


def _ts_ms(event: dict[str, Any]) -> int:
    """`ts` (2026-11-21T13:45:01.123Z, UTC) as epoch milliseconds."""
    ts = str(event["ts"])
    whole = time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(whole) * 1000 + int(ts[20:23])
