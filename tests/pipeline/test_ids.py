"""Deterministic ids: same source event -> same id; distinct events -> distinct ids."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.contract.event import Event, Participant
from relay.contract.kinds import EventKind
from relay.pipeline.ids import IdMinter

ID_FORMAT = re.compile(r"^ev_[0-9a-f]{20}(-[2-9]|-[1-9][0-9]+)?$")


def mint(minter: IdMinter, event: Event) -> str:
    return minter.mint(event, *event.encoded_parts())


def event(
    room: str = "lobby",
    *,
    data: dict[str, Any] | None = None,
    at: float = 1_700_000_000.25,
    identity: str = "user-1",
    kind: EventKind = "transcript.final",
    dedupe_key: str = "",
    source: dict[str, Any] | None = None,
) -> Event:
    return Event(
        room=room,
        protocol="liveavatar",
        kind=kind,
        data=data if data is not None else {"role": "user", "text": "yes"},
        received_at=at,
        participant=Participant(identity=identity, role="user"),
        source=source if source is not None else {"topic": "agent-response"},
        dedupe_key=dedupe_key,
    )


def test_a_dedupe_key_names_the_event_whatever_else_differs() -> None:
    minter = IdMinter()
    first = mint(minter, event(dedupe_key="evt-1", data={"text": "a"}, at=1.0))
    again = mint(minter, event(dedupe_key="evt-1", data={"text": "b"}, at=99.0, identity="x"))
    assert first == again
    assert ID_FORMAT.match(first)
    assert mint(IdMinter(), event(dedupe_key="evt-1")) == first  # another observer agrees


def test_a_dedupe_key_is_scoped_by_room_protocol_and_kind() -> None:
    minter = IdMinter()
    ids = {
        mint(minter, event(dedupe_key="k")),
        mint(minter, event(room="other", dedupe_key="k")),
        mint(minter, event(kind="transcript.partial", dedupe_key="k")),
        mint(minter, event(dedupe_key="k2")),
    }
    assert len(ids) == 4


def test_repeated_content_in_one_second_gets_occurrence_suffixes() -> None:
    minter = IdMinter()
    ids = [mint(minter, event(at=10.1)), mint(minter, event(at=10.5)), mint(minter, event(at=10.9))]
    base = ids[0]
    assert ids == [base, f"{base}-2", f"{base}-3"]
    assert all(ID_FORMAT.match(i) for i in ids)


def test_the_same_content_in_the_next_second_is_a_new_base() -> None:
    minter = IdMinter()
    first, second = mint(minter, event(at=10.9)), mint(minter, event(at=11.0))
    assert first != second
    assert "-" not in second


def test_a_late_event_from_the_previous_second_is_counted_with_that_second() -> None:
    minter = IdMinter()
    first = mint(minter, event(at=10.5))
    mint(minter, event(at=11.2, data={"text": "other"}))
    assert mint(minter, event(at=10.9)) == f"{first}-2"


def test_key_order_in_data_and_source_does_not_change_the_id() -> None:
    one = event(data={"a": 1, "b": {"x": 1, "y": 2}}, source={"topic": "t", "event_id": None})
    two = event(data={"b": {"y": 2, "x": 1}, "a": 1}, source={"event_id": None, "topic": "t"})
    assert mint(IdMinter(), one) == mint(IdMinter(), two)


def test_each_content_field_changes_the_id() -> None:
    minter = IdMinter()
    variants = [
        event(),
        event(identity="user-2"),
        event(data={"role": "user", "text": "no"}),
        event(source={"topic": "other"}),
        event(kind="chat.message"),
        event(room="b"),
    ]
    assert len({mint(minter, v) for v in variants}) == len(variants)


def test_a_non_json_value_does_not_break_minting() -> None:
    assert ID_FORMAT.match(mint(IdMinter(), event(data={"raw": b"\x00\xff"})))


def test_forget_room_restarts_the_numbering() -> None:
    minter = IdMinter()
    first = mint(minter, event())
    assert mint(minter, event()) == f"{first}-2"
    minter.forget_room("lobby")
    assert mint(minter, event()) == first


def test_forget_room_forgets_the_counts_of_every_ingress() -> None:
    minter = IdMinter()
    observed, ingested = event(), dataclasses.replace(event(), ingress="ingest")
    for seen in (observed, ingested):
        mint(minter, seen)
    assert minter.rooms_tracked == 2  # counted apart: each ingress numbers its own repeats
    minter.forget_room("lobby")
    assert minter.rooms_tracked == 0


def test_state_is_bounded_by_rooms_and_buckets() -> None:
    minter = IdMinter(max_rooms=2)
    for second in range(1000):
        mint(minter, event(room="a", at=second + 0.5, data={"n": second}))
    for room in ("b", "c"):
        mint(minter, event(room=room))
    assert minter.rooms_tracked == 2
    for second in range(1000):  # "a" was evicted: it starts over
        mint(minter, event(room="a", at=second + 0.5, data={"n": second}))
    state = minter._rooms.get("a")  # only the last two seconds' counts are kept
    assert state is not None
    assert len(state.current) + len(state.previous) == 2


_texts = st.sampled_from(["yes", "no", "ok"])
_events = st.lists(
    st.builds(
        lambda room, text, at: event(room=room, data={"text": text}, at=at),
        st.sampled_from(["a", "b"]),
        _texts,
        st.floats(min_value=0, max_value=3, allow_nan=False),
    ),
    max_size=60,
)


@given(_events)
def test_distinct_events_never_share_an_id_and_two_observers_agree(events: list[Event]) -> None:
    # Receive times in order, as one observer sees them.
    events = sorted(events, key=lambda e: e.received_at)
    minter = IdMinter()
    ids = [mint(minter, e) for e in events]
    assert len(set(ids)) == len(ids)
    other = IdMinter()
    assert [mint(other, e) for e in events] == ids


# Ids minted by relay 0.1 (its stdlib-JSON minter) for fixed inputs: the orjson encoding
# must give the same bytes to hash, or consumers deduping across an upgrade would see
# every event twice. Content hashes (no dedupe_key) and dedupe keys, non-ASCII, escapes,
# nested and unsorted keys, a float, an int beyond 64 bits.
PINNED = [
    (
        event(),
        "ev_91d5b7790b289a03664f",
    ),
    (
        event(
            kind="command",
            identity="visitor-81f2",
            at=1_700_000_001.9,
            data={
                "command": "avatar.speak_text",
                "text": 'Gr\u00fc\u00dfe \u2013 "quoted"\n\u2028',
            },
            source={"topic": "agent-control", "event_type": "avatar.speak_text"},
        ),
        "ev_bbd71fc32c5dc86cbc93",
    ),
    (
        dataclasses.replace(
            event(
                room="support-room-1",
                kind="event",
                identity="voice-agent",
                at=1_763_732_702.923,
                data={
                    "type": "navigate",
                    "payload": {
                        "url": "/orders/1182",
                        "z": [1, 2.5, None, True],
                        "a": {"y": 2, "x": 1},
                    },
                },
                source={"topic": "", "type": "navigate"},
            ),
            protocol="livelayer",
        ),
        "ev_e78878c1efa2cde80a6d",
    ),
    (
        event(
            room="support-room-1",
            kind="transcript.partial",
            identity="heygen",
            at=1.0,
            data={"role": "avatar", "text": "Hello, how"},
            dedupe_key="event:e-17",
        ),
        "ev_4d5319b7a10fd1984a3f",
    ),
    (
        dataclasses.replace(
            event(
                room="r\u00e4um",
                kind="participant.joined",
                identity="u",
                at=5.5,
                data={"identity": "u", "kind": "standard"},
                source={"signal": "participant_connected"},
                dedupe_key="participant:PA_1:joined",
            ),
            protocol="livekit",
        ),
        "ev_c16b536fada213ae60d6",
    ),
    (
        dataclasses.replace(
            event(
                kind="raw",
                at=1_700_000_000.5,
                data={
                    "topic": "game.move",
                    "payload": "e2e4",
                    "big": 123456789012345678901234567890,
                },
                source={"topic": "game.move"},
            ),
            protocol="raw",
        ),
        "ev_df60e50ed7a98b94b994",
    ),
]


@pytest.mark.parametrize(("pinned", "expected"), PINNED)
def test_ids_are_byte_for_byte_those_of_earlier_versions(pinned: Event, expected: str) -> None:
    assert mint(IdMinter(), pinned) == expected
