"""The journal on a directory smaller than journal.max_bytes (a tmpfs capped at 1 MiB)
while Redis is down: the capacity follows the disk's free space, the shed kinds go first,
then everything is refused, each drop counted, and what was accepted all arrives."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from relay.config import JournalSettings, PipelineSettings, RedisSettings
from relay.contract.kinds import EventKind
from relay.dev.launch import RedisServer
from relay.journal import Journal
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink
from tests.pipeline.support import make_event, wait_until
from tests.support import dropped


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_sheds_then_refuses_and_counts_exactly(
    small_disk: Path, private_redis: RedisServer
) -> None:
    settings = RedisSettings(url=SecretStr(private_redis.url), prefix=f"df-{uuid.uuid4().hex[:6]}")
    settings = settings.model_copy(update={"socket_timeout_s": 0.5})
    journal = Journal(JournalSettings(path=str(small_disk), fsync_interval_ms=20), small_disk)
    assert journal.capacity <= 1024 * 1024  # the disk, not max_bytes (128 MiB)
    redis = create_redis(settings)
    fast = PipelineSettings(retry_initial_s=0.05, retry_max_s=0.2)
    pipeline = Pipeline(fast, [RedisStreamsSink(redis, settings)], journal=journal)
    runner = asyncio.create_task(pipeline.run())
    private_redis.stop()  # writes fail: nothing retires, the journal fills the disk
    before = {r: dropped(r) for r in ("journal_shed", "journal_full", "journal_write_failed")}
    sent = 0
    for n in range(5000):  # ~1.9 MB of records: twice the disk
        kind: EventKind = "speakers.active" if n % 3 == 0 else "transcript.final"
        await pipeline.submit(dataclasses.replace(make_event(f"room-{n % 5}", n), kind=kind))
        sent += 1
    counts = {r: dropped(r) - before[r] for r in before}
    assert counts["journal_shed"] > 0 and counts["journal_full"] > 0
    assert counts["journal_write_failed"] == 0  # the policy, not ENOSPC, refused them
    assert pipeline.accepted + sum(counts.values()) == sent
    private_redis.start()
    await wait_until(lambda: pipeline.buffered == 0, 20, "the backlog written")
    assert await pipeline.drain(5) == 0
    await runner
    ids = set()
    for _, fields in await redis.xrange(f"{settings.prefix}:events"):
        ids.add(fields[b"id"])
    assert len(ids) == pipeline.accepted
    assert await journal.close() == 0
    await redis.aclose()


async def test_enospc_refuses_the_event_and_leaves_no_half_record(small_disk: Path) -> None:
    """Something else fills the disk after the capacity was read: the append fails,
    is counted, and the segment stays readable."""
    journal = Journal(JournalSettings(path=str(small_disk)), small_disk)
    filler = small_disk / "filler"
    with pytest.raises(OSError):
        filler.write_bytes(b"x" * (2 * 1024 * 1024))
    failures = 0
    for n in range(50):
        if journal.append(make_event("r", n).stamped(f"id-{n}", n + 1)) is None:
            failures += 1
    assert failures > 0
    filler.unlink()
    assert journal.append(make_event("r", 99).stamped("id-99", 99)) is not None
    await journal.close()
    reopened = Journal(JournalSettings(path=str(small_disk)), small_disk)
    kept = reopened.take_replayed()
    assert len(kept) == 50 - failures + 1
    await reopened.close()
