"""The status page in a real headless Chromium (Debian's), driven by Playwright, against the real lab:
problems first, healthy domains collapsed, and the server-side filter form submitted like a person would."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import sync_playwright

from tests.lab.exporter import Exporter, lab_config

OUTPUT = Path(__file__).parents[1] / "test-output"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian chromium not installed: run the README test command (./scripts/test.sh)")
    return path


def shown(page: Any) -> list[str]:
    """Every domain on the page in document order, as "section NAME" (in full) or "li NAME" (one line)."""
    return list(
        page.evaluate(
            "[...document.querySelectorAll('[data-domain]')]"
            ".map(n => n.tagName.toLowerCase() + ' ' + n.dataset.domain)"
        )
    )


def submit_filter(page: Any, name: str, state: str) -> None:
    page.fill('form.filter input[name="q"]', name)
    page.select_option('form.filter select[name="state"]', state)
    with page.expect_navigation(timeout=15_000):
        page.click('form.filter button[type="submit"]')


def test_status_page_problems_first_healthy_collapsed_and_filter(
    nsd_server: Any, smtp_lab: Any, start_exporter: Callable[..., Exporter]
) -> None:
    domains = [
        "healthy.lab.test",
        "primary-down.lab.test",
        "undeliverable.lab.test",
        "nullmx.lab.test",
        "cname.lab.test",
    ]
    exporter = start_exporter(lab_config(nsd_server.nameserver, smtp_lab.port, domains))
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            page.goto(exporter.url + "/", timeout=15_000)

            def section(domain: str) -> Any:
                return page.locator(f'section.domain[data-domain="{domain}"]')

            # Problems first and in full, most urgent first; healthy domains one line each, collapsed.
            assert shown(page) == [
                "section undeliverable.lab.test",
                "section primary-down.lab.test",
                "li nullmx.lab.test",
                "li healthy.lab.test",
                "li cname.lab.test",
            ]
            down = section("primary-down.lab.test")
            assert down.get_attribute("data-deliverable") == "1"
            assert down.get_attribute("data-primary-up") == "0"
            assert down.get_attribute("data-active-preference") == "20"
            assert "connection_refused" in down.inner_text()
            dead = section("undeliverable.lab.test")
            assert dead.get_attribute("data-deliverable") == "0"
            assert dead.get_attribute("data-active-preference") == "-1"
            assert page.locator('li.count[data-count="ok"]').inner_text() == "2 ok"
            group = page.locator('details[data-group="healthy"]')
            assert group.get_attribute("open") is None
            healthy_line = page.locator('li.line[data-domain="healthy.lab.test"]')
            assert not healthy_line.is_visible()
            page.screenshot(path=str(OUTPUT / "status-page.png"), full_page=True)
            group.locator("summary").click()
            assert healthy_line.is_visible()
            assert "cname_target" in page.locator('li.line[data-domain="cname.lab.test"]').inner_text()
            for href in ("/metrics", "/config"):
                assert page.locator(f'a[href="{href}"]').count() >= 1
            assert page.locator('a[href^="/probe?target="]').count() >= 1

            # The filter: part of the name (any case) and a state, sent as a plain GET form.
            submit_filter(page, "LAB.TEST", "ok")
            assert urlsplit(page.url).query == "q=LAB.TEST&state=ok"
            assert shown(page) == ["section healthy.lab.test", "section cname.lab.test"]
            assert page.input_value('input[name="q"]') == "LAB.TEST"
            assert page.input_value('select[name="state"]') == "ok"
            healthy = section("healthy.lab.test")
            assert healthy.get_attribute("data-deliverable") == "1"
            assert healthy.get_attribute("data-primary-up") == "1"
            assert healthy.get_attribute("data-active-preference") == "10"
            assert "cname_target" in section("cname.lab.test").inner_text()
            submit_filter(page, "null", "")
            assert shown(page) == ["section nullmx.lab.test"]
            assert "no mail by design" in section("nullmx.lab.test").inner_text()
            page.click("form.filter a.clear")
            page.wait_for_load_state()
            assert len(shown(page)) == 5

            # A healthy line links to that domain in full.
            page.locator('details[data-group="healthy"] summary').click()
            with page.expect_navigation(timeout=15_000):
                page.click('li.line[data-domain="healthy.lab.test"] a')
            assert shown(page) == ["section healthy.lab.test"]

            # Bad values never break the page: an unknown state is ignored with a note, markup stays text.
            page.goto(exporter.url + "/?state=bogus&q=" + quote("<script>alert(1)</script>"), timeout=15_000)
            note = page.locator("li.note").first
            assert note.inner_text() == 'Unknown state "bogus" ignored: showing every state.'
            assert page.input_value('input[name="q"]') == "<script>alert(1)</script>"
            assert shown(page) == []
            assert dialogs == []

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(exporter.url + "/", timeout=15_000)
            phone.locator('details[data-group="healthy"] summary').click()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"page scrolls sideways on a phone: {width}px"
            phone.screenshot(path=str(OUTPUT / "status-page-phone.png"), full_page=True)
        finally:
            browser.close()
