"""`relay check`: validate the configuration, then reach what `relay run` needs.

Each check ends OK, FAIL or SKIPPED, with the reason: LiveKit's signal endpoint (an HTTP
GET of the server's `/`, which livekit-server and the dev server answer with 200), the
LiveKit API (`ListRooms`, with the API key and secret), Redis (PING, when a sink needs
it), the journal (its directory writable, what it holds for the next start). Each gets
CHECK_TIMEOUT_S: a server that accepts and never answers is a failure.
Secrets are masked; the exit status is 1 when any check failed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from livekit import api
from redis.exceptions import RedisError

from relay.config import Settings
from relay.journal import unacknowledged
from relay.redis_client import create_redis, describe_redis_error, no_answer_hint, ping
from relay.sinks import write_guard

CHECK_TIMEOUT_S = 5.0
Status = Literal["OK", "FAIL", "SKIPPED"]


@dataclass(frozen=True)
class Result:
    name: str
    status: Status
    detail: str


class Failed(Exception):
    """A check's failure, worded for the operator."""


Check = Callable[[Settings], Awaitable[Result]]


def redact_url(url: str) -> str:
    """Mask the password in `redis://user:pass@host/0` and in `?password=...`."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in query):
        masked = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return urlunsplit(parts)


def summary(settings: Settings) -> dict[str, object]:
    dumped = settings.model_dump(mode="json")
    dumped["redis"]["url"] = redact_url(settings.redis.url.get_secret_value())
    return dumped


def http_url(ws_url: str) -> str:
    """The LiveKit URL as the HTTP(S) base its API and health endpoint use."""
    if ws_url.startswith("wss://"):
        return "https://" + ws_url.removeprefix("wss://")
    if ws_url.startswith("ws://"):
        return "http://" + ws_url.removeprefix("ws://")
    return ws_url


async def check_redis(settings: Settings) -> Result:
    where = redact_url(settings.redis.url.get_secret_value())
    if "redis" not in settings.sinks:
        return Result("redis", "SKIPPED", "no sink writes to Redis (RELAY_SINKS)")
    redis = create_redis(settings.redis)
    try:
        await ping(redis)
        guard = await write_guard.describe(settings.redis.write_guard, redis)
    except (RedisError, OSError) as exc:
        raise Failed(
            f"no answer at {where}: {describe_redis_error(exc, tls=settings.redis.tls)}"
        ) from None
    finally:
        await redis.aclose()
    return Result("redis", "OK", f"PING answered at {where}; write guard: {guard}")


async def check_livekit(settings: Settings) -> Result:
    url = http_url(settings.livekit.url).rstrip("/") + "/"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            status = response.status
    except aiohttp.ClientError as exc:
        raise Failed(f"no answer at {url}: {exc}") from None
    if status != 200:
        raise Failed(f"{url} answered HTTP {status}, not 200: is it a LiveKit server?")
    return Result("livekit", "OK", f"signal endpoint answered at {url}")


async def check_livekit_api(settings: Settings) -> Result:
    lk = settings.livekit
    if not lk.can_mint_tokens:
        reason = "no API key and secret (RELAY_LIVEKIT__API_KEY, RELAY_LIVEKIT__API_SECRET)"
        return Result("livekit-api", "SKIPPED", reason)
    client = api.LiveKitAPI(http_url(lk.url), lk.api_key, lk.api_secret.get_secret_value())
    try:
        rooms = await client.room.list_rooms(api.ListRoomsRequest())
    except Exception as exc:  # TwirpError (refused credentials), aiohttp errors
        raise Failed(f"ListRooms failed: {type(exc).__name__}: {exc}") from None
    finally:
        await client.aclose()
    return Result("livekit-api", "OK", f"ListRooms answered ({len(rooms.rooms)} rooms)")


async def check_journal(settings: Settings) -> Result:
    journal = settings.journal
    if not journal.enabled:
        return Result("journal", "SKIPPED", "journal.path is empty (the journal is off)")
    return await asyncio.to_thread(_journal_state, settings)


def _journal_state(settings: Settings) -> Result:
    """Whether `relay run` can journal where configured, and what it would replay."""
    journal = settings.journal
    root = Path(journal.path)
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise Failed(f"journal.path {root}: {existing} is not a writable directory")
    waiting = 0
    for index in range(settings.workers):
        directory = root / f"worker-{index}"
        if directory.is_dir():
            waiting += sum(1 for _ in unacknowledged(directory))
    stats = os.statvfs(existing)
    free_mib = stats.f_bavail * stats.f_frsize / 2**20
    detail = (
        f"{root}: writable, fsync {journal.fsync}, max_bytes {journal.max_bytes / 2**20:.0f} "
        f"MiB, {free_mib:.0f} MiB free; {waiting} entries waiting (written at the next start)"
    )
    return Result("journal", "OK", detail)


async def bounded(name: str, check: Check, settings: Settings) -> Result:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check(settings)
    except TimeoutError:
        hint = no_answer_hint(settings.redis) if name == "redis" else ""
        return Result(name, "FAIL", f"no answer within {CHECK_TIMEOUT_S:g} s{hint}")
    except Failed as exc:
        return Result(name, "FAIL", str(exc))


CHECKS: tuple[tuple[str, Check], ...] = (
    ("livekit", check_livekit),
    ("livekit-api", check_livekit_api),
    ("redis", check_redis),
    ("journal", check_journal),
)


async def run_checks(settings: Settings, *, as_json: bool = False) -> int:
    results = await asyncio.gather(*(bounded(name, check, settings) for name, check in CHECKS))
    ok = all(result.status != "FAIL" for result in results)
    if as_json:
        report = {"ok": ok, "checks": [asdict(r) for r in results], "settings": summary(settings)}
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps(summary(settings), indent=2))
        for result in results:
            print(f"{result.status} {result.name}: {result.detail}")
        failed = sum(result.status == "FAIL" for result in results)
        print("all checks passed" if ok else f"{failed} check(s) failed")
    return 0 if ok else 1
