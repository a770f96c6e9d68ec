"""A real browser forwards a LiveAvatar session: headless Chromium inside the namespace,
the real livekit-client (npm) joined to the dev server, the forwarder served by relay,
a Python SDK participant playing the conversation, and `relay run` observing the same
room. What the browser forwards reaches Redis exactly once and says what the observer's
events say, with the same ids for events that carry an `event_id`; what was still queued
when the page was hidden, and when it was unloaded, arrives too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import api
from playwright.sync_api import Page

from relay.dev.launch import DevServer, RedisServer
from relay.dev.netns import NetNS
from relay.dev.tokens import join_token
from relay.ingest import mint_ingest_token
from tests.e2e.support import Deadline, Event, RelayProcess, Streams, actor, relay_env, unique
from tests.fixtures.lk_client import LkProcess
from tests.ingest.browser import NamespacedChromium
from tests.ingest.support import SECRET

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
BROWSER_IDENTITY = "customer-page"
ACTORS = ("user-browser", "heygen")  # and liveavatar-agent-<session>


@contextlib.asynccontextmanager
async def _relay(
    ns: NetNS, server: DevServer, redis: RedisServer, streams: Streams, web_base: str
) -> AsyncIterator[tuple[RelayProcess, str]]:
    """`relay run` observing a room of this test, with ingest on for the page's origin.
    The write guard is off: each event then arrives twice under one id, once from each
    ingress, and the tests compare what the page forwarded with what the observer saw
    (with the guard on, the second is skipped: tests/sinks/test_write_guard.py)."""
    room = unique("browser")
    env = relay_env(server, redis.url, streams.prefix, [room])
    env |= {"RELAY_INGEST__SECRET": SECRET, "RELAY_INGEST__ALLOWED_ORIGINS": json.dumps([web_base])}
    env |= {"RELAY_REDIS__WRITE_GUARD": "off"}
    process = RelayProcess.start(ns, env)
    try:
        await process.wait_ready()
        yield process, room
    finally:
        await process.stop()
        print("\n".join(process.text[-30:]))


@pytest.fixture
async def relay(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    e2e_redis: RedisServer,
    browser_streams: Streams,
    web_base: str,
) -> AsyncIterator[tuple[RelayProcess, str]]:
    async with _relay(e2e_ns, e2e_devserver, e2e_redis, browser_streams, web_base) as r:
        yield r


async def evaluate(chromium: NamespacedChromium, page: Page, script: str, arg: Any = None) -> Any:
    return await chromium.call(page.evaluate, script, arg)


async def wait_page(
    chromium: NamespacedChromium, page: Page, script: str, timeout_s: float = 20.0
) -> None:
    deadline = Deadline(timeout_s)
    while not await evaluate(chromium, page, script):
        assert not deadline.passed, f"the page never had {script}"
        await asyncio.sleep(0.05)


async def test_a_livekit_client_page_forwards_what_the_observer_sees(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    browser_streams: Streams,
    chromium: NamespacedChromium,
    web_base: str,
    relay: tuple[RelayProcess, str],
) -> None:
    process, room = relay
    session_id = uuid.uuid4().hex[:8]
    server = e2e_devserver
    page = await chromium.new_page()
    await chromium.call(page.goto, f"{web_base}/page.html")
    ingest_token = mint_ingest_token(
        SECRET, room=room, session=session_id, ttl_s=600, origin=web_base
    )
    lk_token = join_token(server.api_key, server.api_secret, BROWSER_IDENTITY, room)
    # Batches of 20 and no timer: what is left over waits for the hide and the unload.
    options = {"batchSize": 20, "flushIntervalMs": 600_000}
    start = {
        "relay": process.base_url,
        "livekitUrl": server.ws_url,
        "livekitToken": lk_token,
        "ingestToken": ingest_token,
        "options": options,
    }
    await evaluate(chromium, page, "(a) => startSession(a)", start)

    args = ["--room", room, "--session-id", session_id, "--pace-s", "0.02"]
    async with actor(e2e_ns, server, "liveavatar", *args) as scenario:
        # Mid-session the tab is hidden with items queued: they go out in a beacon, stay
        # queued until a later answer, and their second sending is answered `duplicate`.
        # Items stay queued until the hide (no batch is full before it: else a batch sent
        # between the wait and the hide, on a loaded machine, leaves nothing to beacon).
        await evaluate(chromium, page, "fwd.options.batchSize = 100000")
        await wait_page(chromium, page, "seen.data >= 15 && fwd.queue.length > 0")
        beaconed = await evaluate(chromium, page, "(hide(), fwd.beaconed)")
        await evaluate(chromium, page, "fwd.options.batchSize = 20")
        await evaluate(chromium, page, "show()")  # the forwarder sends them for real
        await wait_page(chromium, page, "fwd.beaconed === 0")
        # From here on nothing is sent until the unload: it all rests on the last beacon.
        await evaluate(chromium, page, "fwd.options.batchSize = 100000")
        sent: list[dict[str, Any]] = (await scenario.result())["sent"]
    assert beaconed > 0

    await wait_page(chromium, page, "seen.left === 3")
    left_over = await evaluate(chromium, page, "fwd.queue.length")
    assert left_over >= 3, "the leaves at least wait for the unload"
    await chromium.call(page.goto, "about:blank")  # pagehide: the rest goes in a beacon

    agent = f"liveavatar-agent-{session_id}"

    def complete(events: list[Event]) -> bool:
        ingest = [e for e in events if e.get("ingress") == "ingest"]
        observed = [e for e in events if "ingress" not in e]
        left = {e["participant"]["identity"] for e in ingest if e["kind"] == "participant.left"}
        return (
            left == {*ACTORS, agent} and sum(e["kind"] == "participant.left" for e in observed) >= 4
        )

    events = await browser_streams.wait_room(room, complete, what="every leave, both ingresses")
    metrics = await process.metrics()
    duplicates = metrics[("relay_ingest_items_total", frozenset({("status", "duplicate")}))]
    assert duplicates >= beaconed
    assert_same_as_observer(events, sent, agent)


def assert_same_as_observer(events: list[Event], sent: list[dict[str, Any]], agent: str) -> None:
    ingest = [e for e in events if e.get("ingress") == "ingest"]
    observed = [e for e in events if "ingress" not in e]
    # Exactly once: no id twice among what the browser forwarded.
    ids = [e["id"] for e in ingest]
    assert len(ids) == len(set(ids)), [e for e in ingest if ids.count(e["id"]) > 1]

    # Every message the scenario sent, once, saying what the observer's event says.
    relayed = [e for e in ingest if e["source"].get("topic")]
    seen = [e for e in observed if e["source"].get("topic")]
    assert len(relayed) == len(seen) == len(sent)
    assert [said(e) for e in relayed] == [said(e) for e in seen]
    # Same ids for the events that carry an event_id (the interrupt has none).
    with_id = [(a["id"], b["id"]) for a, b in zip(relayed, seen, strict=True)]
    carried = [pair for pair, m in zip(with_id, sent, strict=True) if m.get("event_id")]
    assert carried and all(a == b for a, b in carried)
    assert {e["session_id"] for e in relayed} == {session_of(agent)}

    # The actors' joins and leaves, and the session start: same events, same ids (sid).
    def presence(of: list[Event]) -> list[tuple[str, str, str]]:
        kinds = ("participant.joined", "participant.left", "session.started")
        names = {*ACTORS, agent}
        return [
            (e["kind"], e["participant"]["identity"], e["id"])
            for e in of
            if e["kind"] in kinds and e["participant"]["identity"] in names
        ]

    assert presence(ingest) == presence(observed)


def said(event: Event) -> tuple[Any, ...]:
    """What an event says, less what depends on the receiver's clock (turn segment ids)."""
    data = {k: v for k, v in event["data"].items() if k != "segment_id"}
    who = event["participant"]
    return event["kind"], event["protocol"], who["identity"], who["role"], data, event["source"]


def session_of(agent: str) -> str:
    return agent.removeprefix("liveavatar-agent-")


@pytest.fixture
async def relay_for_liveavatar(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    e2e_redis: RedisServer,
    browser_streams: Streams,
    web_base: str,
) -> AsyncIterator[tuple[RelayProcess, str]]:
    async with _relay(e2e_ns, e2e_devserver, e2e_redis, browser_streams, web_base) as r:
        yield r


async def test_a_liveavatar_web_sdk_page_forwards_the_agent_events(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    browser_streams: Streams,
    chromium: NamespacedChromium,
    web_base: str,
    relay_for_liveavatar: tuple[RelayProcess, str],
) -> None:
    """The real LiveAvatarSession, started against the dev server's stand-in of the
    LiveAvatar API (its `apiUrl`), joins the room; its agent events reach Redis through
    the forwarder with the observer's ids."""
    process, room = relay_for_liveavatar
    session_id = uuid.uuid4().hex[:8]
    server = e2e_devserver
    session_token = session_access_token(server, room, session_id)
    ingest_token = mint_ingest_token(SECRET, room=room, session=session_id, ttl_s=600)
    page = await chromium.new_page()
    await chromium.call(page.goto, f"{web_base}/liveavatar.html")
    start = {
        "relay": process.base_url,
        "apiUrl": server.ws_url.replace("ws://", "http://"),
        "sessionToken": session_token,
        "ingestToken": ingest_token,
        "options": {"batchSize": 10, "flushIntervalMs": 100},
    }
    await evaluate(chromium, page, "(a) => startLiveAvatar(a)", start)
    # The SDK's own room (a private field) is in before the avatar and the agent come.
    await wait_page(chromium, page, "session.room && session.room.state === 'connected'")

    args = ["--room", room, "--session-id", session_id, "--pace-s", "0.02"]
    async with actor(e2e_ns, server, "liveavatar", *args) as scenario:
        started = await evaluate(chromium, page, "started")
        assert started == {"sessionId": session_id, "state": "CONNECTED"}
        sent: list[dict[str, Any]] = (await scenario.result())["sent"]
    await wait_page(chromium, page, "seen.stopped")
    responses = [m for m in sent if m["topic"] == "agent-response"]

    def complete(events: list[Event]) -> bool:
        ingest = [e for e in events if e.get("ingress") == "ingest"]
        return len(ingest) >= len(responses)

    events = await browser_streams.wait_room(room, complete, what="every agent event, ingested")
    ingest = [e for e in events if e.get("ingress") == "ingest"]
    observed = [e for e in events if "ingress" not in e and e["source"].get("topic")]
    observed = [e for e in observed if e["source"]["topic"] == "agent-response"]
    assert len(ingest) == len(observed) == len(responses)
    assert [e["id"] for e in ingest] == [e["id"] for e in observed]
    assert {e["session_id"] for e in ingest} == {session_id}
    # The SDK hands on `stop_reason` only; the scenario (like LiveAvatar's docs) says
    # `end_reason`, which the observer reads and the SDK drops (docs/ingest.md).
    stop = [(a["data"], b["data"]) for a, b in zip(ingest, observed, strict=True)][-1]
    assert stop == ({}, {"reason": "USER_CLOSED"})
    assert [said(e) for e in ingest[:-1]] == [said(e) for e in observed[:-1]]


def session_access_token(server: DevServer, room: str, session_id: str) -> str:
    """What the stand-in takes as a LiveAvatar session token: a dev server join token
    whose metadata names the session (relay/dev/server/liveavatar_api.py)."""
    grants = api.VideoGrants(room_join=True, room=room)
    token = api.AccessToken(server.api_key, server.api_secret).with_identity("liveavatar-user")
    token = token.with_grants(grants).with_kind("standard")
    token = token.with_metadata(json.dumps({"liveavatar_session_id": session_id}))
    return str(token.to_jwt())


async def test_text_streams_and_agent_state_through_the_pages_own_handlers(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    browser_streams: Streams,
    chromium: NamespacedChromium,
    web_base: str,
    relay: tuple[RelayProcess, str],
) -> None:
    """A LiveKit Agents conversation: the page reads lk.transcription and lk.chat with
    handlers of its own (the forwarder tees them: livekit-client allows one per topic);
    the stream events reach Redis with the observer's ids (the stream id)."""
    process, room = relay
    server = e2e_devserver
    page = await chromium.new_page()
    await chromium.call(page.goto, f"{web_base}/page.html")
    start = {
        "relay": process.base_url,
        "livekitUrl": server.ws_url,
        "livekitToken": join_token(server.api_key, server.api_secret, BROWSER_IDENTITY, room),
        "ingestToken": mint_ingest_token(SECRET, room=room, session="agents-1", ttl_s=600),
        "options": {"batchSize": 5, "flushIntervalMs": 50},
        "ownTextHandlers": True,
    }
    await evaluate(chromium, page, "(a) => startSession(a)", start)
    user, agent = "visitor", "voice-agent"
    async with LkProcess.start(e2e_ns) as lk:
        await lk.connect(user, server.ws_url, server.token(user, room))
        agent_token = server.token(agent, room, kind="agent", can_update_own_metadata=True)
        await lk.connect(agent, server.ws_url, agent_token)
        await lk.call("set_attributes", client=agent, attributes={"lk.agent.state": "listening"})
        segment = {"lk.segment_id": "SG_1", "lk.transcribed_track_id": "TR_a"}
        await lk.call(
            "stream_text",
            client=agent,
            chunks=["Your order ", "ships ", "tomorrow."],
            topic="lk.transcription",
            attributes={**segment, "lk.transcription_final": "true"},
        )
        await lk.call("send_text", client=user, text="thanks!", topic="lk.chat")
        await wait_page(chromium, page, "read.length === 2")
        await lk.call("set_attributes", client=agent, attributes={"lk.agent.state": "idle"})
        idle = (
            "[...room.remoteParticipants.values()]"
            ".some((p) => p.attributes['lk.agent.state'] === 'idle')"
        )
        await wait_page(chromium, page, idle)
        await wait_page(chromium, page, "fwd.queue.length === 0 && fwd.stats.accepted === fwd.seq")

    read = await evaluate(chromium, page, "read")
    assert sorted(read) == [
        ["lk.chat", user, "thanks!"],
        ["lk.transcription", agent, "Your order ships tomorrow."],
    ]

    def both(events: list[Event]) -> bool:
        kinds = [(e.get("ingress"), e["kind"]) for e in events]
        wanted = ("transcript.final", "chat.message")
        return all((i, k) in kinds for i in (None, "ingest") for k in wanted)

    events = await browser_streams.wait_room(room, both, what="stream events, both ingresses")
    ingest = {e["id"]: e for e in events if e.get("ingress") == "ingest"}
    observed = {e["id"]: e for e in events if "ingress" not in e}
    for kind in ("transcript.final", "chat.message"):
        mine = [e for e in ingest.values() if e["kind"] == kind]
        assert len(mine) == 1, mine
        assert mine[0]["id"] in observed, (
            mine[0],
            [e for e in observed.values() if e["kind"] == kind],
        )
        assert said(mine[0]) == said(observed[mine[0]["id"]])
    states = [said(e) for e in events if e["kind"] == "agent.state"]
    ingest_states = [said(e) for e in ingest.values() if e["kind"] == "agent.state"]
    assert ingest_states and all(s in states for s in ingest_states)
