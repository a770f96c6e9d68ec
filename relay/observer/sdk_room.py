"""The SDK's `rtc.Room` with the one change the observer needs: late packets keep their sender.

A participant's leave travels on the signal connection and its packets on the data channel,
so its last packets can arrive after the leave (under load, or when the data channel
retransmits). The SDK (livekit 1.2.0) names a packet's sender by looking its identity up
among the participants still present, and hands a late packet over with
`participant=None`: a command from a user who then closed the tab would lose its sender.
`ObserverRoom` keeps the last participants who left for that lookup.
"""

from __future__ import annotations

from collections import OrderedDict

from livekit import rtc

DEPARTED_MAX = 256  # per room: far more than leave between two packets of one participant


class ObserverRoom(rtc.Room):
    def __init__(self) -> None:
        super().__init__()
        self._departed: OrderedDict[str, rtc.RemoteParticipant] = OrderedDict()
        self.on("participant_disconnected", self._remember_departed)

    def _remember_departed(self, participant: rtc.RemoteParticipant) -> None:
        self._departed[participant.identity] = participant
        self._departed.move_to_end(participant.identity)
        if len(self._departed) > DEPARTED_MAX:
            self._departed.popitem(last=False)

    def participant(self, identity: str) -> rtc.RemoteParticipant | None:
        """The participant with this identity: present, else recently departed."""
        return self.remote_participants.get(identity) or self._departed.get(identity)

    def _retrieve_remote_participant(self, identity: str) -> rtc.RemoteParticipant | None:
        # The SDK resolves the sender of data packets and transcriptions here.
        return self.participant(identity)
