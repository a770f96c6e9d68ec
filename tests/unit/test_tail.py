"""`relay tail` lines: what a person reads first, one line per event."""

from __future__ import annotations

from relay.tail import format_line, render


def event(kind: str, data: dict[str, object], role: str = "agent") -> dict[str, object]:
    return {
        "ts": "2026-11-21T13:45:01.123Z",
        "room": "r1",
        "seq": 7,
        "kind": kind,
        "participant": {"identity": "liveavatar-agent-s1", "role": role},
        "data": data,
    }


def test_transcript_shows_text_and_mode() -> None:
    line = format_line(event("transcript.partial", {"role": "user", "text": "Hi", "mode": "delta"}))
    assert line == '13:45:01.123 r1 #7 transcript.partial agent:liveavatar-agent-s1 "Hi" [delta]'


def test_command_shows_its_name_and_text() -> None:
    line = format_line(event("command", {"command": "avatar.speak_text", "text": "Hello"}, "user"))
    assert line.endswith('command user:liveavatar-agent-s1 avatar.speak_text "Hello"')


def test_long_text_is_cut_and_payloads_are_left_out() -> None:
    assert format_line(event("chat.message", {"text": "x" * 500})).endswith('x…"')
    line = format_line(event("event", {"type": "navigate", "payload": {"url": "/a"}}))
    assert line.endswith("event agent:liveavatar-agent-s1 type=navigate")


def test_an_entry_that_is_not_an_event_is_one_line_saying_so() -> None:
    assert render("1-0", {b"kind": b"x"}, as_json=False) == "(entry 1-0: no event field)"
    assert render("1-1", {b"event": b"[1]"}, as_json=False) == "(entry 1-1: event is not an object)"
    odd = render("1-2", {b"event": b'{"data": "text", "participant": 3}'}, as_json=False)
    assert odd.startswith("(entry 1-2: not a relay event: ")
    assert render("1-3", {b"event": b"[1]"}, as_json=True) == "[1]"
