from __future__ import annotations

import pytest

from relay.config import RedisSettings, Settings


@pytest.fixture
def settings(redis_settings: RedisSettings) -> Settings:
    return Settings(redis=redis_settings)
