"""What the relay must write for one `liveavatar` actor run (relay.dev.scenarios), derived
from the messages the scenario reports it sent and the contract (docs/contract.md)."""

from __future__ import annotations

from typing import Any

from tests.e2e.support import Event

# docs/contract.md, "Kinds": agent-response event_type -> (kind, data.role)
RESPONSE_KINDS = {
    "user.speak_started": ("speech.started", "user"),
    "user.speak_ended": ("speech.ended", "user"),
    "avatar.speak_started": ("speech.started", "avatar"),
    "avatar.speak_ended": ("speech.ended", "avatar"),
    "user.transcription.chunk": ("transcript.partial", "user"),
    "avatar.transcription.chunk": ("transcript.partial", "avatar"),
    "user.transcription": ("transcript.final", "user"),
    "avatar.transcription": ("transcript.final", "avatar"),
    "session.stopped": ("session.stopped", None),
}
PARTIAL_MODES = {"user": "cumulative", "avatar": "delta"}
USER, AVATAR = "user-browser", "heygen"  # the identities relay.dev.scenarios joins with
Expected = tuple[str, str, dict[str, Any]]  # kind, sender identity, data (no segment_id)
# The reasons an SFU gives for a client's own disconnect (see `assert_session`).
CLIENT_LEAVE_REASONS = {"CLIENT_INITIATED", "SIGNAL_CLOSE"}


def expected_from(message: dict[str, Any]) -> Expected:
    """What the relay must make of one message the scenario sent."""
    event_type, sender = message["event_type"], message["from"]
    if message["topic"] == "agent-control":
        data = {"command": event_type}
        if "text" in message:
            data["text"] = message["text"]
        return "command", sender, data
    kind, role = RESPONSE_KINDS[event_type]
    if kind == "session.stopped":
        return kind, sender, {"reason": message["end_reason"]}
    if kind.startswith("transcript."):
        assert role is not None
        data = {"role": role, "text": message["text"]}
        if kind == "transcript.partial":
            data["mode"] = PARTIAL_MODES[role]
        return kind, sender, data
    return kind, sender, {"role": role}


def session_events(sent: list[dict[str, Any]], session_id: str) -> list[Expected]:
    """The whole session as the observer sees it: joins, every message, leaves."""
    agent = f"liveavatar-agent-{session_id}"
    return [
        participant("joined", USER, "standard"),
        participant("joined", agent, "agent"),
        ("session.started", agent, {}),
        participant("joined", AVATAR, "standard"),
        *(expected_from(message) for message in sent),
        participant("left", USER, "standard"),
        participant("left", agent, "agent"),
        participant("left", AVATAR, "standard"),
    ]


def assert_session(events: list[Event], sent: list[dict[str, Any]], session_id: str) -> None:
    """The room's events are the whole session between the observer's join and leave.

    Leaves travel on the signal channel and packets on the data channel, so a leave may
    overtake another participant's last packets (a real SFU gives no order across the two):
    leaves are compared in their own order, everything else in full order. A client's
    disconnect sends a leave request and closes its socket; on a starved machine the socket
    may close first, and the SFU (ours as LiveKit's) then says SIGNAL_CLOSE: either reason
    is a client's own leave, so leaves are compared on who left, and their reason on the set."""
    expected = [
        ("observer.joined", "", {}),
        *session_events(sent, session_id),
        ("observer.left", "", {"reason": "stopped"}),
    ]
    got = [summary(e) for e in events]

    def leaves(xs: list[Expected]) -> list[Expected]:
        return [x for x in xs if x[0] == "participant.left"]

    def who_left(xs: list[Expected]) -> list[Expected]:
        return [(k, who, {**data, "reason": "*"}) for k, who, data in leaves(xs)]

    def others(xs: list[Expected]) -> list[Expected]:
        return [x for x in xs if x[0] != "participant.left"]

    assert others(got) == others(expected)
    assert who_left(got) == who_left(expected)
    assert {data["reason"] for _, _, data in leaves(got)} <= CLIENT_LEAVE_REASONS, leaves(got)


def summary(event: Event) -> Expected:
    """An event as `Expected`: derived segment ids are checked by `assert_segments`."""
    data = {k: v for k, v in event["data"].items() if k != "segment_id"}
    return event["kind"], event["participant"]["identity"], data


def participant(change: str, identity: str, kind: str) -> Expected:
    data = {"identity": identity, "kind": kind}
    if change == "left":
        data["reason"] = "CLIENT_INITIATED"
    return f"participant.{change}", identity, data


def assert_segments(events: list[Event], sent: list[dict[str, Any]]) -> None:
    """Partials and the final of one utterance share a segment id; utterances differ."""
    open_segment: dict[str, str] = {}
    finals = []
    for event in events:
        if not event["kind"].startswith("transcript."):
            continue
        role, segment = event["data"]["role"], event["data"]["segment_id"]
        assert open_segment.setdefault(role, segment) == segment, event
        if event["kind"] == "transcript.final":
            finals.append(open_segment.pop(role))
    assert not open_segment
    finals_sent = sum(
        RESPONSE_KINDS[m["event_type"]][0] == "transcript.final"
        for m in sent
        if m["topic"] == "agent-response"
    )
    assert len(finals) == len(set(finals)) == finals_sent
