"""What a room's decoders remember between items; every part is bounded."""

from __future__ import annotations

import dataclasses

from relay.decode.payloads import digest
from relay.decode.roles import Senders
from relay.lru import LRU

# Per-room state caps: a room holds at most this much decoder memory whatever it is sent.
SEGMENTS_MAX = 1024
AGENT_STATES_MAX = 256
TURN_TEXT_MAX_CHARS = 64 * 1024


class SegmentDedupe:
    """Transcript segments already emitted, so the same segment seen twice is emitted once.

    LiveKit Agents send each transcript both as a text stream and as legacy segments. Once a
    segment's final is out, everything later for it is dropped; a partial is dropped when its
    text equals the last one emitted for the segment.
    """

    def __init__(self, cap: int = SEGMENTS_MAX) -> None:
        self._seen: LRU[str, tuple[bool, str]] = LRU(cap)  # segment id -> (final, text digest)

    def admit(self, segment_id: str, final: bool, text: str) -> bool:
        seen = self._seen.get(segment_id)
        fingerprint = digest(text)
        if seen is not None and (seen[0] or (not final and seen[1] == fingerprint)):
            return False
        self._seen.put(segment_id, (final, fingerprint))
        return True


@dataclasses.dataclass(slots=True)
class Turn:
    segment_id: str
    text: str = ""

    def append(self, delta: str) -> None:
        room_left = TURN_TEXT_MAX_CHARS - len(self.text)
        if room_left > 0:
            self.text += delta[:room_left]


class Turns:
    """The utterance in progress per speaker, for protocols that send no segment id.

    A turn opens with the first transcript of a speaker and closes with its final. A derived
    segment id is `<key>@<epoch ms of the turn's first transcript>`: the same for every
    partial and the final of one utterance, different for the next one. Keys are a fixed
    few (protocol:role), so this stays small.
    """

    def __init__(self) -> None:
        self._open: dict[str, Turn] = {}

    def current(self, key: str, received_at: float, segment_id: str | None = None) -> Turn:
        """The open turn of `key`, opened now (named `segment_id` if given) when none is, or
        when the sender names another segment (the open one's end never came)."""
        turn = self._open.get(key)
        if turn is None or (segment_id is not None and segment_id != turn.segment_id):
            turn = Turn(segment_id or _derived_id(key, received_at))
            self._open[key] = turn
        return turn

    def close(self, key: str) -> Turn | None:
        return self._open.pop(key, None)

    def segment_id(self, key: str, received_at: float, final: bool, given: str | None) -> str:
        """The segment id of a transcript: the sender's own when it gave one, else the turn's.

        A final always closes the turn, so the next utterance gets a new id.
        """
        turn = self.close(key) if final else None
        if given:
            return given
        if turn is not None:
            return turn.segment_id
        return _derived_id(key, received_at) if final else self.current(key, received_at).segment_id


def _derived_id(key: str, received_at: float) -> str:
    return f"{key}@{round(received_at * 1000)}"


@dataclasses.dataclass(slots=True)
class RoomState:
    """All a room's decoders remember between items; every part is bounded."""

    session_id: str | None = None
    speakers: frozenset[str] = frozenset()
    agent_states: LRU[str, str] = dataclasses.field(default_factory=lambda: LRU(AGENT_STATES_MAX))
    segments: SegmentDedupe = dataclasses.field(default_factory=SegmentDedupe)
    turns: Turns = dataclasses.field(default_factory=Turns)
    senders: Senders = dataclasses.field(default_factory=Senders)
