"""scripts/netns.sh, the harness for people: up, exec, and a down that stops what runs
inside by PID before it deletes the namespace (deleting alone leaves processes running)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from pathlib import Path

import pytest

from relay.dev.netns import _used_networks
from tests.fixtures.netns import require_netns

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "netns.sh"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=True
    )


def free_index() -> int:
    used = _used_networks()
    for index in range(250, 150, -1):
        slot = ipaddress.ip_network(f"10.213.{index}.0/30")
        if not any(slot.overlaps(net) for net in used):
            return index
    pytest.fail("no free 10.213.x.0/30 for the script test")


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_up_exec_down_stops_what_runs_inside() -> None:
    require_netns()
    name, index = f"relay-script-{os.getpid()}", free_index()
    try:
        assert f"10.213.{index}.2" in script("up", name, str(index)).stdout
        addresses = script("exec", name, "ip", "-4", "-o", "addr", "show").stdout
        assert f"10.213.{index}.2/30" in addresses
        # Something long-running inside, the way a dev server would be.
        sleeper = subprocess.Popen(
            ["bash", str(SCRIPT), "exec", name, "sleep", "600"], start_new_session=True
        )
        deadline = time.monotonic() + 10
        while not subprocess.run(["ip", "netns", "pids", name], capture_output=True).stdout:
            assert time.monotonic() < deadline, "the process never showed up in the namespace"
            time.sleep(0.05)

        script("down", name)
        assert sleeper.wait(timeout=10) != 0  # ended by the script's TERM, not by us
        assert name not in namespaces()
        script("down", name)  # idempotent
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", name], capture_output=True, timeout=30)
