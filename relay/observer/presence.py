"""Who is in the room, as the observer last reported it.

The SDK announces everyone again after a resume or a re-join (reconnect churn). `Presence`
turns its participant callbacks into the joins and leaves that really happened: someone
already reported is not reported again; someone who left while the observer was away is
reported as left with reason `while_disconnected`; someone back with a new sid left and
joined again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from livekit import rtc

from relay.contract.event import Participant
from relay.observer.convert import to_participant

WHILE_DISCONNECTED = "while_disconnected"


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceChange:
    change: Literal["joined", "left"]
    who: Participant
    reason: str | None = None
    # A join's starting attributes (e.g. lk.agent.state): the SDK raises attribute events
    # only when they change, so these are reported as a change from nothing.
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)


class Presence:
    def __init__(self) -> None:
        self._present: dict[str, Participant] = {}

    def connected(self, participant: rtc.RemoteParticipant) -> list[PresenceChange]:
        known = self._present.get(participant.identity)
        if known is not None and known.sid == participant.sid:
            return []  # reconnect churn: already reported as present
        changes = []
        if known is not None:  # same identity, new sid: the old one left while we were away
            changes += self.left(participant.identity, WHILE_DISCONNECTED)
        who = to_participant(participant)
        self._present[participant.identity] = who
        return [*changes, PresenceChange("joined", who, None, dict(participant.attributes))]

    def left(self, identity: str, reason: str | None) -> list[PresenceChange]:
        who = self._present.pop(identity, None)
        return [] if who is None else [PresenceChange("left", who, reason)]

    def reconcile(self, current: Mapping[str, rtc.RemoteParticipant]) -> list[PresenceChange]:
        """After a join or a reconnect: who left and who came while we were away (the SDK
        raises no participant_connected for those already present)."""
        changes = []
        for identity, known in list(self._present.items()):
            if identity not in current or current[identity].sid != known.sid:
                changes += self.left(identity, WHILE_DISCONNECTED)
        for participant in current.values():
            changes += self.connected(participant)
        return changes
