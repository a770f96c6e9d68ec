"""The views of a summarized session: `relay sessions`, `relay transcript`, `relay tail
--transcripts`, `relay report` as processes, the HTTP routes, and the report page in
headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from relay.analytics.views import SessionReader
from relay.config import Settings
from relay.http import build_app
from relay.rooms import RoomManager
from tests.analytics.support import run_script
from tests.analytics.test_golden_liveavatar import liveavatar_script

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "s3cret"


@pytest.fixture
async def summarized(redis: aioredis.Redis, settings: Settings) -> AsyncIterator[Settings]:
    await run_script(redis, settings, liveavatar_script())
    yield settings


async def relay_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_REDIS__URL"] = settings.redis.url.get_secret_value()
    argv = [sys.executable, "-m", "relay", *args, "--prefix", settings.redis.prefix]
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=30
    )
    return done.returncode, done.stdout, done.stderr


async def test_sessions_table(summarized: Settings) -> None:
    status, out, err = await relay_cli(summarized, "sessions")
    assert status == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "ROOM",
        "SESSION",
        "START",
        "DURATION",
        "TURNS",
        "MEDIAN",
        "RESPONSE",
        "END",
        "REASON",
    ]
    assert row.split() == [
        "la-1",
        "s1",
        "2025-11-21",
        "13:45:00",
        "9.3",
        "s",
        "3",
        "800",
        "ms",
        "session_stopped",
    ]


async def test_transcript_by_session_and_by_room(summarized: Settings) -> None:
    status, out, err = await relay_cli(summarized, "transcript", "s1")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("session s1 in la-1: 2025-11-21T13:45:00.200Z -> ")
    assert lines[1].split() == [
        "13:45:01.200",
        "+1.000",
        "user",
        "visitor",
        "Can",
        "you",
        "check",
        "my",
        "order?",
    ]
    assert lines[2].endswith("Sure, it ships  [responded in 800 ms]")
    assert lines[3].endswith("Wait (no final)")
    assert lines[4].endswith("OK.  [responded in 500 ms]")
    assert lines[6].endswith("Bye.  [responded in 1700 ms]")
    assert lines[7].startswith(
        "response latency over 3 turns: p50 800 ms, p90 1700 ms, p99 1700 ms"
    )
    by_room = await relay_cli(summarized, "transcript", "la-1")
    assert by_room[1] == out
    missing = await relay_cli(summarized, "transcript", "nowhere")
    assert (
        missing[0] == 1
        and missing[2] == "relay: no session or room named 'nowhere' has a transcript\n"
    )


async def test_tail_transcripts(summarized: Settings) -> None:
    status, out, err = await relay_cli(
        summarized, "tail", "--transcripts", "--from-start", "--count", "3"
    )
    assert status == 0, err
    assert out.splitlines() == [
        '13:45:01.200 la-1 user:visitor "Can you check my order?"',
        '13:45:02.900 la-1 avatar:heygen "Sure, it ships"',
        '13:45:05.100 la-1 avatar:heygen "OK."',
    ]


async def test_report_route_behind_the_admin_token(
    summarized: Settings, redis: aioredis.Redis
) -> None:
    manager = RoomManager(lambda target: None, max_rooms=1)  # type: ignore[arg-type,return-value]

    async def ready() -> dict[str, bool]:
        return {}

    reader = SessionReader(redis, summarized.redis)
    app = build_app(manager, ready, TOKEN, mints_tokens=False, sessions=reader)
    async with TestClient(TestServer(app)) as http:
        assert (await http.get("/v1/sessions/s1/report")).status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        page = await http.get("/v1/sessions/s1/report", headers=auth)
        assert page.status == 200 and page.content_type == "text/html"
        assert "Can you check my order?" in await page.text()
        summary = await (await http.get("/v1/sessions/s1", headers=auth)).json()
        assert summary["latency"]["p50_ms"] == 800
        missing = await http.get("/v1/sessions/nope/report", headers=auth)
        assert missing.status == 404
        assert (await missing.json())["error"] == "no summary of session 'nope' (ended? expired?)"


def ensure_chromium() -> None:
    if not CHROMIUM.exists():
        subprocess.run([str(ROOT / "scripts/install-chromium.sh")], check=True, timeout=900)


async def test_the_report_page_in_chromium(summarized: Settings, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    await asyncio.to_thread(ensure_chromium)
    page_file = tmp_path / "report.html"
    status, _out, err = await relay_cli(summarized, "report", "s1", "-o", str(page_file))
    assert status == 0, err
    html = page_file.read_text("utf-8")
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "<script" not in html and "<link" not in html
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 760})
            await page.goto(page_file.as_uri())
            lanes = await page.eval_on_selector_all("g.lane", "els => els.map(e => e.dataset.role)")
            assert lanes == ["user", "avatar"]
            assert await page.locator("rect.span[data-role=user]").count() == 3
            assert await page.locator("rect.span[data-role=avatar]").count() == 3
            assert await page.locator("path.interruption").count() == 2
            assert await page.locator("rect.gap").count() == 1
            lines = await page.locator("li.utt .text").all_inner_texts()
            assert lines == [
                "Can you check my order?",
                "Sure, it ships",
                "Wait",
                "OK.",
                "Thanks bye",
                "Bye.",
            ]
            p50 = page.locator("[data-figure='response p50'] b")
            assert await p50.inner_text() == "800 ms"
            box = await page.locator("svg.timeline-svg").bounding_box()
            assert box is not None and box["width"] > 600  # laid out, not collapsed
            shot = tmp_path / "report.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("RELAY_UPDATE_DOCS_SCREENSHOT"):
                shutil.copy(shot, ROOT / "docs" / "analytics-report.png")
        finally:
            await browser.close()
