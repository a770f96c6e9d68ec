"""LiveLayer: the script and the summary written by hand from it."""

from __future__ import annotations

import redis.asyncio as aioredis

from relay.config import Settings
from relay.contract.event import Participant
from tests.analytics.golden import check, final, part, turn, utt
from tests.analytics.support import T0_MS, Script, at, run_script

VISITOR = Participant("visitor", "PA_v", "standard", "user")
LL_AGENT = Participant("ll-agent", "PA_ll", "agent", "agent")


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
