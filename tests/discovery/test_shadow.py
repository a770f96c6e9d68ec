"""ShadowIntake and the overlap match, without a network: what a taker or a standby holds
back, what it writes once it owns the room, and what it leaves out."""

from __future__ import annotations

import json

from relay.contract.event import DeadLetter, Entry, Event
from relay.discovery.overlap import WrittenEvents
from relay.discovery.shadow import ShadowIntake
from tests.pipeline.support import make_event
from tests.support import metric


class Collected:
    def __init__(self) -> None:
        self.entries: list[Entry] = []

    async def submit(self, entry: Entry) -> None:
        self.entries.append(entry)


def at(room: str, n: int, received_at: float) -> Event:
    event = make_event(room, n)
    return Event(event.room, event.protocol, event.kind, event.data, received_at)


async def test_a_held_room_is_held_until_promoted_and_others_go_straight_through() -> None:
    pipeline = Collected()
    intake = ShadowIntake(pipeline, max_entries=100)
    intake.hold("r")
    held = [at("r", n, 100.0 + n) for n in range(3)]
    other = at("o", 0, 100.0)
    for entry in [*held, other]:
        await intake.submit(entry)
    assert pipeline.entries == [other]
    assert intake.held("r") == 3 and intake.oldest("r") == 100.0
    assert await intake.promote("r") == 3
    after = at("r", 9, 200.0)
    await intake.submit(after)
    assert pipeline.entries == [other, *held, after]
    assert not intake.holds("r")


async def test_a_full_hold_drops_its_oldest_counted() -> None:
    intake = ShadowIntake(Collected(), max_entries=2)
    intake.hold("r")
    trimmed = metric("relay_shadow_trimmed_total")
    for n in range(5):
        await intake.submit(at("r", n, 100.0 + n))
    assert intake.held("r") == 2
    assert metric("relay_shadow_trimmed_total") - trimmed == 3


async def test_a_standby_keeps_the_last_seconds_and_its_join() -> None:
    pipeline = Collected()
    intake = ShadowIntake(pipeline, max_entries=100)
    now = [1000.0]
    intake.clock = lambda: now[0]
    intake.hold("r", keep_s=5.0)
    joined = Event("r", "relay", "observer.joined", {}, 1000.0)
    await intake.submit(joined)
    for n in range(10):  # one a second
        now[0] = 1001.0 + n
        await intake.submit(at("r", n, now[0]))
    kept = await intake.promote("r")
    assert pipeline.entries[0] is joined  # kept although older than keep_s
    assert [e.received_at for e in pipeline.entries[1:]] == [1005.0, 1006, 1007, 1008, 1009, 1010]
    assert kept == 7


async def test_promote_leaves_out_what_skip_names_and_a_discard_holds_nothing() -> None:
    pipeline = Collected()
    intake = ShadowIntake(pipeline, max_entries=100)
    intake.hold("r")
    entries = [at("r", n, 100.0 + n) for n in range(4)]
    for entry in entries:
        await intake.submit(entry)
    assert await intake.promote("r", skip=lambda e: e in entries[:2]) == 2
    assert pipeline.entries == entries[2:]
    intake.hold("d")
    await intake.submit(at("d", 0, 1.0))
    assert intake.discard("d") == 1 and not intake.holds("d")


def written(events: list[Event], seconds_late: float = 0.0) -> WrittenEvents:
    """What the previous owner wrote of `events`, received `seconds_late` later."""
    documents = []
    for event in events:
        late = Event(
            event.room, event.protocol, event.kind, event.data,
            event.received_at + seconds_late, event.participant, event.source,
        )  # fmt: skip
        documents.append(json.loads(late.stamped("ev_x", 1).json_bytes()))
    return WrittenEvents(documents)


def test_a_held_event_the_stream_has_is_matched_once_by_content_within_a_second() -> None:
    yes = at("r", 1, 100.995)
    again = Event(yes.room, yes.protocol, yes.kind, yes.data, 101.4)  # the same words
    stream = written([yes], seconds_late=0.01)  # received in the next second there
    assert stream.already_written(yes)
    assert not stream.already_written(again)  # one written event answers for one held
    far = written([yes], seconds_late=3.0)
    assert not far.already_written(yes)  # not within a second: another utterance


def test_events_with_a_source_identity_and_dead_letters_are_left_to_the_guard() -> None:
    event = at("r", 1, 100.0)
    keyed = Event(event.room, event.protocol, event.kind, event.data, 100.0, dedupe_key="evt_1")
    stream = written([keyed])
    assert not stream.already_written(keyed)
    assert not stream.already_written(DeadLetter("r", "oversized", 100.0, {}))


def limited(received_at: float, dropped: int) -> Event:
    data = {"dropped": dropped, "reasons": {"room_rate": dropped}, "period_s": 10.0}
    return Event("r", "relay", "observer.limited", data, received_at, source={"signal": "limited"})


def test_held_limit_notices_the_previous_owner_already_covered_are_left_out() -> None:
    # The owner announced its drops at 110 and 120 and died; the standby's own periods
    # end at 105, 115, 125: the first two are the owner's drops, the third is not.
    stream = written([limited(110.0, 40), limited(120.0, 35)])
    held = [limited(105.0, 38), limited(115.0, 41), limited(125.0, 12)]
    assert [stream.already_written(notice) for notice in held] == [True, True, False]
    # No notice from the previous owner in the stream: each held notice is written.
    assert not written([at("r", 1, 100.0)]).already_written(limited(105.0, 38))
