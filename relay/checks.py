"""`relay check`: validate configuration, reach Redis and the LiveKit API, print a summary.

Secrets are masked in the summary; the exit status is 0 only when every check passed.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from livekit import api
from redis.exceptions import RedisError

from relay.config import Settings
from relay.redis_client import create_redis, ping

CHECK_TIMEOUT_S = 5.0


def redact_url(url: str) -> str:
    """Mask the password in `redis://user:pass@host/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
    if not lk.api_key or not lk.api_secret.get_secret_value():
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


async def run_checks(settings: Settings) -> int:
    print(json.dumps(summary(settings), indent=2))
    problems = []
    if "redis" in settings.sinks:
        problems.append(await check_redis(settings))
    if settings.rooms or settings.livekit.api_key:
        problems.append(await check_livekit(settings))
    failed = [problem for problem in problems if problem]
    for problem in failed:
        print(f"FAIL {problem}")
    print("OK" if not failed else f"{len(failed)} check(s) failed")
    return 0 if not failed else 1
