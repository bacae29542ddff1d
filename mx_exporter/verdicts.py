"""The verdict vocabulary both surfaces read (`check` in report_text.py, the status page in statuspage*.py): exit
codes, the one-line verdict, the state words, and the shared phrasing of deliveries, record changes,
misconfigurations, unmet expectations and an address's outcome and STARTTLS cells. Pure functions of a finished
``DomainReport``; nothing here decides a fact (assessment did).

Text that came from DNS or an SMTP peer goes through ``clean`` first, so a hostile banner or detail can never
inject terminal escape sequences or markup-breaking control characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from mx_exporter.model import (
    AddressResult,
    Delivery,
    DeliveryOutcome,
    DnsStatus,
    DomainReport,
    Misconfiguration,
    RecordSet,
    Resolution,
    Sender,
    SmtpOutcome,
    Verdict,
)
from mx_exporter.text import MISSING

EXIT_OK = 0  # deliverable and primary up, or a null MX by design
EXIT_PRIMARY_DOWN = 1  # deliverable through a backup tier only
EXIT_UNDELIVERABLE = (
    2  # no tier accepts, no mail hosts, the domain does not exist, or a sender profile bounces
)
EXIT_DNS_ERROR = 3  # servfail, timeout or another DNS error: senders retry later

TEMPORARY_DNS: frozenset[DnsStatus] = frozenset({DnsStatus.SERVFAIL, DnsStatus.TIMEOUT})
DNS_FAILURES: frozenset[DnsStatus] = TEMPORARY_DNS | {DnsStatus.ERROR}

MISCONFIGURATION_TEXT: dict[Misconfiguration, str] = {
    Misconfiguration.IPV6_BROKEN: "an exchange's IPv6 addresses all fail while its IPv4 accepts: IPv6 senders "
    "are delayed or fail",
    Misconfiguration.CNAME_TARGET: "an MX target is a CNAME (RFC 2181 §10.3): some senders refuse it",
    Misconfiguration.IP_LITERAL_TARGET: "an MX target looks like an IP address instead of a host name",
    Misconfiguration.UNRESOLVABLE_TARGET: "an MX target has no A/AAAA address",
    Misconfiguration.NULL_MX_MIXED: "a null MX '.' is mixed with other MX records (RFC 7505 §3)",
    Misconfiguration.DUPLICATE_EXCHANGE: "the same exchange is listed at two preferences",
    Misconfiguration.NON_GLOBAL_ADDRESS: "an MX target resolves to a non-global address (never probed)",
}

MAX_FIELD = 200  # characters kept of one peer-provided text
MAX_TLS_VERSION = 20  # characters kept of the TLS version a peer negotiated
NO_ADDRESS = "no address"  # the address cell of an exchange that has none


def clean(text: str, limit: int = MAX_FIELD) -> str:
    """Make peer/DNS text safe for a terminal: control and format characters become visible escapes."""
    if len(text) <= limit and text.isprintable():  # the same test as below (category C or Z, not " "), in C
        return text
    out: list[str] = []
    for ch in text[: limit + 1]:
        if unicodedata.category(ch)[0] in ("C", "Z") and ch != " ":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    result = "".join(out)
    return result if len(text) <= limit else result[:limit] + "…"


def exit_code(report: DomainReport) -> int:
    """0 ok (or null MX by design), 1 primary down but deliverable, 2 undeliverable, 3 DNS failure."""
    resolution = report.resolution
    if resolution.status in DNS_FAILURES:
        return EXIT_DNS_ERROR
    if resolution.null_mx:
        return EXIT_OK
    if bouncing(report):
        return EXIT_UNDELIVERABLE
    if report.verdict.deliverable:
        intended = report.verdict.primary_up or report.verdict.intended_setup
        return EXIT_OK if intended else EXIT_PRIMARY_DOWN
    return EXIT_UNDELIVERABLE


def bouncing(report: DomainReport) -> list[Sender]:
    """The sender profiles that bounce a message sent now (a null MX bounces by design, so never here)."""
    if report.resolution.null_mx:
        return []
    return [s for s, d in report.verdict.deliveries.items() if d.outcome is DeliveryOutcome.BOUNCED]


def records_change_text(records: RecordSet, now: float) -> str:
    """Says "changed 14 min ago: +10 mx3.example.org, (minus) 10 mx1.example.org" or when it was first seen."""
    minutes = max(0, round((now - records.changed_at) / 60))
    if not records.added and not records.removed:
        return f"unchanged since first seen {minutes} min ago"
    diff = [f"+{m}" for m in records.added] + [f"\u2212{m}" for m in records.removed]
    shown = ", ".join(clean(m) for m in diff[:6]) + (f", … ({len(diff) - 6} more)" if len(diff) > 6 else "")
    return f"changed {minutes} min ago: {shown}"


def delivery_text(delivery: Delivery) -> str:
    """One profile's outcome as `check` and the status page say it."""
    if delivery.outcome is DeliveryOutcome.DELIVERED:
        return f"delivered to pref {delivery.preference} ({delivery.exchange})"
    if delivery.outcome is DeliveryOutcome.QUEUED:
        return f"queued (retrying): {clean(delivery.reason)}"
    return f"bounced: {clean(delivery.reason)}"


def worst_exit_code(codes: Iterable[int]) -> int:
    """The exit status of a run over several domains: the worst one (0 when there are none)."""
    return max(codes, default=EXIT_OK)


# The exit code as one word, with a null MX told apart from a plain OK; most urgent first. `check` sorts and
# sums by it, and the status page uses the same words for its data-state attributes and its state filter.
STATES: dict[str, str] = {
    "undeliverable": "undeliverable",
    "dns-failure": "DNS failure",
    "degraded": "primary down",
    "null-mx": "null MX",
    "ok": "ok",
}
EXIT_STATE = {
    EXIT_OK: "ok",
    EXIT_PRIMARY_DOWN: "degraded",
    EXIT_UNDELIVERABLE: "undeliverable",
    EXIT_DNS_ERROR: "dns-failure",
}


def state(report: DomainReport) -> str:
    """A key of ``STATES``: read from the exit code, so the word never contradicts it."""
    code = exit_code(report)
    return "null-mx" if code == EXIT_OK and report.resolution.null_mx else EXIT_STATE[code]


def by_attention(reports: Iterable[DomainReport]) -> list[DomainReport]:
    """Most urgent state first; within a state the given order is kept (the sort is stable)."""
    rank = {name: i for i, name in enumerate(STATES)}
    return sorted(reports, key=lambda r: rank[state(r)])


def verdict_line(report: DomainReport) -> str:
    """One line a human reads first; the prefix (before ':' or ',') is stable for scripts that grep."""
    resolution, verdict = report.resolution, report.verdict
    status = resolution.status
    if status in TEMPORARY_DNS:
        return f"DNS FAILURE: {status.value} (temporary)"
    if status is DnsStatus.ERROR:
        return "DNS FAILURE: error"
    if resolution.null_mx:
        return "NULL MX: accepts no mail by design"
    implicit = ", implicit MX from the domain's A/AAAA" if resolution.fallback_to_a else ""
    bounced = bouncing(report)
    if bounced and verdict.deliverable:
        names = ", ".join(s.value for s in bounced)
        return f"BOUNCING: {names} would bounce mail although an address accepts"
    if verdict.deliverable and not verdict.primary_up and verdict.intended_setup:
        setup, pref = verdict.intended_setup, verdict.active_preference
        return f"DELIVERABLE, {setup} as intended: primary does not accept, delivering to pref {pref}"
    if verdict.deliverable and verdict.primary_up:
        return f"DELIVERABLE, primary up (pref {verdict.active_preference}){implicit}"
    if verdict.deliverable:
        return f"DEGRADED: primary tier down, delivering to backup pref {verdict.active_preference}"
    if status is DnsStatus.NXDOMAIN:
        return "UNDELIVERABLE: the domain does not exist (nxdomain)"
    if not report.tiers:
        if status is DnsStatus.NODATA:
            return "UNDELIVERABLE: no MX and no A/AAAA (nodata)"
        return "UNDELIVERABLE: no usable mail hosts"
    if not any(e.addresses for t in report.tiers for e in t.exchanges):
        return "UNDELIVERABLE: no exchange has an address"
    return "UNDELIVERABLE: no tier accepts"


def dns_is_notable(resolution: Resolution) -> bool:
    """A plain healthy MX answer is not a problem; anything else about DNS is worth a line."""
    plain = resolution.status is DnsStatus.OK and not (
        resolution.misconfigurations or resolution.null_mx or resolution.fallback_to_a
    )
    return bool(resolution.detail) and not plain


def unmet_expectations(verdict: Verdict) -> list[str]:
    """The configured expectations that do not hold, in configuration order."""
    return [name for name, met in verdict.expectations.items() if not met]


def expectation_text(name: str) -> str:
    """An unmet expectation as a problem line: "expectation starttls not met"."""
    return f"expectation {name} not met"


def outcome_kind(outcome: SmtpOutcome) -> str:
    """'accepted', 'skipped' (never tried) or 'bad': how both surfaces mark an address's outcome."""
    if outcome is SmtpOutcome.ACCEPTED:
        return "accepted"
    return "skipped" if outcome is SmtpOutcome.SKIPPED else "bad"


def starttls_cell(result: AddressResult) -> str:
    """The STARTTLS cell: "no", "yes", "yes, handshake failed", "yes TLSv1.3, cert ok" / "cert invalid", or
    MISSING when there is nothing to say (the address did not accept and did not advertise it).

    The peer's version text is cleaned here; the status page still escapes the whole cell for HTML."""
    if not result.starttls_advertised:
        return "no" if result.up else MISSING
    tls = result.tls
    if tls is None:
        return "yes"
    if not tls.handshake_ok:
        return "yes, handshake failed"
    said = " ".join(part for part in ("yes", clean(tls.version or "", MAX_TLS_VERSION)) if part)
    if tls.cert_valid is None:
        return said
    return f"{said}, cert {'ok' if tls.cert_valid else 'invalid'}"
