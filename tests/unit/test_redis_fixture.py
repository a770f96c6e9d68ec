"""The Redis fixture starts a private redis-server when none answers at REDIS_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from relay.dev.ports import free_port

PROBE = """
import redis

def test_probe(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    print("FIXTURE_URL=" + redis_url)
"""


def test_private_redis_server_when_none_answers(tmp_path: Path) -> None:
    dead_port = free_port()  # nothing listens there
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{dead_port}"}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(probe)),
            *("-p", "tests.fixtures.redis_server", "--rootdir", str(tmp_path)),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FIXTURE_URL=")]
    assert f":{dead_port}" not in line  # a private server on a port of its own
