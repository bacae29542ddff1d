"""The status page in a real headless Chromium (Debian's), driven by Playwright, against the real lab."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_status_page_shows_verdicts(
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
            page.goto(exporter.url + "/", timeout=15_000)

            def section(domain: str) -> Any:
                return page.locator(f'section.domain[data-domain="{domain}"]')

            healthy = section("healthy.lab.test")
            assert healthy.get_attribute("data-deliverable") == "1"
            assert healthy.get_attribute("data-primary-up") == "1"
            assert healthy.get_attribute("data-active-preference") == "10"
            down = section("primary-down.lab.test")
            assert down.get_attribute("data-deliverable") == "1"
            assert down.get_attribute("data-primary-up") == "0"
            assert down.get_attribute("data-active-preference") == "20"
            assert "connection_refused" in down.inner_text()
            dead = section("undeliverable.lab.test")
            assert dead.get_attribute("data-deliverable") == "0"
            assert dead.get_attribute("data-active-preference") == "-1"
            assert "no mail by design" in section("nullmx.lab.test").inner_text()
            assert "cname_target" in section("cname.lab.test").inner_text()
            for href in ("/metrics", "/config"):
                assert page.locator(f'a[href="{href}"]').count() >= 1
            assert page.locator('a[href^="/probe?target="]').count() >= 1
            page.screenshot(path=str(OUTPUT / "status-page.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(exporter.url + "/", timeout=15_000)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"page scrolls sideways on a phone: {width}px"
            phone.screenshot(path=str(OUTPUT / "status-page-phone.png"), full_page=True)
        finally:
            browser.close()
