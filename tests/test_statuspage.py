"""The status page rendered from assessed reports (tests/builders.py): order, collapse, filter, verdicts,
escaping, size.

The HTML is parsed into a small tree with the standard library (mismatched tags fail the parse), so tests
select on the same classes and data-* attributes a browser test would. One test renders the page in the Debian
Chromium through Playwright to check it fits a phone and a laptop without horizontal scrolling.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from mx_exporter.assess import Expectations
from mx_exporter.model import DnsStatus, DomainReport, Misconfiguration, TlsFacts
from mx_exporter.statuspage import FULL_LIMIT, MAX_QUERY, PageFilter, parse_filter, render_status_page
from tests import builders
from tests.builders import FINISHED, dns_only, fallback, healthy, undeliverable

VOID = {"meta", "br", "img", "link", "input", "hr"}
CNAME = frozenset({Misconfiguration.CNAME_TARGET})


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
# The same domains, most urgent first: undeliverable, DNS failure, primary down, waiting, null MX, OK.
PROBLEMS_FIRST = [
    "undeliverable.lab.test",
    "nxdomain.lab.test",
    "unresolvable.lab.test",
    "servfail.lab.test",
    "primary-down.lab.test",
]
WAITING_LINES = ["new.lab.test"]
HEALTHY_LINES = ["nullmx.lab.test", "healthy.lab.test", "fallback.lab.test"]


def reports() -> list[DomainReport]:
    return [
        healthy(),
        builders.primary_down(),
        undeliverable(),
        builders.null_mx(),
        fallback(),
        dns_only(DnsStatus.SERVFAIL, "all nameservers failed")(),
        dns_only(DnsStatus.NXDOMAIN)(),
        builders.unresolvable_only(),
        dns_only(DnsStatus.TIMEOUT)(),  # not watched (e.g. removed by a reload): not shown
    ]


def render(**kw: object) -> str:
    args: dict[str, object] = {"watched": WATCHED, "version": "9.8.7", "now": FINISHED + 42}
    args.update(kw)
    return render_status_page(reports(), **args)  # type: ignore[arg-type]


def control(form: Node, name: str) -> Node:
    """The form's <input> or <select> with this name."""
    return next(n for n in form.all() if n.tag in ("input", "select") and n.attrs.get("name") == name)


def domains_in_order(root: Node) -> list[tuple[str, str]]:
    """Every domain shown, as (tag, name) in document order: a full <section> or a one-line <li>."""
    return [(n.tag, n.attrs["data-domain"]) for n in root.all() if "data-domain" in n.attrs]


@pytest.fixture(scope="module")
def page() -> Node:
    root, doctype = parse(render(probe_example="healthy.lab.test"))
    assert doctype.lower() == "doctype html"
    return root


@pytest.fixture(scope="module")
def full_page() -> Node:
    """Filtered to a name every watched domain contains: all of them in full."""
    return parse(render(q="lab.test"))[0]


def test_self_contained_responsive_page(page: Node) -> None:
    head = page.one("head")
    metas = {
        m.attrs.get("name") or m.attrs.get("http-equiv"): m.attrs.get("content") for m in head.all("meta")
    }
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    assert (
        metas["Content-Security-Policy"]
        == "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    )
    assert "@media (max-width:700px)" in head.one("style").text()
    assert page.all("script") == [] and page.all("link") == [] and page.all("img") == []
    assert not [n for n in page.all() if "src" in n.attrs]  # nothing fetched from anywhere
    links = [a.attrs["href"] for a in page.one("nav").all("a")]
    assert links == ["/metrics", "/probe?target=healthy.lab.test", "/config"]
    assert "9.8.7" in page.one("header").text()


def test_problems_first_in_full_then_waiting_and_healthy_collapsed(page: Node) -> None:
    assert domains_in_order(page) == [
        *(("section", d) for d in PROBLEMS_FIRST),
        *(("li", d) for d in WAITING_LINES + HEALTHY_LINES),
    ]
    assert page.all(domain="timeout.lab.test") == []  # reports of domains no longer watched are not shown
    groups = page.all("details", "group")
    assert [(g.attrs["data-group"], g.attrs["data-count"]) for g in groups] == [
        ("waiting", "1"),
        ("healthy", "3"),
    ]
    assert all("open" not in g.attrs for g in groups)  # collapsed until the operator opens them
    healthy_group = page.one("details", group="healthy")
    assert healthy_group.one("summary").text() == "3 healthy: ok or null MX"
    assert healthy_group.all("tr") == [] and healthy_group.all("section") == []  # one line each, no tables
    main = page.one("main").children
    assert [n.tag for n in main] == ["section"] * 6 + ["details"] * 2  # summary, 5 problems, 2 groups
    assert page.all("p", "all-clear") == []


def test_healthy_line_shows_state_verdict_flags_and_links_to_its_full_view(page: Node) -> None:
    line = page.one("li", "line", domain="healthy.lab.test")
    assert line.attrs["data-state"] == "ok" and line.attrs["id"] == "domain-healthy.lab.test"
    assert line.one("a").attrs["href"] == "?q=healthy.lab.test"
    assert [b.text() for b in line.all("span", "badge")] == ["ok"]
    assert line.one("span", "verdict-text").text() == "DELIVERABLE, primary up (pref 10)"
    assert page.one("li", domain="nullmx.lab.test").one("span", "state").text() == "null MX"
    waiting = page.one("li", domain="new.lab.test")
    assert waiting.attrs["data-state"] == "waiting" and "waiting for first probe" in waiting.text()
    # mx1 flagged as a CNAME; two tiers as expected, but ::1 and mx2 accept without STARTTLS
    flagged = builders.renamed(
        healthy(Expectations(min_tiers=2, starttls=True), problems=CNAME), "cname.lab.test"
    )
    assert flagged.verdict.expectations == {"min_tiers": True, "starttls": False}
    root, _ = parse(render_status_page([flagged], watched=["cname.lab.test"], version="1", now=FINISHED))
    badges = root.one("li", domain="cname.lab.test").all("span", "flag")
    assert [b.text() for b in badges] == [
        "cname_target",
        "expectation starttls",
    ]  # an OK line keeps its flags


def test_all_clear_note_only_when_nothing_is_wrong() -> None:
    root, _ = parse(render_status_page([healthy()], watched=["healthy.lab.test"], version="1", now=FINISHED))
    assert root.one("p", "all-clear").text() == "No probed domain has a problem."
    root, _ = parse(render_status_page([], watched=["new.lab.test"], version="1", now=FINISHED))
    assert root.all("p", "all-clear") == []  # nothing probed yet: nothing to vouch for


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
    full_page: Node,
    domain: str,
    state: str,
    deliverable: str,
    primary_up: str,
    active: str,
    badges: list[str],
) -> None:
    section = full_page.one("section", "domain", domain=domain)
    assert section.attrs["data-state"] == state
    assert "state-" + state in section.attrs["class"].split()
    assert (section.attrs["data-deliverable"], section.attrs["data-primary-up"]) == (deliverable, primary_up)
    assert section.attrs["data-active-preference"] == active
    assert [b.text() for b in section.one("div", "head").all("span", "badge")] == badges


def test_summary_counts_every_state_and_links_to_it(page: Node) -> None:
    summary = page.one("section", "summary")
    counts = {k[5:]: v for k, v in summary.attrs.items() if k.startswith("data-")}
    assert counts == {
        "watched": "9",
        "shown": "9",
        "undeliverable": "3",
        "dns-failure": "1",
        "degraded": "1",
        "waiting": "1",
        "null-mx": "1",
        "ok": "2",
    }
    assert summary.one("li", count="undeliverable").text() == "3 undeliverable"
    assert summary.one("li", count="degraded").text() == "1 primary down"
    assert [a.attrs["href"] for a in summary.one("ul", "counts").all("a")] == [
        f"?state={s}" for s in ("undeliverable", "dns-failure", "degraded", "waiting", "null-mx", "ok")
    ]
    assert summary.all("ul", "notes") == []  # no filter, nothing to say


def test_filter_form_is_a_plain_get_form(page: Node) -> None:
    form = page.one("form", "filter")
    assert form.attrs["method"] == "get" and "action" not in form.attrs  # submits to this very page
    box = control(form, "q")
    assert box.attrs["value"] == "" and box.attrs["maxlength"] == "253"
    select = control(form, "state")
    values = [o.attrs["value"] for o in select.all("option")]
    assert values == ["", "undeliverable", "dns-failure", "degraded", "waiting", "null-mx", "ok"]
    assert [o.attrs["value"] for o in select.all("option") if "selected" in o.attrs] == [""]
    assert form.all("button")[0].attrs["type"] == "submit"
    assert form.all("a", "clear") == []


@pytest.mark.parametrize(
    ("q", "state", "shown"),
    [
        ("DOWN", None, ["primary-down.lab.test"]),  # case-free substring
        ("  down ", "", ["primary-down.lab.test"]),  # blanks around the name are not part of it
        (None, "ok", ["healthy.lab.test", "fallback.lab.test"]),
        ("", "WAITING", ["new.lab.test"]),
        ("lab", "undeliverable", ["undeliverable.lab.test", "nxdomain.lab.test", "unresolvable.lab.test"]),
        ("nx", "undeliverable", ["nxdomain.lab.test"]),
        ("nx", "ok", []),
        ("lab.test", None, PROBLEMS_FIRST + WAITING_LINES + HEALTHY_LINES),  # matches in full, urgent first
    ],
)
def test_filter_by_name_and_state(q: str | None, state: str | None, shown: list[str]) -> None:
    root, _ = parse(render(q=q, state=state))
    assert domains_in_order(root) == [("section", d) for d in shown]  # matching domains in full, nothing else
    assert root.all("details") == []
    summary = root.one("section", "summary")
    assert summary.attrs["data-shown"] == str(len(shown)) and summary.attrs["data-watched"] == "9"
    assert summary.attrs["data-undeliverable"] == "3"  # counts stay those of every watched domain
    assert summary.one("li", "note").text() == f"{len(shown)} of 9 watched domains match the filter."
    form = root.one("form")
    assert control(form, "q").attrs["value"] == (q or "").strip()
    selected = [o.attrs["value"] for o in form.all("option") if "selected" in o.attrs]
    assert selected == [(state or "").lower()]  # "" is "any state"
    assert form.one("a", "clear").attrs["href"] == "?"
    if not shown:
        assert root.one("p", "empty").text() == "No watched domain matches the filter."


def test_unknown_state_is_ignored_with_a_note() -> None:
    hostile_state = '"><script>alert(7)</script>'
    raw = render(state=hostile_state)
    assert "<script" not in raw
    root, _ = parse(raw)
    assert domains_in_order(root)[:5] == [("section", d) for d in PROBLEMS_FIRST]  # as if unfiltered
    assert len(root.all("details", "group")) == 2
    note = root.one("section", "summary").one("li", "note").text()
    assert note == f'Unknown state "{hostile_state}" ignored: showing every state.'
    assert [o.attrs["value"] for o in root.one("form").all("option") if "selected" in o.attrs] == [""]
    root, _ = parse(render(state="bogus", q="healthy"))
    notes = [n.text() for n in root.all("li", "note")]
    assert notes == [
        'Unknown state "bogus" ignored: showing every state.',
        "1 of 9 watched domains match the filter.",
    ]
    assert domains_in_order(root) == [("section", "healthy.lab.test")]  # the name filter still applies


def test_overlong_name_filter_is_cut_with_a_note() -> None:
    long = "healthy.lab.test" + "x" * 400
    root, _ = parse(render(q=long))
    assert control(root.one("form"), "q").attrs["value"] == long[:MAX_QUERY]
    assert root.all("li", "note")[0].text() == "The name filter was cut to its first 253 characters."
    assert domains_in_order(root) == []


@pytest.mark.parametrize(
    ("q", "state", "expected"),
    [
        (None, None, PageFilter()),
        ("", "", PageFilter()),
        ("  Example.ORG ", " Degraded ", PageFilter("Example.ORG", "degraded")),
        (
            "a" * 254,
            "ok",
            PageFilter("a" * 253, "ok", ("The name filter was cut to its first 253 characters.",)),
        ),
        (
            None,
            "deliverable",
            PageFilter("", "", ('Unknown state "deliverable" ignored: showing every state.',)),
        ),
        (None, "x\x1b[2J", PageFilter("", "", ('Unknown state "x\\x1b[2J" ignored: showing every state.',))),
    ],
)
def test_parse_filter(q: str | None, state: str | None, expected: PageFilter) -> None:
    assert parse_filter(q, state) == expected
    assert parse_filter(q, state).active == bool(expected.q or expected.state)


def test_address_rows(full_page: Node) -> None:
    section = full_page.one("section", domain="healthy.lab.test")
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
    assert [td.text() for td in rows[1].all("td")][5:9] == ["220", "1.2 ms", "34.5 ms", "no"]
    assert [td.attrs.get("class") for td in rows[0].all("td")][:6] == ["num", None, None, None, None, "num"]
    tiers = section.all("tbody", "tier")
    assert [(t.attrs["data-preference"], t.attrs["data-up"]) for t in tiers] == [("10", "1"), ("20", "1")]
    down = full_page.one("section", domain="primary-down.lab.test").one("tr", outcome="connection_refused")
    assert "outcome-bad" in down.attrs["class"].split() and down.attrs["data-up"] == "0"
    missing = {td.attrs["data-label"]: td.text() for td in down.all("td")}
    assert [missing[h] for h in ("Code", "Connect", "Greeting", "STARTTLS")] == ["-", "-", "-", "-"]
    assert down.one("span", "detail").text() == "[Errno 111] Connection refused"
    assert (
        full_page.one("section", domain="primary-down.lab.test")
        .one("tbody", preference="10")
        .attrs["data-up"]
        == "0"
    )


def test_facts_flags_and_refresh_time(full_page: Node) -> None:
    healthy_text = full_page.one("section", domain="healthy.lab.test").one("ul", "facts").text()
    assert "TTL: 300 s" in healthy_text and "MX records: 2" in healthy_text and "tiers: 2" in healthy_text
    assert "last refresh: 2026-01-01T00:00:00Z (42 s ago)" in healthy_text
    assert (
        full_page.one("section", domain="healthy.lab.test").one("time").attrs["datetime"]
        == "2026-01-01T00:00:00Z"
    )
    assert "fallback to A/AAAA: yes" in full_page.one("section", domain="fallback.lab.test").text()
    assert "null MX: yes" in full_page.one("section", domain="nullmx.lab.test").text()
    down_facts = full_page.one("section", domain="primary-down.lab.test").one("ul", "facts").text()
    for sender in ("postfix", "exim", "qmail"):  # one fact per sender profile, as check says it
        assert f"{sender}: delivered to pref 20 (mx2.primary-down.lab.test)" in down_facts
    unresolvable = full_page.one("section", domain="unresolvable.lab.test")
    assert unresolvable.one("li", "flag", kind="unresolvable_target").text().startswith("unresolvable_target")
    assert unresolvable.one("tr", "no-address").attrs["data-exchange"] == "nohost.unresolvable.lab.test"
    servfail = full_page.one("section", domain="servfail.lab.test")
    assert "DNS: all nameservers failed" in servfail.one("ul", "flags").text()
    assert servfail.one("p", "verdict").text() == "DNS FAILURE: servfail (temporary)"


def test_clock_behind_the_probe_never_shows_negative_age() -> None:
    root, _ = parse(render(now=FINISHED - 5, q="healthy"))
    assert "(0 s ago)" in root.one("section", domain="healthy.lab.test").text()


def test_hostile_names_details_and_filter_values_are_escaped() -> None:
    evil_domain = '"><script>alert(4)</script>'
    raw = render_status_page(
        [builders.hostile()],
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
    section = root.one("section", domain="evil.test")  # degraded: a problem, shown in full
    assert (
        section.one("tr", outcome="greeting_4xx").attrs["data-exchange"] == builders.HOSTILE_NAME
    )  # attribute round-trips
    assert section.one("span", "cname").text() == f"CNAME to {builders.HOSTILE_CNAME}"
    assert (
        section.one("tr", outcome="greeting_4xx")
        .one("span", "detail")
        .text()
        .startswith("\\x1b]0;pwned\\x07")
    )
    assert builders.HOSTILE_DETAIL not in root.text()
    waiting = root.one("li", "line", domain=evil_domain)  # the odd watched name is shown, inert
    assert waiting.one("a").text() == evil_domain and waiting.attrs["id"] == f"domain-{evil_domain}"
    assert waiting.one("a").attrs["href"] == "?q=" + quote(evil_domain, safe="")
    probe = root.one("nav").all("a")[1].attrs["href"]
    assert probe == "/probe?target=x%22%3E%3Cscript%3Ealert%285%29%3C%2Fscript%3E"
    assert root.one("span", "version").text() == "<i>v1</i>"

    evil_q = '"><script>alert(6)</script>'
    raw = render_status_page([builders.hostile()], watched=["evil.test"], version="1", now=FINISHED, q=evil_q)
    assert "<script" not in raw
    root, _ = parse(raw)
    assert root.all("script") == []
    assert control(root.one("form"), "q").attrs["value"] == evil_q  # the typed value round-trips, inert
    assert root.one("p", "empty").text() == "No watched domain matches the filter."


def test_a_hostile_tls_version_is_cleaned_and_escaped_in_the_starttls_cell() -> None:
    tls = TlsFacts(True, "TLSv1.3\x1b[31m<i>", chain_valid=True, names=("mx.tls.lab.test",))
    r = builders.report(
        "tls.lab.test",
        builders.ex("mx.tls.lab.test", 10, builders.addr("127.0.0.10", starttls_advertised=True, tls=tls)),
    )
    raw = render_status_page([r], watched=["tls.lab.test"], version="1", now=FINISHED, q="tls")
    assert "<i>" not in raw and "\x1b" not in raw
    assert "yes TLSv1.3\\x1b[31m&lt;i&gt;, cert ok</td>" in raw
    root, _ = parse(raw)
    cell = root.one("tr", address="127.0.0.10").one("td", label="STARTTLS")
    assert cell.text() == "yes TLSv1.3\\x1b[31m<i>, cert ok"


def test_empty_watch_list() -> None:
    root, _ = parse(render_status_page([], watched=[], version="1", now=FINISHED))
    assert root.all("section", "domain") == [] and root.all("details") == []
    assert root.one("section", "summary").attrs["data-watched"] == "0"
    assert root.one("p", "empty").text() == "No domains are watched."


STATE_ORDER = ["undeliverable", "dns-failure", "degraded", "waiting", "null-mx", "ok"]


def test_ten_thousand_domains_stay_ordered_collapsed_and_bounded() -> None:
    """3,000 problems (only FULL_LIMIT in full), 1,000 waiting, 6,000 healthy: structure and size, not time."""
    kinds: list[tuple[str, Callable[[], DomainReport] | None]] = [
        ("ok", healthy),
        ("undeliverable", undeliverable),
        ("dns-failure", dns_only(DnsStatus.SERVFAIL, "all nameservers failed")),
        ("degraded", builders.primary_down),
        ("waiting", None),
        ("null-mx", builders.null_mx),
        ("ok", healthy),
        ("ok", fallback),
        ("ok", healthy),
        ("ok", healthy),
    ]
    names = [f"d{i:05d}.example.org" for i in range(10_000)]
    state_of = {name: kinds[i % 10][0] for i, name in enumerate(names)}
    watched_reports = [
        builders.renamed(b(), n) for i, n in enumerate(names) if (b := kinds[i % 10][1]) is not None
    ]
    raw = render_status_page(watched_reports, watched=names, version="1", now=FINISHED)
    assert len(raw) < 10_000 * 500  # a few hundred bytes per domain: not ten thousand address tables
    root, _ = parse(raw)

    shown = domains_in_order(root)
    expected = sorted(names, key=lambda n: STATE_ORDER.index(state_of[n]))  # stable: watched order kept
    assert [name for _, name in shown] == expected  # each domain exactly once, most urgent first
    assert [tag for tag, _ in shown] == ["section"] * FULL_LIMIT + ["li"] * (10_000 - FULL_LIMIT)
    assert [n.attrs["data-state"] for n in root.all("section", "domain")] == ["undeliverable"] * FULL_LIMIT
    more = root.one("section", "more")
    assert more.attrs["data-count"] == str(3_000 - FULL_LIMIT)
    assert {li.attrs["data-state"] for li in more.all("li", "line")} == {
        "undeliverable",
        "dns-failure",
        "degraded",
    }
    assert more.one("p", "note").text().startswith("The first 500 of 3000 problem domains are shown in full")
    groups = {g.attrs["data-group"]: g for g in root.all("details", "group")}
    assert {k: g.attrs["data-count"] for k, g in groups.items()} == {"waiting": "1000", "healthy": "6000"}
    assert all("open" not in g.attrs for g in groups.values())
    assert len(root.all("tr")) <= FULL_LIMIT * 3  # address rows only for the domains shown in full
    summary = root.one("section", "summary")
    assert (summary.attrs["data-undeliverable"], summary.attrs["data-ok"]) == ("1000", "5000")


async def test_page_fits_a_phone_and_a_laptop() -> None:
    """Real Chromium: no horizontal scrolling at phone width (healthy list opened too), nothing tries to run."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is needed for the browser check: apt-get install chromium"
    from playwright.async_api import async_playwright

    html = render_status_page(
        [*reports(), builders.hostile()], watched=[*WATCHED, "evil.test"], version="1", now=FINISHED
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
                healthy_line = tab.locator("li[data-domain='healthy.lab.test']")
                assert not await healthy_line.is_visible()
                await tab.locator("details[data-group='healthy'] > summary").click()
                assert await healthy_line.is_visible()
                assert await tab.evaluate("document.documentElement.scrollWidth") <= width
                assert dialogs == []
                await tab.close()
        finally:
            await browser.close()
