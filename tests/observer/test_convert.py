"""Handlers wrapped for the SDK's EventEmitter: same calls, signature read cheaply."""

from __future__ import annotations

import inspect

from livekit.rtc.event_emitter import EventEmitter

from relay.observer.convert import sdk_callback


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def one(self, first: object) -> None:
        self.calls.append((first,))

    def two(self, first: object, second: object) -> None:
        self.calls.append((first, second))


def test_the_sdk_calls_a_wrapped_handler_with_the_arguments_it_takes() -> None:
    recorder, emitter = Recorder(), EventEmitter[str]()
    emitter.on("event", sdk_callback(recorder.one))
    emitter.on("event", sdk_callback(recorder.two))
    emitter.emit("event", "a", "b", "c")  # the SDK passes what each callback takes
    assert recorder.calls == [("a",), ("a", "b")]


def test_the_wrapper_carries_the_handlers_signature() -> None:
    recorder = Recorder()
    assert inspect.signature(sdk_callback(recorder.two)) == inspect.signature(recorder.two)
