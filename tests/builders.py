"""Shared test data: SMTP results, resolutions and finished reports. Test modules import it; none imports another.

Every report here is made the way the engine makes one, by ``mx_exporter.assess.build_report``: verdicts, sender
outcomes, misconfigurations and per-exchange certificate validity are decided by assessment, never written by
hand, so a surface or the collector tested with them reads exactly what it reads in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from mx_exporter.assess import Expectations, build_report
from mx_exporter.collector import ReportCollector
from mx_exporter.model import (
    AddressResult,
    DnsStatus,
    DomainReport,
    Family,
    Misconfiguration,
    Resolution,
    ResolvedAddress,
    ResolvedExchange,
    SmtpOutcome,
    TlsFacts,
)

Out = SmtpOutcome
UP = Out.ACCEPTED
FINISHED = 1767225600.0  # 2026-01-01T00:00:00Z: one fixed clock, so golden files and timestamps never move
HOSTILE_NAME = "<script>alert(1)</script>.evil.test"
HOSTILE_CNAME = '"><img src=x onerror=alert(2)>'
HOSTILE_DETAIL = "\x1b]0;pwned\x07\x1b[2J<script>alert(3)</script>\u202egnp.exe"
_GREETING_CODES = {UP: 220, Out.GREETING_4XX: 421, Out.GREETING_5XX: 554, Out.EHLO_FAILED: 220}
_NEVER_CONNECTED = (Out.CONNECTION_REFUSED, Out.CONNECT_TIMEOUT, Out.SKIPPED)

Scenario = tuple[Resolution, dict[str, AddressResult]]  # what build_report takes: DNS, and results by address
Mx = tuple[ResolvedExchange, tuple[AddressResult, ...]]  # one resolved exchange and its addresses' results
MxSpec = tuple[int, str, tuple[AddressResult, ...]]  # (preference, exchange, results)


def fam(ip: str) -> Family:
    return Family.IPV6 if ":" in ip else Family.IPV4


def res(ip: str, outcome: SmtpOutcome = UP, **kw: Any) -> AddressResult:
    """One probe result; the greeting code follows the outcome so the data looks like a real session."""
    kw.setdefault("greeting_code", _GREETING_CODES.get(outcome, 0))
    return AddressResult(ip, fam(ip), outcome, **kw)


def addr(ip: str, outcome: SmtpOutcome = UP, **kw: Any) -> AddressResult:
    """A result with the timings of a real session too: connect 1.2 ms, greeting 34.5 ms, where there were any."""
    kw.setdefault("connect_seconds", None if outcome in _NEVER_CONNECTED else 0.0012)
    kw.setdefault("greeting_seconds", 0.0345 if outcome in _GREETING_CODES else None)
    return res(ip, outcome, **kw)


def ex(name: str, pref: int, *results: AddressResult, **kw: Any) -> Mx:
    """An exchange as DNS resolved it (every address allowed; ``kw``: cname_target, problems, ...)."""
    addresses = tuple(ResolvedAddress(r.address, r.family, True) for r in results)
    return ResolvedExchange(name, pref, addresses, **kw), results


def scenario(name: str, *exchanges: Mx, status: DnsStatus = DnsStatus.OK, **kw: Any) -> Scenario:
    """A resolution of these exchanges (``kw``: the other Resolution fields), and the shared results map."""
    kw.setdefault("mx_records", len(exchanges))
    resolution = Resolution(name, status, exchanges=tuple(x for x, _ in exchanges), **kw)
    return resolution, {r.address: r for _, results in exchanges for r in results}


def domain(name: str, *mx: MxSpec, status: DnsStatus = DnsStatus.OK, **kw: Any) -> Scenario:
    """A resolution with the given (preference, exchange, results) triples, and the shared results map."""
    return scenario(name, *(ex(host, pref, *results) for pref, host, results in mx), status=status, **kw)


def two_tiers(name: str, primary: AddressResult, backup: AddressResult, **kw: Any) -> Scenario:
    """mx1.NAME at preference 10 and mx2.NAME at 20, one address each."""
    return domain(name, (10, f"mx1.{name}", (primary,)), (20, f"mx2.{name}", (backup,)), **kw)


# --- scenarios, as (resolution, results)
TWO_UP = domain(
    "healthy.lab.test",
    (10, "mx1.healthy.lab.test", (res("127.0.0.10", starttls_advertised=True), res("::1"))),
    (20, "mx2.healthy.lab.test", (res("127.0.0.11"),)),
    ttl=300,
)
PRIMARY_DOWN = two_tiers(
    "primary-down.lab.test", res("127.0.0.23", Out.CONNECTION_REFUSED), res("127.0.0.11")
)
ALL_DOWN = two_tiers(
    "undeliverable.lab.test",
    res("127.0.0.23", Out.CONNECTION_REFUSED),
    res("127.0.0.22", Out.GREETING_TIMEOUT),
)
EQUAL = domain(
    "equal.lab.test",
    (10, "a.equal.lab.test", (res("127.0.0.10"),)),
    (10, "b.equal.lab.test", (res("127.0.0.22", Out.GREETING_TIMEOUT),)),
)
ONE_TIER = domain("sink.lab.test", (10, "mx.sink.lab.test", (res("127.0.0.40"),)))
FALLBACK = domain(
    "fallback.lab.test",
    (0, "fallback.lab.test", (res("127.0.0.10"),)),
    status=DnsStatus.NODATA,
    fallback_to_a=True,
    mx_records=0,
)
NULL_MX = domain("nullmx.lab.test", null_mx=True, mx_records=1)


# --- finished reports as `check` and the status page show them, one per lab-like situation
def report(
    name: str, *exchanges: Mx, status: DnsStatus = DnsStatus.OK, expect: Expectations | None = None, **kw: Any
) -> DomainReport:
    """The finished report of these exchanges, probed in 0.42 s at FINISHED (TTL 300 s for an MX answer)."""
    kw.setdefault("ttl", 300 if status is DnsStatus.OK else None)
    return build_report(*scenario(name, *exchanges, status=status, **kw), 0.42, FINISHED, expect)


def healthy(expect: Expectations | None = None, **mx1: Any) -> DomainReport:
    """Both tiers up; mx1's IPv4 address offers TLS 1.3 with a certificate valid for mx1 (``mx1``: more of
    its ResolvedExchange fields)."""
    tls = TlsFacts(True, "TLSv1.3", FINISHED + 86400 * 30, chain_valid=True, names=("mx1.healthy.lab.test",))
    first = addr("127.0.0.10", starttls_advertised=True, tls=tls)
    return report(
        "healthy.lab.test",
        ex("mx1.healthy.lab.test", 10, first, addr("::1"), **mx1),
        ex("mx2.healthy.lab.test", 20, addr("127.0.0.11")),
        expect=expect,
    )


def primary_down() -> DomainReport:
    refused = addr("127.0.0.23", Out.CONNECTION_REFUSED, detail="[Errno 111] Connection refused")
    return report(
        "primary-down.lab.test",
        ex("mx1.primary-down.lab.test", 10, refused),
        ex("mx2.primary-down.lab.test", 20, addr("127.0.0.11")),
    )


def undeliverable() -> DomainReport:
    return report(
        "undeliverable.lab.test",
        ex("mx1.undeliverable.lab.test", 10, addr("127.0.0.23", Out.CONNECTION_REFUSED)),
        ex("mx2.undeliverable.lab.test", 20, addr("127.0.0.22", Out.GREETING_TIMEOUT, detail="no greeting")),
    )


def null_mx() -> DomainReport:
    return report("nullmx.lab.test", null_mx=True, mx_records=1)


def fallback() -> DomainReport:
    return report(
        "fallback.lab.test",
        ex("fallback.lab.test", 0, addr("127.0.0.10")),
        status=DnsStatus.NODATA,
        fallback_to_a=True,
        mx_records=0,
    )


def dns_only(status: DnsStatus, detail: str = "") -> Callable[[], DomainReport]:
    """A domain whose MX lookup ended with ``status`` and found no mail hosts."""

    def build() -> DomainReport:
        return report(f"{status.value}.lab.test", status=status, detail=detail)

    return build


def unresolvable_only() -> DomainReport:
    bad = frozenset({Misconfiguration.UNRESOLVABLE_TARGET})
    return report(
        "unresolvable.lab.test", ex("nohost.unresolvable.lab.test", 10, problems=bad), misconfigurations=bad
    )


def hostile() -> DomainReport:
    """Names and details a hostile zone or peer could send: markup and terminal escapes."""
    flags = frozenset({Misconfiguration.CNAME_TARGET})
    bad = addr("127.0.0.20", Out.GREETING_4XX, detail=HOSTILE_DETAIL)
    return report(
        "evil.test",
        ex(HOSTILE_NAME, 10, bad, cname_target=HOSTILE_CNAME, problems=flags),
        ex("mx2.evil.test", 20, addr("127.0.0.11", detail=HOSTILE_DETAIL)),
        expect=Expectations(min_tiers=2, starttls=True),  # met; not met (mx2 accepts without STARTTLS)
        misconfigurations=flags,
        detail=HOSTILE_DETAIL,
    )


def bouncing() -> DomainReport:
    """The primary answers EHLO and HELO with 550, the backup accepts: deliverable, yet Postfix bounces."""
    refused = addr("127.0.0.25", Out.EHLO_FAILED, ehlo_code=550, helo_code=550)
    return report(
        "bounce.lab.test",
        ex("mx1.bounce.lab.test", 10, refused),
        ex("mx2.bounce.lab.test", 20, addr("127.0.0.11")),
    )


def renamed(r: DomainReport, name: str) -> DomainReport:
    """The same report for another domain name (to watch many domains without probing each)."""
    return replace(r, resolution=replace(r.resolution, domain=name))


# --- the collector's golden reports (tests/golden/*.prom): their exposition must never change by accident
def _golden_healthy() -> DomainReport:
    tls_ok = TlsFacts(handshake_ok=True, version="TLSv1.3", cert_not_after=1798761600.0)  # no chain verified
    d = domain(
        "healthy.lab.test",
        (
            10,
            "mx1.healthy.lab.test",
            (
                res(
                    "127.0.0.10",
                    connect_seconds=0.0012,
                    greeting_seconds=0.25,
                    starttls_advertised=True,
                    tls=tls_ok,
                ),
                res("::1", connect_seconds=0.0008, greeting_seconds=0.125, tls=TlsFacts(handshake_ok=False)),
            ),
        ),
        (20, "mx2.healthy.lab.test", (res("127.0.0.11", connect_seconds=0.001, greeting_seconds=0.5),)),
        ttl=300,
    )
    return build_report(*d, 0.75, FINISHED, Expectations(min_tiers=2, starttls=True, deliverable=True))


def _golden_primary_down() -> DomainReport:
    backup = res("127.0.0.11", connect_seconds=0.001, greeting_seconds=0.5)
    d = two_tiers("primary-down.lab.test", res("127.0.0.23", Out.CONNECTION_REFUSED), backup, ttl=3600)
    return build_report(*d, 0.5, FINISHED + 1)


def _golden_nonglobal() -> DomainReport:
    """A skipped private address, an unresolvable exchange and a CNAME flagged only on its exchange."""
    d = scenario(
        "nonglobal.lab.test",
        ex("mx1.nonglobal.lab.test", 10, res("10.255.255.1", Out.SKIPPED, detail="not allowed")),
        ex("nohost.nonglobal.lab.test", 20),
        ex(
            "mx2.nonglobal.lab.test",
            30,
            res("127.0.0.20", Out.GREETING_4XX, connect_seconds=0.002),
            cname_target="mx1.healthy.lab.test",
            problems=frozenset({Misconfiguration.CNAME_TARGET}),
        ),
        misconfigurations=frozenset(
            {Misconfiguration.NON_GLOBAL_ADDRESS, Misconfiguration.UNRESOLVABLE_TARGET}
        ),
    )
    return build_report(*d, 0.25, FINISHED + 2)


REPORTS: dict[str, DomainReport] = {
    "healthy": _golden_healthy(),
    "primary_down": _golden_primary_down(),
    "null_mx": build_report(*NULL_MX, 0.02, FINISHED + 4, Expectations(null_mx=True)),
    "nxdomain": build_report(Resolution("nxdomain.lab.test", DnsStatus.NXDOMAIN), {}, 0.01, FINISHED + 3),
    "fallback": build_report(*FALLBACK, 0.3, FINISHED + 5),
    "nonglobal": _golden_nonglobal(),
}


def render(reports: Iterable[DomainReport]) -> bytes:
    """Exactly what /probe does: a fresh registry per render."""
    registry = CollectorRegistry()
    registry.register(ReportCollector(lambda: list(reports)))
    return generate_latest(registry)
