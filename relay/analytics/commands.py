"""`relay sessions`, `relay transcript`, `relay report`: read what `relay analytics`
wrote. A Redis that cannot be reached or a name that matches nothing is one line on
stderr and exit status 1."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from redis.exceptions import RedisError

from relay.analytics.report import render_report
from relay.analytics.text import sessions_table, transcript_text, utterance_line
from relay.analytics.views import SessionReader
from relay.checks import redact_url
from relay.config import Settings
from relay.redis_client import create_redis

EXIT_FAILED = 1


async def sessions_command(settings: Settings, count: int) -> int:
    async def body(reader: SessionReader) -> int:
        found = await reader.recent(count)
        if not found:
            return _fail("no session summaries yet (is `relay analytics` running? --prefix?)")
        print(sessions_table(found))
        return 0

    return await _with_reader(settings, body)


async def transcript_command(settings: Settings, name: str) -> int:
    async def body(reader: SessionReader) -> int:
        summary = await reader.find(name)
        if summary is not None:
            print(transcript_text(summary))
            return 0
        utterances = await reader.room_utterances(name)
        if not utterances:
            return _fail(f"no session or room named {name!r} has a transcript")
        print(f"room {name}: session not finished yet; utterances so far")
        for u in utterances:
            print(utterance_line(u, None))
        return 0

    return await _with_reader(settings, body)


async def report_command(settings: Settings, session_id: str, output: Path) -> int:
    async def body(reader: SessionReader) -> int:
        summary = await reader.find(session_id)
        if summary is None:
            return _fail(f"no summary of session {session_id!r} (ended? expired? --prefix?)")
        try:
            await asyncio.to_thread(output.write_text, render_report(summary), "utf-8")
        except OSError as exc:
            return _fail(f"cannot write {output}: {exc.strerror}")
        print(f"relay report: wrote {output}", file=sys.stderr)
        return 0

    return await _with_reader(settings, body)


async def _with_reader(settings: Settings, body: object) -> int:
    assert callable(body)
    redis = create_redis(settings.redis)
    try:
        status: int = await body(SessionReader(redis, settings.redis))
        return status
    except (RedisError, OSError) as exc:
        where = redact_url(settings.redis.url.get_secret_value())
        return _fail(f"cannot read from Redis at {where}: {exc}")
    finally:
        await redis.aclose()


def _fail(message: str) -> int:
    print(f"relay: {message}", file=sys.stderr)
    return EXIT_FAILED
