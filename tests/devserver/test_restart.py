"""Clients survive a dev server restart through the SDK's own reconnect path."""

from __future__ import annotations

import pytest

from tests.fixtures.lk_client import LkProcess
from tests.fixtures.netns import NetNS, start_devserver

pytestmark = pytest.mark.e2e


async def test_clients_rejoin_a_restarted_server(netns: NetNS) -> None:
    room = "restart"
    server = start_devserver(netns)
    async with LkProcess.start(netns) as lk:
        await lk.connect("alice", server.ws_url, server.token("alice", room))
        await lk.connect("bob", server.ws_url, server.token("bob", room))

        server.proc.stop()
        server = start_devserver(netns, port=server.port)
        try:
            for name in ("alice", "bob"):
                await lk.wait_event(name, "reconnected", timeout_s=20)
            await lk.wait_event(
                "bob",
                "participant_connected",
                timeout_s=10,
                where=lambda e: e["identity"] == "alice",
            )
            await lk.publish_data("alice", "after restart", topic="t")
            got = await lk.wait_event("bob", "data_received")
            assert (got["payload"], got["identity"]) == ("after restart", "alice")
        finally:
            server.proc.stop()
