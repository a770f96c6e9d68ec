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
- events routed to their room: the SDK (1.2.0) hands every native event to every
  `rtc.Room` of the process (each subscribes to the one FFI queue; each listen task wakes
  for each event, compares the room handle and passes it on). Once a room is connected,
  relay narrows that room's subscription (the SDK's own `filter_fn` slot) to its own room
  events and what is not a room event, so a packet wakes only its room. Fallback: every
  room wakes for every event, as in the SDK (`livekit.sdk_fixes = false` turns it off).
- native logs kept native: the SDK (1.2.0) initializes its native library with
  `capture_logs = True`, so the native side hands every log record to Python, libwebrtc's
  hex dump of every SCTP packet included (measured: 1.9 log batches, 1.3 kB, per data
  packet; bench/ffi_logs.py), each parsed under the GIL and, being debug, thrown away.
  RUST_LOG does not filter them. Before the SDK's first use relay makes its
  `livekit_ffi_initialize` call pass `capture_logs = False`: the native side then writes
  its own records to stderr through its env_logger (those RUST_LOG selects) and calls
  Python for events only; relay/native_logs.py turns those stderr lines into relay's
  JSON records. With `livekit.native_logs = "native"` (the default); fallback: the SDK's
  forwarding (also when the SDK was already initialized).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import structlog
from livekit import rtc

FFI_CLIENT_MODULE = "livekit.rtc._ffi_client"  # private: checked before any use

log = structlog.get_logger(__name__)

TESTED_VERSIONS = frozenset({"1.2.0"})
SENDER_LOOKUP = "_retrieve_remote_participant"
SenderLookup = Callable[[str], "rtc.RemoteParticipant | None"]
NATIVE_INIT = "livekit_ffi_initialize"


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


def room_routing_problem(version: str) -> str | None:
    """Why a room's FFI subscription cannot be narrowed in this SDK, or None when it can."""
    if version not in TESTED_VERSIONS:
        return f"livekit {version} is not a tested version ({', '.join(sorted(TESTED_VERSIONS))})"
    queue = _ffi_queue()
    if queue is None:
        return f"{FFI_CLIENT_MODULE}.FfiClient.instance.queue is missing"
    queue_type = type(queue)
    for name in ("_subscribers", "_lock", "put"):
        if not hasattr(queue, name):
            return f"{queue_type.__name__}.{name} is missing"
    subscribers = queue._subscribers
    if not isinstance(subscribers, list):
        return f"{queue_type.__name__}._subscribers is a {type(subscribers).__name__}, not a list"
    return None


@functools.cache
def room_routing_supported() -> bool:
    problem = room_routing_problem(rtc.__version__)
    if problem is not None:
        log.warning("sdk_internals_mismatch", feature="room_routing", problem=problem)
    return problem is None


def route_events_to_room(room: rtc.Room) -> bool:
    """After `room` connected: its FFI subscription takes only its own room events (and
    everything that is not a room event). False, nothing changed, where it cannot."""
    if not room_routing_supported():
        return False
    own_queue, handle = getattr(room, "_ffi_queue", None), getattr(room, "_ffi_handle", None)
    if own_queue is None or handle is None:
        return False
    ffi_queue = _ffi_queue()
    with ffi_queue._lock:
        for n, subscriber in enumerate(ffi_queue._subscribers):
            if len(subscriber) == 3 and subscriber[0] is own_queue:
                queue, loop, previous = subscriber
                ffi_queue._subscribers[n] = (queue, loop, _own_events(handle.handle, previous))
                return True
    return False


def _ffi_queue() -> Any:
    """The SDK's one FFI event queue, or None where the SDK has none by that name."""
    try:
        module = importlib.import_module(FFI_CLIENT_MODULE)
        return module.FfiClient.instance.queue
    except (ImportError, AttributeError):
        return None


def _own_events(handle: int, previous: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
    """A filter for one room's subscription; runs on the SDK's native callback thread."""

    def accept(event: Any) -> bool:
        if event.WhichOneof("message") == "room_event" and event.room_event.room_handle != handle:
            return False  # another room's event: this room's listen task need not wake
        return previous is None or bool(previous(event))

    return accept


def native_logs_problem(version: str) -> str | None:
    """Why native log capture cannot be turned off in this SDK, or None when it can."""
    if version not in TESTED_VERSIONS:
        return f"livekit {version} is not a tested version ({', '.join(sorted(TESTED_VERSIONS))})"
    try:
        module = importlib.import_module(FFI_CLIENT_MODULE)
    except ImportError:
        return f"{FFI_CLIENT_MODULE} is missing"
    client = getattr(module, "FfiClient", None)
    if not callable(getattr(module, "get_ffi_lib", None)) or client is None:
        return f"{FFI_CLIENT_MODULE}.get_ffi_lib or FfiClient is missing"
    names = getattr(getattr(client.__init__, "__code__", None), "co_names", ())
    if "get_ffi_lib" not in names or NATIVE_INIT not in names:
        return f"FfiClient.__init__ no longer calls get_ffi_lib and {NATIVE_INIT}"
    if getattr(client, "_instance", None) is not None:
        return "the SDK's native library is already initialized"
    return None


@functools.cache
def keep_native_logs_native() -> bool:
    """Before the SDK's first use: its native init passes capture_logs = False. Once per
    process; False (nothing changed, the SDK forwards its logs) on a mismatch."""
    problem = native_logs_problem(rtc.__version__)
    if problem is not None:
        log.warning("sdk_internals_mismatch", feature="native_logs", problem=problem)
        return False
    module = importlib.import_module(FFI_CLIENT_MODULE)
    load = module.get_ffi_lib
    setattr(module, "get_ffi_lib", lambda: _NoLogCapture(load()))  # noqa: B010 (a module)
    return True


class _NoLogCapture:
    """The native library, its init called with capture_logs = False; the rest as is."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.livekit_ffi_initialize = _InitWithoutLogs(getattr(lib, NATIVE_INIT))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)  # the CDLL caches its functions: same objects


class _InitWithoutLogs:
    def __init__(self, native: Any) -> None:
        self._native = native

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_native":
            object.__setattr__(self, name, value)
        else:  # argtypes, restype: the SDK sets them on the native function
            setattr(self._native, name, value)

    def __call__(self, callback: Any, capture_logs: bool, *rest: Any) -> Any:
        return self._native(callback, False, *rest)
