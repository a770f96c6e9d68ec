"""The dev server serves on one address: never every interface, never host interface
addresses in its ICE candidates (aioice would otherwise bind and announce them all)."""

from __future__ import annotations

import subprocess
import sys

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from relay.dev.server.peer import check_bind_address, new_peer_connection, pin_ice_address


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "localhost", ""])
def test_wildcard_or_named_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="--host"):
        check_bind_address(host)


def test_a_specific_address_is_accepted() -> None:
    check_bind_address("10.213.0.2")
    check_bind_address("127.0.0.1")


def test_relay_devserver_refuses_to_bind_every_interface() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "devserver", "--host", "0.0.0.0"],
        env={"LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "would bind every interface" in done.stderr


async def test_ice_candidates_only_on_the_served_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    pin_ice_address("10.213.0.2")
    assert aioice.ice.get_host_addresses(True, True) == ["10.213.0.2"]

    # On loopback: no candidate at all (this machine's interfaces are never gathered).
    pin_ice_address("127.0.0.1")
    pc: RTCPeerConnection = new_peer_connection()
    try:
        pc.createDataChannel("_reliable")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    assert "m=application" in sdp
    assert "a=candidate" not in sdp
