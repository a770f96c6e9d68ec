"""The one place a Redis client is made: URL, timeouts, retry policy.

Replies stay bytes (`decode_responses=False`): stream entries are written and read as
bytes, and nothing pays for decoding what it does not look at.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from relay.config import RedisSettings

# A pooled connection idle this long is checked with PING before use, so the first
# command after a Redis restart does not fail on a dead socket.
HEALTH_CHECK_INTERVAL_S = 30
# One immediate retry on a connection error (a pooled socket that died), no more: the
# pipeline owns retries, with backoff, metrics and logs, and a drain deadline.
CONNECTION_RETRIES = 1


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
