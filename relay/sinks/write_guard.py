"""The write guard: an entry id written to a stream once, however often its batch comes.

A batch is retried whole after a failure that may have written part of it, a journal is
replayed after a crash, and two observers of one room (a hand-over, a takeover) announce
the same source events under the same deterministic ids. Each XADD is therefore guarded,
per stream, by one of:

- `idmp`: Redis 8.6+ `XADD key IDMP <room> <id> ...`: the server keeps the recent ids of
  each producer (the room) and answers a repeat with the entry already written. Its
  window is the stream's (`XCFGSET key IDMP-DURATION s IDMP-MAXSIZE n`; the defaults are
  100 s and 100 ids per room).
- `script`: a Lua script runs `SET <guard> 1 NX PX <window>` and the XADD only if the
  guard was new, in one step: a repeat within `redis.dedupe_window_s` is skipped (its
  reply is nil, counted in `relay_duplicates_skipped_total`). The guard key shares its
  stream's Cluster slot. An XADD that fails deletes its guard, so the retry writes it.
- `off`: plain XADD; a repeat is written again, for consumers to drop by id.

`auto` picks `idmp` where the server has it and `script` elsewhere.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

GuardMode = Literal["idmp", "script", "off"]
IDMP_SINCE = (8, 6)  # the first Redis release with XADD ... IDMP

# KEYS[1]: the guard, KEYS[2]: the stream; ARGV[1]: the window (ms), ARGV[2]: the
# stream's MAXLEN, the rest: the entry's fields. Nil: a repeat, nothing written. A
# failed XADD deletes its guard and returns its error (pcall's is a string up to 7.0).
GUARDED_XADD = b"""\
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
local written, reply = pcall(redis.call, 'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  unpack(ARGV, 3))
if written then return reply end
redis.call('DEL', KEYS[1])
if type(reply) == 'table' then reply = reply.err end
return redis.error_reply(reply)
"""
GUARDED_XADD_SHA = hashlib.sha1(GUARDED_XADD).hexdigest().encode()


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes of `key`: the text inside its first `{...}` when that is
    not empty, else the whole key."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def guard_prefix(prefix: str, stream_key: str) -> str:
    """Guard keys of one stream are `<prefix>:dedupe:{<tag>}:<id>`: under the relay's
    prefix, in the stream's slot."""
    return f"{prefix}:dedupe:{{{hash_tag(stream_key)}}}:"


def parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


async def server_version(redis: aioredis.Redis | RedisCluster) -> tuple[int, ...]:
    info = await redis.info("server")
    if isinstance(info, dict) and "redis_version" not in info:  # a Cluster: per node
        info = next(iter(info.values()), {})
    return parse_version(str(info.get("redis_version", "0")))


async def resolve(setting: str, redis: aioredis.Redis | RedisCluster) -> GuardMode:
    """The mode `redis.write_guard` names; `auto` asks the server what it has."""
    if setting in ("idmp", "script", "off"):
        return setting  # type: ignore[return-value]
    try:
        version = await server_version(redis)
    except NoPermissionError:  # an ACL without INFO: the script works on every server
        return "script"
    return "idmp" if version >= IDMP_SINCE else "script"


async def describe(setting: str, redis: aioredis.Redis | RedisCluster) -> str:
    """What `relay check` says of the guard: the mode in use and why."""
    try:
        version = await server_version(redis)
    except NoPermissionError:
        version = ()
    shown = ".".join(map(str, version)) or "a version INFO does not show"
    if setting != "auto":
        return f"{setting} (redis.write_guard; Redis {shown})"
    if version >= IDMP_SINCE:
        return f"idmp (auto: Redis {shown} has XADD IDMP)"
    return f"script (auto: Redis {shown} has no XADD IDMP; a guard key per id)"
