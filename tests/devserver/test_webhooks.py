"""Webhooks from the dev server, verified by `livekit.api.WebhookReceiver`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from livekit import api

from relay.dev.ports import free_port
from tests.fixtures.lk_client import LkProcess
from tests.fixtures.netns import NetNS, start_devserver

pytestmark = pytest.mark.e2e


class Receiver:
    """An HTTP endpoint on the host end of the veth link, checking every webhook."""

    def __init__(self, verifier: api.TokenVerifier) -> None:
        self.receiver = api.WebhookReceiver(verifier)
        self.events: asyncio.Queue[api.WebhookEvent] = asyncio.Queue()
        self.content_types: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        self.content_types.append(request.content_type)
        event = self.receiver.receive(body, request.headers["Authorization"])
        await self.events.put(event)
        return web.Response(text="ok")

    async def next(self, timeout_s: float = 5.0) -> api.WebhookEvent:
        return await asyncio.wait_for(self.events.get(), timeout_s)


@pytest.fixture
async def webhook_endpoint(netns: NetNS) -> AsyncIterator[tuple[str, Receiver]]:
    receiver = Receiver(api.TokenVerifier("hookkey", "hooksecret-0123456789-0123456789"))
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(netns.host_addr)
    await web.TCPSite(runner, netns.host_addr, port).start()
    try:
        yield f"http://{netns.host_addr}:{port}/hook", receiver
    finally:
        await runner.cleanup()


async def test_room_and_participant_webhooks(
    netns: NetNS, webhook_endpoint: tuple[str, Receiver]
) -> None:
    url, receiver = webhook_endpoint
    server = start_devserver(
        netns,
        api_key="hookkey",
        api_secret="hooksecret-0123456789-0123456789",
        webhook_urls=[url],
        extra_args=["--departure-timeout", "0.2"],
    )
    try:
        async with LkProcess.start(netns) as lk:
            joined = await lk.connect("alice", server.ws_url, server.token("alice", "hooks"))
            await lk.call("disconnect", client="alice")

        events = [await receiver.next() for _ in range(4)]
    finally:
        server.proc.stop()
    names = [e.event for e in events]
    assert names == ["room_started", "participant_joined", "participant_left", "room_finished"]
    assert {e.room.name for e in events} == {"hooks"}
    assert events[1].participant.identity == "alice"
    assert events[1].participant.sid == joined["local"]["sid"]
    assert all(e.id.startswith("EV_") and e.created_at > 0 for e in events)
    assert receiver.content_types == ["application/webhook+json"] * 4
