"""A participant floods one room with garbage and oversized payloads while another room
holds a normal LiveAvatar session: the relay stays up, the good room loses nothing, and
every bad packet is accounted for (a `raw` event, a dead letter, or a counted drop)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.liveavatar import assert_session
from tests.e2e.support import StartRelay, Streams, actor, assert_seq_contiguous, has, unique

pytestmark = pytest.mark.e2e

GARBAGE_PACKETS = 10_000
MAX_PAYLOAD_BYTES = 16_384
# 1 MiB, and the largest data packet the SDK sends over this server's SCTP (64000-byte
# messages, ~60 bytes of packet framing): both above MAX_PAYLOAD_BYTES.
OVERSIZED = (1 << 20, 60_000)
STREAM_BYTES = 1 << 20
SENDER = "mallory"
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def by_label(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    """The non-zero samples of a counter by one label (every reason starts at zero)."""
    return {
        dict(labels)[label]: value for (n, labels), value in metrics.items() if n == name and value
    }


async def test_garbage_and_oversized_payloads_next_to_a_good_room(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    bad, good, session_id = unique("garbage"), unique("good"), uuid.uuid4().hex[:8]
    # Limits off: this test proves what the inbox and the decoders do with every packet.
    relay = start_relay(
        rooms=[bad, good],
        RELAY_PIPELINE__MAX_PAYLOAD_BYTES=str(MAX_PAYLOAD_BYTES),
        RELAY_LIMITS__ENABLED="false",
    )
    await relay.wait_ready()
    garbage_args = ["--room", bad, "--identity", SENDER, "--count", str(GARBAGE_PACKETS)]
    garbage_args += ["--burst", "200", "--pace-s", "0.03", "--oversized-every", "2500"]
    garbage_args += ["--oversized-sizes", ",".join(map(str, OVERSIZED))]
    garbage_args += ["--stream-bytes", str(STREAM_BYTES)]
    good_args = ["--room", good, "--session-id", session_id, "--pace-s", "0.05"]
    async with (
        actor(e2e_ns, e2e_devserver, "garbage", *garbage_args) as flood,
        actor(e2e_ns, e2e_devserver, "liveavatar", *good_args) as session,
    ):
        flooded, played = await asyncio.gather(flood.result(), session.result())
        await streams.wait_room(bad, has("raw", topic="marker", payload="done"), timeout_s=30)
    # The agent's last packet (session.stopped) may arrive after its leave: wait for both.
    await streams.wait_room(
        good,
        lambda evs: (
            sum(e["kind"] == "participant.left" for e in evs) == 3
            and any(e["kind"] == "session.stopped" for e in evs)
        ),
        what="3 leaves and the session's end",
    )
    oversized_sent = sum(attempt["ok"] for attempt in flooded["oversized"])
    letters = await streams.wait_dead_letters(oversized_sent + 1)  # + the text stream
    assert (await relay.get("/healthz"))[0] == 200
    metrics = await relay.metrics()
    stopped = await relay.stop()
    assert stopped.returncode == 0

    # The good room: the whole session, exactly, in order.
    good_events = await streams.room_events(good)
    assert_session(good_events, played["sent"], session_id)
    assert_seq_contiguous(good_events)

    # The bad room: each garbage packet is one `raw` event, unless dropped and counted.
    bad_events = await streams.room_events(bad)
    assert_seq_contiguous(bad_events)
    dropped = by_label(metrics, "relay_events_dropped_total", "reason")
    raws = [e for e in bad_events if e["kind"] == "raw" and e["data"]["topic"] == "agent-response"]
    sent = flooded["counts"]
    assert sum(sent.values()) == GARBAGE_PACKETS
    assert len(raws) + dropped.get("room_queue_full", 0) == GARBAGE_PACKETS
    assert {(e["protocol"], e["participant"]["identity"]) for e in raws} == {("liveavatar", SENDER)}
    if not dropped.get("room_queue_full"):
        errors = Counter(e["data"]["error"] for e in raws)
        invalid_utf8 = sent["random_bytes"] + sent["invalid_utf8"]
        assert errors == {"invalid_utf8": invalid_utf8, "invalid_json": sent["malformed_json"]}
    decode_errors = by_label(metrics, "relay_decode_errors_total", "protocol")
    assert decode_errors == {"liveavatar": len(raws), "raw": 1}  # + the marker (no decoder)
    assert_oversized(flooded["oversized"], letters, dropped, metrics)

    # Everything accepted was written: both rooms, nothing else.
    summary_line = stopped.log("relay_stopped")
    assert summary_line["unwritten"] == 0
    assert await streams.xlen("events") == summary_line["accepted"]
    assert summary_line["accepted"] == len(bad_events) + len(good_events)


def assert_oversized(
    attempts: list[dict[str, Any]],
    letters: list[dict[str, Any]],
    dropped: dict[str, float],
    metrics: Metrics,
) -> None:
    """Every oversized payload the SDK sent is a dead letter; what it refused, it said so."""
    sent = [a["size"] for a in attempts if a["ok"]]
    refused = [a for a in attempts if not a["ok"]]
    assert sent, f"no oversized packet got through the SDK: {attempts}"
    for attempt in refused:  # the SDK refuses what exceeds the SCTP max message size
        assert "maximum message size" in attempt["error"], attempt
    oversized = [letter for letter in letters if letter["reason"] == "oversized"]
    assert [letter["detail"]["size"] for letter in oversized] == sent
    for letter in oversized:
        assert letter["detail"]["topic"] == "agent-response"
        assert letter["detail"]["sender"] == SENDER
        assert len(letter["detail"]["preview_base64"]) < 1024  # a preview, not the payload
    streams = [letter for letter in letters if letter["reason"] == "text_stream_error"]
    assert [(s["detail"]["topic"], s["detail"]["sender"]) for s in streams] == [("lk.chat", SENDER)]
    assert len(letters) == len(sent) + 1
    assert dropped.get("oversized") == len(sent)
    assert dropped.get("text_stream_error") == 1
    written = by_label(metrics, "relay_dead_letters_total", "reason")
    assert written == {"oversized": len(sent), "text_stream_error": 1}
