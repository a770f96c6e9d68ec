"""Several analytics processes over the same streams write byte for byte what one writes:
the golden scripts of every protocol, the rooms moving as processes join."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from relay.config import Settings
from tests.analytics.scaleout import assemble
from tests.analytics.test_golden_liveavatar import check_summary


def prefixed(settings: Settings, suffix: str) -> Settings:
    """The same Redis, keys of their own: one run does not see another's."""
    redis_settings = settings.redis.model_copy(
        update={"prefix": f"{settings.redis.prefix}:{suffix}"}
    )
    return settings.model_copy(update={"redis": redis_settings})


async def test_two_and_three_consumers_write_what_one_writes(
    redis: aioredis.Redis, settings: Settings
) -> None:
    one = await assemble(redis, prefixed(settings, "1"), 1)
    assert len(one.summaries) == 4 and len(one.transcripts) > 10
    [la] = [json.loads(raw) for raw in one.summaries if b'"la-1"' in raw]
    check_summary(la)  # the golden document, through this path too
    for count in (2, 3):
        several = await assemble(redis, prefixed(settings, f"{count}"), count)
        assert several == one, count


async def test_a_process_stopped_mid_run_hands_its_rooms_to_the_others(
    redis: aioredis.Redis, settings: Settings
) -> None:
    one = await assemble(redis, prefixed(settings, "1"), 1)
    fewer = await assemble(redis, prefixed(settings, "down"), 3, scale_down=True)
    assert fewer == one
