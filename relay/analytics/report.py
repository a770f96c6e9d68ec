"""`relay report`: one self-contained HTML page of a session (inline CSS and SVG, no
external assets, no script): a timeline with a lane per role (speech spans,
interruptions, coverage gaps), the transcript beside it, the latency figures."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from relay.analytics.assemble import Doc, ts_ms
from relay.analytics.text import millis, reply_latencies, seconds

WIDTH = 760
LABEL_W = 70
LANE_H = 34
TOP = 10
ROLE_ORDER = ("user", "avatar", "agent")
COLORS = {"user": "#2f6fdf", "avatar": "#d9822b", "agent": "#1f9d6b"}
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} .sub{color:#5b6475;margin-bottom:16px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:8px 12px;min-width:96px}
.card b{display:block;font-size:18px} .card span{color:#5b6475;font-size:12px}
.main{display:flex;gap:20px;align-items:flex-start;flex-wrap:wrap}
.timeline{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:8px}
.transcript{flex:1;min-width:320px;max-height:560px;overflow:auto;background:#fff;
 border:1px solid #e1e4ea;border-radius:8px;margin:0;padding:8px 12px;list-style:none}
.utt{padding:4px 0;border-bottom:1px solid #f0f1f4} .utt time{color:#5b6475;
 font-variant-numeric:tabular-nums;margin-right:6px} .utt .role{font-weight:600;margin-right:6px}
.utt.nofinal .text{font-style:italic} .lat{color:#5b6475;font-size:12px;margin-left:6px}
table{border-collapse:collapse;margin-top:18px;background:#fff} td,th{border:1px solid #e1e4ea;
 padding:4px 10px;text-align:right} th{background:#f3f4f7}
.legend{color:#5b6475;font-size:12px;margin-top:4px}
"""
Scale = Callable[[int], float]


def render_report(summary: Doc) -> str:
    title = f"Session {summary['session_id']} ({summary['room']})"
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f"<div class='sub'>{escape(summary['start'])} to {escape(summary['end'])}, "
            f"{seconds(summary['duration_ms'])}, ended: {escape(summary['end_reason'])}"
            f"{_detail(summary)}</div>",
            _cards(summary),
            "<div class='main'>",
            _timeline(summary),
            _transcript(summary),
            "</div>",
            _turns_table(summary),
            "</body></html>",
        ]
    )


def _detail(summary: Doc) -> str:
    return f" ({escape(summary['end_detail'])})" if summary.get("end_detail") else ""


def _cards(summary: Doc) -> str:
    lat = summary["latency"]
    figures = [
        ("turns", str(len(summary["turns"]))),
        ("response p50", millis(lat["p50_ms"])),
        ("response p90", millis(lat["p90_ms"])),
        ("response p99", millis(lat["p99_ms"])),
        ("interruptions", str(summary["interruptions"]["total"])),
        ("overlap", millis(summary["overlap_ms"])),
        ("silence", seconds(summary["silence_ms"])),
        ("not seen (gaps)", millis(summary["gap_ms"])),
    ]
    for role, ms in summary["speaking_ms"].items():
        ratio = summary["talk_ratio"].get(role, 0)
        figures.append((f"{role} speaking", f"{seconds(ms)} ({round(ratio * 100)}%)"))
    for role, wpm in summary["words_per_minute"].items():
        figures.append((f"{role} words/min", f"{wpm:g}"))
    cells = "".join(
        f"<div class='card' data-figure='{escape(name)}'><b>{escape(value)}</b>"
        f"<span>{escape(name)}</span></div>"
        for name, value in figures
    )
    return f"<div class='cards'>{cells}</div>"


def _roles(summary: Doc) -> list[str]:
    seen = set(summary["spans"]) | {u["role"] for u in summary["transcript"]}
    return [role for role in ROLE_ORDER if role in seen] or ["user"]


def _timeline(summary: Doc) -> str:
    roles = _roles(summary)
    duration: int = max(1, int(summary["duration_ms"]))
    scale = (WIDTH - LABEL_W - 10) / duration

    def x(ms: int) -> float:
        return round(LABEL_W + max(0, min(ms, duration)) * scale, 1)

    height = TOP + LANE_H * len(roles) + 28
    parts = [
        f"<svg class='timeline-svg' width='{WIDTH}' height='{height}' role='img'"
        f" aria-label='timeline' xmlns='http://www.w3.org/2000/svg'>"
    ]
    parts.append(
        "<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
        "patternTransform='rotate(45)'><rect width='3' height='6' fill='#c5cad3'/></pattern></defs>"
    )
    for i, role in enumerate(roles):
        y = TOP + i * LANE_H
        parts.append(f"<g class='lane' data-role='{role}'>")
        parts.append(f"<text x='4' y='{y + 21}' font-size='12'>{role}</text>")
        parts.append(
            f"<rect x='{LABEL_W}' y='{y + 4}' width='{WIDTH - LABEL_W - 10}' height='{LANE_H - 8}'"
            " fill='#f3f4f7'/>"
        )
        for start, end in summary["spans"].get(role, []):
            parts.append(
                f"<rect class='span' data-role='{role}' x='{x(start)}' y='{y + 6}' "
                f"width='{max(1.0, round(x(end) - x(start), 1))}' height='{LANE_H - 12}' "
                f"rx='3' fill='{COLORS[role]}'><title>{role} {start}-{end} ms</title></rect>"
            )
        parts.append("</g>")
    lanes_bottom = TOP + LANE_H * len(roles)
    for gap in summary["gaps"]:
        parts.append(
            f"<rect class='gap' x='{x(gap['start_ms'])}' y='{TOP}' "
            f"width='{max(1.0, round(x(gap['end_ms']) - x(gap['start_ms']), 1))}' "
            f"height='{lanes_bottom - TOP}' fill='url(#hatch)' opacity='0.8'>"
            f"<title>not seen: {gap['reason']} {gap['duration_ms']} ms</title></rect>"
        )
    parts.extend(_interruption_marks(summary, roles, x))
    parts.extend(_axis(duration, x, lanes_bottom))
    parts.append("</svg>")
    legend = (
        "<div class='legend'>bars: speech; red marks: interruptions; hatched: coverage gaps "
        "(the observer did not see that time)</div>"
    )
    return f"<div class='timeline'>{''.join(parts)}{legend}</div>"


def _interruption_marks(summary: Doc, roles: list[str], x: Scale) -> list[str]:
    marks = []
    for item in summary["interruptions"]["items"]:
        role = "user" if item["kind"] == "user_over_response" else _responder(roles)
        y = TOP + roles.index(role) * LANE_H if role in roles else TOP
        px = x(item["at_ms"])
        marks.append(
            f"<path class='interruption' data-kind='{item['kind']}' "
            f"d='M{px - 5},{y} L{px + 5},{y} L{px},{y + 9} Z' fill='#d7263d'>"
            f"<title>{item['kind']} at {item['at_ms']} ms</title></path>"
        )
    return marks


def _responder(roles: list[str]) -> str:
    return next((r for r in roles if r != "user"), "user")


def _axis(duration: int, x: Scale, y: int) -> list[str]:
    step = next(
        s for s in (1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 10**9) if duration / s <= 10
    )
    ticks = []
    for ms in range(0, duration + 1, step):
        ticks.append(
            f"<line x1='{x(ms)}' x2='{x(ms)}' y1='{y}' y2='{y + 5}' stroke='#8a92a3'/>"
            f"<text x='{x(ms)}' y='{y + 18}' font-size='11' text-anchor='middle'>"
            f"{ms // 1000}s</text>"
        )
    return ticks


def _transcript(summary: Doc) -> str:
    start = ts_ms(summary["start"])
    latency = reply_latencies(summary, start)
    items = []
    for u in summary["transcript"]:
        offset = (ts_ms(u["start"]) - start) / 1000
        nofinal = " nofinal" if u["closed_without_final"] else ""
        lat = latency.get(u["utterance_id"])
        note = f"<span class='lat'>responded in {lat} ms</span>" if lat is not None else ""
        note += "<span class='lat'>(no final)</span>" if nofinal else ""
        items.append(
            f"<li class='utt role-{u['role']}{nofinal}' data-role='{u['role']}'>"
            f"<time>+{offset:.1f}s</time><span class='role' style='color:{COLORS[u['role']]}'>"
            f"{escape(u['identity'] or u['role'])}</span><span class='text'>{escape(u['text'])}"
            f"</span>{note}</li>"
        )
    return f"<ol class='transcript'>{''.join(items)}</ol>"


def _turns_table(summary: Doc) -> str:
    rows = "".join(
        f"<tr class='turn'><td>{t['index'] + 1}</td><td>{seconds(t['user_end_ms'])}</td>"
        f"<td>{escape(t['response_role'] or '-')}</td><td>{millis(t['latency_ms'])}</td>"
        f"<td>{escape(t['signal'] or '-')}</td></tr>"
        for t in summary["turns"]
    )
    return (
        "<table class='turns'><tr><th>turn</th><th>user stopped</th><th>answered by</th>"
        f"<th>response latency</th><th>signals</th></tr>{rows}</table>"
    )
