"""The one place a Redis client is made: URL, timeouts, retry policy, startup ping.

Replies stay bytes (`decode_responses=False`): stream entries are written and read as
bytes, and nothing pays for decoding what it does not look at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from relay.config import RedisSettings
from relay.errors import RelayError

log = structlog.get_logger(__name__)

# A pooled connection idle this long is checked with PING before use, so the first
# command after a Redis restart does not fail on a dead socket.
HEALTH_CHECK_INTERVAL_S = 30
# One immediate retry on a connection error (a pooled socket that died), no more: the
# pipeline owns retries, with backoff, metrics and logs, and a drain deadline.
CONNECTION_RETRIES = 1


class RedisUnavailableError(RelayError):
    """Redis did not answer PING after the retries."""


def create_redis(settings: RedisSettings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.url.get_secret_value(),
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        decode_responses=False,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), CONNECTION_RETRIES),
    )


async def ping(redis: aioredis.Redis) -> bool:
    """PING. (redis-py types `ping()` for the sync and async clients at once; this awaits it
    with the async type.)"""
    return bool(await cast(Awaitable[bool], redis.ping()))


def describe(redis: aioredis.Redis) -> dict[str, object]:
    """Where a client points, for logs: host, port, db; never the password."""
    kwargs = redis.connection_pool.connection_kwargs
    return {
        "host": kwargs.get("host", kwargs.get("path", "?")),
        "port": kwargs.get("port"),
        "db": kwargs.get("db", 0),
    }


async def ping_with_retries(
    redis: aioredis.Redis, *, attempts: int = 5, delay_s: float = 1.0
) -> None:
    """PING until Redis answers, `attempts` times `delay_s` apart, logging each failure.

    Raises RedisUnavailableError naming where it tried (like arq's create_pool)."""
    where = describe(redis)
    for attempt in range(1, attempts + 1):
        try:
            await ping(redis)
        except (RedisError, OSError) as exc:
            log.warning(
                "redis_ping_failed", attempt=attempt, attempts=attempts, error=str(exc), **where
            )
            if attempt == attempts:
                raise RedisUnavailableError(
                    f"redis at {where['host']}:{where['port']} did not answer PING "
                    f"after {attempts} attempts: {exc}"
                ) from exc
            await asyncio.sleep(delay_s)
        else:
            log.info("redis_connected", attempt=attempt, **where)
            return
