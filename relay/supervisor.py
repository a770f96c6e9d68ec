"""`relay run --workers N`: one pod, N worker processes, one HTTP port.

The SDK's per-event cost grows with the rooms of a process and one process uses one core
for Python, so a pod with several cores runs several workers. The supervisor:
- starts N `relay run` processes (fork + exec: a fresh interpreter each, never a fork of
  a process that loaded the SDK), each with its own HTTP port on 127.0.0.1 and its own
  leases and `max_rooms` (so `workers > 1` needs `discovery.enabled`);
- restarts a worker that exits on its own, after a capped, jittered backoff that grows
  with each quick exit (reset after a worker ran RESTART_RESET_S);
- forwards SIGTERM/SIGINT once to every worker, waits for every drain (bounded by
  `shutdown_grace_s` + STOP_SLACK_S) and exits 0 if every worker did, else the highest
  status;
- serves the pod's port: `/metrics` is the sum of the workers' samples (aggregation by
  the supervisor rather than prometheus_client's multiprocess mode: that mode does not
  support the gauges read at scrape time that the relay uses, and needs a shared
  directory cleaned between runs); `relay_rooms_coverage_ratio` takes the minimum,
  `relay_build_info` one copy. `/healthz` answers while the supervisor runs; `/readyz` is
  ready when every worker is. Other paths (admin API, webhooks) go to a live worker, in
  turn: they all edit the shared wanted set, and `GET /v1/rooms` shows the whole
  deployment from any of them (`answered_by` names the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from relay.backoff import backoff_s
from relay.config import Settings
from relay.http.server import HttpServer

log = structlog.get_logger(__name__)

RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0
RESTART_RESET_S = 30.0
STOP_SLACK_S = 5.0
POLL_S = 0.2
MINIMUM = frozenset({"relay_rooms_coverage_ratio"})
ONE_COPY = frozenset({"relay_build_info"})
HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    index: int
    port: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        """`argv`: the `relay` arguments the workers run with (without --workers)."""
        self._settings = settings
        self._argv = [sys.executable, "-m", "relay", *argv]
        self._children = [Child(n, _free_port()) for n in range(settings.workers)]
        self._stopping = asyncio.Event()
        self._next = 0
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._http = HttpServer(app, settings.http.host, settings.http.port)
        self._session: aiohttp.ClientSession | None = None
        # Counters of workers that died, as last scraped: the pod's totals never go back.
        self._last: dict[int, str] = {}
        self._retired = ""

    def _spawn(self, child: Child) -> None:
        if (last := self._last.pop(child.index, None)) is not None:
            self._retired = aggregate([self._retired, last], counters_only=True)
        env = {**os.environ, "RELAY_WORKERS": "1", "RELAY_HTTP__HOST": "127.0.0.1"}
        env["RELAY_HTTP__PORT"] = str(child.port)
        child.proc = subprocess.Popen(self._argv, env=env)  # stdout, stderr: the pod's
        child.started_at = time.monotonic()
        log.info("worker_spawned", worker=child.index, pid=child.proc.pid, port=child.port)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            await self._http.start()
            for child in self._children:
                self._spawn(child)
            await self._watch()
            return await self._stop_all()
        finally:
            await self._http.stop()
            await self._session.close()

    async def _watch(self) -> None:
        """Restart workers that exit on their own, until a signal."""
        due: dict[int, float] = {}
        while not self._stopping.is_set():
            now = time.monotonic()
            for child in self._children:
                if child.alive() or child.proc is None:
                    continue
                if child.index not in due:
                    ran_s = now - child.started_at
                    child.quick_exits = 0 if ran_s >= RESTART_RESET_S else child.quick_exits + 1
                    delay = backoff_s(child.quick_exits, RESTART_INITIAL_S, RESTART_MAX_S)
                    due[child.index] = now + delay
                    log.warning(
                        "worker_exited",
                        worker=child.index,
                        status=child.proc.returncode,
                        restart_in_s=round(delay, 2),
                    )
                elif now >= due[child.index]:
                    del due[child.index]
                    self._spawn(child)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._stopping.wait()

    async def _stop_all(self) -> int:
        log.info("supervisor_stopping", workers=len(self._children))
        for child in self._children:
            if child.alive() and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)  # once: a second one forces an exit
        waits = [asyncio.to_thread(c.proc.wait) for c in self._children if c.proc is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.shutdown_grace_s + STOP_SLACK_S):
                await asyncio.gather(*waits)
        statuses = []
        for child in self._children:
            if child.proc is None:
                continue
            if child.alive():
                child.proc.kill()
            status = child.proc.wait()
            if status == -signal.SIGTERM:
                # Our SIGTERM arrived before the worker's handler was installed (it was
                # still starting: a worker installs it before taking any room), so it had
                # accepted nothing and lost nothing.
                log.info("worker_stopped_while_starting", worker=child.index)
                status = 0
            statuses.append(status)
        worst = max((s if s >= 0 else 1 for s in statuses), default=0)
        log.info("supervisor_stopped", statuses=statuses)
        return worst

    # -- HTTP --------------------------------------------------------------------------

    async def _get(self, child: Child, path: str) -> tuple[int, str]:
        assert self._session is not None
        try:
            async with self._session.get(child.url + path) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, str(exc)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "workers": len(self._children)})

    async def _readyz(self, request: web.Request) -> web.Response:
        answers = await asyncio.gather(*(self._get(c, "/readyz") for c in self._children))
        ready = [status == 200 for status, _ in answers]
        status = 200 if all(ready) else 503
        return web.json_response({"ready": all(ready), "workers": ready}, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        answers = await asyncio.gather(*(self._get(c, "/metrics") for c in self._children))
        texts = []
        for child, (status, text) in zip(self._children, answers, strict=True):
            if status == 200:
                self._last[child.index] = text
                texts.append(text)
        total = aggregate([*texts, self._retired], retired_last=True)
        return web.Response(text=total, content_type="text/plain")

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        live = [c for c in self._children if c.alive()]
        if not live or self._session is None:
            return web.json_response({"error": "no worker is running"}, status=503)
        child = live[self._next % len(live)]
        self._next += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        url = child.url + request.rel_url.path_qs
        try:
            async with self._session.request(
                request.method, url, data=body, headers=headers
            ) as response:
                payload = await response.read()
                kept = {"Content-Type": response.headers.get("Content-Type", "text/plain")}
                return web.Response(status=response.status, body=payload, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response({"error": f"worker unreachable: {exc}"}, status=502)


COUNTER_TYPES = frozenset({"counter", "histogram", "summary"})


def aggregate(
    texts: Sequence[str], *, counters_only: bool = False, retired_last: bool = False
) -> str:
    """The workers' samples summed per (name, labels); see the module docstring.

    `counters_only`: keep only counters and histograms (what a dead worker leaves behind);
    `retired_last`: the last text is such a remainder, added to the counters only."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    meta: dict[str, tuple[str, str]] = {}
    order: dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for n, text in enumerate(texts):
        retired = retired_last and n == len(texts) - 1
        for family in text_string_to_metric_families(text):
            if (counters_only or retired) and family.type not in COUNTER_TYPES:
                continue
            meta.setdefault(family.name, (family.type, family.documentation))
            keys = order.setdefault(family.name, [])
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    keys.append(key)
                    values[key] = sample.value
                elif family.name in MINIMUM:
                    values[key] = min(values[key], sample.value)
                elif family.name not in ONE_COPY:
                    values[key] += sample.value
    lines = []
    for family_name, (kind, doc) in meta.items():
        # The text format names a counter with its _total (the parser strips it).
        shown_name = f"{family_name}_total" if kind == "counter" else family_name
        lines += [f"# HELP {shown_name} {_escape(doc)}", f"# TYPE {shown_name} {kind}"]
        for name, labels in order[family_name]:
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            value = values[(name, labels)]
            lines.append(f"{name}{{{shown}}} {value!r}" if shown else f"{name} {value!r}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def run_supervisor(settings: Settings, argv: Sequence[str]) -> int:
    return await Supervisor(settings, argv).run()
