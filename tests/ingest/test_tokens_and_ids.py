"""Ingest tokens, `relay ingest-token`, the ingest secret's check, and ids across
ingresses (the ingress never enters an id; content-hashed repeats are numbered per
ingress)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import jwt
import orjson
import pytest

from relay.checks import summary
from relay.config import load_settings
from relay.contract.schema import validate_event
from relay.errors import ConfigError
from relay.ingest.tokens import TokenError, mint_ingest_token, parse_ttl_s, verify_ingest_token
from relay.pipeline.ids import IdMinter
from tests.ingest.support import SECRET
from tests.pipeline.support import make_event


def test_a_minted_token_verifies_to_its_grant() -> None:
    token = mint_ingest_token(SECRET, room="r", session="s", ttl_s=60, origin="https://a.example")
    grant = verify_ingest_token(SECRET, token)
    assert (grant.room, grant.session, grant.origin) == ("r", "s", "https://a.example")
    assert time.time() + 55 < grant.expires_at <= time.time() + 60


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"aud": "relay-ingest", "room": "r", "session": "s"}, "invalid_token"),  # no exp
        ({"aud": "other", "room": "r", "session": "s", "exp": 2**40}, "invalid_token"),
        ({"aud": "relay-ingest", "room": 5, "session": "s", "exp": 2**40}, "invalid_token"),
        ({"aud": "relay-ingest", "room": "r", "session": "s", "exp": 1}, "expired_token"),
    ],
    ids=["no-exp", "audience", "room-type", "expired"],
)
def test_tokens_relay_refuses(claims: dict[str, object], problem: str) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenError) as caught:
        verify_ingest_token(SECRET, token)
    assert caught.value.problem == problem


def test_an_unsigned_token_is_refused() -> None:
    claims = {"aud": "relay-ingest", "room": "r", "session": "s", "exp": 2**40}
    token = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(TokenError):
        verify_ingest_token(SECRET, token)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600)])
def test_ttls(text: str, seconds: float) -> None:
    assert parse_ttl_s(text) == seconds


def test_a_bad_ttl_names_the_forms() -> None:
    with pytest.raises(ValueError, match="use seconds or a number with s, m, h or d"):
        parse_ttl_s("1w")


def relay_cli(*argv: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    """`relay ...` as a process: the CLI configures logging, which must not reach
    pytest's captured streams."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    if secret is not None:
        env["RELAY_INGEST__SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "relay", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_mints_a_token_the_relay_accepts() -> None:
    done = relay_cli(
        "ingest-token", "--room", "r1", "--session", "s1", "--ttl", "2m", secret=SECRET
    )
    assert done.returncode == 0, done.stderr
    grant = verify_ingest_token(SECRET, done.stdout.strip())
    assert (grant.room, grant.session) == ("r1", "s1")
    assert grant.expires_at <= time.time() + 120


def test_the_cli_without_a_secret_is_one_line() -> None:
    done = relay_cli("ingest-token", "--room", "r", "--session", "s", secret=None)
    assert done.returncode == 2
    assert done.stderr == "relay: RELAY_INGEST__SECRET (toml: ingest.secret) is required\n"


def test_a_short_ingest_secret_is_a_configuration_error() -> None:
    with pytest.raises(
        ConfigError, match=r"RELAY_INGEST__SECRET \(toml: ingest.secret\): at least 32"
    ):
        load_settings(ingest={"secret": "short"})


def test_an_observed_event_is_byte_for_byte_what_it_was() -> None:
    event = make_event("room", 1)
    encoded = event.stamped("ev_1", 1).json_bytes()
    assert b"ingress" not in encoded
    ingested = dataclasses.replace(event, ingress="ingest").stamped("ev_1", 1).json_bytes()
    document = orjson.loads(ingested)
    assert document["ingress"] == "ingest"
    validate_event(document)
    assert {k: v for k, v in document.items() if k != "ingress"} == json.loads(encoded)


def test_the_ingress_never_enters_an_id() -> None:
    minter = IdMinter()
    keyed = dataclasses.replace(make_event("room", 1), dedupe_key="liveavatar:evt_1")
    ingested = dataclasses.replace(keyed, ingress="ingest")
    assert minter.mint(keyed, *keyed.encoded_parts()) == minter.mint(
        ingested, *ingested.encoded_parts()
    )


def test_content_hashed_repeats_are_numbered_per_ingress() -> None:
    """The observer and a browser that saw the same event in the same second both call
    it the first occurrence, as two observers would."""
    minter = IdMinter()
    observed = make_event("room", 1, at=1000.5)
    ingested = dataclasses.replace(observed, ingress="ingest")
    first = minter.mint(observed, *observed.encoded_parts())
    assert minter.mint(ingested, *ingested.encoded_parts()) == first
    assert minter.mint(observed, *observed.encoded_parts()) == f"{first}-2"


def test_the_ingest_secret_never_appears_in_the_summary() -> None:
    secret = "s3cr3t-ingest-0123456789abcdef0123456789"
    settings = load_settings(ingest={"secret": secret})
    assert settings.ingest.enabled
    text = repr(summary(settings)) + repr(settings) + str(settings)
    assert secret not in text
