"""Launchers for the dev tools: a private `redis-server` and the dev server.

Both are started in a session of their own and stopped by PID. Redis runs on loopback
in this namespace (the tests' private Redis) or inside a `NetNS` on its address (the
e2e tests, the demo, the benchmarks); either way it is ready when it answers PING, keeps
no snapshots unless `stop()` asks for one, and listens on TCP only.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.dev.netns import DEFAULT_PROC_TIMEOUT_S, NetNS
from relay.dev.ports import LOOPBACK, free_port
from relay.dev.processes import ManagedProcess, wait_for_line
from relay.dev.tokens import DEV_API_KEY, DEV_API_SECRET, join_token

REDIS_START_TIMEOUT_S = 10.0
REDIS_STOP_TIMEOUT_S = 10.0
DEVSERVER_READY_LINE = b"devserver ready"


def redis_client(url: str, timeout_s: float = 0.5) -> redis.Redis:
    """A client that answers at once: no retries (redis-py retries a refused connection
    3 times with backoff by default, and would retry SHUTDOWN's closed connection)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis at `url` answers PING within `timeout_s`."""
    try:
        with redis_client(url, timeout_s) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """One private `redis-server` on `host` (loopback here, or inside `ns`), by PID.

    `start()` again after `stop()` keeps the port; `stop()` saves the data set to
    `workdir` first, so a restart has it back (outage tests)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        ns: NetNS | None = None,
        port: int | None = None,
        proc_timeout_s: float = DEFAULT_PROC_TIMEOUT_S,
    ) -> None:
        """`proc_timeout_s`: inside `ns`, the `timeout` each start puts in front of it."""
        self.proc_timeout_s = proc_timeout_s
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="relay-redis-"))
        self.ns = ns
        self.host = ns.addr if ns is not None else LOOPBACK
        self.port = port or (ns.free_port() if ns is not None else free_port(self.host))
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def proc(self) -> ManagedProcess:
        if self._proc is None:
            raise RuntimeError("redis-server was never started")
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def start(self, timeout_s: float = REDIS_START_TIMEOUT_S) -> None:
        """Start on `self.port` (again) and wait until it answers PING."""
        if self.running:
            return
        self._proc = self._spawn(self._argv())
        deadline = time.monotonic() + timeout_s
        while not redis_answers(self.url):
            if not self._proc.alive() or time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log()}")
            time.sleep(0.01)

    def _argv(self) -> list[str]:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH")
        # --save '': no background snapshots; stop() saves explicitly, so a restart
        # loads what was written before the outage from dump.rdb in workdir.
        argv = [executable, "--port", str(self.port), "--bind", self.host]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        argv += ["--logfile", str(self.workdir / "redis.log"), "--daemonize", "no"]
        return [*argv, "--protected-mode", "no"]

    def _spawn(self, argv: list[str]) -> ManagedProcess:
        if self.ns is not None:
            return self.ns.spawn(
                argv, name="redis-server", stdout=subprocess.DEVNULL, timeout_s=self.proc_timeout_s
            )
        popen = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        return ManagedProcess("redis-server", popen)

    def stop(self, *, save: bool = True) -> None:
        """Stop the server; with `save`, SHUTDOWN SAVE first so start() finds the data."""
        if self._proc is None or not self.running:
            return
        if not save:
            self._proc.kill()
            return
        try:
            with redis_client(self.url, REDIS_STOP_TIMEOUT_S) as client:
                client.shutdown(save=True)
        except (redis.RedisError, OSError):
            pass  # it is going away either way; the wait below tells
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.popen.wait(REDIS_STOP_TIMEOUT_S)
        self._proc.kill()  # nothing left once it exited; a hung one is killed

    def close(self) -> None:
        """Stop for good (SIGTERM, then SIGKILL), whatever state the server is in."""
        if self._proc is not None:
            self._proc.stop()
        self._proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


def start_redis(
    ns: NetNS,
    port: int | None = None,
    workdir: Path | None = None,
    proc_timeout_s: float = DEFAULT_PROC_TIMEOUT_S,
) -> RedisServer:
    """A private redis-server inside `ns` on its address, answering PING."""
    server = RedisServer(workdir, ns=ns, port=port, proc_timeout_s=proc_timeout_s)
    try:
        server.start()
    except RuntimeError:
        server.close()
        raise
    return server


@dataclass(frozen=True)
class DevServer:
    """A `relay.dev.server` process inside a namespace."""

    proc: ManagedProcess
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
        return join_token(
            self.api_key, self.api_secret, identity, room, kind=kind, ttl=ttl, **grants
        )


def start_devserver(
    ns: NetNS,
    *,
    port: int | None = None,
    api_key: str = DEV_API_KEY,
    api_secret: str = DEV_API_SECRET,
    webhook_urls: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    timeout_s: float = 20.0,
    proc_timeout_s: float = DEFAULT_PROC_TIMEOUT_S,
) -> DevServer:
    """Start `python -m relay.dev.server` on `ns.addr` and wait for its ready line (`timeout_s`);
    `timeout` ends it after `proc_timeout_s`."""
    port = port or ns.free_port()
    argv = [sys.executable, "-m", "relay.dev.server", "--host", ns.addr, "--port", str(port)]
    argv += ["--api-key", api_key, "--api-secret", api_secret, *extra_args]
    for url in webhook_urls:
        argv += ["--webhook", url]
    proc = ns.spawn(argv, name="devserver", stderr=None, timeout_s=proc_timeout_s)
    wait_for_line(proc, DEVSERVER_READY_LINE, timeout_s)
    return DevServer(proc=proc, host=ns.addr, port=port, api_key=api_key, api_secret=api_secret)
