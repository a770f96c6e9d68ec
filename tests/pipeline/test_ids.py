"""Deterministic ids: same source event -> same id; distinct events -> distinct ids."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relay.contract.event import Event, Participant
from relay.pipeline.ids import IdMinter

ID_FORMAT = re.compile(r"^ev_[0-9a-f]{20}(-[2-9]|-[1-9][0-9]+)?$")


def event(
    room: str = "lobby",
    *,
    data: dict[str, Any] | None = None,
    at: float = 1_700_000_000.25,
    identity: str = "user-1",
    kind: str = "transcript.final",
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
    first = minter.mint(event(dedupe_key="evt-1", data={"text": "a"}, at=1.0))
    again = minter.mint(event(dedupe_key="evt-1", data={"text": "b"}, at=99.0, identity="x"))
    assert first == again
    assert ID_FORMAT.match(first)
    assert IdMinter().mint(event(dedupe_key="evt-1")) == first  # another observer agrees


def test_a_dedupe_key_is_scoped_by_room_protocol_and_kind() -> None:
    minter = IdMinter()
    ids = {
        minter.mint(event(dedupe_key="k")),
        minter.mint(event(room="other", dedupe_key="k")),
        minter.mint(event(kind="transcript.partial", dedupe_key="k")),
        minter.mint(event(dedupe_key="k2")),
    }
    assert len(ids) == 4


def test_repeated_content_in_one_second_gets_occurrence_suffixes() -> None:
    minter = IdMinter()
    ids = [minter.mint(event(at=10.1)), minter.mint(event(at=10.5)), minter.mint(event(at=10.9))]
    base = ids[0]
    assert ids == [base, f"{base}-2", f"{base}-3"]
    assert all(ID_FORMAT.match(i) for i in ids)


def test_the_same_content_in_the_next_second_is_a_new_base() -> None:
    minter = IdMinter()
    first, second = minter.mint(event(at=10.9)), minter.mint(event(at=11.0))
    assert first != second
    assert "-" not in second


def test_a_late_event_from_the_previous_second_is_counted_with_that_second() -> None:
    minter = IdMinter()
    first = minter.mint(event(at=10.5))
    minter.mint(event(at=11.2, data={"text": "other"}))
    assert minter.mint(event(at=10.9)) == f"{first}-2"


def test_key_order_in_data_and_source_does_not_change_the_id() -> None:
    one = event(data={"a": 1, "b": {"x": 1, "y": 2}}, source={"topic": "t", "event_id": None})
    two = event(data={"b": {"y": 2, "x": 1}, "a": 1}, source={"event_id": None, "topic": "t"})
    assert IdMinter().mint(one) == IdMinter().mint(two)


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
    assert len({minter.mint(v) for v in variants}) == len(variants)


def test_a_non_json_value_does_not_break_minting() -> None:
    assert ID_FORMAT.match(IdMinter().mint(event(data={"raw": b"\x00\xff"})))


def test_forget_room_restarts_the_numbering() -> None:
    minter = IdMinter()
    first = minter.mint(event())
    assert minter.mint(event()) == f"{first}-2"
    minter.forget_room("lobby")
    assert minter.mint(event()) == first


def test_state_is_bounded_by_rooms_and_buckets() -> None:
    minter = IdMinter(max_rooms=2)
    for second in range(1000):
        minter.mint(event(room="a", at=second + 0.5, data={"n": second}))
    for room in ("b", "c"):
        minter.mint(event(room=room))
    assert minter.rooms_tracked == 2
    for second in range(1000):  # "a" was evicted: it starts over
        minter.mint(event(room="a", at=second + 0.5, data={"n": second}))
    state = minter._rooms["a"]  # only the last two seconds' counts are kept
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
    ids = [minter.mint(e) for e in events]
    assert len(set(ids)) == len(ids)
    other = IdMinter()
    assert [other.mint(e) for e in events] == ids
