"""What the e2e tests share: the relay as a subprocess, its Redis streams, its metrics,
and the actor scripts (`actors.py`) run inside the namespace.

`RelayProcess.start(ns, env)` runs `python -m relay run` inside the namespace with
JSON logs on stderr (read by a thread, kept in `logs`) and the HTTP server on the
namespace address, port 0 (the bound port comes from the `http_listening` log line).
`stop()` sends ONE SIGTERM to the relay's own PID (`command_pid`): the relay treats a
second SIGTERM as "exit now", and a signal to `timeout` (which `NetNS.spawn` puts in front
of every command) or to its process group reaches the relay twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from relay.contract.schema import validate_event
from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from relay.dev.processes import ManagedProcess

ACTORS_SCRIPT = Path(__file__).resolve().with_name("actors.py")
POLL_S = 0.05
Event = dict[str, Any]
EventsCheck = Callable[[list[Event]], bool]
StartRelay = Callable[..., "RelayProcess"]


def unique(name: str) -> str:
    """A room name (or key prefix) no other test, nor an earlier run, uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def relay_env(
    server: DevServer, redis_url: str, prefix: str, rooms: Sequence[str] = ()
) -> dict[str, str]:
    """The environment of a relay observing `server`'s rooms and writing to Redis."""
    return {
        "RELAY_LIVEKIT__URL": server.ws_url,
        "RELAY_LIVEKIT__API_KEY": server.api_key,
        "RELAY_LIVEKIT__API_SECRET": server.api_secret,
        "RELAY_REDIS__URL": redis_url,
        "RELAY_REDIS__PREFIX": prefix,
        "RELAY_ROOMS": json.dumps(list(rooms)),
    }


class Deadline:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._end = time.monotonic() + timeout_s

    @property
    def left_s(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self._end


def command_pid(proc: ManagedProcess) -> int | None:
    """The PID of the command `NetNS.spawn` runs under `timeout` (its only child), None
    once it is gone. Signal this one: `timeout` forwards a signal it gets to its child AND
    to its process group, so a signal to `proc.pid` or its group arrives twice."""
    children = _children_of(proc.pid) if proc.alive() else []
    assert len(children) <= 1, f"`timeout` has more than one child: {children}"
    return children[0] if children else None


def _children_of(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (no /proc/<pid>/task/*/children on every kernel)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            # Fields after the parenthesised command: state, ppid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@dataclass
class Stopped:
    """How a relay process ended: its exit status, how long the stop took, its logs."""

    returncode: int | None
    stop_s: float
    logs: list[dict[str, Any]]
    text: list[str]  # every line it wrote to stderr, JSON or not

    def log(self, event: str) -> dict[str, Any]:
        matches = [line for line in self.logs if line.get("event") == event]
        assert len(matches) == 1, f"{len(matches)} {event!r} log lines: {self.logs[-20:]}"
        return matches[0]


@dataclass
class RelayProcess:
    """`relay run` inside the namespace; see the module docstring."""

    ns: NetNS
    proc: ManagedProcess
    env: dict[str, str]
    logs: list[dict[str, Any]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    port: int | None = None
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, ns: NetNS, env: Mapping[str, str]) -> RelayProcess:
        # The test machine's own RELAY_* variables must not leak into the relay.
        base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        full = {**base, "RELAY_LOG__FORMAT": "json", "RELAY_HTTP__HOST": ns.addr}
        full |= {"RELAY_HTTP__PORT": "0", **env}
        argv = [sys.executable, "-m", "relay", "run"]
        proc = ns.spawn(
            argv, name="relay", env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        relay = cls(ns=ns, proc=proc, env=full)
        relay._reader = threading.Thread(target=relay._read_logs, daemon=True)
        relay._reader.start()
        return relay

    def _read_logs(self) -> None:
        stream = self.proc.popen.stderr
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.text.append(line)
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    self.logs.append(parsed)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in list(self.logs) if line.get("event") == event]

    @property
    def base_url(self) -> str:
        assert self.port is not None, "the relay's HTTP server is not listening yet"
        return f"http://{self.ns.addr}:{self.port}"

    async def wait_listening(self, timeout_s: float = 20.0) -> None:
        deadline = Deadline(timeout_s)
        while not (lines := self.log_events("http_listening")):
            if not self.proc.alive() or deadline.passed:
                raise AssertionError(f"relay not listening: {self.text[-30:]}")
            await asyncio.sleep(POLL_S)
        self.port = int(lines[0]["port"])

    async def request(
        self, method: str, path: str, *, body: Any = None, token: str | None = None
    ) -> tuple[int, str]:
        """One HTTP request to the relay over the veth link: (status, body text)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.base_url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.text()

    async def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        return await self.request("GET", path, token=token)

    async def wait_ready(self, timeout_s: float = 20.0) -> list[tuple[int, str]]:
        """Poll /readyz until 200; returns every answer seen (status, body)."""
        await self.wait_listening(timeout_s)
        deadline = Deadline(timeout_s)
        seen: list[tuple[int, str]] = []
        while True:
            answer = await self.get("/readyz")
            seen.append(answer)
            if answer[0] == 200:
                return seen
            if not self.proc.alive() or deadline.passed:
                raise AssertionError(f"relay not ready: {seen[-1]}; logs {self.text[-30:]}")
            await asyncio.sleep(POLL_S)

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics, keyed by (name, labels)."""
        status, body = await self.get("/metrics")
        assert status == 200, body
        samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    async def stop(self, timeout_s: float = 30.0) -> Stopped:
        """One SIGTERM to the relay; wait (bounded) for it to exit; its status and logs.

        `returncode` is the relay's: `timeout` exits with its command's status."""
        started = time.monotonic()
        pid = command_pid(self.proc)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.proc.popen.wait, timeout_s)
        stop_s = time.monotonic() - started
        self.close()
        return Stopped(self.proc.popen.returncode, stop_s, list(self.logs), list(self.text))

    def close(self) -> None:
        """Kill whatever is left (by process group), after the log reader saw EOF."""
        if self.proc.alive():
            self.proc.stop()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.proc.stop()


# -- Redis ---------------------------------------------------------------------------------


@dataclass
class Streams:
    """The relay's Redis keys for one prefix, read from the test over the veth link."""

    redis: aioredis.Redis
    prefix: str

    def room_key(self, room: str) -> str:
        return f"{self.prefix}:room:{{{room}}}"

    async def room_events(self, room: str) -> list[Event]:
        """The room stream's events, in stream order, each checked against the schema."""
        events = []
        for _, fields in await self.redis.xrange(self.room_key(room)):
            event = json.loads(fields[b"event"])
            validate_event(event)
            assert fields[b"kind"].decode() == event["kind"]
            assert fields[b"id"].decode() == event["id"]
            assert fields[b"room"].decode() == event["room"] == room
            events.append(event)
        return events

    async def wait_room(
        self, room: str, check: EventsCheck, timeout_s: float = 15.0, what: str = ""
    ) -> list[Event]:
        """Poll the room stream until `check(events)`; AssertionError on the deadline."""
        deadline = Deadline(timeout_s)
        while True:
            events = await self.room_events(room)
            if check(events):
                return events
            if deadline.passed:
                kinds = [(e["seq"], e["kind"], e["data"]) for e in events[-15:]]
                raise AssertionError(f"{room}: no {what or check} in {timeout_s}s; last: {kinds}")
            await asyncio.sleep(POLL_S)

    async def xlen(self, which: str) -> int:
        return int(await self.redis.xlen(f"{self.prefix}:{which}"))

    async def wait_dead_letters(self, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        deadline = Deadline(timeout_s)
        while len(letters := await self.dead_letters()) < count:
            assert not deadline.passed, f"{len(letters)} dead letters, not {count}: {letters}"
            await asyncio.sleep(POLL_S)
        return letters

    async def dead_letters(self) -> list[dict[str, Any]]:
        entries = await self.redis.xrange(f"{self.prefix}:dlq")
        letters = []
        for _, fields in entries:
            letter: dict[str, Any] = json.loads(fields[b"entry"])
            assert letter["reason"] == fields[b"reason"].decode()
            assert letter["id"] == fields[b"id"].decode()
            letters.append(letter)
        return letters


def has(kind: str, /, **data: Any) -> EventsCheck:
    """A check: some event of `kind` whose data has these values."""

    def check(events: list[Event]) -> bool:
        return any(matches(e, kind, **data) for e in events)

    check.__qualname__ = f"{kind} {data}"
    return check


def matches(event: Event, kind: str, /, **data: Any) -> bool:
    return bool(event["kind"] == kind and all(event["data"].get(k) == v for k, v in data.items()))


def brief(events: list[Event]) -> str:
    """Events one a line (seq, kind, sender identity and sid, data) for failure messages."""
    return "\n".join(
        json.dumps(
            [e["seq"], e["kind"], e["participant"]["identity"], e["participant"]["sid"], e["data"]]
        )
        for e in events
    )


def assert_seq_contiguous(events: list[Event]) -> None:
    """One relay run of a room: seq 1..N in stream order, no gap, no repeat."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)


# -- actors --------------------------------------------------------------------------------


@dataclass
class Actor:
    """An `actors.py` process inside the namespace; `result` once it printed it."""

    proc: asyncio.subprocess.Process
    ns: NetNS
    lines: list[dict[str, Any]] = field(default_factory=list)

    async def next_line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
            if not raw:
                raise AssertionError(f"actor exited ({await self.proc.wait()}) before a result")
            with contextlib.suppress(ValueError):
                line: dict[str, Any] = json.loads(raw)
                self.lines.append(line)
                return line

    async def result(self, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = Deadline(timeout_s)
        while "result" not in (line := await self.next_line(deadline.left_s)):
            pass
        result: dict[str, Any] = line["result"]
        return result

    async def wait(self, timeout_s: float = 15.0) -> int:
        """Close stdin (an actor that holds on leaves), wait; killed by group if stuck."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = await self.proc.wait()
        self.ns.untrack_pid(self.proc.pid)
        return code


@contextlib.asynccontextmanager
async def actor(
    ns: NetNS, server: DevServer, name: str, *args: str, timeout_s: float = 90.0
) -> AsyncIterator[Actor]:
    """Run `actors.py name --url <server> args...` inside `ns`; reaped (by PID) on exit."""
    env = {**os.environ, "LIVEKIT_API_KEY": server.api_key, "LIVEKIT_API_SECRET": server.api_secret}
    script = [sys.executable, str(ACTORS_SCRIPT), name, "--url", server.ws_url, *args]
    proc = await ns.spawn_async(script, env=env, timeout_s=timeout_s)
    running = Actor(proc, ns)
    try:
        yield running
    finally:
        await running.wait()
