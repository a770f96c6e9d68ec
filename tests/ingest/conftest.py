"""Browser-test fixtures: a static server and Chromium for the whole session
(tests/ingest/browser.py), in the session's namespace beside its dev server and Redis
(tests/fixtures/namespace.py). Without namespaces or a browser the browser
tests skip, or fail when CI=true."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from relay.dev.launch import RedisServer
from relay.dev.netns import NetNS
from tests.e2e.support import Streams, unique
from tests.ingest.browser import NamespacedChromium, install_browser_deps, start_static_server


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def web_base(e2e_ns: NetNS) -> Iterator[str]:
    """tests/ingest/web, served inside the namespace (its origin is the page's)."""
    problem = install_browser_deps()
    if problem is not None:
        skip_or_fail(problem)
    proc, base = start_static_server(e2e_ns)
    try:
        yield base
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def chromium(
    e2e_ns: NetNS, web_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NamespacedChromium]:
    """One headless Chromium for the session, inside the namespace."""
    browser = NamespacedChromium(e2e_ns, Path(tmp_path_factory.mktemp("chromium")))
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
async def browser_streams(e2e_redis: RedisServer) -> AsyncIterator[Streams]:
    client = aioredis.Redis.from_url(e2e_redis.url, socket_timeout=5)
    try:
        yield Streams(client, unique("ingest"))
    finally:
        await client.aclose()
