"""One watched domain on the status page: in full (a card with every address) or compact (one line).

Every value that came from DNS or an SMTP peer (domain, exchange names, CNAME targets, details) goes through
``t`` or ``e`` (``html.escape``); a Content-Security-Policy that forbids scripts backs that up. Stable CSS
classes and ``data-*`` attributes let tests (and curious operators) select verdicts without parsing prose.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from mx_exporter.model import AddressResult, DomainReport, Exchange, Tier
from mx_exporter.text import MISSING, milliseconds, reply_code, utc_timestamp
from mx_exporter.transport_text import transport_lines
from mx_exporter.verdicts import (
    EXIT_DNS_ERROR,
    MISCONFIGURATION_TEXT,
    NO_ADDRESS,
    STATES,
    clean,
    delivery_text,
    dns_is_notable,
    exit_code,
    expectation_text,
    outcome_kind,
    records_change_text,
    starttls_cell,
    state,
    unmet_expectations,
    verdict_line,
)

WAITING = "waiting"
_SPECIAL = re.compile("[&<>\"']")  # what html.escape(quote=True) replaces
_PLAIN = re.compile("[a-z0-9.-]+")  # a usual domain name: nothing for quote() to encode, nothing to escape
CALM = ("null-mx", "ok")  # the states that need no reading
# The page's states, most urgent first: verdicts.STATES (the words `check` uses) with "waiting" before the calm.
STATE_LABEL = (
    {name: label for name, label in STATES.items() if name not in CALM}
    | {WAITING: "waiting"}
    | {name: STATES[name] for name in CALM}
)
STATE_CSS = {
    "ok": "yes",
    "degraded": "warn",
    "undeliverable": "no",
    "dns-failure": "no",
    "null-mx": "info",
    WAITING: "muted",
}

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
_NUMERIC = {"Pref", "Code", "Connect", "Greeting"}
_TD = tuple(f'<td data-label="{h}"{" class=num" if h in _NUMERIC else ""}>' for h in _HEADERS)  # built once


def e(value: object) -> str:
    """Escape for HTML text and attribute values; every interpolation goes through here.

    Called ~60 times per domain shown in full, so text with nothing to escape (most of it) is returned as is.
    """
    text = str(value)
    return html.escape(text, quote=True) if _SPECIAL.search(text) else text


def t(value: str) -> str:
    """Visible text from DNS or a peer: control/bidi characters made visible, bounded, then escaped."""
    return e(clean(value))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _when(report: DomainReport, now: float) -> str:
    iso = utc_timestamp(report.finished_at)
    ago = max(0, round(now - report.finished_at))
    return f'<time datetime="{e(iso)}">{e(iso)}</time> ({ago} s ago)'


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
        ("TTL", MISSING if resolution.ttl is None else f"{resolution.ttl} s"),
        ("fallback to A/AAAA", "yes" if resolution.fallback_to_a else "no"),
        ("null MX", "yes" if resolution.null_mx else "no"),
        ("probe", f"{report.probe_seconds:.2f} s"),
    ]
    for sender, delivery in verdict.deliveries.items():
        items.append((sender.value, delivery_text(delivery)))
    if report.records is not None:
        items.append(("MX set", records_change_text(report.records, now)))
    for text in transport_lines(report):  # DANE, MTA-STS, TLS-RPT (and each exchange's TLSA records)
        key, _, value = text.strip().partition(": ")
        items.append((key, value))
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
        f'<li class="flag expectation" data-expectation="{e(name)}">{e(expectation_text(name))}</li>'
        for name in unmet_expectations(report.verdict)
    ]
    return f'<ul class="flags">{"".join(items)}</ul>' if items else ""


def _exchange_cell(exchange: Exchange) -> str:
    out = f'<span class="name">{t(exchange.name)}</span>'
    if exchange.cname_target:
        out += f' <span class="cname muted">CNAME to {t(exchange.cname_target)}</span>'
    out += "".join(f" {_badge('problem warn', p.value)}" for p in sorted(exchange.problems))
    return out


def _cells(pref: str, exchange: str, result: AddressResult | None) -> str:
    if result is None:
        values = [pref, exchange, NO_ADDRESS, "", "", "", "", "", "", ""]
    else:
        values = [
            pref,
            exchange,
            t(result.address),
            e(result.family.value),
            f'<span class="outcome">{e(result.outcome.value)}</span>',
            e(reply_code(result.greeting_code)),
            e(milliseconds(result.connect_seconds)),
            e(milliseconds(result.greeting_seconds)),
            e(starttls_cell(result)),  # holds the peer's TLS version text
            f'<span class="detail">{t(result.detail)}</span>' if result.detail else "",
        ]
    return "".join(f"{td}{v}</td>" for td, v in zip(_TD, values, strict=True))


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
            kind = outcome_kind(result.outcome)
            rows.append(f'<tr class="address outcome-{kind}" {attrs}>{_cells(pref, cell, result)}</tr>')
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


def section(domain: str, report: DomainReport | None, now: float) -> str:
    """A domain in full: badges, verdict, facts, flags and every address of every tier."""
    anchor = f'id="domain-{e(domain)}"'
    if report is None:
        return (
            f'<section class="card domain state-{WAITING}" {anchor} data-domain="{e(domain)}"'
            f' data-state="{WAITING}">'
            f'<div class="head"><h2>{t(domain)}</h2>{_badge("waiting warn", "waiting for first probe")}</div>'
            '<p class="verdict muted">waiting for first probe</p></section>'
        )
    resolution, verdict, current = report.resolution, report.verdict, state(report)
    attrs = (
        f'{anchor} data-domain="{e(domain)}" data-state="{current}"'
        f' data-dns-status="{e(resolution.status.value)}"'
        f' data-deliverable="{_flag(verdict.deliverable)}" data-primary-up="{_flag(verdict.primary_up)}"'
        f' data-active-preference="{e(verdict.active_preference)}" data-null-mx="{_flag(resolution.null_mx)}"'
        f' data-fallback-to-a="{_flag(resolution.fallback_to_a)}" data-finished-at="{e(report.finished_at)}"'
    )
    return (
        f'<section class="card domain state-{current}" {attrs}>'
        f'<div class="head"><h2>{t(domain)}</h2>{_badges(report)}</div>'
        f'<p class="verdict">{e(verdict_line(report))}</p>'
        f"{_facts(report, now)}{_flags(report)}{_table(report)}</section>"
    )


def page_state(report: DomainReport | None) -> str:
    """A key of ``STATE_LABEL``: the report's state, or waiting while a domain has no report yet."""
    return WAITING if report is None else state(report)


def _line_flags(report: DomainReport) -> str:
    """The MX set's misconfigurations and unmet expectations, as small badges: an OK line can still carry them."""
    # The resolution's and every exchange's, as assessment found them.
    found = report.verdict.misconfigurations
    failed = unmet_expectations(report.verdict)
    if not found and not failed:
        return ""
    kinds = [kind.value for kind in sorted(found)] + [f"expectation {name}" for name in failed]
    return "".join(f" {_badge('flag warn', kind)}" for kind in kinds)


def line(domain: str, report: DomainReport | None, current: str) -> str:
    """A domain in one line (``current`` is its page state): name linking to the page filtered to it, state,
    verdict and flags. Built for ten thousand of them: the name is escaped once."""
    name = e(domain)
    text = "waiting for first probe" if report is None else verdict_line(report)
    flags = "" if report is None else _line_flags(report)
    return (
        f'<li class="line state-{current}" id="domain-{name}" data-domain="{name}" data-state="{current}">'
        f'<a href="?q={domain if _PLAIN.fullmatch(domain) else quote(domain, safe="")}">{t(domain)}</a> '
        f'<span class="badge state {STATE_CSS[current]}">{STATE_LABEL[current]}</span> '
        f'<span class="verdict-text">{e(text)}</span>{flags}</li>'
    )
