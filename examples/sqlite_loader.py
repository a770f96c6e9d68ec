"""Load the relay's events into a SQLite table, each exactly once, across crashes.

    python examples/sqlite_loader.py --db events.db [--redis-url URL] [--prefix relay]

Reads `{prefix}:events` (or one room's stream, `--room`) with a consumer group. Why
every event ends up in the table exactly once:

- the table's primary key is the event `id`, and each event is written with
  INSERT OR IGNORE;
- the events of one read batch are committed in one transaction (`before_ack`), and the
  consumer acknowledges them (XACK) only after that commit.

A crash before the commit leaves the entry pending: it is delivered again (to this
loader when it restarts under the same `--consumer` name, or to another loader of the
group once it is idle for `--claim-idle-ms`) and inserted then. A crash after the
commit and before the XACK delivers it again too, and the insert is ignored. The relay's
own duplicates (the same id written twice) are ignored the same way. The ack comes last,
so nothing is lost; the key decides, so nothing is doubled.

SIGTERM or Ctrl-C stops after the event in hand; the summary goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
from pydantic import SecretStr
from redis.exceptions import RedisError

from relay import keys
from relay.checks import redact_url
from relay.config import RedisSettings
from relay.consumer import BadEntry, StreamConsumer, StreamEvent
from relay.logs import configure_logging
from relay.redis_client import create_redis, ping

log = structlog.get_logger("sqlite_loader")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,   -- the event id: the key that makes loading idempotent
    room        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    ts          TEXT NOT NULL,
    participant TEXT,
    data        TEXT NOT NULL,      -- JSON
    event       TEXT NOT NULL,      -- the whole event, JSON
    entry_id    TEXT NOT NULL       -- the stream entry it was first loaded from
);
CREATE INDEX IF NOT EXISTS events_room_seq ON events (room, seq);
CREATE TABLE IF NOT EXISTS bad_entries (
    entry_id TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    fields   TEXT NOT NULL
);
"""
INSERT = (
    "INSERT OR IGNORE INTO events"
    " (id, room, seq, kind, protocol, ts, participant, data, event, entry_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteLoader:
    """The handler writes in the open transaction; `commit` ends it, before the XACK."""

    def __init__(self, db: sqlite3.Connection, pause_after_commit_s: float = 0.0) -> None:
        self.db = db
        self.pause_after_commit_s = pause_after_commit_s
        self.inserted = 0
        self.already_loaded = 0
        self._batch = [0, 0]  # inserted, already loaded: counted once committed

    async def handle(self, item: StreamEvent) -> None:
        ev = item.event
        participant = ev.get("participant") or {}
        row = (
            item.id, item.room, item.seq, item.kind, str(ev.get("protocol", "")),
            str(ev.get("ts", "")), participant.get("identity"), json.dumps(ev.get("data", {})),
            json.dumps(ev, separators=(",", ":")), item.entry_id,
        )  # fmt: skip
        # sqlite3 blocks the loop for a moment: fine here; a networked database would use
        # its async driver, with the same statement and the same key.
        inserted = self.db.execute(INSERT, row).rowcount
        # 0: stored before a crash that came between its commit and its XACK.
        self._batch[0 if inserted else 1] += 1

    async def commit(self) -> None:
        try:
            self.db.commit()
        except sqlite3.Error:
            self.db.rollback()
            self._batch = [0, 0]
            raise  # the consumer acknowledges nothing and delivers the batch again
        inserted, already = self._batch
        self._batch = [0, 0]
        self.inserted += inserted
        self.already_loaded += already
        if already:
            log.info("loader_already_loaded", events=already)
        if self.pause_after_commit_s:
            await asyncio.sleep(self.pause_after_commit_s)

    def record_bad(self, bad: BadEntry) -> None:
        """Kept in bad_entries, committed with the batch it came in."""
        fields = {
            k.decode(errors="replace"): v.decode(errors="replace") for k, v in bad.fields.items()
        }
        self.db.execute(
            "INSERT OR IGNORE INTO bad_entries VALUES (?, ?, ?)",
            (bad.entry_id, bad.reason, json.dumps(fields)),
        )
        log.warning("loader_bad_entry", entry_id=bad.entry_id, reason=bad.reason)


def open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")  # readers (reports, tests) do not block the loader
    db.executescript(SCHEMA)
    return db


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="SQLite file (created if missing)")
    parser.add_argument("--redis-url", default=os.environ.get("RELAY_REDIS__URL"))
    parser.add_argument("--prefix", default=os.environ.get("RELAY_REDIS__PREFIX", "relay"))
    parser.add_argument("--room", help="load one room's stream instead of every event")
    parser.add_argument("--group", default="sqlite-loader")
    parser.add_argument("--consumer", default=socket.gethostname(), help="stable across restarts")
    parser.add_argument("--from-new", action="store_true", help="a new group skips the history")
    parser.add_argument("--batch", type=_positive(int), default=100, help="entries per commit")
    parser.add_argument("--claim-idle-ms", type=_positive(int), default=60_000)
    parser.add_argument("--claim-every-s", type=_positive(float), default=10.0)
    parser.add_argument(
        "--pause-after-commit-ms",
        type=float,
        default=0,
        help="(tests) sleep between a commit and its XACK, where a crash delivers again",
    )
    return parser


async def load(args: argparse.Namespace) -> int:
    url = args.redis_url or RedisSettings().url.get_secret_value()
    settings = RedisSettings(url=SecretStr(url), prefix=args.prefix)
    stream = keys.room_key(settings, args.room) if args.room else keys.events_key(settings)
    redis = create_redis(settings)
    try:
        await ping(redis)
    except (RedisError, OSError) as exc:
        await redis.aclose()
        print(f"sqlite_loader: cannot reach Redis at {redact_url(url)}: {exc}", file=sys.stderr)
        return 1
    try:
        db = open_db(args.db)
    except sqlite3.Error as exc:
        await redis.aclose()
        print(f"sqlite_loader: cannot open {args.db}: {exc}", file=sys.stderr)
        return 2
    loader = SqliteLoader(db, args.pause_after_commit_ms / 1000)
    consumer = StreamConsumer(
        redis, stream, args.group, args.consumer, loader.handle,
        batch=args.batch, claim_idle_ms=args.claim_idle_ms, claim_every_s=args.claim_every_s,
        group_start="$" if args.from_new else "0", on_bad_entry=loader.record_bad,
        before_ack=loader.commit,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, consumer.stop)
    log.info("loader_started", stream=stream, group=args.group, consumer=args.consumer)
    try:
        await consumer.run()
    finally:
        await redis.aclose()
        db.commit()  # a bad entry reported by a takeover, outside any batch
        db.close()
    stats = consumer.stats
    log.info(
        "loader_stopped", inserted=loader.inserted, already_loaded=loader.already_loaded,
        duplicates=stats.duplicates, bad=stats.bad, claimed=stats.claimed,
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("info", "auto")  # JSON lines unless stderr is a terminal
    return asyncio.run(load(args))


if __name__ == "__main__":
    sys.exit(main())
