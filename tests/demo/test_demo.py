"""`relay demo` as a user runs it: namespace, dev server, conversation, relay, tail."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pytest
import redis

from relay.config import RedisSettings
from relay.keys import room_key
from tests.fixtures.netns import require_netns
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.sockets import free_port

FOLLOW = "[demo] follow it from another shell: "


def run_demo(seconds: float, **settings: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`relay demo --seconds S` with these RELAY_* settings only; its output and the kinds
    of the events it printed, in order."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | settings
    done = subprocess.run(
        [sys.executable, "-m", "relay", "demo", "--seconds", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    kinds = [line.split()[3] for line in done.stdout.splitlines() if len(line.split()) > 3]
    return done, kinds


def follow_command(stderr: str) -> list[str]:
    """The `relay tail` command the demo printed, split into words."""
    [line] = [line for line in stderr.splitlines() if line.startswith(FOLLOW)]
    return shlex.split(line.removeprefix(FOLLOW))


def tail_kinds(command: list[str], env: dict[str, str], count: int) -> list[str]:
    """Run a printed `VAR=value ... relay tail ...` command (`relay`: this interpreter's)
    for `count` events; the kinds it printed."""
    assignments = [word for word in command if word.startswith("RELAY_")]
    argv = command[len(assignments) :]
    assert argv[0] == "relay"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    full = base | env | dict(word.split("=", 1) for word in assignments)
    done = subprocess.run(
        [sys.executable, "-m", "relay", *argv[1:], "--count", str(count)],
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [line.split()[3] for line in done.stdout.splitlines()]


@pytest.mark.e2e
def test_demo_shows_a_conversation_and_cleans_up(private_redis: RedisServer) -> None:
    # A Redis of this test's own: the demo's stream name is fixed, and a shared Redis
    # may see another checkout's demo test at the same time.
    redis_url = private_redis.url
    require_netns()
    before = set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )
    done, kinds = run_demo(8, RELAY_REDIS__URL=redis_url)
    assert "writing to the configured Redis" in done.stderr
    for kind in ("observer.joined", "session.started", "speech.started", "transcript.partial"):
        assert kind in kinds, done.stdout
    assert kinds[-1] == "observer.left"
    assert (
        "redis://127.0.0.1" in done.stderr and "stream relay-demo:room:{demo-room}" in done.stderr
    )

    # The command it printed to follow the stream works (the URL is the configured one).
    tail = follow_command(done.stderr)
    assert [word for word in tail if word.startswith("RELAY_")] == [
        "RELAY_REDIS__PREFIX=relay-demo"
    ]
    assert tail_kinds(tail, {"RELAY_REDIS__URL": redis_url}, len(kinds)) == kinds

    # What tail showed is what the relay wrote, in order.
    client = redis.Redis.from_url(redis_url)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
        room_key(RedisSettings(prefix="relay-demo"), "demo-room")
    )
    assert [fields[b"kind"].decode() for _, fields in entries] == kinds
    client.close()
    after = set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )
    assert not {name for name in after - before if name.startswith("relay-demo")}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("setting", "said"),
    [
        # The configured Redis does not answer: a private redis-server in the namespace.
        ("RELAY_REDIS__URL", "writing to a private redis-server"),
        # Sinks without redis: the relay's own stdout, printed readably.
        ("RELAY_SINKS", "stdout sink"),
    ],
)
def test_demo_falls_back_and_says_where_it_writes(setting: str, said: str) -> None:
    require_netns()
    env = {"RELAY_REDIS__URL": f"redis://:pw-s3cr3t@127.0.0.1:{free_port()}/0"}
    if setting == "RELAY_SINKS":
        env["RELAY_SINKS"] = '["stdout"]'
    done, kinds = run_demo(6, **env)
    assert said in done.stderr
    assert "pw-s3cr3t" not in done.stderr + done.stdout
    if setting == "RELAY_REDIS__URL":
        assert "configured Redis redis://:***@127.0.0.1:" in done.stderr
        [url] = [w for w in follow_command(done.stderr) if w.startswith("RELAY_REDIS__URL=")]
        assert url.startswith("RELAY_REDIS__URL=redis://10.213.")  # the private server
    else:
        assert FOLLOW not in done.stderr  # nothing to follow: the relay prints the events
    assert kinds[0] == "observer.joined", done.stdout
    for kind in ("session.started", "speech.started", "transcript.partial"):
        assert kind in kinds, done.stdout
    assert kinds[-1] == "observer.left"


@pytest.mark.e2e
def test_demo_stops_cleanly_on_a_signal(private_redis: RedisServer) -> None:
    """What Ctrl-C does: SIGINT stops the conversation, the relay (flushed), tail, the namespace."""
    require_netns()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_REDIS__URL"] = private_redis.url
    demo = subprocess.Popen(
        [sys.executable, "-m", "relay", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    for line in demo.stdout:  # wait until the conversation is under way
        if "speech.started" in line:
            break
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err[-2000:]
    assert "relay exited with status 0" in err
    assert "observer.left" in out
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"relay-demo-{demo.pid}-" not in names
