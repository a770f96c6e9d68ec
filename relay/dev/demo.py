"""`relay demo`: everything on one machine, events shown live.

1. a network namespace with a veth link (WebRTC cannot use loopback);
2. the dev server inside it, and simulated LiveAvatar sessions (real SDK clients: the
   user's browser, the LiveAvatar agent, the avatar) talking in turns inside it;
3. Redis: the configured one if it answers, else a private `redis-server` in the
   namespace, else the stdout sink (it says which);
4. the relay in this namespace, joining the room over the veth link as a hidden
   observer, and `relay tail` following what it writes.

Ctrl-C (or `--seconds`) stops the conversation, then the relay (SIGTERM: it flushes),
then the rest, by PID, and deletes the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import redis

from relay.checks import redact_url
from relay.config import RedisSettings, Settings
from relay.dev.launch import redis_answers, start_devserver, start_redis
from relay.dev.netns import NetNS, NetNSUnavailable, netns_context, unavailable_reason
from relay.dev.ports import free_port
from relay.dev.processes import ManagedProcess
from relay.dev.tokens import DEV_API_KEY, DEV_API_SECRET
from relay.keys import room_key
from relay.tail import format_line

DEMO_ROOM = "demo-room"
DEMO_PREFIX = "relay-demo"  # keeps demo events apart from real ones in a shared Redis
PACE_S = 0.25
STOP_TIMEOUT_S = 30.0


def run_demo(settings: Settings, *, seconds: float = 0, config: Path | None = None) -> int:
    """Run the demo; `config` is the --config file the settings came from, if any."""
    _stop_on_signals()
    reason = unavailable_reason()
    if reason is not None:
        print(f"relay demo: cannot create the network namespace: {reason}", file=sys.stderr)
        return 2
    try:
        with netns_context("relay-demo") as ns:
            return _run_in(ns, settings, seconds, config)
    except NetNSUnavailable as exc:
        print(f"relay demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a signal during set-up: the namespace is gone already
        say("stopped during set-up")
        return 130


def _stop_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM start the ordered stop; later ones cannot cut it short.

    Set explicitly: a shell starting the demo in the background leaves SIGINT ignored."""

    def interrupt(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _run_in(ns: NetNS, settings: Settings, seconds: float, config: Path | None) -> int:
    """Start the parts, wait, stop them in order. Processes outside the namespace (the
    relay, tail) are stopped here whatever happens; the namespace's own go with it."""
    devserver = start_devserver(ns, extra_args=["--log-level", "warning"])  # the events speak
    say(f"dev server (LiveKit protocol, testing only) at {devserver.ws_url} in namespace {ns.name}")
    redis_url = _choose_redis(ns, settings)
    env = _relay_env(settings, devserver.ws_url, redis_url)
    if redis_url is not None:
        _clear_demo_room(redis_url)
        say(f"follow it from another shell: {tail_command(settings, redis_url, config)}")
    relay = tail = None
    status = 1
    try:
        relay = _spawn_host([sys.executable, "-m", "relay", "run"], env, stdout=subprocess.PIPE)
        if redis_url is not None:
            argv = [sys.executable, "-m", "relay", "tail", "--room", DEMO_ROOM, "--from-start"]
            tail = _spawn_host(argv, env, stdout=None)
        else:
            _print_stdout_sink(relay)
        say(f"relay observing room {DEMO_ROOM!r}; a simulated LiveAvatar session starts now")
        conversation = _start_conversation(ns, devserver.ws_url, seconds)
        try:
            _wait(seconds, relay)
        finally:
            conversation.stop()
    except KeyboardInterrupt:
        say("stopping (signal)")
    finally:
        if relay is not None:
            status = _stop(relay)
        if tail is not None:
            time.sleep(1.0)  # let tail print the last events (observer.left)
            _stop(tail)
    say(f"relay exited with status {status}")
    return 0 if status == 0 else 1


def _start_conversation(ns: NetNS, livekit_url: str, seconds: float) -> ManagedProcess:
    argv = [
        *(sys.executable, "-m", "relay.dev.scenarios", "liveavatar", "--url", livekit_url),
        *("--api-key", DEV_API_KEY, "--api-secret", DEV_API_SECRET, "--room", DEMO_ROOM),
        *("--pace-s", str(PACE_S), "--repeat", "1000"),
    ]
    return ns.spawn(
        argv,
        name="conversation",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout_s=seconds + 60 if seconds else 24 * 3600,
    )


def _choose_redis(ns: NetNS, settings: Settings) -> str | None:
    """The configured Redis, else a private one, else None (the stdout sink)."""
    if "redis" not in settings.sinks:
        say("sinks without redis: the relay prints its events (stdout sink)")
        return None
    configured = settings.redis.url.get_secret_value()
    stream = room_key(RedisSettings(prefix=DEMO_PREFIX), DEMO_ROOM)
    if redis_answers(configured, timeout_s=1.0):
        say(f"writing to the configured Redis {redact_url(configured)}, stream {stream}")
        return configured
    try:
        private = start_redis(ns)
    except (NetNSUnavailable, RuntimeError) as exc:
        say(f"no Redis ({exc}): using the stdout sink")
        return None
    say(
        f"configured Redis {redact_url(configured)} not reachable: writing to a private "
        f"redis-server at {private.url}, stream {stream}"
    )
    return private.url


def tail_command(settings: Settings, redis_url: str, config: Path | None) -> str:
    """The `relay tail` command that follows the demo room from another shell: the
    demo's prefix, and the URL when it is not the configured one (a private server)."""
    words = [f"RELAY_REDIS__PREFIX={DEMO_PREFIX}"]
    if redis_url != settings.redis.url.get_secret_value():
        words.append(f"RELAY_REDIS__URL={redis_url}")
    words.append("relay")
    if config is not None:
        words += ["--config", str(config)]
    return shlex.join([*words, "tail", "--room", DEMO_ROOM, "--from-start"])


def _clear_demo_room(url: str) -> None:
    """Start the demo room's stream afresh, so `tail --from-start` shows this run only."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.delete(room_key(RedisSettings(prefix=DEMO_PREFIX), DEMO_ROOM))
    finally:
        client.close()


def _relay_env(settings: Settings, livekit_url: str, redis_url: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    env.update(
        RELAY_LIVEKIT__URL=livekit_url,
        RELAY_LIVEKIT__API_KEY=DEV_API_KEY,
        RELAY_LIVEKIT__API_SECRET=DEV_API_SECRET,
        RELAY_ROOMS=json.dumps([DEMO_ROOM]),
        RELAY_SINKS=json.dumps(["redis"] if redis_url else ["stdout"]),
        RELAY_REDIS__PREFIX=DEMO_PREFIX,
        RELAY_HTTP__HOST="127.0.0.1",
        RELAY_HTTP__PORT=str(free_port("127.0.0.1")),
        RELAY_LOG__LEVEL="error",  # the demo shows events; warnings would interleave
        RELAY_LOG__FORMAT="console",
    )
    if redis_url is not None:
        env["RELAY_REDIS__URL"] = redis_url
    return env


def _spawn_host(argv: list[str], env: dict[str, str], stdout: int | None) -> subprocess.Popen[str]:
    # Own session: Ctrl-C reaches the demo only, which stops the others in order.
    return subprocess.Popen(argv, env=env, stdout=stdout, text=True, start_new_session=True)


def _print_stdout_sink(relay: subprocess.Popen[str]) -> None:
    """With the stdout sink, print the relay's JSON lines readably."""
    stream: IO[str] | None = relay.stdout

    def pump() -> None:
        for line in stream or ():
            with contextlib.suppress(ValueError):
                print(format_line(json.loads(line)), flush=True)

    threading.Thread(target=pump, daemon=True).start()


def _wait(seconds: float, relay: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    while relay.poll() is None and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.2)
    if relay.poll() is not None:
        say(f"the relay stopped on its own (status {relay.returncode})")


def _stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)
