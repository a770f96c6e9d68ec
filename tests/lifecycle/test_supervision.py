"""A supervised lifecycle: a crashed flush loop stops `relay run` (exit 1) without losing
what was accepted silently; a taken HTTP port fails it at start with one clear line; a
cancelled worker still shuts down in order, and stays cancelled; `relay run --workers 2`
labels each worker's series with its slot, which a killed and restarted worker keeps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.testing import capture_logs

from relay import __version__
from relay.config import HttpSettings, PipelineSettings, RedisSettings, Settings
from relay.contract.event import Event
from relay.keys import events_key
from relay.pipeline import Pipeline
from relay.supervisor import RESTART_INITIAL_S
from relay.worker import EXIT_FAILED, Worker
from tests.fixtures.sockets import free_port
from tests.lifecycle.faulty_relay import FAULT, ROOM
from tests.lifecycle.test_cli_and_signals import log_lines, relay_env

REPO = Path(__file__).resolve().parents[2]
CRASH_AFTER = 50
GRACE_S = 1.0
WORKER_START_S = 60.0  # two interpreters importing the SDK on a loaded 2-core machine


def written_events(redis_url: str, prefix: str) -> list[dict[str, Any]]:
    """Every event in the events stream, once per id (a retried batch writes it again)."""
    key = events_key(RedisSettings(prefix=prefix))
    with redis.Redis.from_url(redis_url) as client:
        entries = client.xrange(key)
    by_id = {fields[b"id"]: json.loads(fields[b"event"]) for _, fields in entries}
    return list(by_id.values())


@pytest.mark.parametrize("redis_state", ["up", "away"])
def test_a_crashed_flusher_stops_the_worker_and_nothing_accepted_is_lost_silently(
    redis_url: str, redis_prefix: str, redis_state: str
) -> None:
    url = redis_url if redis_state == "up" else f"redis://127.0.0.1:{free_port()}/0"
    env = relay_env(
        RELAY_REDIS__URL=url,
        RELAY_REDIS__PREFIX=redis_prefix,
        RELAY_SHUTDOWN_GRACE_S=str(GRACE_S),
        RELAY_PIPELINE__RETRY_MAX_S="0.2",
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.lifecycle.faulty_relay", str(CRASH_AFTER), "run"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,  # the unsupervised worker ran on after the crash: this expired
    )
    elapsed_s = time.monotonic() - started
    logs = log_lines(done.stderr)
    assert done.returncode == EXIT_FAILED, done.stderr[-3000:]
    [failed] = [line for line in logs if line["event"] == "worker_component_failed"]
    assert failed["component"] == "pipeline"
    assert FAULT in failed["error"]
    [stopped] = [line for line in logs if line["event"] == "relay_stopped"]
    accepted, unwritten = stopped["accepted"], stopped["unwritten"]
    assert accepted >= CRASH_AFTER
    events = written_events(redis_url, redis_prefix) if redis_state == "up" else []
    assert accepted == len(events) + unwritten
    if redis_state == "up":
        assert unwritten == 0  # the drain ran the flush loop itself and wrote everything
        # Every accepted event, each seq once: nothing skipped around the crash.
        assert sorted(event["seq"] for event in events) == list(range(1, accepted + 1))
        assert {event["room"] for event in events} == {ROOM}
    else:
        assert unwritten == accepted  # counted (shutdown_timeout) and logged, not hidden
        [timeout] = [line for line in logs if line["event"] == "pipeline_drain_timeout"]
        assert timeout["unwritten"] == unwritten
    assert elapsed_s < GRACE_S + 10  # bounded by the grace, whatever Redis does


def test_a_taken_port_fails_relay_run_at_start_with_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = relay_env(RELAY_HTTP__PORT=str(port), RELAY_REDIS__URL="redis://127.0.0.1:9/0")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "relay", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed_s = time.monotonic() - started
    assert done.returncode == EXIT_FAILED
    plain = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert plain == [
        f"relay: cannot listen on 127.0.0.1:{port}: address already in use; "
        "set RELAY_HTTP__PORT (toml: http.port) to a free port"
    ]
    assert "Traceback" not in done.stderr
    events = [line["event"] for line in log_lines(done.stderr)]
    assert "relay_started" not in events
    assert "worker_component_failed" not in events  # stopping: the flusher ended on cue
    assert events[-1] == "relay_stopped"  # the ordered shutdown ran
    assert elapsed_s < 10


async def test_a_cancelled_worker_shuts_down_in_order_then_stays_cancelled(
    redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(
        redis=RedisSettings(url=SecretStr(redis_url), prefix=redis_prefix),
        http=HttpSettings(host="127.0.0.1", port=0),
        shutdown_grace_s=GRACE_S,
    )
    worker = Worker(settings)
    running = asyncio.create_task(worker.run())
    async with asyncio.timeout(5):
        while worker.http.bound_port is None:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.01)
    port = worker.http.bound_port
    for n in range(20):
        event = Event("cancelled-room", "raw", "raw", {"n": n}, time.time(), dedupe_key=str(n))
        await worker.pipeline.submit(event)
    running.cancel()
    await asyncio.sleep(0)  # the shutdown is under way...
    running.cancel()  # ...and a second cancellation does not cut it short
    with pytest.raises(asyncio.CancelledError):
        await running
    assert len(written_events(redis_url, redis_prefix)) == 20  # the drain ran
    with pytest.raises(ConnectionRefusedError):  # and the HTTP server is closed
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_drain_whose_own_flush_loop_fails_still_reports_what_is_unwritten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_run = Pipeline.run
    calls = 0

    async def failing_run(self: Pipeline) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the loop the drain runs: it ends the drain, then fails
            await real_run(self)
        raise RuntimeError(f"fault {calls}")

    monkeypatch.setattr(Pipeline, "run", failing_run)
    settings = Settings(
        redis=RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0")),
        pipeline=PipelineSettings(retry_initial_s=0.05, retry_max_s=0.1),
        http=HttpSettings(host="127.0.0.1", port=0),
        shutdown_grace_s=0.5,
    )
    worker = Worker(settings)
    for n in range(5):
        event = Event("fault-room", "raw", "raw", {"n": n}, time.time(), dedupe_key=str(n))
        await worker.pipeline.submit(event)
    with capture_logs() as logs:
        async with asyncio.timeout(10):
            status = await worker.run()
    assert status == EXIT_FAILED
    failures = [entry["error"] for entry in logs if entry["event"] == "worker_component_failed"]
    assert failures == ["RuntimeError('fault 1')", "RuntimeError('fault 2')"]
    [stopped] = [entry for entry in logs if entry["event"] == "relay_stopped"]
    assert (stopped["accepted"], stopped["unwritten"]) == (5, 5)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def of_worker(samples: Samples, worker: str) -> Samples:
    """The worker's samples, keyed without the worker label."""
    label = ("worker", worker)
    return {(name, labels - {label}): v for (name, labels), v in samples.items() if label in labels}


def wait_scrape(port: int, ok: Any, timeout_s: float = WORKER_START_S) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if samples and ok(samples):
            return samples
        assert time.monotonic() < deadline, f"no such /metrics page: {sorted(samples)[:20]}"
        time.sleep(0.2)


def spawned(log_path: Path) -> list[dict[str, Any]]:
    lines = log_lines(log_path.read_text(errors="replace"))
    return [line for line in lines if line["event"] == "worker_spawned"]


def test_a_supervisor_labels_each_workers_series_and_a_restart_keeps_the_label(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env = relay_env(
        RELAY_WORKERS="2",
        RELAY_DISCOVERY__ENABLED="true",
        RELAY_REDIS__URL=redis_url,
        RELAY_REDIS__PREFIX=redis_prefix,
        RELAY_LIVEKIT__URL=f"ws://127.0.0.1:{free_port()}",  # no rooms to join here
        RELAY_PIPELINE__BUFFER_MAX_EVENTS="1234",
    )
    port = int(env["RELAY_HTTP__PORT"])
    log_path = tmp_path / "relay.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "run"], env=env, cwd=REPO, stdout=log, stderr=log
        )
    try:

        def up(samples: Samples, restarts: int = 0) -> bool:
            return all(
                samples.get(("relay_worker_up", frozenset({("worker", w)}))) == 1
                for w in ("0", "1")
            ) and samples[("relay_worker_restarts_total", frozenset({("worker", "1")}))] == (
                restarts
            )

        before = wait_scrape(port, up)
        assert before[("relay_workers", frozenset())] == 2
        workers = [of_worker(before, w) for w in ("0", "1")]
        for own in workers:
            # Each worker's own figure, not the pod's sum (the old page showed 2468).
            assert own[("relay_buffer_capacity_events", frozenset())] == 1234
            assert own[("relay_build_info", frozenset({("version", __version__)}))] == 1
            assert ("process_cpu_seconds_total", frozenset()) in own
        assert set(workers[0]) == set(workers[1])  # the same series, told apart by worker
        unlabelled = {key for key in before if "worker" not in dict(key[1])}
        assert unlabelled == {("relay_workers", frozenset())}

        [victim] = [line for line in spawned(log_path) if line["worker"] == 1]
        os.kill(int(victim["pid"]), signal.SIGKILL)
        after = wait_scrape(port, lambda samples: up(samples, restarts=1))
        [_, again] = [line for line in spawned(log_path) if line["worker"] == 1]
        assert again["pid"] != victim["pid"] and again["port"] == victim["port"]
        assert after[("relay_worker_restarts_total", frozenset({("worker", "0")}))] == 0
        restarted, survivor = of_worker(after, "1"), of_worker(after, "0")
        assert set(restarted) == set(workers[1])  # the slot's series, under the same label
        start: tuple[str, frozenset[tuple[str, str]]] = ("process_start_time_seconds", frozenset())
        assert restarted[start] >= workers[1][start] + RESTART_INITIAL_S / 2  # a new process
        assert survivor[start] == workers[0][start]  # the other worker untouched
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    assert status == 0, log_path.read_text(errors="replace")[-3000:]
