"""Streaming Avatar (legacy): the script and the summary written by hand from it."""

from __future__ import annotations

import redis.asyncio as aioredis

from relay.config import Settings
from relay.contract.event import Participant
from tests.analytics.golden import check, final, part, turn, utt
from tests.analytics.support import T0_MS, Script, at, run_script

USER = Participant("u1", "PA_u", "standard", "user")
HEYGEN = Participant("heygen", "PA_h", "standard", "avatar")


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
