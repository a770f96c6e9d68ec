from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from relay.config import RedisSettings, Settings
from relay.redis_client import create_redis


@pytest.fixture
async def redis(redis_settings: RedisSettings) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(redis_settings)
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_settings: RedisSettings) -> Settings:
    return Settings(redis=redis_settings)
