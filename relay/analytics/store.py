"""The assembly state in Redis: one JSON document per room (`analytics:state:{room}`),
read, stepped and written back in one optimistic transaction (WATCH/MULTI/EXEC) with the
utterances and summaries it produced. Any process can continue a room's session; two
that race retry, so each event is applied once and every output is written with the
state it came from. The summary is guarded by SET NX on the session id (in a script, so
the guard, the hash, its TTL and the stream entry go together).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from relay import keys
from relay.analytics import metrics
from relay.analytics.assemble import Doc, State
from relay.analytics.model import AnalyticsConfig
from relay.analytics.step import Step, on_clock, on_events
from relay.config import RedisSettings

TRANSCRIPTS_MAXLEN = 100_000
ROOM_TRANSCRIPTS_MAXLEN = 10_000
SESSIONS_MAXLEN = 100_000
OPEN_STATE_TTL_S = 7 * 24 * 3600  # an open session nobody touches for a week is abandoned

# KEYS: guard, hash, sessions stream. ARGV: summary JSON, ttl s, session id, room, end,
# end reason, stream maxlen. Returns 1 when this call wrote the summary, 0 if it was there.
WRITE_SUMMARY = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], 'summary', ARGV[1], 'room', ARGV[4], 'end', ARGV[5],
  'end_reason', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'session_id', ARGV[3],
  'room', ARGV[4], 'summary', ARGV[1])
return 1
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    utterances: list[Doc]
    summaries_written: list[Doc]
    duplicate: bool


class AnalyticsStore:
    def __init__(
        self, redis: aioredis.Redis, settings: RedisSettings, config: AnalyticsConfig, ttl_s: int
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.config = config
        self.ttl_s = ttl_s

    async def apply_event(self, event: Doc) -> Outcome:
        return await self.apply_events(str(event["room"]), [event])

    async def apply_events(self, room: str, events: list[Doc]) -> Outcome:
        """Events of `room`, in order, in one transaction."""
        return await self._transact(room, lambda s: on_events(s, events, self.config))

    async def tick(self, room: str, now_ms: int) -> Outcome:
        outcome = await self._transact(room, lambda s: on_clock(s, now_ms, self.config))
        if not outcome.utterances and not outcome.summaries_written:
            # Nothing due yet: visit the room again a timeout from now, not at every sweep.
            await self.redis.zadd(keys.analytics_open_key(self.settings), {room: now_ms}, xx=True)
        return outcome

    async def due_rooms(self, before_ms: int) -> list[str]:
        """Rooms whose last event is older than `before_ms`: candidates for a sweep."""
        found: Any = await self.redis.zrangebyscore(
            keys.analytics_open_key(self.settings), "-inf", before_ms
        )
        return [room.decode() for room in found]

    async def _transact(self, room: str, step_of: Any) -> Outcome:
        key = keys.analytics_state_key(self.settings, room)
        pipe: Any
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    state: State | None = json.loads(raw) if raw else None
                    step: Step = step_of(state)
                    if step.state is None and not step.summaries:
                        await pipe.unwatch()
                        return Outcome([], [], step.duplicate)
                    pipe.multi()
                    self._queue(pipe, room, key, step)
                    results = await pipe.execute()
                    break
                except WatchError:
                    continue  # another consumer changed the room: step again on its state
        flags = results[len(results) - len(step.summaries) :]
        written = [s for s, ok in zip(step.summaries, flags, strict=True) if ok]
        for summary in written:
            metrics.observe_summary(summary)
        return Outcome(step.utterances, written, False)

    def _queue(self, pipe: Any, room: str, key: str, step: Step) -> None:
        settings = self.settings
        for doc in step.utterances:
            fields = {
                "room": room,
                "session_id": doc["session_id"],
                "role": doc["role"],
                "utterance": orjson.dumps(doc),
            }
            pipe.xadd(keys.transcripts_key(settings), fields, maxlen=TRANSCRIPTS_MAXLEN)
            pipe.xadd(
                keys.room_transcripts_key(settings, room), fields, maxlen=ROOM_TRANSCRIPTS_MAXLEN
            )
        if step.state is not None:
            closed = bool(step.state["closed"])
            ttl = self.ttl_s if closed else OPEN_STATE_TTL_S
            pipe.set(key, orjson.dumps(step.state), ex=ttl)
            if closed:
                pipe.zrem(keys.analytics_open_key(settings), room)
            else:
                pipe.zadd(keys.analytics_open_key(settings), {room: step.state["last_ms"]})
        for summary in step.summaries:
            session_id = summary["session_id"]
            pipe.eval(
                WRITE_SUMMARY,
                3,
                keys.session_written_key(settings, session_id),
                keys.session_key(settings, session_id),
                keys.sessions_key(settings),
                orjson.dumps(summary),
                self.ttl_s,
                session_id,
                room,
                summary["end"],
                summary["end_reason"],
                SESSIONS_MAXLEN,
            )
