"""The one place a Redis client is made: URL, timeouts, retry policy.

Replies stay bytes (`decode_responses=False`): stream entries are written and read as
bytes, and nothing pays for decoding what it does not look at.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from relay.config import RedisSettings

# A pooled connection idle this long is checked with PING before use, so the first
# command after a Redis restart does not fail on a dead socket.
HEALTH_CHECK_INTERVAL_S = 30
# One immediate retry on a connection error (a pooled socket that died), no more: the
# pipeline owns retries, with backoff, metrics and logs, and a drain deadline.
CONNECTION_RETRIES = 1


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
    return aioredis.Redis.from_url(settings.url.get_secret_value(), **connection_options(settings))


def describe_redis_error(exc: BaseException) -> str:
    """One line for an operator; a TLS failure says so (redis-py words it as a plain
    connection error)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            reason = getattr(cause, "reason", None) or str(cause)
            hint = "check RELAY_REDIS__TLS_CA_FILE and the server's certificate"
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason = cause.verify_message or reason
            return f"TLS handshake failed: {reason}; {hint}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    if "SSL" in text or "certificate" in text or "TLS" in text:
        return f"TLS handshake failed: {text}"
    return f"{type(exc).__name__}: {text}"


async def ping(redis: aioredis.Redis) -> bool:
    """PING. (redis-py types `ping()` for the sync and async clients at once; this awaits it
    with the async type.)"""
    return bool(await cast(Awaitable[bool], redis.ping()))
