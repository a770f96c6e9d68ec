"""One room's rate limits and byte caps: a bucket pair for the room, one per participant.

The SDK handlers ask `admit()` before they build a raw item, so what is over a limit costs
a dict lookup and four subtractions, never a decode. Drops are counted at once (metrics)
and summarized once a period (`take_summary()`), never logged one by one.
"""

from __future__ import annotations

import collections
import dataclasses

from relay import metrics
from relay.config import LimitsSettings
from relay.contract.kinds import LimitReason
from relay.lru import LRU
from relay.ratelimit import TokenBucket

TOP_PARTICIPANTS = 5  # named in a summary, most dropped first


@dataclasses.dataclass(frozen=True, slots=True)
class LimitSummary:
    """What one room dropped in one period (at most one a period)."""

    period_s: float
    reasons: dict[LimitReason, int]
    dropped_bytes: int
    top_participants: list[tuple[str, int]]

    @property
    def dropped(self) -> int:
        return sum(self.reasons.values())


class _Buckets:
    def __init__(self, events_per_s: float, events: int, bytes_per_s: float, size: int, now: float):
        self.events = TokenBucket(events_per_s, events, now)
        self.bytes = TokenBucket(bytes_per_s, size, now)


class RoomLimiter:
    def __init__(self, settings: LimitsSettings, now: float) -> None:
        self._s = settings
        self._room = self._buckets_for_room(now)
        self._participants: LRU[str, _Buckets] = LRU(settings.max_participants)
        self._since: float | None = None  # the first drop of the period not yet summarized
        self._reasons: collections.Counter[LimitReason] = collections.Counter()
        self._by_participant: collections.Counter[str] = collections.Counter()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self._s.enabled

    @property
    def period_s(self) -> float:
        return self._s.summary_period_s

    def admit(self, identity: str, size: int, now: float) -> LimitReason | None:
        """None if one item of `size` bytes from `identity` fits (it is taken), else the
        first limit it is over (the participant's before the room's: the culprit's own
        limit names it), counted as dropped."""
        if not self._s.enabled:
            return None
        mine = self._participant(identity, now)
        reason = _over(mine, "participant", size, now) or _over(self._room, "room", size, now)
        if reason is None:
            for buckets in (mine, self._room):
                buckets.events.take(1, now)
                buckets.bytes.take(size, now)
            return None
        metrics.rate_limited(reason, size)
        if self._since is None:
            self._since = now
        self._reasons[reason] += 1
        self._by_participant[identity] += 1
        self._bytes += size
        return reason

    @property
    def pending(self) -> bool:
        """Drops not yet summarized."""
        return self._since is not None

    def take_summary(self) -> LimitSummary | None:
        """What was dropped since the last summary (None: nothing), and start again."""
        if self._since is None:
            return None
        summary = LimitSummary(
            period_s=self._s.summary_period_s,
            reasons=dict(self._reasons),
            dropped_bytes=self._bytes,
            top_participants=self._by_participant.most_common(TOP_PARTICIPANTS),
        )
        self._since = None
        self._reasons.clear()
        self._by_participant.clear()
        self._bytes = 0
        return summary

    def _participant(self, identity: str, now: float) -> _Buckets:
        buckets = self._participants.get(identity)
        if buckets is None:
            s = self._s
            buckets = _Buckets(
                s.participant_events_per_s,
                s.participant_events_burst,
                s.participant_bytes_per_s,
                s.participant_bytes_burst,
                now,
            )
            self._participants.put(identity, buckets)
        return buckets

    def _buckets_for_room(self, now: float) -> _Buckets:
        s = self._s
        return _Buckets(
            s.room_events_per_s, s.room_events_burst, s.room_bytes_per_s, s.room_bytes_burst, now
        )


def _over(buckets: _Buckets, scope: str, size: int, now: float) -> LimitReason | None:
    if buckets.events.wait_s(1, now) > 0:
        return "participant_rate" if scope == "participant" else "room_rate"
    if buckets.bytes.wait_s(size, now) > 0:
        return "participant_bytes" if scope == "participant" else "room_bytes"
    return None
