"""Redis over TLS: a real redis-server with a certificate of a CA the test made, client
certificates required. The sink writes through it; `relay check` names what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from relay.config import RedisSettings
from relay.dev.launch import redis_client
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink
from tests.fixtures.redis_server import TlsRedisServer
from tests.fixtures.tls import make_certs
from tests.lifecycle.test_cli_and_signals import relay_env
from tests.sinks.test_redis_streams import stamped


def tls_settings(server: TlsRedisServer) -> RedisSettings:
    c = server.certs
    return RedisSettings(
        url=SecretStr(server.tls_url),
        prefix="tls",
        tls_ca_file=c.ca,
        tls_cert_file=c.client_cert,
        tls_key_file=c.client_key,
    )


async def test_the_sink_writes_over_tls(tls_redis: TlsRedisServer) -> None:
    settings = tls_settings(tls_redis)
    sink = RedisStreamsSink(create_redis(settings), settings)
    events = [stamped("room-a", n) for n in range(50)]
    try:
        assert await sink.write(events) == []
        assert await sink.ping()
    finally:
        await sink.aclose()
    with redis_client(tls_redis.url) as plain:  # read back on the plain port
        ids = [fields[b"id"] for _, fields in plain.xrange("tls:events")]
    assert ids == [event.id.encode() for event in events]


def check_redis(env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    [redis] = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "redis"]
    return done.returncode, redis["status"], redis["detail"]


def env_for(url: str, **files: Path | None) -> dict[str, str]:
    env = relay_env(RELAY_REDIS__URL=url)
    for key, path in files.items():
        if path is not None:
            env[f"RELAY_REDIS__{key.upper()}"] = str(path)
    return env


def test_check_passes_with_the_ca_and_client_certificate(tls_redis: TlsRedisServer) -> None:
    c = tls_redis.certs
    env = env_for(
        tls_redis.tls_url, tls_ca_file=c.ca, tls_cert_file=c.client_cert, tls_key_file=c.client_key
    )
    _, status, detail = check_redis(env)
    assert (status, detail) == (
        "OK",
        f"PING answered at {tls_redis.tls_url}; write guard: script (auto: Redis 7.0.15 has "
        "no XADD IDMP; a guard key per id)",
    )


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("another CA", ["TLS handshake failed", "RELAY_REDIS__TLS_CA_FILE"]),
        ("no client certificate", ["TLS", "client certificate", "RELAY_REDIS__TLS_CERT_FILE"]),
        ("rediss to the plain port", ["no answer within 5 s", "does the server speak TLS"]),
        ("redis to the TLS port", ["use rediss://"]),
    ],
)
def test_check_says_what_is_wrong_with_tls(
    tls_redis: TlsRedisServer, tmp_path: Path, case: str, words: list[str]
) -> None:
    c = tls_redis.certs
    client = {"tls_cert_file": c.client_cert, "tls_key_file": c.client_key}
    env = {
        "another CA": env_for(
            tls_redis.tls_url, tls_ca_file=make_certs(tmp_path / "o", "other").ca, **client
        ),
        "no client certificate": env_for(tls_redis.tls_url, tls_ca_file=c.ca),
        "rediss to the plain port": env_for(
            tls_redis.url.replace("redis://", "rediss://"), tls_ca_file=c.ca
        ),
        "redis to the TLS port": env_for(tls_redis.tls_url.replace("rediss://", "redis://")),
    }[case]
    status, result, detail = check_redis(env)
    assert (status, result) == (1, "FAIL")
    for word in words:
        assert word in detail
