"""ObserverRoom through the SDK's own dispatch (`Room._on_room_event`), fed native events
built offline: a packet that arrives after its sender's leave still names the sender."""

from __future__ import annotations

import asyncio
import ctypes
import json

import pytest
import structlog
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2, participant_pb2, room_pb2

from relay.observer import sdk_internals
from relay.observer.sdk_room import DEPARTED_MAX, ObserverRoom


def joined(identity: str, sid: str) -> room_pb2.RoomEvent:
    info = participant_pb2.OwnedParticipant()
    info.info.identity, info.info.sid = identity, sid
    return room_pb2.RoomEvent(participant_connected=room_pb2.ParticipantConnected(info=info))


def left(identity: str) -> room_pb2.RoomEvent:
    event = room_pb2.ParticipantDisconnected(participant_identity=identity)
    return room_pb2.RoomEvent(participant_disconnected=event)


def deliver(room: rtc.Room, identity: str, payload: bytes, topic: str) -> None:
    """A user data packet as the native side hands it over (handle 0: nothing to free)."""
    buffer = ctypes.create_string_buffer(payload, len(payload))
    packet = room_pb2.DataPacketReceived(participant_identity=identity)
    packet.user.topic = topic
    packet.user.data.data.data_ptr = ctypes.addressof(buffer)
    packet.user.data.data.data_len = len(payload)
    room._on_room_event(room_pb2.RoomEvent(data_packet_received=packet))


def received_senders(room: rtc.Room) -> list[tuple[str | None, bytes]]:
    got: list[tuple[str | None, bytes]] = []

    def on_data(packet: rtc.DataPacket) -> None:
        sender = packet.participant.identity if packet.participant else None
        got.append((sender, packet.data))

    room.on("data_received", on_data)
    return got


async def test_a_packet_after_its_senders_leave_still_names_the_sender() -> None:
    body = json.dumps({"event_type": "avatar.interrupt"}).encode()
    for room, expected_sender in ((rtc.Room(), None), (ObserverRoom(), "user-1")):
        got = received_senders(room)
        room._on_room_event(joined("user-1", "PA_u"))
        deliver(room, "user-1", body, "agent-control")
        room._on_room_event(left("user-1"))
        deliver(room, "user-1", body, "agent-control")  # overtaken by the leave
        # The plain SDK room loses the late packet's sender; the observer's keeps it.
        assert got == [("user-1", body), (expected_sender, body)]
        assert "user-1" not in room.remote_participants


async def test_a_present_participant_wins_over_a_departed_one_and_memory_is_bounded() -> None:
    room = ObserverRoom()
    room._on_room_event(joined("user-1", "PA_old"))
    room._on_room_event(left("user-1"))
    room._on_room_event(joined("user-1", "PA_new"))
    assert room._retrieve_remote_participant("user-1").sid == "PA_new"  # type: ignore[union-attr]

    for n in range(DEPARTED_MAX + 1):
        room._on_room_event(joined(f"p{n}", f"PA_{n}"))
        room._on_room_event(left(f"p{n}"))
    assert room._retrieve_remote_participant("p0") is None  # the oldest is forgotten
    assert room._retrieve_remote_participant(f"p{DEPARTED_MAX}") is not None
    assert room._retrieve_remote_participant("nobody") is None


def test_the_sdk_internals_check_accepts_the_sdk_relay_was_tested_with() -> None:
    assert sdk_internals.late_sender_problem(rtc.Room, rtc.__version__) is None


def test_the_sdk_internals_check_names_what_does_not_match() -> None:
    class Renamed:
        def _lookup_participant(self, identity: str) -> None: ...

    class Reshaped:
        def _retrieve_remote_participant(self, identity: str, strict: bool) -> None: ...

    tested = next(iter(sdk_internals.TESTED_VERSIONS))
    assert "not a tested version" in str(sdk_internals.late_sender_problem(rtc.Room, "9.9.9"))
    assert "is missing" in str(sdk_internals.late_sender_problem(Renamed, tested))
    assert "not [self, identity]" in str(sdk_internals.late_sender_problem(Reshaped, tested))


async def test_on_an_untested_sdk_the_room_falls_back_to_the_sdks_own_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rtc, "__version__", "9.9.9")
    sdk_internals.late_senders_supported.cache_clear()
    try:
        with structlog.testing.capture_logs() as logs:
            room = ObserverRoom()
        assert not room.keeps_late_senders
        assert [entry["event"] for entry in logs] == ["sdk_internals_mismatch"]
        got = received_senders(room)
        room._on_room_event(joined("user-1", "PA_u"))
        room._on_room_event(left("user-1"))
        deliver(room, "user-1", b"late", "agent-control")
        assert got == [(None, b"late")]  # the SDK's public behaviour: no sender, no crash
    finally:
        sdk_internals.late_senders_supported.cache_clear()


class _Handle:
    def __init__(self, handle: int) -> None:
        self.handle = handle


def _room_event(handle: int) -> ffi_pb2.FfiEvent:
    event = ffi_pb2.FfiEvent()
    event.room_event.room_handle = handle
    event.room_event.eos.SetInParent()
    return event


async def test_a_routed_room_wakes_only_for_its_own_room_events() -> None:
    """Through the SDK's real FFI queue: before routing every room gets every event."""
    ffi_queue = FfiClient.instance.queue
    mine, other = rtc.Room(), rtc.Room()
    for room, handle in ((mine, 101), (other, 202)):
        room._ffi_queue = ffi_queue.subscribe(asyncio.get_running_loop())
        room._ffi_handle = _Handle(handle)  # type: ignore[assignment]
    try:
        assert sdk_internals.route_events_to_room(mine)
        not_a_room_event = ffi_pb2.FfiEvent()
        not_a_room_event.disconnect.async_id = 7
        for event in (_room_event(202), _room_event(101), not_a_room_event):
            ffi_queue.put(event)
        await asyncio.sleep(0.05)  # call_soon_threadsafe deliveries
        got_mine = [mine._ffi_queue.get_nowait() for _ in range(mine._ffi_queue.qsize())]
        got_other = other._ffi_queue.qsize()
        assert [e.WhichOneof("message") for e in got_mine] == ["room_event", "disconnect"]
        assert got_mine[0].room_event.room_handle == 101
        assert got_other == 3  # not routed: it still wakes for everything
    finally:
        ffi_queue.unsubscribe(mine._ffi_queue)
        ffi_queue.unsubscribe(other._ffi_queue)


async def test_routing_falls_back_on_an_untested_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "not a tested version" in str(sdk_internals.room_routing_problem("9.9.9"))
    monkeypatch.setattr(rtc, "__version__", "9.9.9")
    sdk_internals.room_routing_supported.cache_clear()
    try:
        room = rtc.Room()
        room._ffi_queue = FfiClient.instance.queue.subscribe()
        room._ffi_handle = _Handle(303)  # type: ignore[assignment]
        with structlog.testing.capture_logs() as logs:
            assert not sdk_internals.route_events_to_room(room)
        assert [entry["feature"] for entry in logs] == ["room_routing"]
        FfiClient.instance.queue.unsubscribe(room._ffi_queue)
    finally:
        sdk_internals.room_routing_supported.cache_clear()
