"""The one place where relay touches the `livekit` SDK's private parts.

Each use is checked against the SDK actually loaded (its version is one relay was tested
with, the attribute exists with the shape relay expects). On a mismatch relay logs one
warning naming what is missing and falls back to the SDK's public behaviour, so an SDK
upgrade can lose a refinement, never break observing.

Uses:
- late senders: the SDK (1.2.0) names a data packet's or transcription's sender by
  looking its identity up with `Room._retrieve_remote_participant`, among the
  participants still present. A participant's last packets can arrive after its leave
  (the leave travels on the signal connection, packets on the data channel), and would
  lose their sender. relay replaces that lookup, per room, with one that also knows
  recently departed participants (the SDK uses it too for `participant_active` and SIP
  DTMF events, which then also name a departed sender). Fallback: such late packets
  come without a sender (`participant.identity` "").
- own-room dispatch: the SDK (1.2.0) hands every native event to every `rtc.Room` of the
  process (`FfiQueue.put`: a `call_soon_threadsafe` per subscriber, then each room's
  listen task wakes, compares handles and waits on its queue's join()), so the cost of a
  packet grows with the rooms a process holds. Once a room is connected (its handle
  known), relay swaps the filter of the room's own subscription (the SDK's `filter_fn`
  of `FfiQueue.subscribe`, evaluated on the native thread) for one that also drops
  other rooms' `room_event`s, which that room's listen task would skip anyway. Fallback:
  the SDK's dispatch. `RELAY_SDK_OWN_ROOM_DISPATCH=0` turns it off (benchmarks).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import structlog
from livekit import rtc

log = structlog.get_logger(__name__)

TESTED_VERSIONS = frozenset({"1.2.0"})
SENDER_LOOKUP = "_retrieve_remote_participant"
SenderLookup = Callable[[str], "rtc.RemoteParticipant | None"]


def late_sender_problem(room_class: type, version: str) -> str | None:
    """Why the sender lookup cannot be replaced in this SDK, or None when it can."""
    if version not in TESTED_VERSIONS:
        return f"livekit {version} is not a tested version ({', '.join(sorted(TESTED_VERSIONS))})"
    lookup = getattr(room_class, SENDER_LOOKUP, None)
    if not callable(lookup):
        return f"rtc.Room.{SENDER_LOOKUP} is missing"
    try:
        parameters = list(inspect.signature(lookup).parameters)
    except (TypeError, ValueError):
        return f"rtc.Room.{SENDER_LOOKUP} has no readable signature"
    if parameters != ["self", "identity"]:
        return f"rtc.Room.{SENDER_LOOKUP} takes {parameters}, not [self, identity]"
    return None


@functools.cache
def late_senders_supported() -> bool:
    """Checked once per process; a mismatch is logged once."""
    problem = late_sender_problem(rtc.Room, rtc.__version__)
    if problem is not None:
        log.warning("sdk_internals_mismatch", feature="late_senders", problem=problem)
    return problem is None


def install_sender_lookup(room: rtc.Room, lookup: SenderLookup) -> bool:
    """Make `room` name senders with `lookup`; False (nothing changed) on a mismatch."""
    if not late_senders_supported():
        return False
    setattr(room, SENDER_LOOKUP, lookup)  # an instance attribute: this room only
    return True


OWN_ROOM_SWITCH = "RELAY_SDK_OWN_ROOM_DISPATCH"
# What the room's listen task skips unless it is its own: other rooms' room events.
# (Media stream events are left out of the room's queue by the SDK's own filter.)
SKIPPED_BY_OTHERS = "room_event"
MEDIA_EVENTS = ("audio_stream_event", "video_stream_event")


def own_room_problem(ffi_queue: Any, room: Any, version: str) -> str | None:
    """Why the room's subscription cannot be narrowed to its own events, or None."""
    if version not in TESTED_VERSIONS:
        return f"livekit {version} is not a tested version ({', '.join(sorted(TESTED_VERSIONS))})"
    subscribers = getattr(ffi_queue, "_subscribers", None)
    if not isinstance(subscribers, list) or not hasattr(ffi_queue, "_lock"):
        return "FfiQueue._subscribers/_lock are missing"
    if not all(isinstance(entry, tuple) and len(entry) == 3 for entry in subscribers):
        return "FfiQueue._subscribers entries are not (queue, loop, filter_fn)"
    handle = getattr(getattr(room, "_ffi_handle", None), "handle", None)
    if not isinstance(handle, int) or not hasattr(room, "_ffi_queue"):
        return "rtc.Room._ffi_handle.handle or rtc.Room._ffi_queue is missing"
    return None


def own_room_filter(handle: int) -> Callable[[Any], bool]:
    """Keep what the room's listen task uses: its own room events, every other message
    except media streams (as the SDK's own filter)."""

    def keep(event: Any) -> bool:
        which = event.WhichOneof("message")
        if which == SKIPPED_BY_OTHERS:
            return bool(event.room_event.room_handle == handle)
        return which not in MEDIA_EVENTS

    return keep


def install_own_room_dispatch(room: rtc.Room) -> bool:
    """Narrow a connected room's subscription to its own events; False if unchanged."""
    if os.environ.get(OWN_ROOM_SWITCH, "1") == "0":
        return False
    from livekit.rtc._ffi_client import FfiClient  # private: checked below

    ffi_queue = FfiClient.instance.queue
    problem = own_room_problem(ffi_queue, room, rtc.__version__)
    if problem is not None:
        _warn_once(problem)
        return False
    mine = getattr(room, "_ffi_queue")  # noqa: B009 (checked above)
    keep = own_room_filter(getattr(room, "_ffi_handle").handle)  # noqa: B009
    with ffi_queue._lock:
        for n, (queue, loop, _) in enumerate(ffi_queue._subscribers):
            if queue is mine:
                ffi_queue._subscribers[n] = (queue, loop, keep)
                return True
    _warn_once("the room's subscription is not in FfiQueue._subscribers")
    return False


@functools.cache
def _warn_once(problem: str) -> None:
    log.warning("sdk_internals_mismatch", feature="own_room_dispatch", problem=problem)
