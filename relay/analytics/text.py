"""Plain-text views: the `relay sessions` table and the `relay transcript` listing."""

from __future__ import annotations

from relay.analytics.assemble import Doc, ts_ms

RESPONSE_SLACK_MS = 1000  # an utterance this soon after its turn's response start is its reply


def seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def millis(ms: int | None) -> str:
    return "-" if ms is None else f"{ms} ms"


def sessions_table(summaries: list[Doc]) -> str:
    header = ("ROOM", "SESSION", "START", "DURATION", "TURNS", "MEDIAN RESPONSE", "END REASON")
    rows = [header] + [
        (
            s["room"],
            s["session_id"],
            s["start"][:19].replace("T", " "),
            seconds(s["duration_ms"]),
            str(len(s["turns"])),
            millis(s["latency"]["p50_ms"]),
            s["end_reason"],
        )
        for s in summaries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def transcript_text(summary: Doc) -> str:
    """Each utterance with its clock time and offset; a reply says how fast it came."""
    start = ts_ms(summary["start"])
    lines = [
        f"session {summary['session_id']} in {summary['room']}: {summary['start']} -> "
        f"{summary['end']} ({seconds(summary['duration_ms'])}), {summary['end_reason']}"
        + (f" ({summary['end_detail']})" if summary.get("end_detail") else "")
    ]
    replies = reply_latencies(summary, start)
    for u in summary["transcript"]:
        lines.append(utterance_line(u, start, replies.get(u["utterance_id"])))
    lat = summary["latency"]
    lines.append(
        f"response latency over {lat['count']} turns: p50 {millis(lat['p50_ms'])}, "
        f"p90 {millis(lat['p90_ms'])}, p99 {millis(lat['p99_ms'])}; interruptions "
        f"{summary['interruptions']['total']}; overlap {millis(summary['overlap_ms'])}; "
        f"silence {seconds(summary['silence_ms'])}; gaps {millis(summary['gap_ms'])}"
    )
    return "\n".join(lines)


def utterance_line(u: Doc, start_ms: int | None, latency_ms: int | None = None) -> str:
    clock = u["start"][11:23]
    since = "" if start_ms is None else f"+{(ts_ms(u['start']) - start_ms) / 1000:.3f}"
    offset = f" {since:>8}" if since else ""
    who = u.get("identity") or "-"
    note = " (no final)" if u["closed_without_final"] else ""
    reply = "" if latency_ms is None else f"  [responded in {latency_ms} ms]"
    return f"{clock}{offset}  {u['role']:<6} {who:<20} {u['text']}{note}{reply}"


def reply_latencies(summary: Doc, start: int) -> dict[str, int]:
    """utterance id -> its turn's latency, for the first reply utterance of each turn."""
    out: dict[str, int] = {}
    for turn in summary["turns"]:
        if turn["latency_ms"] is None:
            continue
        low = turn["response_start_ms"] - RESPONSE_SLACK_MS
        high = turn["response_end_ms"] + RESPONSE_SLACK_MS
        for u in summary["transcript"]:
            offset = ts_ms(u["start"]) - start
            if u["role"] == turn["response_role"] and low <= offset <= high:
                out.setdefault(u["utterance_id"], turn["latency_ms"])
                break
    return out
