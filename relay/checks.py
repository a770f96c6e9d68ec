"""`relay check`: validate configuration, reach Redis and the LiveKit API, print a summary.

Secrets are masked in the summary; the exit status is 0 only when every check passed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from livekit import api
from redis.exceptions import RedisError

from relay.config import Settings
from relay.redis_client import create_redis, ping

# Each check gets this long: a server that accepts and never answers is a failure too.
CHECK_TIMEOUT_S = 5.0
Check = Callable[[Settings], Awaitable[str | None]]


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


async def check_redis(settings: Settings) -> str | None:
    redis = create_redis(settings.redis)
    where = redact_url(settings.redis.url.get_secret_value())
    try:
        await ping(redis)
    except (RedisError, OSError) as exc:
        return f"redis: no answer at {where}: {type(exc).__name__}: {exc}"
    finally:
        await redis.aclose()
    return None


async def check_livekit(settings: Settings) -> str | None:
    lk = settings.livekit
    if not lk.can_mint_tokens:
        return "livekit: no API key/secret (RELAY_LIVEKIT__API_KEY, RELAY_LIVEKIT__API_SECRET)"
    http_url = lk.url.replace("wss://", "https://").replace("ws://", "http://")
    client = api.LiveKitAPI(http_url, lk.api_key, lk.api_secret.get_secret_value())
    try:
        await client.room.list_rooms(api.ListRoomsRequest())
    except Exception as exc:
        return f"livekit: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


async def bounded(name: str, check: Check, settings: Settings) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check(settings)
    except TimeoutError:
        return f"{name}: no answer within {CHECK_TIMEOUT_S:g} s"


async def run_checks(settings: Settings) -> int:
    print(json.dumps(summary(settings), indent=2))
    problems = []
    if "redis" in settings.sinks:
        problems.append(await bounded("redis", check_redis, settings))
    if settings.livekit.api_key:  # static rooms need it (a configuration error otherwise)
        problems.append(await bounded("livekit", check_livekit, settings))
    failed = [problem for problem in problems if problem]
    for problem in failed:
        print(f"FAIL {problem}")
    print("OK" if not failed else f"{len(failed)} check(s) failed")
    return 0 if not failed else 1
