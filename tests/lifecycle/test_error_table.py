"""Every start-up and command-line error: one line on stderr naming what to fix, and
the documented exit status (2 configuration, 1 run time), through the real `relay`
process. No traceback unless --debug.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.sockets import free_port
from tests.lifecycle.test_cli_and_signals import relay_env

REPO = Path(__file__).resolve().parents[2]
EXIT_RUNTIME, EXIT_CONFIG = 1, 2
NO_CREDENTIALS = {"RELAY_LIVEKIT__API_KEY": "", "RELAY_LIVEKIT__API_SECRET": ""}


def relay(
    args: list[str], env: dict[str, str], cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command: exactly one line, no traceback."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("relay"), lines[0]
    return lines[0]


# (case, environment, words expected in the line); each runs through `check` and `run`.
CONFIG_CASES = [
    ("sinks not JSON", {"RELAY_SINKS": "stdout"}, ["RELAY_SINKS", "not valid JSON", '["stdout"]']),
    ("redis url", {"RELAY_REDIS__URL": "notaurl"}, ["RELAY_REDIS__URL", "redis://host:6379"]),
    ("section livekit", {"RELAY_LIVEKIT__URL": "localhost"}, ["RELAY_LIVEKIT__URL", "ws://"]),
    (
        "section livekit (number)",
        {"RELAY_LIVEKIT__CONNECT_TIMEOUT_S": "soon"},
        ["RELAY_LIVEKIT__CONNECT_TIMEOUT_S", "number"],
    ),
    (
        "section redis",
        {"RELAY_REDIS__ROOM_MAXLEN": "0"},
        ["RELAY_REDIS__ROOM_MAXLEN", "greater than 0"],
    ),
    (
        "redis TLS file missing",
        {"RELAY_REDIS__URL": "rediss://127.0.0.1:6379", "RELAY_REDIS__TLS_CA_FILE": "/nope.pem"},
        ["RELAY_REDIS__TLS_CA_FILE", "/nope.pem", "no such file"],
    ),
    (
        "redis TLS file without rediss",
        {"RELAY_REDIS__TLS_CA_FILE": str(REPO / "pyproject.toml")},
        ["RELAY_REDIS__TLS_CA_FILE", "rediss://"],
    ),
    (
        "section pipeline",
        {"RELAY_PIPELINE__BATCH_MAX_EVENTS": "-1"},
        ["RELAY_PIPELINE__BATCH_MAX_EVENTS"],
    ),
    ("section http", {"RELAY_HTTP__PORT": "70000"}, ["RELAY_HTTP__PORT", "65535"]),
    ("section log", {"RELAY_LOG__LEVEL": "loud"}, ["RELAY_LOG__LEVEL", "'debug'"]),
    ("top level", {"RELAY_MAX_ROOMS": "0"}, ["RELAY_MAX_ROOMS", "greater than 0"]),
    (
        "identity placeholder",
        {"RELAY_LIVEKIT__OBSERVER_IDENTITY": "relay-{pod}-{n}"},
        ["RELAY_LIVEKIT__OBSERVER_IDENTITY", "unknown placeholder {pod}", "{worker}"],
    ),
    ("section not JSON", {"RELAY_REDIS": "{"}, ["RELAY_REDIS ", "not valid JSON"]),
    (
        "two problems, one line",
        {"RELAY_MAX_ROOMS": "0", "RELAY_HTTP__PORT": "-1"},
        ["RELAY_MAX_ROOMS", "RELAY_HTTP__PORT"],
    ),
]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(("case", "env", "words"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_configuration_error_is_one_line_and_exit_2(
    command: str, case: str, env: dict[str, str], words: list[str]
) -> None:
    done = relay([command], relay_env(**env))
    line = one_line(done)
    assert done.returncode == EXIT_CONFIG
    for word in words:
        assert word in line


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[redis]\nurl = redis://x\n")
    for args in (["--config", str(config), "check"], ["run", "--config", str(config)]):
        done = relay(args, relay_env())
        line = one_line(done)
        assert done.returncode == EXIT_CONFIG
        assert f"config file {config}: not valid TOML" in line
        assert "line 2" in line


def test_an_unknown_toml_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[redis]\nprefx = 'x'\n")
    done = relay(["check", "--config", str(config)], relay_env())
    assert done.returncode == EXIT_CONFIG
    assert "redis.prefx" in one_line(done)


def test_config_after_the_subcommand_is_accepted() -> None:
    done = relay(["check", "--config", "x"], relay_env())
    assert done.returncode == EXIT_CONFIG
    assert one_line(done) == "relay: config file x: not found (give the path of a TOML file)"
    # ... and a file given there is used (stdout sink: the Redis check is skipped).
    done = relay(["check", "--config", "config/examples/stdout.toml"], relay_env())
    assert "SKIPPED redis: no sink writes to Redis" in done.stdout


def test_static_rooms_example_with_only_the_key_names_the_secret() -> None:
    env = relay_env(RELAY_LIVEKIT__API_SECRET="")
    del env["RELAY_LIVEKIT__API_KEY"]  # the example sets it
    done = relay(["--config", "config/examples/static-rooms.toml", "check"], env)
    line = one_line(done)
    assert done.returncode == EXIT_CONFIG
    assert "RELAY_LIVEKIT__API_SECRET (toml: livekit.api_secret): not set" in line
    assert "RELAY_LIVEKIT__API_KEY" not in line


def test_run_room_without_credentials_blames_the_option() -> None:
    done = relay(["run", "--room", "x"], relay_env(**NO_CREDENTIALS))
    line = one_line(done)
    assert done.returncode == EXIT_CONFIG
    assert "required to observe --room" in line
    assert "RELAY_ROOMS" not in line


@pytest.mark.parametrize("args", [["check", "--bogus"], ["run", "--sink", "kafka"], ["nope"]])
def test_a_usage_error_is_one_line_and_exit_2(args: list[str]) -> None:
    done = relay(args, relay_env())
    assert done.returncode == EXIT_CONFIG
    assert "--help)" in one_line(done)


def test_token_without_credentials_is_one_line() -> None:
    done = relay(["token", "--room", "r"], relay_env(**NO_CREDENTIALS))
    assert done.returncode == EXIT_CONFIG
    assert "RELAY_LIVEKIT__API_SECRET" in one_line(done)


def test_the_port_taken_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = relay_env(RELAY_HTTP__PORT=str(port), RELAY_REDIS__URL="redis://127.0.0.1:9/0")
        done = relay(["run"], env)
    assert done.returncode == EXIT_RUNTIME
    plain = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert plain == [
        f"relay: cannot listen on 127.0.0.1:{port}: address already in use; "
        "set RELAY_HTTP__PORT (toml: http.port) to a free port"
    ]


def test_tail_with_redis_down_is_one_line_and_exit_1() -> None:
    env = relay_env(RELAY_REDIS__URL=f"redis://127.0.0.1:{free_port()}/0")
    done = relay(["tail", "--count", "1"], env)
    assert done.returncode == EXIT_RUNTIME
    line = one_line(done)
    assert "Traceback" not in line and "127.0.0.1" in line


def test_debug_is_accepted_before_and_after_the_subcommand() -> None:
    for args in (["--debug", "check"], ["check", "--debug"]):
        done = relay(args, relay_env(RELAY_MAX_ROOMS="0"))
        assert done.returncode == EXIT_CONFIG
        assert "RELAY_MAX_ROOMS" in one_line(done)


def test_help_is_worded_for_users() -> None:
    done = relay(["--help"], relay_env())
    assert done.returncode == 0
    assert "exit status" in done.stdout and "--debug" in done.stdout
    for internal in ("passed down", "main()", "relay/worker.py", "parsed once"):
        assert internal not in done.stdout
