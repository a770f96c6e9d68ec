"""ObserverRoom through the SDK's own dispatch (`Room._on_room_event`), fed native events
built offline: a packet that arrives after its sender's leave still names the sender."""

from __future__ import annotations

import ctypes
import json

import pytest
import structlog
from livekit import rtc
from livekit.rtc._proto import participant_pb2, room_pb2

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


def test_the_own_room_dispatch_check_accepts_the_sdk_relay_was_tested_with() -> None:
    """Fails when the SDK's FfiQueue or Room internals change shape."""
    from livekit.rtc._ffi_client import FfiClient, FfiHandle

    class Connected:  # what a connected rtc.Room has
        _ffi_handle = FfiHandle(0)
        _ffi_queue = object()

    queue = FfiClient.instance.queue
    assert sdk_internals.own_room_problem(queue, Connected(), rtc.__version__) is None
    assert "not a tested version" in str(
        sdk_internals.own_room_problem(queue, Connected(), "9.9.9")
    )
    tested = next(iter(sdk_internals.TESTED_VERSIONS))
    assert "_subscribers" in str(sdk_internals.own_room_problem(object(), Connected(), tested))
    assert "_ffi_handle" in str(sdk_internals.own_room_problem(queue, object(), tested))


def test_the_own_room_filter_drops_only_other_rooms_events() -> None:
    from livekit.rtc._proto import ffi_pb2

    keep = sdk_internals.own_room_filter(7)
    mine, other, rpc, audio = (ffi_pb2.FfiEvent() for _ in range(4))
    mine.room_event.room_handle = 7
    other.room_event.room_handle = 8
    rpc.rpc_method_invocation.invocation_id = 1
    audio.audio_stream_event.stream_handle = 1
    assert [keep(e) for e in (mine, other, rpc, audio)] == [True, False, True, False]
