"""The deployment as `GET /v1/rooms` shows it with discovery on, read from Redis.

Any process (pod, or worker of `relay run --workers N`) answers the same: every room of
the shared wanted set with its source, lease holder and epoch, the workers with the
leases each holds, and, for the rooms this process observes, their local state. The
answer names the process that gave it (`answered_by`).

Each worker also announces who it is (`{prefix}:worker:<id>`: pod, pid; refreshed every
lease TTL, expiring after three), so a holder's worker id can be matched to its pod.

Reads go in batches (relay/redis_client.py many_values: MGETs of MGET_BATCH keys) and are
not atomic: a lease may move between two reads. One listing reads the wanted hash, the
lease of every wanted room (the holder counts cover the whole set), the epoch of each room
of the page and each worker's announcement: with 10,000 rooms, 10 MGETs of leases, one of
epochs (bench/rooms_view.py).
Never read: the token keys (a url+token room says `token_given: true`, nothing more); a
url is shown without userinfo or query.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisClusterException, RedisError

from relay import keys
from relay.config import RedisSettings
from relay.discovery.wanted import WantedSet
from relay.redis_client import many_values
from relay.rooms import DeploymentUnavailableError

log = structlog.get_logger(__name__)

# What this process's own observation adds to a wanted room it observes.
LOCAL_FIELDS = ("state", "last_error", "failing_for_s")


def identity(worker_id: str) -> dict[str, Any]:
    """Who answers: the pod (Kubernetes sets HOSTNAME to the pod's name), worker, pid."""
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    return {"pod": pod, "worker_id": worker_id, "pid": os.getpid()}


class DeploymentView:
    def __init__(
        self, redis: aioredis.Redis, settings: RedisSettings, wanted: WantedSet, worker_id: str
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._wanted = wanted
        self.identity = identity(worker_id)

    async def describe(
        self, local: Sequence[Mapping[str, Any]], *, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """The page of `limit` wanted rooms after `cursor` (a room name; rooms in name
        order) and the deployment's summary. `local`: `RoomManager.describe()`."""
        try:
            return await self._describe({r["room"]: r for r in local}, limit, cursor)
        except (RedisError, RedisClusterException) as exc:  # the latter: no node answers
            log.warning("deployment_read_failed", error=repr(exc))
            raise DeploymentUnavailableError(
                f"cannot read the shared rooms from Redis: {exc!r}", self.identity
            ) from exc

    async def _describe(
        self, local: Mapping[str, Mapping[str, Any]], limit: int, cursor: str | None
    ) -> dict[str, Any]:
        entries = await self._wanted.entries()
        names = sorted(entries)
        holders = await many_values(self._redis, [keys.lease_key(self._settings, r) for r in names])
        held = dict(zip(names, holders, strict=True))
        start = 0 if cursor is None else bisect.bisect_right(names, cursor)
        page = names[start : start + limit]
        epochs = await many_values(self._redis, [keys.epoch_key(self._settings, r) for r in page])
        rooms = [
            _room(room, entries[room], held[room], epoch, local.get(room))
            for room, epoch in zip(page, epochs, strict=True)
        ]
        more = start + limit < len(names)
        owned = sum(1 for holder in holders if holder is not None)
        return {
            "mode": "shared",
            "answered_by": self.identity,
            "summary": {
                "wanted": len(names),
                "owned": owned,
                "unowned": len(names) - owned,
                "observed_here": sum(1 for room in local if room in entries),
                # Left by this process, or released from the set while it leaves them.
                "observed_not_wanted": sorted(room for room in local if room not in entries),
                "workers": await self._workers(Counter(h for h in holders if h is not None)),
            },
            "rooms": rooms,
            "next_cursor": page[-1] if more and page else None,
        }

    async def _workers(self, leases: Counter[bytes]) -> list[dict[str, Any]]:
        """Every worker registered or holding a lease; `live`: registered, not expired
        (a worker that died keeps its leases until they expire)."""
        registered = await self._redis.zrange(
            keys.workers_key(self._settings), 0, -1, withscores=True
        )
        now_ms = time.time() * 1000
        live = {member: score > now_ms for member, score in registered}
        ids = sorted(set(live) | set(leases))
        infos = await many_values(
            self._redis, [keys.worker_key(self._settings, i.decode()) for i in ids]
        )
        out = []
        for worker, info in zip(ids, infos, strict=True):
            shown: dict[str, Any] = {"worker_id": worker.decode(), "live": live.get(worker, False)}
            shown["leases"] = leases.get(worker, 0)
            shown |= _announced(info)
            out.append(shown)
        return out


def _room(
    room: str,
    entry: Mapping[str, object],
    holder: bytes | None,
    epoch: bytes | None,
    local: Mapping[str, Any] | None,
) -> dict[str, Any]:
    url = entry.get("url")
    shown: dict[str, Any] = {
        "room": room,
        "source": entry.get("source"),
        "since": entry.get("since"),
        "url": _shown_url(url) if isinstance(url, str) else None,
        "token_given": bool(entry.get("token")),
        "holder": holder.decode() if holder is not None else None,
        "epoch": int(epoch) if epoch is not None else None,
        "observed_here": local is not None,
    }
    if local is not None:
        shown |= {name: local.get(name) for name in LOCAL_FIELDS}
    return shown


def _shown_url(url: str) -> str:
    """scheme://host[:port]/path: never a password or a query (it could carry a token)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "(unparsable)"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _announced(info: bytes | None) -> dict[str, Any]:
    if info is None:
        return {"pod": None, "pid": None}
    try:
        parsed = orjson.loads(info)
    except orjson.JSONDecodeError:
        parsed = {}
    parsed = parsed if isinstance(parsed, dict) else {}
    return {"pod": parsed.get("pod"), "pid": parsed.get("pid")}


async def announce(
    redis: aioredis.Redis,
    settings: RedisSettings,
    who: Mapping[str, Any],
    every_s: float,
    until: asyncio.Event,
) -> None:
    """Write `{prefix}:worker:<id>` (pod, pid) now and every `every_s` until `until`
    (expiring after three rounds); a Redis error is logged, the next round tries again."""
    key = keys.worker_key(settings, str(who["worker_id"]))
    value = orjson.dumps({"pod": who["pod"], "pid": who["pid"]})
    while True:  # once at least, then every `every_s`
        try:
            await redis.set(key, value, px=int(every_s * 3 * 1000))
        except RedisError as exc:
            log.warning("worker_announce_failed", error=repr(exc))
        try:
            async with asyncio.timeout(every_s):
                await until.wait()
            return
        except TimeoutError:
            pass
