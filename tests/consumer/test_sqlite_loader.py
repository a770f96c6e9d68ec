"""examples/sqlite_loader.py as a real process: SIGKILL mid-stream, restart, exactly once.

The loader sleeps after each batch's commit (`--pause-after-commit-ms`), so a kill almost
always falls between a commit and the XACK of its batch: the one case where at-least-once delivery
hands the loader an event it already stored. The test checks that the kill did land
there (rows whose entries are still pending), then that after a restart the table holds
every event once and nothing is left pending.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from relay import keys
from relay.config import RedisSettings
from relay.redis_client import create_redis
from tests.consumer.support import events, write

LOADER = Path(__file__).resolve().parents[2] / "examples" / "sqlite_loader.py"
GROUP = "sqlite-loader"
ROOMS = ("room-a", "room-b", "room-c", "room-d")
PER_ROOM = 60
KILL_AFTER_ROWS = 40
TIMEOUT_S = 30.0


def start_loader(db: Path, settings: RedisSettings, consumer: str, *extra: str) -> Any:
    """The loader, its logs (stderr) in a file beside the database: a pipe nobody reads
    while it runs could fill up and stall it."""
    argv = [sys.executable, str(LOADER), "--db", str(db), "--consumer", consumer]
    argv += ["--redis-url", settings.url.get_secret_value(), "--prefix", settings.prefix]
    argv += ["--batch", "10", "--pause-after-commit-ms", "20", *extra]
    with (db.parent / f"{consumer}.log").open("a") as log:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)


def log_of(db: Path, consumer: str) -> str:
    return (db.parent / f"{consumer}.log").read_text()


def loaded(db: Path) -> list[tuple[str, str]]:
    """(event id, entry id) of every row; an empty list before the table exists."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute("SELECT id, entry_id FROM events"))
        except sqlite3.OperationalError:  # not created yet
            return []


def pending_ids(client: redis.Redis, stream: str) -> set[str]:
    try:
        rows: Any = client.xpending_range(stream, GROUP, "-", "+", 10_000)
    except redis.ResponseError:  # the group does not exist yet
        return set()
    return {row["message_id"].decode() for row in rows}


def all_delivered(client: redis.Redis, stream: str) -> bool:
    """The group was handed the stream's last entry (and so every one before it)."""
    groups: Any = client.xinfo_groups(stream)
    info: Any = client.xinfo_stream(stream)
    return bool(groups[0]["last-delivered-id"] == info["last-generated-id"])


def committed_not_acked(db: Path, client: redis.Redis, stream: str) -> int:
    pending = pending_ids(client, stream)
    return sum(1 for _, entry_id in loaded(db) if entry_id in pending)


def wait(what: str, condition: Any, process: Any) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"loader exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def kill_between_commit_and_ack(db: Path, settings: RedisSettings, client: redis.Redis) -> None:
    """Start the loader and SIGKILL it once rows are committed but not acknowledged."""
    stream = keys.events_key(settings)
    for _attempt in range(5):
        loader = start_loader(db, settings, "loader-1")
        try:
            wait(
                "rows committed, not acknowledged",
                lambda: (
                    len(loaded(db)) >= KILL_AFTER_ROWS
                    and committed_not_acked(db, client, stream) > 0
                ),
                loader,
            )
        finally:
            loader.send_signal(signal.SIGKILL)
            loader.wait(timeout=10)
        assert loader.returncode == -signal.SIGKILL
        if committed_not_acked(db, client, stream) > 0:  # the kill landed in the window
            return
    raise AssertionError("the kill never fell between a commit and its XACK")


@pytest.mark.parametrize("restart_as", ["loader-1", "loader-2"])
async def test_every_event_is_loaded_exactly_once_across_a_kill_9(
    tmp_path: Path, redis_settings: RedisSettings, restart_as: str
) -> None:
    """loader-1 restarted reads its own pending entries first; loader-2 (a new pod name)
    takes them over from the dead loader-1 with XAUTOCLAIM."""
    aio = create_redis(redis_settings)
    produced = [event for room in ROOMS for event in events(room, PER_ROOM)]
    try:
        for start in range(0, len(produced), 30):
            await write(aio, redis_settings, produced[start : start + 30])
        await write(aio, redis_settings, produced[100:130])  # the relay's own duplicates
        await aio.xadd(keys.events_key(redis_settings), {"event": "not json"})
    finally:
        await aio.aclose()
    stream = keys.events_key(redis_settings)
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    db = tmp_path / "events.db"
    try:
        kill_between_commit_and_ack(db, settings=redis_settings, client=client)
        killed_rows = len(loaded(db))
        assert 0 < killed_rows < len(produced)

        claim = ["--claim-idle-ms", "200", "--claim-every-s", "0.05"]
        loader = start_loader(db, redis_settings, restart_as, *claim)
        try:
            wait(
                "every entry delivered and acknowledged",
                lambda: all_delivered(client, stream) and not pending_ids(client, stream),
                loader,
            )
        finally:
            loader.send_signal(signal.SIGTERM)
            loader.wait(timeout=10)
        stderr = log_of(db, restart_as)
        assert loader.returncode == 0, stderr

        rows = loaded(db)
        assert sorted(event_id for event_id, _ in rows) == sorted(e.id for e in produced)
        with sqlite3.connect(db) as conn:
            per_room = dict(conn.execute("SELECT room, count(DISTINCT seq) FROM events GROUP BY 1"))
            bad = list(conn.execute("SELECT reason FROM bad_entries"))
        assert per_room == dict.fromkeys(ROOMS, PER_ROOM)
        assert bad == [("invalid_json",)]

        logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        stopped = next(line for line in logs if line["event"] == "loader_stopped")
        # The restart was handed the rows committed before the kill, and stored none twice.
        assert stopped["already_loaded"] >= 1
        assert stopped["inserted"] == len(produced) - killed_rows
        if restart_as == "loader-2":
            assert stopped["claimed"] >= 1
    finally:
        client.close()
