"""`relay tail` as a process: what it follows and where, --prefix, a Redis that is down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from relay import keys
from relay.config import RedisSettings
from relay.redis_client import create_redis
from tests.consumer.support import event, write
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.sockets import free_port

WAIT_S = 20


def tail_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    env.update(values)
    return env


def start_tail(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "relay", "tail", *args]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def first_stderr_line(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    return process.stderr.readline().rstrip("\n")


async def test_it_says_what_it_follows_and_prints_what_arrives(
    redis_settings: RedisSettings,
) -> None:
    url = redis_settings.url.get_secret_value()
    # --prefix wins over RELAY_REDIS__PREFIX.
    env = tail_env(RELAY_REDIS__URL=url, RELAY_REDIS__PREFIX="elsewhere")
    tail = start_tail(env, "--prefix", redis_settings.prefix, "--count", "2")
    try:
        line = first_stderr_line(tail)
        key = keys.events_key(redis_settings)
        assert line == (
            f"relay tail: following {key} on {url} (nothing there yet; another prefix? "
            "--prefix), waiting for events (Ctrl-C to stop)"
        )
        redis = create_redis(redis_settings)
        try:
            await write(redis, redis_settings, [event("r1", 1), event("r1", 2)])
        finally:
            await redis.aclose()
        out, err = tail.communicate(timeout=WAIT_S)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert [line.split()[1:4] for line in lines] == [
        ["r1", "#1", "transcript.final"],
        ["r1", "#2", "transcript.final"],
    ]


async def test_a_room_that_has_events_is_followed_from_the_start(
    redis_settings: RedisSettings,
) -> None:
    redis = create_redis(redis_settings)
    try:
        await write(redis, redis_settings, [event("demo-room", 1)])
        await redis.xadd(keys.room_key(redis_settings, "demo-room"), {"event": "{broken"})
    finally:
        await redis.aclose()
    url = redis_settings.url.get_secret_value()
    args = ("--prefix", redis_settings.prefix, "--room", "demo-room", "--from-start")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "relay", "tail", *args, "--count", "2"],
        env=tail_env(RELAY_REDIS__URL=url),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    key = f"{redis_settings.prefix}:room:{{demo-room}}"
    assert done.stderr == (
        f"relay tail: following {key} on {url}, waiting for events (Ctrl-C to stop)\n"
    )
    first, second = done.stdout.splitlines()
    assert " demo-room #1 transcript.final " in first
    assert second.startswith("(entry ") and second.endswith(": event is not JSON)")


def test_redis_down_is_one_line_naming_the_masked_url_and_exit_1() -> None:
    port = free_port()  # nothing listens there
    env = tail_env(RELAY_REDIS__URL=f"redis://:s3cr3t-pass@127.0.0.1:{port}/0")
    done = subprocess.run(
        [sys.executable, "-m", "relay", "tail"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"relay tail: cannot reach Redis at redis://:***@127.0.0.1:{port}/0: "
    )
    assert "s3cr3t" not in done.stderr


def test_redis_lost_while_following_is_one_line_and_exit_1(private_redis: RedisServer) -> None:
    tail = start_tail(tail_env(RELAY_REDIS__URL=private_redis.url, RELAY_REDIS__PREFIX="t"))
    try:
        following = f"relay tail: following t:events on {private_redis.url} "
        assert first_stderr_line(tail).startswith(following)
        private_redis.stop(save=False)
        out, err = tail.communicate(timeout=WAIT_S)
    finally:
        tail.kill()
    assert tail.returncode == 1
    assert out == ""
    assert err.splitlines() == [err.strip()]
    assert err.startswith(f"relay tail: lost Redis at {private_redis.url}: ")
