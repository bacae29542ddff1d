"""The status page rendered from hand-built reports: structure, verdicts, escaping, phone and laptop fit.

The HTML is parsed into a small tree with the standard library (mismatched tags fail the parse), so tests
select on the same classes and data-* attributes a browser test would. One test renders the page in the Debian
Chromium through Playwright to check it fits a phone and a laptop without horizontal scrolling.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

from mx_exporter.model import DnsStatus, DomainReport
from mx_exporter.statuspage import render_status_page
from tests.test_report_text import (
    FINISHED,
    HOSTILE_CNAME,
    HOSTILE_DETAIL,
    HOSTILE_NAME,
    dns_only,
    fallback,
    healthy,
    hostile,
    null_mx,
    primary_down,
    undeliverable,
    unresolvable_only,
)

VOID = {"meta", "br", "img", "link", "input", "hr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parts: list[Node | str] = field(default_factory=list)  # text and child elements, in document order

    @property
    def children(self) -> list[Node]:
        return [p for p in self.parts if isinstance(p, Node)]

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text() for p in self.parts)

    def all(self, tag: str | None = None, cls: str | None = None, **data: str) -> list[Node]:
        """Descendants matching a tag, a CSS class and data-* attributes (underscores become hyphens)."""
        found = []
        for child in self.children:
            classes = child.attrs.get("class", "").split()
            wanted = {f"data-{k.replace('_', '-')}": v for k, v in data.items()}
            if (
                (tag is None or child.tag == tag)
                and (cls is None or cls in classes)
                and all(child.attrs.get(k) == v for k, v in wanted.items())
            ):
                found.append(child)
            found += child.all(tag, cls, **data)
        return found

    def one(self, tag: str | None = None, cls: str | None = None, **data: str) -> Node:
        found = self.all(tag, cls, **data)
        assert len(found) == 1, f"expected one {tag}.{cls} {data}, found {len(found)}"
        return found[0]


class TreeBuilder(HTMLParser):
    """Strict enough for our own output: every non-void element must be closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].parts.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def parse(page: str) -> tuple[Node, str]:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root, builder.doctype


WATCHED = [
    "healthy.lab.test",
    "primary-down.lab.test",
    "undeliverable.lab.test",
    "nullmx.lab.test",
    "fallback.lab.test",
    "servfail.lab.test",
    "nxdomain.lab.test",
    "unresolvable.lab.test",
    "new.lab.test",
]


def reports() -> list[DomainReport]:
    return [
        healthy(),
        primary_down(),
        undeliverable(),
        null_mx(),
        fallback(),
        dns_only(DnsStatus.SERVFAIL, "all nameservers failed")(),
        dns_only(DnsStatus.NXDOMAIN)(),
        unresolvable_only(),
        dns_only(DnsStatus.TIMEOUT)(),  # not watched (e.g. removed by a reload): not shown
    ]


def render(**kw: object) -> str:
    args: dict[str, object] = {"watched": WATCHED, "version": "9.8.7", "now": FINISHED + 42}
    args.update(kw)
    return render_status_page(reports(), **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def page() -> Node:
    root, doctype = parse(render(probe_example="healthy.lab.test"))
    assert doctype.lower() == "doctype html"
    return root


def test_self_contained_responsive_page(page: Node) -> None:
    head = page.one("head")
    metas = {
        m.attrs.get("name") or m.attrs.get("http-equiv"): m.attrs.get("content") for m in head.all("meta")
    }
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    assert metas["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert "@media (max-width:700px)" in head.one("style").text()
    assert page.all("script") == [] and page.all("link") == [] and page.all("img") == []
    assert not [n for n in page.all() if "src" in n.attrs]  # nothing fetched from anywhere
    links = [a.attrs["href"] for a in page.one("nav").all("a")]
    assert links == ["/metrics", "/probe?target=healthy.lab.test", "/config"]
    assert "9.8.7" in page.one("header").text()


def test_one_section_per_watched_domain_in_order(page: Node) -> None:
    sections = page.all("section", "domain")
    assert [s.attrs["data-domain"] for s in sections] == WATCHED
    assert page.all(domain="timeout.lab.test") == []  # reports of domains no longer watched are not shown
    waiting = page.one("section", domain="new.lab.test")
    assert waiting.attrs["data-state"] == "waiting"
    assert "waiting for first probe" in waiting.text()
    assert "data-deliverable" not in waiting.attrs


@pytest.mark.parametrize(
    ("domain", "state", "deliverable", "primary_up", "active", "badges"),
    [
        ("healthy.lab.test", "ok", "1", "1", "10", ["deliverable", "primary up", "active tier: pref 10"]),
        (
            "primary-down.lab.test",
            "degraded",
            "1",
            "0",
            "20",
            ["deliverable", "primary down", "active tier: pref 20"],
        ),
        (
            "undeliverable.lab.test",
            "undeliverable",
            "0",
            "0",
            "-1",
            ["undeliverable", "primary down", "no active tier"],
        ),
        ("nullmx.lab.test", "null-mx", "0", "0", "-1", ["accepts no mail by design"]),
        ("fallback.lab.test", "ok", "1", "1", "0", ["deliverable", "primary up", "active tier: pref 0"]),
        ("servfail.lab.test", "dns-failure", "0", "0", "-1", ["DNS servfail"]),
        ("nxdomain.lab.test", "undeliverable", "0", "0", "-1", ["undeliverable"]),
    ],
)
def test_verdict_attributes_and_badges(
    page: Node, domain: str, state: str, deliverable: str, primary_up: str, active: str, badges: list[str]
) -> None:
    section = page.one("section", "domain", domain=domain)
    assert section.attrs["data-state"] == state
    assert "state-" + state in section.attrs["class"].split()
    assert (section.attrs["data-deliverable"], section.attrs["data-primary-up"]) == (deliverable, primary_up)
    assert section.attrs["data-active-preference"] == active
    assert [b.text() for b in section.one("div", "head").all("span", "badge")] == badges


def test_summary_counts(page: Node) -> None:
    summary = page.one("section", "summary")
    counts = {k[5:]: v for k, v in summary.attrs.items() if k.startswith("data-")}
    assert counts == {
        "watched": "9",
        "deliverable": "3",
        "primary-down": "1",
        "undeliverable": "3",
        "dns-failure": "1",
        "null-mx": "1",
        "waiting": "1",
    }
    assert summary.one("li", count="undeliverable").text() == "3undeliverable"
    assert [a.attrs["href"] for a in summary.all("a")] == [f"#domain-{d}" for d in WATCHED]
    assert [s.attrs["id"] for s in page.all("section", "domain")] == [f"domain-{d}" for d in WATCHED]


def test_address_rows(page: Node) -> None:
    section = page.one("section", domain="healthy.lab.test")
    rows = section.all("tr", "address")
    assert [(r.attrs["data-preference"], r.attrs["data-address"], r.attrs["data-outcome"]) for r in rows] == [
        ("10", "127.0.0.10", "accepted"),
        ("10", "::1", "accepted"),
        ("20", "127.0.0.11", "accepted"),
    ]
    cells = {td.attrs["data-label"]: td.text() for td in rows[0].all("td")}
    assert cells == {
        "Pref": "10",
        "Exchange": "mx1.healthy.lab.test",
        "Address": "127.0.0.10",
        "Family": "ipv4",
        "Outcome": "accepted",
        "Code": "220",
        "Connect": "1.2 ms",
        "Greeting": "34.5 ms",
        "STARTTLS": "yes TLSv1.3, cert ok",
        "Detail": "",
    }
    tiers = section.all("tbody", "tier")
    assert [(t.attrs["data-preference"], t.attrs["data-up"]) for t in tiers] == [("10", "1"), ("20", "1")]
    down = page.one("section", domain="primary-down.lab.test").one("tr", outcome="connection_refused")
    assert "outcome-bad" in down.attrs["class"].split() and down.attrs["data-up"] == "0"
    assert down.one("span", "detail").text() == "[Errno 111] Connection refused"
    assert (
        page.one("section", domain="primary-down.lab.test").one("tbody", preference="10").attrs["data-up"]
        == "0"
    )


def test_facts_flags_and_refresh_time(page: Node) -> None:
    healthy_text = page.one("section", domain="healthy.lab.test").one("ul", "facts").text()
    assert "TTL: 300 s" in healthy_text and "MX records: 2" in healthy_text and "tiers: 2" in healthy_text
    assert "last refresh: 2023-11-14T22:13:20Z (42 s ago)" in healthy_text
    assert (
        page.one("section", domain="healthy.lab.test").one("time").attrs["datetime"] == "2023-11-14T22:13:20Z"
    )
    assert "fallback to A/AAAA: yes" in page.one("section", domain="fallback.lab.test").text()
    assert "null MX: yes" in page.one("section", domain="nullmx.lab.test").text()
    unresolvable = page.one("section", domain="unresolvable.lab.test")
    assert unresolvable.one("li", "flag", kind="unresolvable_target").text().startswith("unresolvable_target")
    assert unresolvable.one("tr", "no-address").attrs["data-exchange"] == "nohost.unresolvable.lab.test"
    assert (
        "DNS: all nameservers failed"
        in page.one("section", domain="servfail.lab.test").one("ul", "flags").text()
    )
    assert (
        page.one("section", domain="servfail.lab.test").one("p", "verdict").text()
        == "DNS FAILURE: servfail (temporary)"
    )


def test_clock_behind_the_probe_never_shows_negative_age() -> None:
    root, _ = parse(render(now=FINISHED - 5))
    assert "(0 s ago)" in root.one("section", domain="healthy.lab.test").text()


def test_hostile_names_and_details_are_escaped() -> None:
    evil_domain = '"><script>alert(4)</script>'
    raw = render_status_page(
        [hostile()],
        watched=["evil.test", evil_domain],
        version="<i>v1</i>",
        now=FINISHED,
        probe_example='x"><script>alert(5)</script>',
    )
    for needle in ("<script", "<img", "<i>", "\x1b", "\x07", "\u202e"):
        assert needle not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.evil.test" in raw
    root, _ = parse(raw)
    assert root.all("script") == [] and root.all("img") == [] and root.all("i") == []
    section = root.one("section", domain="evil.test")
    assert (
        section.one("tr", outcome="greeting_4xx").attrs["data-exchange"] == HOSTILE_NAME
    )  # attribute round-trips
    assert section.one("span", "cname").text() == f"CNAME to {HOSTILE_CNAME}"
    assert (
        section.one("tr", outcome="greeting_4xx")
        .one("span", "detail")
        .text()
        .startswith("\\x1b]0;pwned\\x07")
    )
    assert HOSTILE_DETAIL not in root.text()
    waiting = root.one("section", domain=evil_domain)  # the odd watched name is shown, inert
    assert waiting.one("h2").text() == evil_domain and waiting.attrs["id"] == f"domain-{evil_domain}"
    probe = root.one("nav").all("a")[1].attrs["href"]
    assert probe == "/probe?target=x%22%3E%3Cscript%3Ealert%285%29%3C%2Fscript%3E"
    assert root.one("span", "version").text() == "<i>v1</i>"


def test_empty_watch_list() -> None:
    root, _ = parse(render_status_page([], watched=[], version="1", now=FINISHED))
    assert root.all("section", "domain") == []
    assert root.one("section", "summary").attrs["data-watched"] == "0"
    assert "No domains are watched." in root.text()


async def test_page_fits_a_phone_and_a_laptop() -> None:
    """Real Chromium: no horizontal scrolling at phone width, verdicts visible, nothing tries to run."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is needed for the browser check: apt-get install chromium"
    from playwright.async_api import async_playwright

    html = render_status_page(
        [*reports(), hostile()], watched=[*WATCHED, "evil.test"], version="1", now=FINISHED
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium)
        try:
            for width, height in ((390, 844), (1280, 800)):
                tab = await browser.new_page(viewport={"width": width, "height": height})
                dialogs: list[str] = []
                tab.on("dialog", lambda d, seen=dialogs: seen.append(d.message))
                await tab.set_content(html, timeout=10_000)
                assert await tab.evaluate("document.documentElement.scrollWidth") <= width
                verdict = tab.locator("section[data-domain='primary-down.lab.test'] .verdict")
                assert (
                    await verdict.inner_text() == "DEGRADED: primary tier down, delivering to backup pref 20"
                )
                assert await verdict.is_visible()
                assert dialogs == []
                await tab.close()
        finally:
            await browser.close()
