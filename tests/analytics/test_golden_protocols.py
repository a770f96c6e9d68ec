"""Streaming Avatar legacy, LiveKit Agents and LiveLayer sessions: scripts and the
summaries written by hand from them (offsets in ms from T0; see each script's notes)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from relay.analytics.model import validate_document
from relay.config import Settings
from relay.contract.event import Participant
from tests.analytics.support import OBSERVER, SFU, T0_MS, Script, at, run_script, without_ids

USER = Participant("u1", "PA_u", "standard", "user")
HEYGEN = Participant("heygen", "PA_h", "standard", "avatar")
CALLER = Participant("caller", "PA_c", "standard", "user")
VOICE = Participant("voice-agent", "PA_va", "agent", "agent")
VISITOR = Participant("visitor", "PA_v", "standard", "user")
LL_AGENT = Participant("ll-agent", "PA_ll", "agent", "agent")


def part(role: str, text: str, segment: str, mode: str) -> dict[str, str]:
    return {"role": role, "text": text, "segment_id": segment, "mode": mode}


def final(role: str, text: str, segment: str) -> dict[str, str]:
    return {"role": role, "text": text, "segment_id": segment}


def utt(
    room: str,
    protocol: str,
    role: str,
    who: str,
    text: str,
    span: tuple[int, int],
    seg: str,
    *,
    no_final: bool = False,
) -> dict[str, Any]:
    return {
        "v": 1,
        "room": room,
        "session_id": f"{room}@{T0_MS}",
        "role": role,
        "identity": who,
        "protocol": protocol,
        "text": text,
        "words": len(text.split()),
        "start": at(span[0]),
        "end": at(span[1]),
        "duration_ms": span[1] - span[0],
        "segment_ids": [seg],
        "closed_without_final": no_final,
    }


def turn(
    i: int, user: tuple[int, int], role: str, reply: tuple[int, int], signal: str
) -> dict[str, Any]:
    return {
        "index": i,
        "user_start_ms": user[0],
        "user_end_ms": user[1],
        "response_role": role,
        "response_start_ms": reply[0],
        "response_end_ms": reply[1],
        "latency_ms": reply[0] - user[1],
        "signal": signal,
    }


def check(summary: dict[str, Any], transcript: list[dict[str, Any]], rest: dict[str, Any]) -> None:
    validate_document(summary, "session")
    assert without_ids(summary.pop("transcript")) == transcript
    assert summary == rest


# --- Streaming Avatar (legacy): deltas keyed by task id, closed by *_end_message ---------
#   0 u1 joins, 100 heygen joins (no session id: the session is sa-1@T0, from 0)
#   user 1000-1500: "Hello" 1200, " there" 1400, end message "Hello there" 1600
#   avatar 2000-2600: "Hi" 2100, " friend" 2300, end message "Hi friend" 2700
#   user 3000-3600: "What's" 3100, no end message (closed by the timeout, in the sweep)
#   avatar 3300-4000 (starts while the user speaks): "Hold on" 3400, "Hold on." 4000
#   both leave 4500, 4600; the sweep at 40000 (idle 30 s, timeout 10 s) ends it at 4600


def streaming_avatar() -> Script:
    s = Script("sa-1")
    s.add(0, "participant.joined", USER, {"identity": "u1"}, protocol="livekit")
    s.add(100, "participant.joined", HEYGEN, {"identity": "heygen"}, protocol="livekit")
    s.add(1000, "speech.started", HEYGEN, {"role": "user"})
    s.add(1200, "transcript.partial", HEYGEN, part("user", "Hello", "T1", "delta"))
    s.add(1400, "transcript.partial", HEYGEN, part("user", " there", "T1", "delta"))
    s.add(1500, "speech.ended", HEYGEN, {"role": "user"})
    s.add(1600, "transcript.final", HEYGEN, final("user", "Hello there", "T1"))
    s.add(2000, "speech.started", HEYGEN, {"role": "avatar"})
    s.add(2100, "transcript.partial", HEYGEN, part("avatar", "Hi", "T2", "delta"))
    s.add(2300, "transcript.partial", HEYGEN, part("avatar", " friend", "T2", "delta"))
    s.add(2600, "speech.ended", HEYGEN, {"role": "avatar"})
    s.add(2700, "transcript.final", HEYGEN, final("avatar", "Hi friend", "T2"))
    s.add(3000, "speech.started", HEYGEN, {"role": "user"})
    s.add(3100, "transcript.partial", HEYGEN, part("user", "What's", "T3", "delta"))
    s.add(3300, "speech.started", HEYGEN, {"role": "avatar"})
    s.add(3400, "transcript.partial", HEYGEN, part("avatar", "Hold on", "T4", "delta"))
    s.add(3600, "speech.ended", HEYGEN, {"role": "user"})
    s.add(4000, "speech.ended", HEYGEN, {"role": "avatar"})
    s.add(4000, "transcript.final", HEYGEN, final("avatar", "Hold on.", "T4"))
    s.add(4500, "participant.left", USER, {"identity": "u1"}, protocol="livekit")
    s.add(4600, "participant.left", HEYGEN, {"identity": "heygen"}, protocol="livekit")
    return s


async def test_streaming_avatar_golden(redis: aioredis.Redis, settings: Settings) -> None:
    summary = await run_script(redis, settings, streaming_avatar(), sweep_at_ms=40_000)
    room, p = "sa-1", "liveavatar"
    transcript = [
        utt(room, p, "user", "u1", "Hello there", (1200, 1600), "T1"),
        utt(room, p, "avatar", "heygen", "Hi friend", (2100, 2700), "T2"),
        utt(room, p, "user", "u1", "What's", (3100, 3100), "T3", no_final=True),
        utt(room, p, "avatar", "heygen", "Hold on.", (3400, 4000), "T4"),
    ]
    signal = "speech_events->speech_events"
    check(
        summary,
        transcript,
        {
            "v": 1,
            "session_id": f"sa-1@{T0_MS}",
            "room": "sa-1",
            "start": at(0),
            "end": at(4600),
            "duration_ms": 4600,
            "end_reason": "participants_left",
            "end_detail": None,
            "participants": [
                {"identity": "heygen", "role": "avatar"},
                {"identity": "u1", "role": "user"},
            ],
            "empty_utterances": 0,
            "turns": [
                turn(0, (1000, 1500), "avatar", (2000, 2600), signal),
                turn(1, (3000, 3600), "avatar", (3300, 4000), signal),  # -300: began before
            ],
            "latency": {"count": 2, "p50_ms": -300, "p90_ms": 500, "p99_ms": 500},
            "speech_signals": {"user": "speech_events", "avatar": "speech_events"},
            "interruptions": {
                "total": 1,
                "by_kind": {"response_over_user": 1},
                "items": [{"at_ms": 3300, "kind": "response_over_user", "identity": None}],
            },
            "overlap_ms": 300,
            "speaking_ms": {"user": 1100, "avatar": 1300},
            "talk_ratio": {"user": 0.458, "avatar": 0.542},
            "silence_ms": 4600 - 2100,  # covered: 1000-1500, 2000-2600, 3000-4000
            "words": {"user": 3, "avatar": 4},
            "words_per_minute": {"user": 163.6, "avatar": 184.6},
            "event_counts": {
                "participant.joined": 2,
                "participant.left": 2,
                "speech.ended": 4,
                "speech.started": 4,
                "transcript.final": 3,
                "transcript.partial": 6,
            },
            "gaps": [],
            "gap_ms": 0,
            "spans": {"user": [[1000, 1500], [3000, 3600]], "avatar": [[2000, 2600], [3300, 4000]]},
        },
    )


# --- LiveKit Agents: no speech events; the agent's lk.agent.state, the SFU's speakers ----
#   0 observer joins (opens nothing), caller joins (the session ag-1@T0 starts), 50 agent
#   user (speakers) 1000-1800, final "I need help" 1900
#   agent speaking (state) 2400-3400: "Sure" 2500, "Sure, what" 2700, final "Sure, what is
#     it?" 3000 and its legacy copy 3050 (another id: the decoders drop it; so do we)
#   user 3200-3900 (barges in), "My card" 3950, final "My card was declined" 4000;
#     an empty final of SG_u3 4100 (no text at all: no utterance)
#   agent speaking 4500-6200: final "Let me check." 4600
#   the relay restarts: observer.left stopped 5000, observer.joined 6000 (a gap)
#   caller leaves 6500; observer.left room_deleted 7000 ends it


def agents() -> Script:
    s = Script("ag-1")
    s.add(0, "observer.joined", OBSERVER)
    s.add(0, "participant.joined", CALLER, {"identity": "caller"}, protocol="livekit")
    s.add(50, "participant.joined", VOICE, {"identity": "voice-agent"}, protocol="livekit")
    s.add(
        100,
        "agent.state",
        VOICE,
        {"state": "listening", "previous": None},
        protocol="livekit-agents",
    )
    s.add(1000, "speakers.active", SFU, {"identities": ["caller"]}, protocol="livekit")
    s.add(1800, "speakers.active", SFU, {"identities": []}, protocol="livekit")
    s.add(
        1900,
        "transcript.final",
        VOICE,
        final("user", "I need help", "SG_u1"),
        protocol="livekit-agents",
    )
    s.add(
        2000,
        "agent.state",
        VOICE,
        {"state": "thinking", "previous": "listening"},
        protocol="livekit-agents",
    )
    s.add(
        2400,
        "agent.state",
        VOICE,
        {"state": "speaking", "previous": "thinking"},
        protocol="livekit-agents",
    )
    s.add(2400, "speakers.active", SFU, {"identities": ["voice-agent"]}, protocol="livekit")
    s.add(
        2500,
        "transcript.partial",
        VOICE,
        part("agent", "Sure", "SG_a1", "cumulative"),
        protocol="livekit-agents",
    )
    s.add(
        2700,
        "transcript.partial",
        VOICE,
        part("agent", "Sure, what", "SG_a1", "cumulative"),
        protocol="livekit-agents",
    )
    s.add(
        3000,
        "transcript.final",
        VOICE,
        final("agent", "Sure, what is it?", "SG_a1"),
        protocol="livekit-agents",
    )
    s.add(
        3050,
        "transcript.final",
        VOICE,
        final("agent", "Sure, what is it?", "SG_a1"),
        protocol="livekit-agents",
    )
    s.add(
        3200, "speakers.active", SFU, {"identities": ["voice-agent", "caller"]}, protocol="livekit"
    )
    s.add(
        3400,
        "agent.state",
        VOICE,
        {"state": "listening", "previous": "speaking"},
        protocol="livekit-agents",
    )
    s.add(3400, "speakers.active", SFU, {"identities": ["caller"]}, protocol="livekit")
    s.add(3900, "speakers.active", SFU, {"identities": []}, protocol="livekit")
    s.add(
        3950,
        "transcript.partial",
        VOICE,
        part("user", "My card", "SG_u2", "cumulative"),
        protocol="livekit-agents",
    )
    s.add(
        4000,
        "transcript.final",
        VOICE,
        final("user", "My card was declined", "SG_u2"),
        protocol="livekit-agents",
    )
    s.add(4100, "transcript.final", VOICE, final("user", "", "SG_u3"), protocol="livekit-agents")
    s.add(
        4500,
        "agent.state",
        VOICE,
        {"state": "speaking", "previous": "listening"},
        protocol="livekit-agents",
    )
    s.add(
        4600,
        "transcript.final",
        VOICE,
        final("agent", "Let me check.", "SG_a2"),
        protocol="livekit-agents",
    )
    s.add(5000, "observer.left", OBSERVER, {"reason": "stopped"})
    s.add(6000, "observer.joined", OBSERVER)
    s.add(
        6200,
        "agent.state",
        VOICE,
        {"state": "listening", "previous": "speaking"},
        protocol="livekit-agents",
    )
    s.add(6500, "participant.left", CALLER, {"identity": "caller"}, protocol="livekit")
    s.add(7000, "observer.left", OBSERVER, {"reason": "room_deleted"})
    return s


async def test_livekit_agents_golden(redis: aioredis.Redis, settings: Settings) -> None:
    summary = await run_script(redis, settings, agents())
    room, p = "ag-1", "livekit-agents"
    transcript = [
        utt(room, p, "user", "caller", "I need help", (1900, 1900), "SG_u1"),
        utt(room, p, "agent", "voice-agent", "Sure, what is it?", (2500, 3000), "SG_a1"),
        utt(room, p, "user", "caller", "My card was declined", (3950, 4000), "SG_u2"),
        utt(room, p, "agent", "voice-agent", "Let me check.", (4600, 4600), "SG_a2"),
    ]
    signal = "active_speakers->agent_state"
    check(
        summary,
        transcript,
        {
            "v": 1,
            "session_id": f"ag-1@{T0_MS}",
            "room": "ag-1",
            "start": at(0),
            "end": at(7000),
            "duration_ms": 7000,
            "end_reason": "room_finished",
            "end_detail": "room_deleted",
            "participants": [
                {"identity": "caller", "role": "user"},
                {"identity": "voice-agent", "role": "agent"},
            ],
            "empty_utterances": 1,
            "turns": [
                turn(0, (1000, 1800), "agent", (2400, 3400), signal),
                turn(1, (3200, 3900), "agent", (4500, 6200), signal),
            ],
            "latency": {"count": 2, "p50_ms": 600, "p90_ms": 600, "p99_ms": 600},
            "speech_signals": {"user": "active_speakers", "agent": "agent_state"},
            "interruptions": {
                "total": 1,
                "by_kind": {"user_over_response": 1},
                "items": [{"at_ms": 3200, "kind": "user_over_response", "identity": None}],
            },
            "overlap_ms": 200,
            "speaking_ms": {"user": 1500, "agent": 2700},
            "talk_ratio": {"user": 0.357, "agent": 0.643},
            "silence_ms": 7000 - 4000,  # covered: 1000-1800, 2400-3900, 4500-6200 (the gap inside)
            "words": {"user": 7, "agent": 7},
            "words_per_minute": {"user": 280.0, "agent": 155.6},
            "event_counts": {
                "agent.state": 6,
                "observer.joined": 1,
                "observer.left": 2,
                "participant.joined": 2,
                "participant.left": 1,
                "speakers.active": 6,
                "transcript.final": 6,
                "transcript.partial": 3,
            },
            "gaps": [
                {"start_ms": 5000, "end_ms": 6000, "duration_ms": 1000, "reason": "observer_left"}
            ],
            "gap_ms": 1000,
            "spans": {"user": [[1000, 1800], [3200, 3900]], "agent": [[2400, 3400], [4500, 6200]]},
        },
    )


# --- LiveLayer: captions upserted by id; the agent's agent_state; no user speech signal ---
#   0 visitor joins, 10 the agent
#   user caption cap-1: "Show me" 500, "Show me pricing" 800 and 900 (upsert), final 1200
#   agent speaking 1500-2500: cap-2 "Pricing starts" 1600, final "Pricing starts at ten." 2200
#   user cap-3 (over the agent): "And" 2000, final "And annual?" 2600
#   agent speaking 3000-3500: final cap-4 "Annual is eight." 3100; user_message command 3600
#   both leave 4000, 4100; the visitor is back at 40000: the first session ended at 4100


def livelayer() -> Script:
    s = Script("ll-1")
    s.add(0, "participant.joined", VISITOR, {"identity": "visitor"}, protocol="livekit")
    s.add(10, "participant.joined", LL_AGENT, {"identity": "ll-agent"}, protocol="livekit")
    s.add(
        500,
        "transcript.partial",
        LL_AGENT,
        part("user", "Show me", "cap-1", "cumulative"),
        protocol="livelayer",
    )
    for ms in (800, 900):
        s.add(
            ms,
            "transcript.partial",
            LL_AGENT,
            part("user", "Show me pricing", "cap-1", "cumulative"),
            protocol="livelayer",
        )
    s.add(
        1200,
        "transcript.final",
        LL_AGENT,
        final("user", "Show me pricing", "cap-1"),
        protocol="livelayer",
    )
    s.add(
        1500,
        "agent.state",
        LL_AGENT,
        {"state": "speaking", "previous": "thinking"},
        protocol="livelayer",
    )
    s.add(
        1600,
        "transcript.partial",
        LL_AGENT,
        part("agent", "Pricing starts", "cap-2", "cumulative"),
        protocol="livelayer",
    )
    s.add(
        2000,
        "transcript.partial",
        LL_AGENT,
        part("user", "And", "cap-3", "cumulative"),
        protocol="livelayer",
    )
    s.add(
        2200,
        "transcript.final",
        LL_AGENT,
        final("agent", "Pricing starts at ten.", "cap-2"),
        protocol="livelayer",
    )
    s.add(
        2500,
        "agent.state",
        LL_AGENT,
        {"state": "listening", "previous": "speaking"},
        protocol="livelayer",
    )
    s.add(
        2600,
        "transcript.final",
        LL_AGENT,
        final("user", "And annual?", "cap-3"),
        protocol="livelayer",
    )
    s.add(
        3000,
        "agent.state",
        LL_AGENT,
        {"state": "speaking", "previous": "listening"},
        protocol="livelayer",
    )
    s.add(
        3100,
        "transcript.final",
        LL_AGENT,
        final("agent", "Annual is eight.", "cap-4"),
        protocol="livelayer",
    )
    s.add(
        3500,
        "agent.state",
        LL_AGENT,
        {"state": "listening", "previous": "speaking"},
        protocol="livelayer",
    )
    s.add(3600, "command", VISITOR, {"command": "user_message", "text": "hi"}, protocol="livelayer")
    s.add(4000, "participant.left", VISITOR, {"identity": "visitor"}, protocol="livekit")
    s.add(4100, "participant.left", LL_AGENT, {"identity": "ll-agent"}, protocol="livekit")
    s.add(40_000, "participant.joined", VISITOR, {"identity": "visitor"}, protocol="livekit")
    return s


async def test_livelayer_golden(redis: aioredis.Redis, settings: Settings) -> None:
    summary = await run_script(redis, settings, livelayer())
    room, p = "ll-1", "livelayer"
    transcript = [
        utt(room, p, "user", "visitor", "Show me pricing", (500, 1200), "cap-1"),
        utt(room, p, "agent", "ll-agent", "Pricing starts at ten.", (1600, 2200), "cap-2"),
        utt(room, p, "user", "visitor", "And annual?", (2000, 2600), "cap-3"),
        utt(room, p, "agent", "ll-agent", "Annual is eight.", (3100, 3100), "cap-4"),
    ]
    signal = "transcripts->agent_state"
    check(
        summary,
        transcript,
        {
            "v": 1,
            "session_id": f"ll-1@{T0_MS}",
            "room": "ll-1",
            "start": at(0),
            "end": at(4100),
            "duration_ms": 4100,
            "end_reason": "participants_left",
            "end_detail": None,
            "participants": [
                {"identity": "ll-agent", "role": "agent"},
                {"identity": "visitor", "role": "user"},
            ],
            "empty_utterances": 0,
            "turns": [
                turn(0, (500, 1200), "agent", (1500, 2500), signal),
                turn(1, (2000, 2600), "agent", (3000, 3500), signal),
            ],
            "latency": {"count": 2, "p50_ms": 300, "p90_ms": 400, "p99_ms": 400},
            "speech_signals": {"user": "transcripts", "agent": "agent_state"},
            "interruptions": {
                "total": 1,
                "by_kind": {"user_over_response": 1},
                "items": [{"at_ms": 2000, "kind": "user_over_response", "identity": None}],
            },
            "overlap_ms": 500,
            "speaking_ms": {"user": 1300, "agent": 1500},
            "talk_ratio": {"user": 0.464, "agent": 0.536},
            "silence_ms": 4100 - 2300,  # covered: 500-1200, 1500-2600, 3000-3500
            "words": {"user": 5, "agent": 7},
            "words_per_minute": {"user": 230.8, "agent": 280.0},
            "event_counts": {
                "agent.state": 4,
                "command": 1,
                "participant.joined": 2,
                "participant.left": 2,
                "transcript.final": 4,
                "transcript.partial": 5,
            },
            "gaps": [],
            "gap_ms": 0,
            "spans": {"user": [[500, 1200], [2000, 2600]], "agent": [[1500, 2500], [3000, 3500]]},
        },
    )
