"""The status page at ``/``: what an operator opens when an alert fires, for one domain or ten thousand.

Server-rendered HTML5 with inline CSS and no script, so it works offline, on a laptop and on a phone. Problems
come first and in full (at most ``FULL_LIMIT``, so the page stays bounded); waiting and healthy domains are one
line each inside closed ``<details>``, so a page of thousands of fine domains still opens on what is wrong.
The filter is a plain GET form (``q``: part of the name, ``state``) read here, because the page runs no script;
matching domains are then shown in full. Per-domain HTML lives in ``statuspage_sections``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

from mx_exporter.egress import BLOCKED_TEXT, Egress
from mx_exporter.model import DomainReport
from mx_exporter.statuspage_sections import (
    CALM,
    STATE_CSS,
    STATE_LABEL,
    WAITING,
    e,
    line,
    page_state,
    section,
    t,
)
from mx_exporter.text import utc_timestamp
from mx_exporter.verdicts import clean

# No script, no external fetches of any kind; the filter form may only submit to this page's origin.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
HEALTHY = frozenset(CALM)
PROBLEMS = frozenset(STATE_LABEL) - HEALTHY - {WAITING}
FULL_LIMIT = 500  # domains shown in full; the rest one line each, so 10,000 broken domains stay readable
MAX_QUERY = 253  # the longest domain name: a longer name filter can only match nothing

CSS = """
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#f6f7f9;--card:#fff;--muted:#5b6470;--line:#d8dde3;
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--card:#161b22;--muted:#8d96a0;
--line:#30363d;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--info:#58a6ff}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main,footer{max-width:78rem;margin:0 auto;padding:.75rem 1rem}
.egress{padding:.6rem .8rem;border-radius:.4rem;border:1px solid var(--line);background:var(--card)}
.egress.blocked{border-color:var(--bad);color:var(--bad)}.egress.suspected{border-color:var(--warn)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.5rem 1.5rem}
h1{font-size:1.35rem;margin:0}h2{font-size:1.15rem;margin:0;word-break:break-all}
nav a{margin-right:1rem}a{color:var(--info)}
.muted,.version{color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;
margin:0 0 1rem}
.domain{border-left:6px solid var(--muted)}
.line{margin:.15rem 0;padding:.1rem 0 .1rem .5rem;border-left:4px solid var(--muted);word-break:break-word}
.state-ok{border-left-color:var(--ok)}.state-degraded{border-left-color:var(--warn)}
.state-undeliverable,.state-dns-failure{border-left-color:var(--bad)}
.state-null-mx{border-left-color:var(--info)}
.counts{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;margin:0;padding:0;list-style:none}
.counts b{font-size:1.3rem;margin-right:.3rem}
.counts a{color:inherit;text-decoration:none}
.counts .zero{color:var(--muted)}
.filter{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem 1rem;margin:.7rem 0 0}
.filter input,.filter select,.filter button{font:inherit;max-width:100%}
.notes{margin:.5rem 0 0;padding-left:1.2rem;color:var(--warn)}
.group>summary{cursor:pointer;font-weight:600}
.lines{list-style:none;margin:.4rem 0 0;padding:0}
.badge{display:inline-block;border-radius:999px;padding:.05rem .6rem;font-size:.85rem;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.yes,.outcome-accepted .outcome{color:var(--ok)}
.no,.outcome-bad .outcome{color:var(--bad)}
.warn,.outcome-skipped .outcome{color:var(--warn)}
.info{color:var(--info)}
.head{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem .8rem}
.verdict{font-weight:600;margin:.4rem 0}
.facts{display:flex;flex-wrap:wrap;gap:.2rem 1.4rem;margin:.3rem 0;padding:0;list-style:none;
color:var(--muted)}
.facts b{color:var(--fg);font-weight:600}
.flags{margin:.4rem 0;padding-left:1.2rem}.flag{color:var(--warn)}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;margin-top:.5rem;font-size:.92rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;white-space:nowrap}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.detail,.name{word-break:break-word}
@media (max-width:700px){
 thead{display:none}table,tbody,tr,td{display:block;width:100%}
 tr{border-bottom:2px solid var(--line);padding:.3rem 0}td{border:0;padding:.1rem 0}
 td::before{content:attr(data-label) ": ";color:var(--muted);font-weight:600}
 td:empty{display:none}}
"""


class Row(NamedTuple):
    name: str  # as watched
    report: DomainReport | None  # None: waiting for the first probe
    state: str  # a key of STATE_LABEL


@dataclass(frozen=True)
class PageFilter:
    """What the operator asked to see, already checked; ``notes`` say what was ignored or cut."""

    q: str = ""
    state: str = ""
    notes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.q or self.state)

    def apply(self, rows: list[Row]) -> list[Row]:
        needle = self.q.casefold()
        return [r for r in rows if self.state in ("", r.state) and needle in r.name.casefold()]


def parse_filter(q: str | None, state: str | None) -> PageFilter:
    """Query values as sent: a bad value never fails the page, it is ignored (or cut) with a visible note."""
    notes = []
    name = (q or "").strip()
    if len(name) > MAX_QUERY:
        name = name[:MAX_QUERY]
        notes.append(f"The name filter was cut to its first {MAX_QUERY} characters.")
    wanted = (state or "").strip().lower()
    if wanted and wanted not in STATE_LABEL:
        notes.append(f'Unknown state "{clean(state or "", 40)}" ignored: showing every state.')
        wanted = ""
    return PageFilter(name, wanted, tuple(notes))


def _ordered(names: Sequence[str], by_domain: dict[str, DomainReport]) -> list[Row]:
    """Most urgent state first (the order of ``STATE_LABEL``); watched order within a state."""
    rank = {name: i for i, name in enumerate(STATE_LABEL)}
    rows = [Row(name, by_domain.get(name), page_state(by_domain.get(name))) for name in names]
    return sorted(rows, key=lambda row: rank[row.state])


def _form(wanted: PageFilter) -> str:
    options = "".join(
        f'<option value="{name}"{" selected" if name == wanted.state else ""}>{e(label)}</option>'
        for name, label in [("", "any state"), *STATE_LABEL.items()]
    )
    clear = '<a class="clear" href="?">show all</a>' if wanted.active else ""
    return (
        '<form class="filter" method="get" role="search">'
        f'<label>name <input type="search" name="q" value="{e(wanted.q)}" maxlength="{MAX_QUERY}"'
        ' placeholder="part of a domain name"></label>'
        f'<label>state <select name="state">{options}</select></label>'
        f'<button type="submit">Filter</button>{clear}</form>'
    )


def _summary(rows: list[Row], shown: int, wanted: PageFilter) -> str:
    """Counts of every watched domain per state (each a link to that state), the filter form and its notes."""
    counts = Counter(row.state for row in rows)
    lis = "".join(
        f'<li class="count {name} {STATE_CSS[name] if counts[name] else "zero"}" data-count="{name}">'
        f'<a href="?state={name}"><b>{counts[name]}</b> {e(label)}</a></li>'
        for name, label in STATE_LABEL.items()
    )
    attrs = " ".join(f'data-{name}="{counts[name]}"' for name in STATE_LABEL)
    notes = list(wanted.notes)
    if wanted.active:
        notes.append(f"{shown} of {len(rows)} watched domains match the filter.")
    items = "".join(f'<li class="note">{e(note)}</li>' for note in notes)
    listed = f'<ul class="notes">{items}</ul>' if items else ""
    return (
        f'<section class="card summary" data-watched="{len(rows)}" data-shown="{shown}" {attrs}>'
        f'<ul class="counts">{lis}</ul>{_form(wanted)}{listed}</section>'
    )


def _lines(rows: list[Row]) -> str:
    return f'<ul class="lines">{"".join(line(r.name, r.report, r.state) for r in rows)}</ul>'


def _group(name: str, title: str, rows: list[Row]) -> str:
    """Domains that need no reading, one line each, in a <details> left closed."""
    if not rows:
        return ""
    return (
        f'<details class="card group" data-group="{name}" data-count="{len(rows)}">'
        f"<summary><b>{len(rows)}</b> {e(title)}</summary>{_lines(rows)}</details>"
    )


def _beyond_limit(rows: list[Row], total: int, what: str) -> str:
    note = (
        f"The first {FULL_LIMIT} of {total} {what} are shown in full above; these {len(rows)} are one line "
        "each. Narrow the list with the filter above to see them in full."
    )
    return (
        f'<section class="card more" data-count="{len(rows)}"><p class="note">{e(note)}</p>'
        f"{_lines(rows)}</section>"
    )


def _domains(rows: list[Row], wanted: PageFilter, now: float) -> str:
    """Problems (or, when filtering, every match) in full up to the limit, then the collapsed groups."""
    if not rows:
        empty = "No watched domain matches the filter." if wanted.active else "No domains are watched."
        return f'<p class="card empty muted">{empty}</p>'
    full = rows if wanted.active else [r for r in rows if r.state in PROBLEMS]
    parts = [section(r.name, r.report, now) for r in full[:FULL_LIMIT]]
    if len(full) > FULL_LIMIT:
        what = "matching domains" if wanted.active else "problem domains"
        parts.append(_beyond_limit(full[FULL_LIMIT:], len(full), what))
    if wanted.active:
        return "".join(parts)
    healthy = [r for r in rows if r.state in HEALTHY]
    if healthy and not full:
        parts.append('<p class="card all-clear yes">No probed domain has a problem.</p>')
    parts.append(_group(WAITING, "waiting for a first probe", [r for r in rows if r.state == WAITING]))
    parts.append(_group("healthy", f"healthy: {STATE_LABEL['ok']} or {STATE_LABEL['null-mx']}", healthy))
    return "".join(parts)


def _egress_note(egress: Egress | None, suspected: bool, ipv6_no_route: bool) -> str:
    ipv6 = (
        '<p class="egress suspected" role="status">This exporter\'s host has no IPv6 route: IPv6 results say '
        "nothing about the mail hosts (they never count as ipv6_broken).</p>"
        if ipv6_no_route
        else ""
    )
    return _egress_blocked_note(egress, suspected) + ipv6


def _egress_blocked_note(egress: Egress | None, suspected: bool) -> str:
    if egress is not None and not egress.up:
        return (
            f'<p class="egress blocked" role="alert"><b>{e(BLOCKED_TEXT)}</b> ({e(egress.state.value)}: '
            f"{t(egress.detail)}). The verdicts below are from that refresh and inconclusive.</p>"
        )
    if suspected:
        return (
            '<p class="egress suspected" role="status">Nearly every address timed out connecting in the last '
            "refresh: outbound port 25 may be blocked from this exporter (set <code>egress.canaries</code> to "
            "know). Verdicts are shown unchanged.</p>"
        )
    return ""


def render_status_page(
    reports: Sequence[DomainReport],
    *,
    watched: Sequence[str],
    version: str,
    now: float,
    probe_example: str = "example.org",
    q: str | None = None,
    state: str | None = None,
    egress: Egress | None = None,
    egress_suspected: bool = False,
    ipv6_no_route: bool = False,
) -> str:
    """The whole page for the watched domains (reports for others are not shown), filtered by ``q``/``state``.
    A failed egress check comes first: while it lasts no verdict below can be trusted."""
    by_domain = {r.domain: r for r in reports}
    names = list(dict.fromkeys(watched))
    rows = _ordered(names, by_domain)
    wanted = parse_filter(q, state)
    shown = wanted.apply(rows) if wanted.active else rows
    probe = f"/probe?target={quote(probe_example, safe='')}"
    generated = utc_timestamp(now)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>mx-exporter: {len(names)} domains</title><style>{CSS}</style></head><body>"
        f'<header><h1>mx-exporter</h1><span class="version">{e(version)}</span><nav>'
        f'<a href="/metrics">/metrics</a><a href="{e(probe)}">/probe?target={e(probe_example)}</a>'
        '<a href="/config">/config</a></nav></header>'
        f"<main>{_egress_note(egress, egress_suspected, ipv6_no_route)}{_summary(rows, len(shown), wanted)}"
        f"{_domains(shown, wanted, now)}</main>"
        f'<footer class="muted">Rendered <time datetime="{generated}">{generated}</time>.</footer>'
        "</body></html>\n"
    )
