"""The room filter and the control stream's entry parser: pure, no Redis."""

from __future__ import annotations

import pytest

from relay.discovery.control import BadControlEntry, parse
from relay.discovery.filter import RoomFilter
from relay.errors import ConfigError
from relay.observer import RoomTarget


def test_globs_regexes_exclude_and_metadata() -> None:
    f = RoomFilter(include=["support-*", "/sales-[0-9]+/"], exclude=["*-test"])
    assert f.accepts("support-1")
    assert f.accepts("sales-42")
    assert not f.accepts("sales-x")  # the regex must match the whole name
    assert not f.accepts("support-test")
    assert not f.accepts("other")
    meta = RoomFilter(metadata={"relay": "on"})
    assert meta.accepts("any", '{"relay": "on", "x": 1}')
    assert not meta.accepts("any", '{"relay": "off"}')
    assert not meta.accepts("any", "not json")
    assert not meta.accepts("any", "")


def test_a_bad_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bad regex"):
        RoomFilter(include=["/(/"])


def test_control_entries() -> None:
    assert parse({b"op": b"join", b"room": b"r"}) == ("join", RoomTarget("r"))
    assert parse({b"op": b"join", b"room": b"r", b"url": b"ws://h", b"token": b"t"}) == (
        "join",
        RoomTarget("r", url="ws://h", token="t"),
    )
    assert parse({b"op": b"leave", b"room": b"r"}) == ("leave", RoomTarget("r"))
    for bad, why in (
        ({b"op": b"dance", b"room": b"r"}, "op must be"),
        ({b"op": b"join"}, "room must be"),
        ({b"op": b"join", b"room": b"r" * 300}, "room must be"),
        ({b"op": b"join", b"room": b"r", b"token": b"t"}, "both 'url' and 'token'"),
        ({b"op": b"\xff"}, "UTF-8"),
    ):
        with pytest.raises(BadControlEntry, match=why):
            parse(bad)
