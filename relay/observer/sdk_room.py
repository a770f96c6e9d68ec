"""The SDK's `rtc.Room` with the one change the observer needs: late packets keep their sender.

A participant's leave travels on the signal connection and its packets on the data channel,
so its last packets can arrive after the leave (under load, or when the data channel
retransmits). `ObserverRoom` remembers the last participants who left and has the SDK's
sender lookup use that memory too (relay.observer.sdk_internals, which checks the SDK).
"""

from __future__ import annotations

from typing import Any

from livekit import rtc

from relay.lru import LRU
from relay.observer.convert import sdk_callback
from relay.observer.sdk_internals import install_own_room_dispatch, install_sender_lookup

DEPARTED_MAX = 256  # per room: far more than leave between two packets of one participant


class ObserverRoom(rtc.Room):
    def __init__(self) -> None:
        super().__init__()
        self._departed: LRU[str, rtc.RemoteParticipant] = LRU(DEPARTED_MAX)
        self.on("participant_disconnected", sdk_callback(self._remember_departed))
        self.keeps_late_senders = install_sender_lookup(self, self.participant)
        self.own_room_dispatch = False

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        """The SDK's connect, then this room's subscription narrowed to its own events."""
        await super().connect(*args, **kwargs)
        self.own_room_dispatch = install_own_room_dispatch(self)

    def _remember_departed(self, participant: rtc.RemoteParticipant) -> None:
        self._departed.put(participant.identity, participant)

    def participant(self, identity: str) -> rtc.RemoteParticipant | None:
        """The participant with this identity: present, else recently departed."""
        return self.remote_participants.get(identity) or self._departed.get(identity)
