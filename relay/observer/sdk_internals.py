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
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

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
