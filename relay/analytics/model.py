"""The analytics vocabulary: end reasons, interruption kinds, speech signals, settings.

Label values of the analytics metrics come from these Literals (low cardinality).
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args

# Why a session's summary was written.
EndReason = Literal["session_stopped", "room_finished", "participants_left"]
# `user_over_response`: the user starts while the avatar/agent speaks (barge-in);
# `response_over_user`: the avatar/agent starts while the user speaks;
# `command`: an `avatar.interrupt` (or `interrupt`) command.
InterruptionKind = Literal["user_over_response", "response_over_user", "command"]
# Which signal gave a role's speech spans, best first.
SpeechSignal = Literal["speech_events", "agent_state", "active_speakers", "transcripts"]
SpeakerRole = Literal["user", "avatar", "agent"]

END_REASONS: tuple[EndReason, ...] = get_args(EndReason)
INTERRUPTION_KINDS: tuple[InterruptionKind, ...] = get_args(InterruptionKind)
SPEECH_SIGNALS: tuple[SpeechSignal, ...] = get_args(SpeechSignal)
SPEAKER_ROLES: tuple[SpeakerRole, ...] = get_args(SpeakerRole)
RESPONSE_ROLES: tuple[SpeakerRole, ...] = ("avatar", "agent")
INTERRUPT_COMMANDS = frozenset({"avatar.interrupt", "interrupt"})
# observer.left reasons that mean the room itself is gone.
ROOM_FINISHED_REASONS = frozenset({"room_deleted", "room_closed"})
DOC_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    """Timing rules of the assembly (relay.config.AnalyticsSettings fills it)."""

    # A turn with no final for this long (event time) is closed, `closed_without_final`.
    utterance_timeout_s: float = 10.0
    # Every non-observer participant gone this long ends the session (participants_left).
    participants_idle_s: float = 30.0
    # Event ids remembered per open session for dedupe.
    dedupe_ids: int = 4096


@cache
def load_schema(name: Literal["utterance", "session"]) -> dict[str, Any]:
    """The JSON Schema shipped beside this module: `utterance` or `session` (v1)."""
    text = resources.files("relay.analytics").joinpath(f"{name}-v1.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_document(doc: dict[str, Any], name: Literal["utterance", "session"]) -> None:
    """Raise jsonschema.ValidationError unless `doc` matches the shipped schema `name`."""
    import jsonschema
    from referencing import Registry, Resource

    utterance = load_schema("utterance")
    registry: Registry[Any] = Registry().with_resource(
        utterance["$id"], Resource.from_contents(utterance)
    )
    jsonschema.Draft202012Validator(load_schema(name), registry=registry).validate(doc)
