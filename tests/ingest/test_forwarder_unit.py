"""The forwarder's own unit tests (tests/ingest/web/forwarder.test.js), in the session's
Chromium: the module as relay ships it, with a fake fetch and fake clients."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, Route

from relay.ingest.http import forwarder_source
from tests.ingest.browser import NamespacedChromium

pytestmark = pytest.mark.browser
EXPECTED_TESTS = 15


def run_unit_tests(page: Page, base: str) -> list[dict[str, object]]:
    def serve(route: Route) -> None:
        route.fulfill(body=forwarder_source(), content_type="text/javascript")

    page.route(f"{base}/forwarder.js", serve)
    page.goto(f"{base}/unit.html")
    page.wait_for_function("window.ready === true", timeout=10_000)
    results: list[dict[str, object]] = page.evaluate("runTests()")
    return results


async def test_the_forwarders_unit_tests_pass_in_chromium(
    chromium: NamespacedChromium, web_base: str
) -> None:
    page = await chromium.new_page()
    results = await chromium.call(run_unit_tests, page, web_base)
    failed = [f"{r['name']}: {r['error']}" for r in results if not r["ok"]]
    assert failed == []
    assert len(results) == EXPECTED_TESTS
