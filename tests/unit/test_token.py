"""Observer tokens carry no publish rights and hide the observer; observer identities are
unique across processes and workers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from livekit import api

from relay.config import LiveKitSettings
from relay.observer.token import mint_observer_token, next_observer_identity

KEY, SECRET = "devkey", "devsecret-devsecret-devsecret-000"
DEFAULT = LiveKitSettings().observer_identity
# One identity of the default template, minted in a fresh interpreter (a process of its own).
MINT = (
    "from relay.config import LiveKitSettings;"
    "from relay.observer.token import next_observer_identity as mint;"
    "print(mint(LiveKitSettings().observer_identity, worker={worker}), mint('{{rand}}'))"
)


def test_minted_token_is_hidden_and_receive_only() -> None:
    token = mint_observer_token(KEY, SECRET, "room-1", "relay-test-1", ttl_s=60)
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    grants = claims.video
    assert grants is not None
    assert claims.identity == "relay-test-1"
    assert (grants.room, grants.room_join, grants.hidden) == ("room-1", True, True)
    assert grants.can_publish is False
    assert grants.can_publish_data is False
    assert grants.can_subscribe is True


def test_the_old_template_fills_host_and_counter() -> None:
    first = next_observer_identity("relay-{host}-{n}")
    second = next_observer_identity("relay-{host}-{n}")
    assert re.fullmatch(r"relay-.+-\d+", first)
    assert first != second


def test_the_default_names_host_worker_process_and_counter() -> None:
    assert DEFAULT == "relay-{host}-{worker}-{pid}-{n}"
    first = next_observer_identity(DEFAULT, worker=3)
    second = next_observer_identity(DEFAULT, worker=3)
    prefix = f"relay-{socket.gethostname()}-3-{os.getpid()}-"
    assert first.startswith(prefix) and second.startswith(prefix)
    assert int(second.removeprefix(prefix)) == int(first.removeprefix(prefix)) + 1


def test_the_random_part_is_four_hex_digits_fixed_for_the_process() -> None:
    first, second = next_observer_identity("{rand}"), next_observer_identity("{rand}")
    assert re.fullmatch(r"[0-9a-f]{4}", first)
    assert first == second


def mint_in_a_process(worker: int) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", MINT.format(worker=worker)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    identity, rand = done.stdout.split()
    return identity, rand


def test_two_processes_of_one_host_mint_different_identities() -> None:
    """Each process counts from 1: the old template gave both `relay-<host>-1`."""
    (first, rand_1), (second, rand_2) = mint_in_a_process(0), mint_in_a_process(0)
    assert first != second
    host = re.escape(socket.gethostname())
    for identity in (first, second):
        assert re.fullmatch(rf"relay-{host}-0-\d+-1", identity), identity
    assert re.fullmatch(r"[0-9a-f]{4}", rand_1) and re.fullmatch(r"[0-9a-f]{4}", rand_2)
    (worker_1, _) = mint_in_a_process(1)
    assert re.fullmatch(rf"relay-{host}-1-\d+-1", worker_1), worker_1
