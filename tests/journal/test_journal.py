"""The on-disk journal with the pipeline: append, retire, replay, torn tails, bounds."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from relay.config import JournalSettings, PipelineSettings
from relay.contract.event import DeadLetter, Event
from relay.contract.kinds import EventKind
from relay.journal import Journal, JournalError
from relay.journal.records import decode_body, encode_record, scan
from relay.pipeline import Pipeline
from tests.pipeline.support import MemorySink, make_event, wait_until
from tests.support import dropped, metric

FAST = PipelineSettings(retry_initial_s=0.01, retry_max_s=0.02)


def settings(**changes: object) -> JournalSettings:
    return JournalSettings(path="unused", fsync_interval_ms=10).model_copy(update=changes)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def stamped(room: str, n: int, seq: int, epoch: int | None = None) -> Event:
    event = make_event(room, n)
    return event.stamped(f"id-{room}-{n}", seq, epoch=epoch)


def test_a_record_gives_back_the_entry_byte_for_byte() -> None:
    event = dataclasses.replace(stamped("r", 1, 7, epoch=3), ingress="ingest")
    event = event.stamped(event.id, event.seq, epoch=3)
    letter = DeadLetter("r", "oversized", 12.5, {"topic": "t", "size": 99})
    data = encode_record(event) + encode_record(letter)
    bodies, good = scan(data)
    assert good == len(data)
    back, letter_back = (decode_body(body) for body in bodies)
    assert isinstance(back, Event)
    assert back.json_bytes() == event.json_bytes()
    assert (back.id, back.seq, back.epoch, back.ingress) == ("id-r-1", 7, 3, "ingest")
    assert back.received_at == event.received_at
    assert back.to_dict() == event.to_dict()
    assert letter_back == letter


def test_a_dead_letter_journaled_before_letters_had_ids_gets_one() -> None:
    letter = DeadLetter("r", "oversized", 12.5, {"size": 99})
    [body], _ = scan(encode_record(letter))
    old_body = body.replace(f'"id":"{letter.id}",'.encode(), b"")
    assert old_body != body
    back = decode_body(old_body)
    assert isinstance(back, DeadLetter) and back.id.startswith("dl_") and back.id != letter.id
    assert (back.room, back.reason, back.detail) == ("r", "oversized", {"size": 99})


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_scan_stops_at_a_torn_tail(cut: int) -> None:
    whole = encode_record(stamped("r", 1, 1)) + encode_record(stamped("r", 2, 2))
    first = len(encode_record(stamped("r", 1, 1)))
    bodies, good = scan(whole[:-cut])
    assert (len(bodies), good) == (1, first)
    flipped = bytearray(whole)
    flipped[-1] ^= 0xFF  # the checksum fails
    assert scan(bytes(flipped)) == (bodies, first)


async def test_acknowledged_entries_leave_the_journal(tmp_path: Path) -> None:
    sink = MemorySink()
    journal = Journal(settings(segment_bytes=4096), tmp_path)
    pipeline = Pipeline(FAST, [sink], journal=journal)
    runner = asyncio.create_task(pipeline.run())
    for n in range(200):  # ~100 KB: many segments
        await pipeline.submit(make_event("room-a", n))
    await wait_until(lambda: len(sink.events) == 200)
    await wait_until(lambda: len(segments(tmp_path)) == 1, what="retired segments deleted")
    assert (tmp_path / "ledger").read_text() == f"{200}\n"
    assert await pipeline.drain(1.0) == 0
    await runner
    assert await journal.close() == 0
    assert segments(tmp_path) == []  # drained: nothing is left but the ledger


async def test_a_restart_writes_what_was_not_acknowledged_in_order(tmp_path: Path) -> None:
    sink = MemorySink()
    journal = Journal(settings(segment_bytes=4096), tmp_path)
    pipeline = Pipeline(FAST, [sink], journal=journal)
    runner = asyncio.create_task(pipeline.run())
    for n in range(20):
        await pipeline.submit(make_event("room-a", n))
    await wait_until(lambda: len(sink.events) == 20)
    sink.down = True
    for n in range(20, 120):
        await pipeline.submit(make_event("room-a" if n % 2 else "room-b", n))
    # The process stops without its sinks (the drain runs out): the journal keeps them.
    assert await pipeline.drain(0.05) == 100
    await runner
    assert await journal.close() == 100
    written_before = [event.id for event in sink.events]

    again = MemorySink()
    journal = Journal(settings(segment_bytes=4096), tmp_path)
    pipeline = Pipeline(FAST, [again], journal=journal)
    assert pipeline.replayed == 100
    await pipeline.submit(make_event("room-a", 999))  # a new event goes after them
    assert await pipeline.drain(2.0) == 0
    await journal.close()
    replayed = again.events[:100]
    assert [e.data["text"] for e in replayed] == [f"utterance {n}" for n in range(20, 120)]
    assert not set(written_before) & {e.id for e in replayed}
    by_room: dict[str, list[int]] = {}
    for event in replayed:
        by_room.setdefault(event.room, []).append(event.seq)
    assert all(seqs == sorted(seqs) for seqs in by_room.values())
    last = again.events[100]
    assert last.data["text"] == "utterance 999"
    assert last.seq == max(by_room["room-a"]) + 1  # its room's count goes on
    assert segments(tmp_path) == []


async def test_shutdown_with_a_journal_is_not_a_loss(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    journal = Journal(settings(), tmp_path)
    pipeline = Pipeline(FAST, [sink], journal=journal)
    before = dropped("shutdown_timeout")
    await pipeline.submit(make_event("r", 1))
    assert await pipeline.drain(0.05) == 1
    assert dropped("shutdown_timeout") == before
    assert await journal.close() == 1


async def test_a_torn_tail_is_skipped_counted_and_cut_off(tmp_path: Path) -> None:
    journal = Journal(settings(), tmp_path)
    for n in range(10):
        assert journal.append(stamped("r", n, n + 1)) is not None
    os.close(journal._fd)  # a crash: no round, no close
    os.close(journal._lock)
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    os.truncate(segment, size - 3)  # the last record's end never reached the disk
    torn = metric("relay_journal_torn_records_total")

    journal = Journal(settings(), tmp_path)
    replayed = journal.take_replayed()
    assert [event.seq for event in replayed if isinstance(event, Event)] == list(range(1, 10))
    assert metric("relay_journal_torn_records_total") == torn + 1
    assert segment.stat().st_size < size - 3  # cut back to the last whole record
    journal.append(stamped("r", 10, 10))
    os.close(journal._fd)
    os.close(journal._lock)
    replayed = Journal(settings(), tmp_path).take_replayed()
    assert [event.seq for event in replayed if isinstance(event, Event)] == [*range(1, 10), 10]


async def test_a_second_process_on_one_directory_gets_one_line(tmp_path: Path) -> None:
    journal = Journal(settings(), tmp_path)
    with pytest.raises(JournalError, match="in use by another relay process"):
        Journal(settings(), tmp_path)
    await journal.close()
    Journal(settings(), tmp_path)  # free again


def test_an_unusable_directory_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match=r"journal.path .*file/x"):
        Journal(settings(), tmp_path / "file" / "x")


async def test_near_full_sheds_low_value_kinds_then_refuses_all_exactly(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True  # nothing retires: the journal fills
    record = len(encode_record(stamped("r", 1, 1)))
    journal = Journal(settings(max_bytes=100 * record), tmp_path)
    pipeline = Pipeline(FAST, [sink], journal=journal)
    runner = asyncio.create_task(pipeline.run())
    shed, full = dropped("journal_shed"), dropped("journal_full")
    sent = {"speakers.active": 0, "transcript.final": 0}
    for n in range(300):
        kind: EventKind = "speakers.active" if n % 2 else "transcript.final"
        await pipeline.submit(dataclasses.replace(make_event("r", n), kind=kind))
        sent[kind] += 1
    shed_now, full_now = dropped("journal_shed") - shed, dropped("journal_full") - full
    assert pipeline.accepted + shed_now + full_now == 300
    assert shed_now > 0 and full_now > 0
    assert journal.bytes >= journal.capacity * 0.99  # full to the last record or so
    kinds = [e.kind for e in journal_events(pipeline)]
    # Above shed_at (80 %) only transcripts were taken: the last fifth is all transcripts.
    tail = kinds[int(len(kinds) * 0.85) :]
    assert tail and set(tail) == {"transcript.final"}
    sink.down = False
    await wait_until(lambda: len(sink.events) == pipeline.accepted)
    await pipeline.drain(1.0)
    await runner
    await journal.close()


def journal_events(pipeline: Pipeline) -> list[Event]:
    return [e for e in [*pipeline._batch, *pipeline._pending] if isinstance(e, Event)]


async def test_block_policy_waits_for_room_instead(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    record = len(encode_record(stamped("r", 1, 1)))
    journal = Journal(settings(max_bytes=20 * record, full_policy="block"), tmp_path)
    pipeline = Pipeline(FAST, [sink], journal=journal)
    runner = asyncio.create_task(pipeline.run())

    async def send() -> None:
        for n in range(60):
            await pipeline.submit(make_event("r", n))

    sender = asyncio.create_task(send())
    await wait_until(lambda: journal.full)
    await asyncio.sleep(0.1)
    assert not sender.done() and pipeline.accepted == 20
    sink.down = False
    await asyncio.wait_for(sender, 5)
    await wait_until(lambda: len(sink.events) == 60)
    assert [e.data["text"] for e in sink.events] == [f"utterance {n}" for n in range(60)]
    await pipeline.drain(1.0)
    await runner
    await journal.close()


async def test_fsync_always_returns_after_the_fsync(tmp_path: Path) -> None:
    sink = MemorySink()
    journal = Journal(settings(fsync="always"), tmp_path)
    pipeline = Pipeline(FAST, [sink], journal=journal)
    runner = asyncio.create_task(pipeline.run())
    syncs = metric("relay_journal_sync_duration_seconds_count")
    await asyncio.gather(*(pipeline.submit(make_event(f"r{n}", n)) for n in range(50)))
    assert journal._synced == 50  # every submit returned after the fsync covering it
    # Group commit: one fsync covers the appends made while the last one ran.
    assert 1 <= metric("relay_journal_sync_duration_seconds_count") - syncs < 50
    await pipeline.drain(1.0)
    await runner
    await journal.close()
