"""`python -m relay.dev.netns`, the namespace harness for people: up, exec, and a down
that stops what runs inside by PID before it deletes the namespace (deleting alone
leaves processes running)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

import pytest

from relay.dev.netns import link_names, used_networks
from tests.fixtures.netns import require_netns

NETNS = [sys.executable, "-m", "relay.dev.netns"]


def netns(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETNS, *args], capture_output=True, text=True, timeout=30, check=check)


def free_index() -> int:
    used = used_networks()
    for index in range(250, 150, -1):
        slot = ipaddress.ip_network(f"10.213.{index}.0/30")
        if not any(slot.overlaps(net) for net in used):
            return index
    pytest.fail("no free 10.213.x.0/30 for the netns command test")


def listed() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def test_up_exec_down_stops_what_runs_inside() -> None:
    require_netns()
    name, index = f"relay-cli-{os.getpid()}", free_index()
    try:
        assert f"10.213.{index}.2" in netns("up", name, str(index)).stdout
        addresses = netns("exec", name, "ip", "-4", "-o", "addr", "show").stdout
        assert f"10.213.{index}.2/30" in addresses
        refused = netns("up", name, check=False)  # never touches the existing one
        assert refused.returncode == 2
        assert "exists already" in refused.stderr
        # Something long-running inside, the way a dev server would be.
        sleeper = subprocess.Popen([*NETNS, "exec", name, "sleep", "600"], start_new_session=True)
        deadline = time.monotonic() + 10
        while not subprocess.run(["ip", "netns", "pids", name], capture_output=True).stdout:
            assert time.monotonic() < deadline, "the process never showed up in the namespace"
            time.sleep(0.05)

        netns("down", name)
        assert sleeper.wait(timeout=10) != 0  # ended by the command's TERM, not by us
        assert name not in listed()
        assert link_names(name)[0] not in links()
        netns("down", name)  # idempotent
    finally:
        subprocess.run([*NETNS, "down", name], capture_output=True, timeout=30)


@pytest.mark.parametrize(
    ("args", "said"),
    [((), "usage:"), (("up",), "usage:"), (("exec", "x"), "usage:"), (("up", "x", "abc"), "INDEX")],
)
def test_bad_arguments_get_one_line(args: tuple[str, ...], said: str) -> None:
    if said == "INDEX":
        require_netns()
    done = netns(*args, check=False)
    assert done.returncode == 2
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
