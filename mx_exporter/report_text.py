"""`mx-exporter check` output: exit codes, a one-line verdict, a readable table and a JSON form.

Pure functions of a finished ``DomainReport``. Text that came from DNS or an SMTP peer goes through ``clean``
first, so a hostile banner or detail can never inject terminal escape sequences. The JSON form follows
docs/check-json-schema.json.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from mx_exporter.model import (
    AddressResult,
    Delivery,
    DeliveryOutcome,
    DomainReport,
    Exchange,
    Misconfiguration,
    TlsFacts,
)
from mx_exporter.text import count, milliseconds, reply_code, utc_timestamp
from mx_exporter.transport_text import transport_json, transport_lines, transport_problems
from mx_exporter.verdicts import (
    EXIT_DNS_ERROR,
    EXIT_OK,
    EXIT_PRIMARY_DOWN,
    EXIT_STATE,
    EXIT_UNDELIVERABLE,
    MISCONFIGURATION_TEXT,
    NO_ADDRESS,
    STATES,
    by_attention,
    clean,
    delivery_text,
    dns_is_notable,
    exit_code,
    expectation_text,
    outcome_kind,
    starttls_cell,
    state,
    unmet_expectations,
    verdict_line,
    worst_exit_code,
)

_ANSI = {"green": "32", "yellow": "33", "red": "31", "magenta": "35", "bold": "1", "dim": "2"}
_EXIT_COLOUR = {
    EXIT_OK: "green",
    EXIT_PRIMARY_DOWN: "yellow",
    EXIT_UNDELIVERABLE: "red",
    EXIT_DNS_ERROR: "magenta",
}
_STATE_COLOUR = {name: _EXIT_COLOUR[code] for code, name in EXIT_STATE.items()} | {"null-mx": "green"}
_OUTCOME_COLOUR = {"accepted": "green", "skipped": "yellow", "bad": "red"}  # by verdicts.outcome_kind


def _colour(text: str, name: str | None, color: bool) -> str:
    if not color or name is None or not text:
        return text
    return f"\x1b[{_ANSI[name]}m{text}\x1b[0m"


Cell = tuple[str, str | None]  # text, colour name


def _table(rows: list[list[Cell]], color: bool) -> list[str]:
    """Left-aligned columns two spaces apart; widths from the plain text so colour never skews them."""
    widths = [max(len(row[i][0]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        parts = []
        for i, (text, colour) in enumerate(row):
            pad = "" if i == len(row) - 1 else " " * (widths[i] - len(text))
            parts.append(_colour(text, colour, color) + pad)
        lines.append("  ".join(parts).rstrip())
    return lines


def _address_rows(report: DomainReport) -> list[list[Cell]]:
    header = ["PREF", "EXCHANGE", "ADDRESS", "FAMILY", "OUTCOME", "CODE", "CONNECT", "GREETING", "STARTTLS"]
    rows: list[list[Cell]] = [[(h, "bold") for h in header]]
    for tier in report.tiers:
        pref = str(tier.preference)
        for exchange in tier.exchanges:
            name = clean(exchange.name)
            if not exchange.addresses:
                rows.append([(pref, None), (name, None), (NO_ADDRESS, "red")] + [("", None)] * 6)
                pref = ""
            for result in exchange.addresses:
                rows.append(
                    [
                        (pref, None),
                        (name, None),
                        (clean(result.address, 64), None),
                        (result.family.value, None),
                        (result.outcome.value, _OUTCOME_COLOUR[outcome_kind(result.outcome)]),
                        (reply_code(result.greeting_code), None),
                        (milliseconds(result.connect_seconds), None),
                        (milliseconds(result.greeting_seconds), None),
                        (starttls_cell(result), None),
                    ]
                )
                pref, name = "", ""
    return rows


def _tls_problem(result: AddressResult, tls: TlsFacts | None) -> str | None:
    if tls is None:
        return None
    if not tls.handshake_ok:
        return "STARTTLS handshake failed"
    if tls.cert_valid is False:
        return "TLS certificate not valid (chain or name)"
    return None


def _exchange_problems(exchange: Exchange) -> list[str]:
    lines = []
    name = clean(exchange.name)
    for kind in sorted(exchange.problems):
        target = exchange.cname_target if kind is Misconfiguration.CNAME_TARGET else None
        lines.append(f"{name}: {kind.value}" + (f" (CNAME to {clean(target)})" if target else ""))
    for result in exchange.addresses:
        where = f"{clean(result.address, 64)} ({name})"
        if not result.up:
            detail = f": {clean(result.detail)}" if result.detail else ""
            lines.append(f"{where}: {result.outcome.value}{detail}")
        tls_problem = _tls_problem(result, result.tls)
        if tls_problem:
            lines.append(f"{where}: {tls_problem}")
    return lines


def problems(report: DomainReport) -> list[str]:
    """Everything worth a human's attention, one line each, already cleaned of control characters."""
    resolution, verdict = report.resolution, report.verdict
    lines = []
    if dns_is_notable(resolution):
        lines.append(f"DNS: {clean(resolution.detail)}")
    lines += [f"{kind.value}: {MISCONFIGURATION_TEXT[kind]}" for kind in sorted(resolution.misconfigurations)]
    for tier in report.tiers:
        for exchange in tier.exchanges:
            lines += _exchange_problems(exchange)
    lines += [expectation_text(name) for name in unmet_expectations(verdict)]
    lines += [clean(line) for line in transport_problems(report)]
    outcomes = verdict.deliveries
    if len({(d.outcome, d.preference) for d in outcomes.values()}) > 1:
        said = ", ".join(f"{s.value} -> {_delivery_word(d)}" for s, d in outcomes.items())
        lines.append(f"senders disagree: {said}")
    return lines


def _delivery_word(delivery: Delivery) -> str:
    if delivery.outcome is DeliveryOutcome.DELIVERED:
        return f"pref {delivery.preference}"
    return delivery.outcome.value


def _heading(report: DomainReport) -> str:
    resolution = report.resolution
    facts = [
        f"DNS {resolution.status.value}",
        count(resolution.mx_records, "MX record"),
        count(len(report.tiers), "tier"),
    ]
    if resolution.ttl is not None:
        facts.append(f"TTL {resolution.ttl} s")
    if resolution.fallback_to_a:
        facts.append("implicit MX (fallback to A/AAAA)")
    if resolution.null_mx:
        facts.append("null MX")
    facts.append(f"probed in {report.probe_seconds:.2f} s at {utc_timestamp(report.finished_at)}")
    return f"{clean(report.domain)} - " + ", ".join(facts)


def render_text(report: DomainReport, *, color: bool) -> str:
    """The per-domain block `check` prints: heading, address table, problems and the verdict line."""
    lines = [_colour(_heading(report), "bold", color)]
    if report.tiers:
        lines += ["  " + line for line in _table(_address_rows(report), color)]
    if report.verdict.deliveries:
        lines.append("  Senders:")
        width = max(len(s.value) for s in report.verdict.deliveries)
        lines += [f"    {s.value:<{width}}  {delivery_text(d)}" for s, d in report.verdict.deliveries.items()]
    transport = transport_lines(report)
    if transport:
        lines.append("  Transport security:")
        lines += [f"    {clean(line)}" for line in transport]
    found = problems(report)
    if found:
        lines.append("  Problems:")
        lines += [f"    - {p}" for p in found]
    verdict = _colour(verdict_line(report), _EXIT_COLOUR[exit_code(report)], color)
    lines.append(f"  Verdict: {verdict}")
    return "\n".join(lines)


def run_summary(reports: Sequence[DomainReport], *, color: bool) -> str:
    """One line after many blocks, e.g. "10 domains: 7 ok, 1 primary down, 2 undeliverable" (calmest first)."""
    counts = Counter(state(r) for r in reports)
    parts = [
        _colour(f"{counts[name]} {label}", _STATE_COLOUR[name], color)
        for name, label in reversed(STATES.items())
        if counts[name]
    ]
    return f"{count(len(reports), 'domain')}: " + ", ".join(parts)


def render_run(reports: Sequence[DomainReport], *, color: bool) -> str:
    """What `check` prints: problem domains first, blank lines between, a summary when there are several."""
    blocks = [render_text(r, color=color) for r in by_attention(reports)]
    if len(reports) > 1:
        blocks.append(run_summary(reports, color=color))
    return "\n\n".join(blocks)


def _address_json(result: AddressResult) -> dict[str, Any]:
    tls = result.tls
    return {
        "address": result.address,
        "family": result.family.value,
        "outcome": result.outcome.value,
        "up": result.up,
        "greeting_code": result.greeting_code,
        "ehlo_code": result.ehlo_code,
        "helo_code": result.helo_code,
        "connect_seconds": result.connect_seconds,
        "greeting_seconds": result.greeting_seconds,
        "session_seconds": result.session_seconds,
        "starttls_advertised": result.starttls_advertised,
        "tls": None
        if tls is None
        else {
            "handshake_ok": tls.handshake_ok,
            "version": tls.version,
            "cert_not_after": tls.cert_not_after,
            "cert_valid": tls.cert_valid,
        },
        "detail": result.detail,
    }


def _exchange_json(exchange: Exchange) -> dict[str, Any]:
    return {
        "name": exchange.name,
        "up": exchange.up,
        "cname_target": exchange.cname_target,
        "problems": sorted(p.value for p in exchange.problems),
        "addresses": [_address_json(a) for a in exchange.addresses],
    }


def to_json(report: DomainReport) -> dict[str, Any]:
    """One domain as plain JSON types (docs/check-json-schema.json, ``$defs/domain``)."""
    resolution, verdict = report.resolution, report.verdict
    return {
        "domain": report.domain,
        "exit_code": exit_code(report),
        "verdict_line": verdict_line(report),
        "dns": {
            "status": resolution.status.value,
            "mx_records": resolution.mx_records,
            "null_mx": resolution.null_mx,
            "fallback_to_a": resolution.fallback_to_a,
            "ttl": resolution.ttl,
            "detail": resolution.detail,
        },
        "misconfigurations": sorted(m.value for m in resolution.misconfigurations),
        "verdict": {
            "deliverable": verdict.deliverable,
            "primary_up": verdict.primary_up,
            "active_preference": verdict.active_preference,
            "preference_gap": verdict.preference_gap,
            "deliveries": {
                s.value: {
                    "outcome": d.outcome.value,
                    "preference": d.preference,
                    "exchange": d.exchange,
                    "address": d.address,
                    "reason": d.reason,
                }
                for s, d in verdict.deliveries.items()
            },
            "expectations": dict(verdict.expectations),
        },
        "tiers": [
            {"preference": t.preference, "up": t.up, "exchanges": [_exchange_json(e) for e in t.exchanges]}
            for t in report.tiers
        ],
        "transport": transport_json(report),
        "probe_seconds": report.probe_seconds,
        "finished_at": report.finished_at,
    }


def json_document(reports: Iterable[DomainReport]) -> dict[str, Any]:
    """The whole `check --output json` document: every domain and the run's (worst) exit code."""
    domains = [to_json(r) for r in reports]
    return {"domains": domains, "exit_code": worst_exit_code(d["exit_code"] for d in domains)}
