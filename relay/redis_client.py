"""The one place a Redis client is made: URL, timeouts, retry policy.

Replies stay bytes (`decode_responses=False`): stream entries are written and read as
bytes, and nothing pays for decoding what it does not look at.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from relay.config import RedisSettings

T = TypeVar("T")

# A pooled connection idle this long is checked with PING before use, so the first
# command after a Redis restart does not fail on a dead socket.
HEALTH_CHECK_INTERVAL_S = 30
# One immediate retry on a connection error (a pooled socket that died), no more: the
# pipeline owns retries, with backoff, metrics and logs, and a drain deadline.
CONNECTION_RETRIES = 1
MGET_BATCH = 1000  # keys a read of many_values()


def connection_options(settings: RedisSettings) -> dict[str, Any]:
    """What every connection of the relay uses, TLS files included (rediss://)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "decode_responses": False,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(NoBackoff(), CONNECTION_RETRIES),
    }
    if settings.tls:
        options["ssl_cert_reqs"] = "required"
        for option, path in (
            ("ssl_ca_certs", settings.tls_ca_file),
            ("ssl_certfile", settings.tls_cert_file),
            ("ssl_keyfile", settings.tls_key_file),
        ):
            if path is not None:
                options[option] = str(path)
    return options


def create_redis(settings: RedisSettings) -> aioredis.Redis:
    """A client for the configured Redis: one server, or the master Sentinel names (its
    pool asks the sentinels again after a failover)."""
    if settings.sentinels:
        return _sentinel_master(settings)
    if settings.cluster:
        return _cluster(settings)
    return aioredis.Redis.from_url(settings.url.get_secret_value(), **connection_options(settings))


def _cluster(settings: RedisSettings) -> aioredis.Redis:
    options = connection_options(settings)
    options.pop("retry")  # the cluster client retries on its own, with a topology refresh
    # The URL's node stays the start-up node (the one asked for the slot map first).
    client = RedisCluster.from_url(
        settings.url.get_secret_value(), dynamic_startup_nodes=False, **options
    )
    # Typed as the plain client: RedisCluster has the commands the relay sends (PING,
    # XADD, XRANGE, XREAD, XREADGROUP, ...); the sink's own writes check which it got.
    return cast(aioredis.Redis, client)


def _sentinel_master(settings: RedisSettings) -> aioredis.Redis:
    from_url = parse_url(settings.url.get_secret_value())
    options = connection_options(settings)
    for key in ("username", "password", "db"):
        if from_url.get(key) is not None:
            options[key] = from_url[key]
    if settings.tls:
        options["ssl"] = True
    addresses = [sentinel.rpartition(":") for sentinel in settings.sentinels]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(host, int(port)) for host, _, port in addresses],
        sentinel_kwargs={
            "socket_timeout": settings.socket_timeout_s,
            "socket_connect_timeout": settings.socket_timeout_s,
        },
    )
    master = sentinel.master_for(settings.sentinel_service, redis_class=_SentinelMaster, **options)
    return cast(aioredis.Redis, master)


class _SentinelMaster(aioredis.Redis):
    """The master's client; closing it closes the connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


def describe_redis_error(exc: BaseException, *, tls: bool = False) -> str:
    """One line for an operator; a TLS failure says so, and which setting to look at
    (redis-py words it as a plain connection error)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {_tls_reason(cause)}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    if "CERTIFICATE" in text.upper() or "SSL" in text:
        return f"TLS handshake failed: {text}"
    closed = "reset by peer" in text or "Connection lost" in text
    if closed and tls:  # TLS 1.3: a refused client certificate shows late
        return (
            f"TLS connection closed by the server ({text}); if it wants a client "
            "certificate, set RELAY_REDIS__TLS_CERT_FILE and RELAY_REDIS__TLS_KEY_FILE"
        )
    if closed:  # what a TLS port answers a plain-text client
        return f"{type(exc).__name__}: {text} (if the server expects TLS, use rediss://)"
    return f"{type(exc).__name__}: {text}"


def _tls_reason(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        return f"{reason}; set RELAY_REDIS__TLS_CA_FILE to the CA that signed the server's"
    reason = error.reason or str(error)
    if "CERTIFICATE_REQUIRED" in reason:
        return (
            f"{reason}: the server wants a client certificate; set "
            "RELAY_REDIS__TLS_CERT_FILE and RELAY_REDIS__TLS_KEY_FILE"
        )
    return f"{reason}; check the TLS settings RELAY_REDIS__TLS_* and the server's"


def no_answer_hint(settings: RedisSettings) -> str:
    """What a TLS client waiting on a plain-text port sees is silence: say so."""
    return " (rediss://: does the server speak TLS on this port?)" if settings.tls else ""


async def ping(redis: aioredis.Redis) -> bool:
    """PING. (redis-py types `ping()` for the sync and async clients at once; this awaits it
    with the async type.)"""
    return bool(await cast(Awaitable[bool], redis.ping()))


async def awaited(reply: Awaitable[T] | T) -> T:
    """redis-py types its commands for the sync and async clients at once: await the async
    one's reply with its own type."""
    return await cast(Awaitable[T], reply)


async def many_values(redis: aioredis.Redis, names: Sequence[str]) -> list[bytes | None]:
    """The value of each key: one MGET per MGET_BATCH keys (on a Cluster, one per slot of
    the batch: the keys of different rooms live in different slots, and a plain MGET
    across slots is refused)."""
    values: list[bytes | None] = []
    for first in range(0, len(names), MGET_BATCH):
        batch = names[first : first + MGET_BATCH]
        if isinstance(redis, RedisCluster):
            values.extend(await redis.mget_nonatomic(batch))
        else:
            values.extend(await redis.mget(batch))
    return values
