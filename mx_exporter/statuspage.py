"""The status page at ``/``: what an operator opens when an alert fires.

Server-rendered HTML5 with inline CSS and no script, so it works offline, on a laptop and on a phone. Every
value that came from DNS or an SMTP peer (domain, exchange names, CNAME targets, details) goes through
``html.escape``; a Content-Security-Policy that forbids scripts backs that up. Stable CSS classes and
``data-*`` attributes let tests (and curious operators) select verdicts without parsing prose.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from mx_exporter.model import AddressResult, DomainReport, Exchange, SmtpOutcome, Tier
from mx_exporter.report_text import (
    EXIT_DNS_ERROR,
    EXIT_OK,
    EXIT_PRIMARY_DOWN,
    EXIT_UNDELIVERABLE,
    MISCONFIGURATION_TEXT,
    clean,
    dns_is_notable,
    exit_code,
    verdict_line,
)

WAITING = "waiting"
CSP = "default-src 'none'; style-src 'unsafe-inline'"  # no script, no external fetches of any kind
STATE_LABEL = {
    "ok": "OK",
    "degraded": "primary down",
    "undeliverable": "undeliverable",
    "null-mx": "null MX",
    "dns-failure": "DNS failure",
    WAITING: "waiting",
}
_STATE_CSS = {
    "ok": "yes",
    "degraded": "warn",
    "undeliverable": "no",
    "dns-failure": "no",
    "null-mx": "info",
    WAITING: "muted",
}

CSS = """
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#f6f7f9;--card:#fff;--muted:#5b6470;--line:#d8dde3;
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--card:#161b22;--muted:#8d96a0;
--line:#30363d;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--info:#58a6ff}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main,footer{max-width:78rem;margin:0 auto;padding:.75rem 1rem}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.5rem 1.5rem}
h1{font-size:1.35rem;margin:0}h2{font-size:1.15rem;margin:0;word-break:break-all}
nav a{margin-right:1rem}a{color:var(--info)}
.muted,.version{color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;
margin:0 0 1rem}
.domain{border-left:6px solid var(--muted)}
.state-ok{border-left-color:var(--ok)}.state-degraded{border-left-color:var(--warn)}
.state-undeliverable,.state-dns-failure{border-left-color:var(--bad)}
.state-null-mx{border-left-color:var(--info)}
.counts{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;margin:0;padding:0;list-style:none}
.counts b{font-size:1.3rem;margin-right:.3rem}
.index{display:flex;flex-wrap:wrap;gap:.4rem;margin:.6rem 0 0;padding:0;list-style:none}
.badge{display:inline-block;border-radius:999px;padding:.05rem .6rem;font-size:.85rem;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.yes,.state-ok>.badge,.outcome-accepted .outcome{color:var(--ok)}
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

_HEADERS = (
    "Pref",
    "Exchange",
    "Address",
    "Family",
    "Outcome",
    "Code",
    "Connect",
    "Greeting",
    "STARTTLS",
    "Detail",
)


def e(value: object) -> str:
    """Escape for HTML text and attribute values; every interpolation goes through here."""
    return html.escape(str(value), quote=True)


def t(value: str) -> str:
    """Visible text from DNS or a peer: control/bidi characters made visible, bounded, then escaped."""
    return e(clean(value))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _state(report: DomainReport | None) -> str:
    if report is None:
        return WAITING
    if report.resolution.null_mx:
        return "null-mx"
    return {
        EXIT_OK: "ok",
        EXIT_PRIMARY_DOWN: "degraded",
        EXIT_UNDELIVERABLE: "undeliverable",
        EXIT_DNS_ERROR: "dns-failure",
    }[exit_code(report)]


def _when(report: DomainReport, now: float) -> str:
    iso = datetime.fromtimestamp(report.finished_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ago = max(0, round(now - report.finished_at))
    return f'<time datetime="{e(iso)}">{e(iso)}</time> ({ago} s ago)'


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f} ms"


def _badge(css: str, text: str) -> str:
    return f'<span class="badge {css}">{e(text)}</span>'


def _badges(report: DomainReport) -> str:
    resolution, verdict = report.resolution, report.verdict
    if resolution.null_mx:
        return _badge("null-mx info", "accepts no mail by design")
    if exit_code(report) == EXIT_DNS_ERROR:
        return _badge("dns-failure no", f"DNS {resolution.status.value}")
    if not report.tiers:
        return _badge("deliverable no", "undeliverable")
    parts = [
        _badge(
            "deliverable " + ("yes" if verdict.deliverable else "no"),
            "deliverable" if verdict.deliverable else "undeliverable",
        ),
        _badge(
            "primary-up " + ("yes" if verdict.primary_up else "no"),
            "primary up" if verdict.primary_up else "primary down",
        ),
    ]
    active = verdict.active_preference
    parts.append(
        _badge(
            "active-tier " + ("info" if active >= 0 else "no"),
            f"active tier: pref {active}" if active >= 0 else "no active tier",
        )
    )
    return " ".join(parts)


def _facts(report: DomainReport, now: float) -> str:
    resolution, verdict = report.resolution, report.verdict
    items = [
        ("DNS", resolution.status.value),
        ("MX records", str(resolution.mx_records)),
        ("tiers", str(len(report.tiers))),
        ("TTL", "-" if resolution.ttl is None else f"{resolution.ttl} s"),
        ("fallback to A/AAAA", "yes" if resolution.fallback_to_a else "no"),
        ("null MX", "yes" if resolution.null_mx else "no"),
        ("probe", f"{report.probe_seconds:.2f} s"),
    ]
    for sender, pref in sorted(verdict.delivery_preference.items()):
        items.append((f"sender {sender.value}", "queue" if pref < 0 else f"pref {pref}"))
    lis = "".join(f"<li>{e(k)}: <b>{e(v)}</b></li>" for k, v in items)
    return f'<ul class="facts">{lis}<li class="refreshed">last refresh: <b>{_when(report, now)}</b></li></ul>'


def _flags(report: DomainReport) -> str:
    resolution = report.resolution
    items = [
        f'<li class="flag" data-kind="{e(kind.value)}"><b>{e(kind.value)}</b>: '
        f"{e(MISCONFIGURATION_TEXT[kind])}</li>"
        for kind in sorted(resolution.misconfigurations)
    ]
    if dns_is_notable(resolution):
        items.append(f'<li class="flag dns-detail">DNS: {t(resolution.detail)}</li>')
    items += [
        f'<li class="flag expectation" data-expectation="{e(name)}">expectation {e(name)} not met</li>'
        for name, met in report.verdict.expectations.items()
        if not met
    ]
    return f'<ul class="flags">{"".join(items)}</ul>' if items else ""


def _exchange_cell(exchange: Exchange) -> str:
    out = f'<span class="name">{t(exchange.name)}</span>'
    if exchange.cname_target:
        out += f' <span class="cname muted">CNAME to {t(exchange.cname_target)}</span>'
    out += "".join(f" {_badge('problem warn', p.value)}" for p in sorted(exchange.problems))
    return out


def _starttls(result: AddressResult) -> str:
    if not result.starttls_advertised:
        return "no" if result.outcome is SmtpOutcome.ACCEPTED else ""
    tls = result.tls
    if tls is None:
        return "yes"
    if not tls.handshake_ok:
        return "yes, handshake failed"
    valid = "" if tls.cert_valid is None else (", cert ok" if tls.cert_valid else ", cert invalid")
    return f"yes {tls.version or ''}{valid}".strip()


def _cells(pref: str, exchange: str, result: AddressResult | None) -> str:
    if result is None:
        values = [pref, exchange, "no address", "", "", "", "", "", "", ""]
    else:
        values = [
            pref,
            exchange,
            t(result.address),
            e(result.family.value),
            f'<span class="outcome">{e(result.outcome.value)}</span>',
            e(result.greeting_code) if result.greeting_code else "",
            e(_ms(result.connect_seconds)),
            e(_ms(result.greeting_seconds)),
            e(_starttls(result)),
            f'<span class="detail">{t(result.detail)}</span>' if result.detail else "",
        ]
    numeric = {"Pref", "Code", "Connect", "Greeting"}
    return "".join(
        f'<td data-label="{h}"{" class=num" if h in numeric else ""}>{v}</td>'
        for h, v in zip(_HEADERS, values, strict=True)
    )


def _outcome_class(result: AddressResult) -> str:
    if result.up:
        return "outcome-accepted"
    return "outcome-skipped" if result.outcome is SmtpOutcome.SKIPPED else "outcome-bad"


def _tier_rows(tier: Tier) -> str:
    rows = []
    pref = e(tier.preference)
    for exchange in tier.exchanges:
        common = f'data-preference="{e(tier.preference)}" data-exchange="{e(exchange.name)}"'
        cell = _exchange_cell(exchange)
        if not exchange.addresses:
            rows.append(
                f'<tr class="address no-address outcome-bad" {common}>{_cells(pref, cell, None)}</tr>'
            )
        for result in exchange.addresses:
            attrs = (
                f'{common} data-address="{e(result.address)}" data-outcome="{e(result.outcome.value)}"'
                f' data-up="{_flag(result.up)}"'
            )
            rows.append(
                f'<tr class="address {_outcome_class(result)}" {attrs}>{_cells(pref, cell, result)}</tr>'
            )
            pref, cell = "", ""
        pref = ""
    attrs = f'data-preference="{e(tier.preference)}" data-up="{_flag(tier.up)}"'
    return f'<tbody class="tier" {attrs}>{"".join(rows)}</tbody>'


def _table(report: DomainReport) -> str:
    if not report.tiers:
        return ""
    head = "".join(f"<th>{h}</th>" for h in _HEADERS)
    body = "".join(_tier_rows(t) for t in report.tiers)
    return (
        f'<div class="table-wrap"><table class="addresses"><thead><tr>{head}</tr></thead>{body}</table></div>'
    )


def _section(domain: str, report: DomainReport | None, now: float) -> str:
    state = _state(report)
    anchor = f'id="domain-{e(domain)}"'
    if report is None:
        return (
            f'<section class="card domain state-{WAITING}" {anchor} data-domain="{e(domain)}"'
            f' data-state="{WAITING}">'
            f'<div class="head"><h2>{t(domain)}</h2>{_badge("waiting warn", "waiting for first probe")}</div>'
            '<p class="verdict muted">waiting for first probe</p></section>'
        )
    resolution, verdict = report.resolution, report.verdict
    attrs = (
        f'{anchor} data-domain="{e(domain)}" data-state="{state}"'
        f' data-dns-status="{e(resolution.status.value)}"'
        f' data-deliverable="{_flag(verdict.deliverable)}" data-primary-up="{_flag(verdict.primary_up)}"'
        f' data-active-preference="{e(verdict.active_preference)}" data-null-mx="{_flag(resolution.null_mx)}"'
        f' data-fallback-to-a="{_flag(resolution.fallback_to_a)}" data-finished-at="{e(report.finished_at)}"'
    )
    return (
        f'<section class="card domain state-{state}" {attrs}>'
        f'<div class="head"><h2>{t(domain)}</h2>{_badges(report)}</div>'
        f'<p class="verdict">{e(verdict_line(report))}</p>'
        f"{_facts(report, now)}{_flags(report)}{_table(report)}</section>"
    )


def _summary(states: Mapping[str, str], counts: Counter[str]) -> str:
    """Counts first (deliverable includes primary down; DNS failures are not counted as undeliverable)."""
    numbers = [
        ("deliverable", counts["ok"] + counts["degraded"], "yes", "deliverable"),
        ("primary-down", counts["degraded"], "warn", "primary down"),
        ("undeliverable", counts["undeliverable"], "no", "undeliverable"),
        ("dns-failure", counts["dns-failure"], "no", "DNS failure"),
        ("null-mx", counts["null-mx"], "info", "null MX"),
        ("waiting", counts[WAITING], "muted", "waiting"),
    ]
    attrs = " ".join(f'data-{name}="{n}"' for name, n, _, _ in numbers)
    lis = "".join(
        f'<li class="count {name} {css}" data-count="{name}"><b>{n}</b>{label}</li>'
        for name, n, css, label in numbers
    )
    index = "".join(
        f'<li><a href="#domain-{e(quote(d, safe=""))}">{t(d)}</a> '
        f"{_badge('state-' + s + ' ' + _STATE_CSS[s], STATE_LABEL[s])}</li>"
        for d, s in states.items()
    )
    return (
        f'<section class="card summary" data-watched="{len(states)}" {attrs}>'
        f'<ul class="counts">{lis}</ul><ul class="index">{index}</ul></section>'
    )


def render_status_page(
    reports: Sequence[DomainReport],
    *,
    watched: Sequence[str],
    version: str,
    now: float,
    probe_example: str = "example.org",
) -> str:
    """The whole page: a summary, then one section per watched domain (reports for others are not shown)."""
    by_domain = {r.domain: r for r in reports}
    names = list(dict.fromkeys(watched))
    states = {name: _state(by_domain.get(name)) for name in names}
    counts = Counter(states.values())
    probe = f"/probe?target={quote(probe_example, safe='')}"
    sections = "".join(_section(name, by_domain.get(name), now) for name in names)
    generated = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>mx-exporter: {len(names)} domains</title><style>{CSS}</style></head><body>"
        f'<header><h1>mx-exporter</h1><span class="version">{e(version)}</span><nav>'
        f'<a href="/metrics">/metrics</a><a href="{e(probe)}">/probe?target={e(probe_example)}</a>'
        '<a href="/config">/config</a></nav></header>'
        f"<main>{_summary(states, counts)}{sections or '<p class=muted>No domains are watched.</p>'}</main>"
        f'<footer class="muted">Rendered <time datetime="{generated}">{generated}</time>.</footer>'
        "</body></html>\n"
    )
