"""Browser-test fixtures: one namespace, dev server, Redis, static server and Chromium for
the whole session (tests/ingest/browser.py). Without namespaces or a browser the browser
tests skip, or fail when CI=true."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from relay.dev.launch import DevServer, RedisServer, start_devserver, start_redis
from relay.dev.netns import NetNS
from tests.e2e.support import Streams, unique
from tests.fixtures.netns import create_netns_or_skip
from tests.ingest.browser import NamespacedChromium, install_browser_deps, start_static_server


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser_ns() -> Iterator[NetNS]:
    ns = create_netns_or_skip()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="session")
def browser_devserver(browser_ns: NetNS) -> Iterator[DevServer]:
    server = start_devserver(browser_ns, extra_args=["--departure-timeout", "0.5"])
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture(scope="session")
def browser_redis(browser_ns: NetNS) -> Iterator[RedisServer]:
    server = start_redis(browser_ns)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def web_base(browser_ns: NetNS) -> Iterator[str]:
    """tests/ingest/web, served inside the namespace (its origin is the page's)."""
    problem = install_browser_deps()
    if problem is not None:
        skip_or_fail(problem)
    proc, base = start_static_server(browser_ns)
    try:
        yield base
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def chromium(
    browser_ns: NetNS, web_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NamespacedChromium]:
    """One headless Chromium for the session, inside the namespace."""
    browser = NamespacedChromium(browser_ns, Path(tmp_path_factory.mktemp("chromium")))
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
async def browser_streams(browser_redis: RedisServer) -> AsyncIterator[Streams]:
    client = aioredis.Redis.from_url(browser_redis.url, socket_timeout=5)
    try:
        yield Streams(client, unique("ingest"))
    finally:
        await client.aclose()
