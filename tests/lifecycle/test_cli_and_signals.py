"""The `relay` command as a process: real signals, real Redis, exit codes, secrets.

The full SIGTERM drain with events flowing through real WebRTC is in tests/e2e; these
cover what needs no namespace: the signal path, the forced exit, `check` and `token`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from livekit import api

from tests.fixtures.sockets import free_port

SECRET = "s3cr3t-livekit-api-secret-0123456789"
ADMIN = "s3cr3t-admin-token"


def relay_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    env.update(
        RELAY_LOG__FORMAT="json",
        RELAY_HTTP__HOST="127.0.0.1",
        RELAY_HTTP__PORT=str(free_port()),
        RELAY_LIVEKIT__API_KEY="devkey",
        RELAY_LIVEKIT__API_SECRET=SECRET,
        RELAY_HTTP__ADMIN_TOKEN=ADMIN,
    )
    env.update(overrides)
    return env


def start_relay(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def log_lines(stderr: str) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def wait_for_log(process: subprocess.Popen[str], event: str, timeout_s: float = 20) -> None:
    """Read stderr lines until one has `"event": <event>` (the rest stays unread)."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if f'"event": "{event}"' in line:
            return
    raise AssertionError(f"no {event} log line from the relay")


def test_sigterm_with_nothing_buffered_exits_0_and_says_so(
    redis_url: str, redis_prefix: str
) -> None:
    env = relay_env(RELAY_REDIS__URL=redis_url, RELAY_REDIS__PREFIX=redis_prefix)
    relay = start_relay(env)
    wait_for_log(relay, "relay_started")
    relay.send_signal(signal.SIGTERM)
    _, stderr = relay.communicate(timeout=30)
    assert relay.returncode == 0
    stopped = [line for line in log_lines(stderr) if line.get("event") == "relay_stopped"]
    assert stopped == [stopped[0]] and stopped[0]["unwritten"] == 0


def get(port: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_readyz_fails_while_redis_is_unreachable_and_healthz_does_not() -> None:
    env = relay_env(RELAY_REDIS__URL=f"redis://127.0.0.1:{free_port()}/0")
    relay = start_relay(env)
    try:
        wait_for_log(relay, "relay_started")
        port = env["RELAY_HTTP__PORT"]
        assert get(port, "/healthz") == (200, {"status": "ok"})
        status, body = get(port, "/readyz")
        assert status == 503
        assert body["checks"] == {"rooms": True, "redis": False, "admin_rooms": True}
        assert (body["ready"], body["rooms"]) == (False, [])
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.communicate(timeout=30)
    assert relay.returncode == 0  # nothing was accepted, so nothing is owed to Redis


def test_second_signal_forces_exit_while_a_connect_is_in_flight(
    redis_url: str, redis_prefix: str, silent_livekit: str
) -> None:
    env = relay_env(
        RELAY_REDIS__URL=redis_url,
        RELAY_REDIS__PREFIX=redis_prefix,
        RELAY_LIVEKIT__URL=silent_livekit,
        RELAY_LIVEKIT__CONNECT_TIMEOUT_S="30",
        RELAY_SHUTDOWN_GRACE_S="60",
    )
    relay = start_relay(env, "--room", "stuck-room")
    wait_for_log(relay, "relay_started")
    time.sleep(0.5)  # the connect is under way and hangs
    relay.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    # The connect is never cancelled, so the first signal's shutdown waits for it...
    assert relay.poll() is None
    relay.send_signal(signal.SIGTERM)
    # ...and the second signal ends the process at once.
    _, stderr = relay.communicate(timeout=10)
    assert relay.returncode == 1
    assert any(line.get("event") == "shutdown_forced" for line in log_lines(stderr))


def test_check_reaches_redis_and_masks_secrets(redis_url: str) -> None:
    env = relay_env(RELAY_REDIS__URL=redis_url, RELAY_LIVEKIT__URL="ws://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "relay", "check"], env=env, capture_output=True, text=True
    )
    # Redis answers; the LiveKit API (nothing on port 9) does not: exit 1, both reported.
    assert done.returncode == 1
    assert "FAIL livekit" in done.stdout
    assert "FAIL redis" not in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert ADMIN not in done.stdout + done.stderr
    summary = json.loads(done.stdout[: done.stdout.index("\nFAIL")])
    assert summary["livekit"]["api_secret"] == "**********"


def test_check_gives_up_on_a_livekit_that_never_answers(
    redis_url: str, silent_livekit: str
) -> None:
    env = relay_env(RELAY_REDIS__URL=redis_url, RELAY_LIVEKIT__URL=silent_livekit)
    done = subprocess.run(  # a hung check would raise TimeoutExpired here
        [sys.executable, "-m", "relay", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "FAIL livekit: no answer within 5 s" in done.stdout


def test_check_fails_when_redis_is_unreachable() -> None:
    env = relay_env(RELAY_REDIS__URL=f"redis://:pw-s3cr3t@127.0.0.1:{free_port()}/0")
    env["RELAY_LIVEKIT__API_KEY"] = ""
    done = subprocess.run(
        [sys.executable, "-m", "relay", "check"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "FAIL redis" in done.stdout
    assert "pw-s3cr3t" not in done.stdout + done.stderr


def test_config_error_exits_2_naming_the_variable() -> None:
    env = relay_env(RELAY_PIPELINE__BUFFER_MAX_EVENTS="lots")
    done = subprocess.run(
        [sys.executable, "-m", "relay", "run"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "RELAY_PIPELINE__BUFFER_MAX_EVENTS" in done.stderr


def test_token_command_mints_a_hidden_receive_only_token() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "token", "--room", "r1", "--identity", "obs-1"],
        env=relay_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    claims = api.TokenVerifier("devkey", SECRET).verify(done.stdout.strip())
    assert claims.identity == "obs-1"
    assert claims.video is not None
    assert (claims.video.room, claims.video.hidden, claims.video.can_publish) == ("r1", True, False)
