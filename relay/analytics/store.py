"""The assembly state in Redis, per room, in the room's Cluster slot (its hash tag): the
state document (`analytics:state:{room}`), the id of the last entry of the room's stream
it applied (`analytics:pos:{room}`), the room's transcripts stream and an outbox.

Only the holder of the room's analytics lease writes them, and every write checks, in
one script, that the lease still holds its id and the epoch it acquired (fencing): a
process that lost the room cannot write, even late. A step writes the state, the position
and the room's utterances together, plus the outbox: what the step writes outside the
room's slot (the all-rooms transcripts stream, the summary). The outbox is delivered
right after, and again by the next owner if the process died before: every delivery is
guarded by SET NX on the utterance or session id in the slot of the stream it goes to,
so it writes each document once however often it runs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import redis.asyncio as aioredis

from relay import keys
from relay.analytics import metrics
from relay.analytics.assemble import Doc, State
from relay.analytics.model import AnalyticsConfig
from relay.analytics.step import Step
from relay.config import RedisSettings

TRANSCRIPTS_MAXLEN = 100_000
ROOM_TRANSCRIPTS_MAXLEN = 10_000
SESSIONS_MAXLEN = 100_000
OPEN_STATE_TTL_S = 7 * 24 * 3600  # an open session nobody touches for a week is abandoned
UTTERANCE_GUARD_TTL_S = 24 * 3600  # an outbox delivered again after a day writes it again

# KEYS: lease, epoch, state, pos, room transcripts, outbox. ARGV: owner, epoch, state JSON
# ('' : unchanged), state ttl s, pos, pos ttl s, outbox JSON ('' : none), maxlen, then
# 4 fields per utterance. 1: written; 0: the lease is not (or no longer) ours.
WRITE_ROOM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('SET', KEYS[6], ARGV[7]) else redis.call('DEL', KEYS[6]) end
for i = 9, #ARGV, 4 do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'room', ARGV[i],
    'session_id', ARGV[i + 1], 'role', ARGV[i + 2], 'utterance', ARGV[i + 3])
end
return 1
"""
# KEYS: guard, stream. ARGV: ttl s, maxlen, then field, value pairs. 1: written; 0: the
# guard was there (written before).
GUARDED_XADD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    utterances: list[Doc]
    summaries_written: list[Doc]
    duplicate: bool


@dataclasses.dataclass(slots=True)
class Loaded:
    """A room as its new owner finds it."""

    state: State | None
    pos: str  # "0-0": nothing applied yet
    outbox: Doc | None  # a step's writes that may not have been delivered


class FencedError(Exception):
    """The room's lease is no longer ours: another process owns its assembly now."""


class AnalyticsStore:
    def __init__(
        self, redis: aioredis.Redis, settings: RedisSettings, config: AnalyticsConfig, ttl_s: int
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.config = config
        self.ttl_s = ttl_s
        self._write_room = redis.register_script(WRITE_ROOM)

    async def load(self, room: str) -> Loaded:
        s = self.settings
        pipe: Any
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.analytics_state_key(s, room))
            pipe.get(keys.analytics_pos_key(s, room))
            pipe.get(keys.analytics_outbox_key(s, room))
            raw_state, raw_pos, raw_outbox = await pipe.execute()
        return Loaded(
            json.loads(raw_state) if raw_state else None,
            raw_pos.decode() if raw_pos else "0-0",
            json.loads(raw_outbox) if raw_outbox else None,
        )

    async def write(
        self, room: str, owner: str, epoch: int, step: Step, pos: str | None
    ) -> Doc | None:
        """Write a step of `room` under its lease (FencedError if it is not ours); the
        outbox to deliver (None: nothing outside the room's slot)."""
        s = self.settings
        outbox = _outbox(step)
        state = step.state
        ttl = OPEN_STATE_TTL_S if state is None or not state["closed"] else self.ttl_s
        args: list[Any] = [
            owner,
            epoch,
            orjson.dumps(state) if state is not None else "",
            ttl,
            pos or "",
            max(self.ttl_s, OPEN_STATE_TTL_S),
            orjson.dumps(outbox) if outbox else "",
            ROOM_TRANSCRIPTS_MAXLEN,
        ]
        for fields in outbox["utterances"] if outbox else []:
            args.extend(fields)
        room_keys = [
            keys.lease_key(s, room, keys.ANALYTICS_LEASES),
            keys.epoch_key(s, room, keys.ANALYTICS_LEASES),
            keys.analytics_state_key(s, room),
            keys.analytics_pos_key(s, room),
            keys.room_transcripts_key(s, room),
            keys.analytics_outbox_key(s, room),
        ]
        if not await self._write_room(keys=room_keys, args=args):
            raise FencedError(room)
        return outbox

    async def deliver(self, outbox: Doc) -> list[Doc]:
        """The writes outside the room's slot, each once whoever delivers it how often;
        the summaries this call wrote (the metrics and traces follow those)."""
        s = self.settings
        pipe: Any
        async with self.redis.pipeline(transaction=False) as pipe:
            for room, session_id, role, doc in outbox["utterances"]:
                utterance_id = orjson.loads(doc)["utterance_id"]
                pipe.eval(
                    GUARDED_XADD,
                    2,
                    keys.utterance_written_key(s, utterance_id),
                    keys.transcripts_key(s),
                    UTTERANCE_GUARD_TTL_S,
                    TRANSCRIPTS_MAXLEN,
                    *("room", room, "session_id", session_id, "role", role, "utterance", doc),
                )
            for summary in outbox["summaries"]:
                session_id = summary["session_id"]
                raw = orjson.dumps(summary)
                pipe.eval(
                    GUARDED_XADD,
                    2,
                    keys.session_written_key(s, session_id),
                    keys.sessions_key(s),
                    self.ttl_s,
                    SESSIONS_MAXLEN,
                    *("session_id", session_id, "room", summary["room"], "summary", raw),
                )
                # The lookup hash: the same fields every time, so writing it again is moot.
                hash_key = keys.session_key(s, session_id)
                pipe.hset(
                    hash_key,
                    mapping={
                        "summary": raw,
                        "room": summary["room"],
                        "end": summary["end"],
                        "end_reason": summary["end_reason"],
                    },
                )
                pipe.expire(hash_key, self.ttl_s)
            results = await pipe.execute()
        flags = results[len(outbox["utterances"]) :: 3]
        written = [s for s, ok in zip(outbox["summaries"], flags, strict=True) if ok]
        for summary in written:
            metrics.observe_summary(summary)
        return written


def _outbox(step: Step) -> Doc | None:
    """What a step writes outside the room's slot; the utterances as their stream fields."""
    if not step.utterances and not step.summaries:
        return None
    utterances = [
        [doc["room"], doc["session_id"], doc["role"], orjson.dumps(doc).decode()]
        for doc in step.utterances
    ]
    return {"utterances": utterances, "summaries": step.summaries}
