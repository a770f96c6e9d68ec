"""The dev server in this process: the port it bound (port 0), and a shutdown that lets
a cancellation through."""

from __future__ import annotations

import asyncio

import aiohttp
import aioice.ice
import pytest

from relay.dev.server import DevServer, DevServerConfig
from relay.dev.server.auth import Authenticator
from relay.dev.server.webhooks import WebhookNotifier
from relay.dev.tokens import DEV_API_KEY, DEV_API_SECRET


async def test_port_zero_reports_the_bound_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # start() pins aioice's address lookup in this process; put it back afterwards.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    config = DevServerConfig(DEV_API_KEY, DEV_API_SECRET, host="127.0.0.1", port=0)
    server = DevServer(config)
    await server.start()
    try:
        assert server.port != 0
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/") as r,
        ):
            assert await r.text() == "OK"
    finally:
        await server.stop()


async def test_webhook_close_lets_a_cancellation_through() -> None:
    notifier = WebhookNotifier(["http://127.0.0.1:9/hook"], Authenticator("k", "s" * 32))
    notifier.start()
    closing = asyncio.create_task(notifier.aclose())
    await asyncio.sleep(0)  # aclose() has cancelled its workers and waits for them
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert closing.cancelled()


async def test_webhook_close_ends_the_workers() -> None:
    notifier = WebhookNotifier(["http://127.0.0.1:9/hook"], Authenticator("k", "s" * 32))
    notifier.start()
    tasks = list(notifier._tasks)
    await notifier.aclose()
    assert all(task.cancelled() for task in tasks)
