"""SFU signals (speakers, participants), the relay's own state, and participant roles."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from livekit import rtc

from relay.contract.event import Participant
from relay.contract.raw import ObserverItem, ParticipantItem, SpeakersItem
from relay.decode import RoomDecoder, classify_role
from relay.observer.convert import participant_kind_name
from tests.decode.conftest import CTX, LA_AGENT, T0, USER, decode, decode_one


def speakers(*identities: str) -> SpeakersItem:
    return SpeakersItem(CTX, identities, T0)


def participant(
    who: Participant, change: Literal["joined", "left"], reason: str | None = None
) -> ParticipantItem:
    return ParticipantItem(CTX, who, change, reason, T0)


def test_active_speakers_only_on_change() -> None:
    decoder = RoomDecoder()
    sequence = [(), ("a", "b"), ("a", "b"), ("b", "a"), ("a",), ("a", "a"), (), ()]
    emitted = [[e.data for e in decode(speakers(*ids), decoder)] for ids in sequence]
    assert emitted == [
        [],  # nobody speaking, as before
        [{"identities": ["a", "b"]}],
        [],  # python-sdks#148 repeat
        [],  # same speakers, louder one first
        [{"identities": ["a"]}],
        [],  # duplicate identity in the list
        [{"identities": []}],
        [],
    ]


def test_active_speakers_event() -> None:
    event = decode_one(speakers("user-1", "heygen"))
    assert (event.protocol, event.kind) == ("livekit", "speakers.active")
    assert event.source == {"signal": "active_speakers_changed"}
    assert (event.participant.identity, event.participant.role) == ("", "unknown")


@pytest.mark.parametrize(
    ("change", "reason", "kind", "data", "signal"),
    [
        (
            "joined",
            None,
            "participant.joined",
            {"identity": "user-1", "kind": "standard"},
            "participant_connected",
        ),
        (
            "left",
            "CLIENT_INITIATED",
            "participant.left",
            {"identity": "user-1", "kind": "standard", "reason": "CLIENT_INITIATED"},
            "participant_disconnected",
        ),
    ],
)
def test_participant_changes(
    change: Literal["joined", "left"],
    reason: str | None,
    kind: str,
    data: dict[str, Any],
    signal: str,
) -> None:
    event = decode_one(participant(USER, change, reason))
    assert (event.protocol, event.kind, event.data) == ("livekit", kind, data)
    assert event.source == {"signal": signal}
    assert event.participant == USER
    assert event.dedupe_key == f"participant:PA_user:{change}"


def test_participant_without_sid_has_no_dedupe_key() -> None:
    assert decode_one(participant(Participant("x"), "joined")).dedupe_key == ""


def test_liveavatar_agent_joining_starts_the_session() -> None:
    decoder = RoomDecoder()
    joined, started = decode(participant(LA_AGENT, "joined"), decoder)
    assert (joined.kind, started.kind) == ("participant.joined", "session.started")
    assert (started.protocol, started.data, started.participant) == ("liveavatar", {}, LA_AGENT)
    assert started.dedupe_key == "liveavatar-session:sess-1:started"
    assert joined.session_id == started.session_id == "sess-1"
    # Later events of the room carry the session, whatever their protocol.
    assert decode_one(speakers("user-1"), decoder).session_id == "sess-1"
    left = decode(participant(LA_AGENT, "left"), decoder)
    assert [e.kind for e in left] == ["participant.left"]


@pytest.mark.parametrize(
    ("change", "reason", "gap_ms", "data"),
    [
        ("joined", None, None, {}),
        ("reconnecting", "signal_lost", None, {"reason": "signal_lost"}),
        ("resumed", None, 1830, {"gap_ms": 1830}),
        ("left", "stopped", None, {"reason": "stopped"}),
    ],
)
def test_observer_changes(
    change: Literal["joined", "reconnecting", "resumed", "left"],
    reason: str | None,
    gap_ms: int | None,
    data: dict[str, Any],
) -> None:
    event = decode_one(ObserverItem(CTX, change, reason, gap_ms, T0))
    assert (event.protocol, event.kind, event.data) == ("relay", f"observer.{change}", data)
    assert event.participant.role == "observer"
    assert event.source == {"signal": change}


@pytest.mark.parametrize(
    ("identity", "kind", "attrs", "role"),
    [
        ("heygen", "standard", {}, "avatar"),
        ("liveavatar-agent-abc", "standard", {}, "agent"),
        ("bot", "agent", {}, "agent"),
        ("bot", "standard", {"lk.agent.state": "idle"}, "agent"),
        ("alice", "standard", {"color": "red"}, "user"),
        ("+15551234", "sip", {}, "user"),
        ("rec", "egress", {}, "unknown"),
        ("cam", "ingress", {}, "unknown"),
        ("who", "unknown", {}, "unknown"),
    ],
)
def test_classify_role(identity: str, kind: str, attrs: dict[str, str], role: str) -> None:
    assert classify_role(identity, kind, attrs) == role


def test_participant_kind_names_match_the_sdk() -> None:
    kinds = {
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD: "standard",
        rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS: "ingress",
        rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS: "egress",
        rtc.ParticipantKind.PARTICIPANT_KIND_SIP: "sip",
        rtc.ParticipantKind.PARTICIPANT_KIND_AGENT: "agent",
    }
    for value, name in kinds.items():
        assert participant_kind_name(int(value)) == name
    assert participant_kind_name(99) == "unknown"
    assert participant_kind_name(-1) == "unknown"
