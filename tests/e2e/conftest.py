"""End-to-end fixtures over the session's namespace, dev server and Redis
(tests/fixtures/namespace.py).

Each test gets its own Redis key prefix (`streams`) and its own room names, and starts its
relays with `start_relay`, which stops them by PID at teardown (also when the test
failed, printing the end of their logs for the report). A test that breaks the shared dev
server (reconnects) starts a dev server of its own instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from relay.dev.launch import DevServer, RedisServer
from relay.dev.netns import NetNS
from tests.e2e.support import RelayProcess, StartRelay, Streams, relay_env, unique

LOG_TAIL_LINES = 40


@pytest.fixture
async def streams(e2e_redis: RedisServer) -> AsyncIterator[Streams]:
    """The relay's streams under a prefix of this test's own."""
    client = aioredis.Redis.from_url(e2e_redis.url, socket_timeout=5)
    try:
        yield Streams(client, unique("e2e"))
    finally:
        await client.aclose()


@pytest.fixture
async def start_relay(
    e2e_ns: NetNS, e2e_devserver: DevServer, e2e_redis: RedisServer, streams: Streams
) -> AsyncIterator[StartRelay]:
    """`start_relay(rooms=[...], server=..., **env)`: a relay of this test, observing the
    shared dev server (or `server`) and writing under `streams.prefix`; stopped after."""
    started: list[RelayProcess] = []

    def start(
        rooms: Sequence[str] = (), server: DevServer | None = None, **env: str
    ) -> RelayProcess:
        base = relay_env(server or e2e_devserver, e2e_redis.url, streams.prefix, rooms)
        relay = RelayProcess.start(e2e_ns, {**base, **env})
        started.append(relay)
        return relay

    try:
        yield start
    finally:
        for relay in started:
            await relay.stop()
            if relay.proc.popen.returncode not in (0, None):
                print(f"relay exited {relay.proc.popen.returncode}")
            print("\n".join(relay.text[-LOG_TAIL_LINES:]))
