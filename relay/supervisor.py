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
- serves the pod's port: `/metrics` is every worker's page, each sample labelled
  `worker="<index>"` (0..N-1: the slot, the same across that slot's restarts), plus the
  supervisor's own series (below). `/healthz` answers while the supervisor runs;
  `/readyz` is ready when every worker is. Other paths (admin API, webhooks) go to a live
  worker, in turn: they all edit the shared wanted set, and `GET /v1/rooms` shows the
  whole deployment from any of them (`answered_by` names the worker).

`/metrics` with workers (the supervisor gathers the pages rather than prometheus_client's
multiprocess mode: that mode does not support the gauges read at scrape time that the
relay uses, and needs a shared directory cleaned between runs):
- Nothing is summed or merged: each worker's series, its process metrics
  (`process_cpu_seconds_total`, ...) included, are its own, told apart by `worker`. A
  restarted worker is a new process: its counters start again from 0 under the same
  label, which rate() and increase() read as a counter reset (as for a restarted pod);
  what the dead process counted after the last scrape is not on any page. A worker that
  does not answer a scrape is missing from that page (`relay_worker_up` 0).
- Deployment-wide gauges are reported by every worker: `relay_deployment_rooms_wanted`
  (each its own read of the shared set) and `relay_rooms_coverage_ratio` (the leader's
  figure, 1 elsewhere): queries take max() and min() of them, never sum().
- Queries aggregate over `worker` (`sum by (namespace, pod)`, `sum without (worker)`), so
  they read a single-process pod (`workers` = 1: no supervisor, no `worker` label) the
  same way.
- The supervisor's own series (their `worker` label names the worker they are about):
  `relay_workers` (N), `relay_worker_up{worker}` (1 if the worker answered this scrape)
  and `relay_worker_restarts_total{worker}` (restarts after the worker exited). Its own
  process metrics are not exported: the pod's process CPU and memory are its workers'.
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from relay.backoff import backoff_s
from relay.config import Settings
from relay.http.server import HttpServer

log = structlog.get_logger(__name__)

RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0
RESTART_RESET_S = 30.0
STOP_SLACK_S = 5.0
POLL_S = 0.2
WORKER_LABEL = "worker"
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
    restarts: int = 0  # spawns after the first: relay_worker_restarts_total
    up: bool = False  # answered the last /metrics scrape: relay_worker_up

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

    def _spawn(self, child: Child) -> None:
        if child.proc is not None:
            child.restarts += 1
        env = {**os.environ, "RELAY_WORKERS": "1", "RELAY_HTTP__HOST": "127.0.0.1"}
        env["RELAY_HTTP__PORT"] = str(child.port)
        env["RELAY_WORKER_INDEX"] = str(child.index)  # its observers' {worker}
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
        pages = {}
        for child, (status, text) in zip(self._children, answers, strict=True):
            families = _parsed(text, child.index) if status == 200 else None
            child.up = families is not None
            if families is not None:
                pages[child.index] = families
        page = Page([*self.own_families(), *label_workers(pages)])
        return web.Response(
            body=generate_latest(page), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def own_families(self) -> list[Metric]:
        """The supervisor's own series (module docstring)."""
        workers = GaugeMetricFamily("relay_workers", "Worker processes this supervisor runs.")
        workers.add_metric([], len(self._children))
        up = GaugeMetricFamily(
            "relay_worker_up",
            "1 if the worker answered this scrape (its series are on this page), else 0.",
            labels=[WORKER_LABEL],
        )
        restarts = CounterMetricFamily(
            "relay_worker_restarts",
            "Times the supervisor restarted the worker after it exited.",
            labels=[WORKER_LABEL],
        )
        for child in self._children:
            up.add_metric([str(child.index)], 1 if child.up else 0)
            restarts.add_metric([str(child.index)], child.restarts)
        return [workers, up, restarts]

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


class Page(Collector):
    """Families to render with prometheus_client's own text format."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _parsed(text: str, worker: int) -> list[Metric] | None:
    """A worker's page, parsed; None if it does not parse: that worker is left out (`up`
    0), not the whole pod's scrape."""
    try:
        return list(text_string_to_metric_families(text))
    except ValueError as exc:
        log.warning("worker_metrics_unreadable", worker=worker, error=str(exc)[:200])
        return None


def label_workers(pages: Mapping[int, Iterable[Metric]]) -> list[Metric]:
    """The workers' /metrics pages (parsed) as one: every sample with `worker="<index>"`,
    nothing summed; a family's samples together, in the order the workers list them."""
    families: dict[str, Metric] = {}
    for index, page in sorted(pages.items()):
        worker = str(index)
        for family in page:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples += [
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
                for sample in family.samples
            ]
    return list(families.values())


async def run_supervisor(settings: Settings, argv: Sequence[str]) -> int:
    return await Supervisor(settings, argv).run()
