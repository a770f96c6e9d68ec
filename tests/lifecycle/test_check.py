"""`relay check` against the real dev server (in a namespace) and the real Redis: each
check OK / FAIL / SKIPPED with its reason, the exit status, `--json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from relay.config import JournalSettings
from relay.journal import Journal
from tests.fixtures.netns import DevServer, devserver, netns  # noqa: F401 (fixtures)
from tests.fixtures.sockets import free_port
from tests.lifecycle.test_cli_and_signals import relay_env
from tests.pipeline.support import make_event


def check(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    report = json.loads(done.stdout)
    assert report["ok"] is (done.returncode == 0)
    return done.returncode, {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}


def test_everything_answers(devserver: DevServer, redis_url: str) -> None:  # noqa: F811
    env = relay_env(
        RELAY_LIVEKIT__URL=devserver.ws_url,
        RELAY_LIVEKIT__API_KEY=devserver.api_key,
        RELAY_LIVEKIT__API_SECRET=devserver.api_secret,
        RELAY_REDIS__URL=redis_url,
    )
    status, checks = check(env)
    assert status == 0
    assert checks["livekit"] == ("OK", f"signal endpoint answered at {devserver.http_url}/")
    assert checks["livekit-api"][0] == "OK" and "ListRooms answered" in checks["livekit-api"][1]
    assert checks["redis"][0] == "OK"


def test_refused_credentials_fail_the_api_check(devserver: DevServer, redis_url: str) -> None:  # noqa: F811
    env = relay_env(
        RELAY_LIVEKIT__URL=devserver.ws_url,
        RELAY_LIVEKIT__API_KEY=devserver.api_key,
        RELAY_LIVEKIT__API_SECRET="not-the-secret-of-this-server-0123456789",
        RELAY_REDIS__URL=redis_url,
    )
    status, checks = check(env)
    assert status == 1
    assert checks["livekit"][0] == "OK"
    assert checks["livekit-api"][0] == "FAIL" and "ListRooms failed" in checks["livekit-api"][1]


def test_without_credentials_the_api_check_is_skipped_not_passed(
    devserver: DevServer,  # noqa: F811
) -> None:
    env = relay_env(
        RELAY_LIVEKIT__URL=devserver.ws_url,
        RELAY_LIVEKIT__API_KEY="",
        RELAY_LIVEKIT__API_SECRET="",
        RELAY_SINKS='["stdout"]',
    )
    status, checks = check(env)
    assert status == 0
    assert checks["livekit"][0] == "OK"
    assert checks["livekit-api"] == (
        "SKIPPED",
        "no API key and secret (RELAY_LIVEKIT__API_KEY, RELAY_LIVEKIT__API_SECRET)",
    )
    assert checks["redis"] == ("SKIPPED", "no sink writes to Redis (RELAY_SINKS)")


def test_no_livekit_fails_even_without_credentials() -> None:
    port = free_port()
    env = relay_env(
        RELAY_LIVEKIT__URL=f"ws://127.0.0.1:{port}",
        RELAY_LIVEKIT__API_KEY="",
        RELAY_SINKS='["stdout"]',
    )
    status, checks = check(env)
    assert status == 1
    assert checks["livekit"][0] == "FAIL" and f"127.0.0.1:{port}" in checks["livekit"][1]


def test_an_http_server_that_is_not_livekit_fails(devserver: DevServer) -> None:  # noqa: F811
    # The dev server's /rtc/validate answers 401 without a token: a URL with a path
    # pointing there is not a LiveKit base URL.
    env = relay_env(
        RELAY_LIVEKIT__URL=f"{devserver.ws_url}/rtc/validate",
        RELAY_LIVEKIT__API_KEY="",
        RELAY_SINKS='["stdout"]',
    )
    status, checks = check(env)
    assert status == 1
    assert checks["livekit"][0] == "FAIL" and "not 200" in checks["livekit"][1]


def test_the_journal_check_reports_what_waits_and_refuses_an_unwritable_path(
    devserver: DevServer,  # noqa: F811
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = relay_env(RELAY_LIVEKIT__URL=devserver.ws_url, RELAY_REDIS__URL=redis_url)
    assert check(env)[1]["journal"][0] == "SKIPPED"
    journal = Journal(JournalSettings(path=str(tmp_path)), tmp_path / "worker-0")
    for n in range(3):
        journal.append(make_event("r", n).stamped(f"id-{n}", n + 1))
    os.close(journal._fd)  # as if killed: the entries wait for the next start
    os.close(journal._lock)
    env["RELAY_JOURNAL__PATH"] = str(tmp_path)
    status, checks = check(env)
    assert checks["journal"][0] == "OK"
    assert "3 entries waiting" in checks["journal"][1]
    (tmp_path / "file").write_text("")
    env["RELAY_JOURNAL__PATH"] = str(tmp_path / "file" / "journal")
    status, checks = check(env)
    assert status == 1
    assert checks["journal"] == ("FAIL", f"journal.path {tmp_path}/file/journal: "
                                 f"{tmp_path}/file is not a writable directory")  # fmt: skip
