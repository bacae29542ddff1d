"""Pure: finished ``DomainReport``s -> Prometheus metric families. Never does I/O.

Probing finishes first; a scrape only turns the last finished reports into families (client_python's
custom-collector guidance), so a scrape is fast and never touches DNS or port 25.

Names, help texts, types and label names all come from ``metrics.CATALOGUE``. Every per-domain family
(labels starting with ``domain``) is yielded on every collect, even with no samples, so HELP/TYPE are stable
and a reader sees the whole schema. Closed sets (DNS status, misconfiguration kind, SMTP outcome, sender)
always get one 0/1 series per enum member, so an alert never waits on an absent series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from mx_exporter import metrics
from mx_exporter.assess import delivery_preference
from mx_exporter.model import (
    AddressResult,
    DnsStatus,
    DomainReport,
    Exchange,
    Family,
    Misconfiguration,
    Sender,
    SmtpOutcome,
    Tier,
)
from mx_exporter.tls import cert_valid_for

# The per-domain part of the catalogue, in catalogue order.
DOMAIN_SPECS: tuple[metrics.MetricSpec, ...] = tuple(
    m for m in metrics.CATALOGUE if m.labels[:1] == ("domain",)
)


def _b(flag: bool) -> float:
    return 1.0 if flag else 0.0


class _Families:
    """One gauge family per per-domain catalogue entry; refuses wrong label counts and duplicate series."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily] = {}
        self._seen: set[tuple[str, tuple[str, ...]]] = set()
        for spec in DOMAIN_SPECS:
            if spec.type != "gauge":
                raise TypeError(
                    f"per-domain metric {spec.name} is a {spec.type}; the collector emits gauges only"
                )
            self._families[spec.name] = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)

    def add(self, name: str, labels: tuple[str, ...], value: float) -> None:
        want = metrics.spec(name).labels
        if len(labels) != len(want):
            raise ValueError(f"{name} takes labels {want}, got values {labels}")
        if (name, labels) in self._seen:  # first one wins: a scrape must never carry a duplicate series
            return
        self._seen.add((name, labels))
        self._families[name].add_metric(labels, value)

    def all(self) -> list[Metric]:
        return list(self._families.values())


def _domain(out: _Families, report: DomainReport) -> None:
    """Domain-level verdicts and DNS facts."""
    d = (report.domain,)
    res, verdict = report.resolution, report.verdict
    out.add("mx_domain_deliverable", d, _b(verdict.deliverable))
    out.add("mx_primary_up", d, _b(verdict.primary_up))
    out.add("mx_active_preference", d, verdict.active_preference)
    for sender in Sender:
        pref = verdict.delivery_preference.get(sender)
        out.add(
            "mx_delivery_preference",
            (*d, sender.value),
            pref if pref is not None else _fallback(report, sender),
        )
    for name, met in verdict.expectations.items():
        out.add("mx_expectation_met", (*d, name), _b(met))
    out.add("mx_records", d, res.mx_records)
    out.add("mx_tiers", d, len(report.tiers))
    out.add("mx_preference_gap", d, verdict.preference_gap)
    out.add("mx_fallback_to_a", d, _b(res.fallback_to_a))
    out.add("mx_null_mx", d, _b(res.null_mx))
    for status in DnsStatus:
        out.add("mx_dns_status", (*d, status.value), _b(res.status is status))
    kinds = set(res.misconfigurations).union(*(e.problems for t in report.tiers for e in t.exchanges))
    for kind in Misconfiguration:
        out.add("mx_misconfiguration", (*d, kind.value), _b(kind in kinds))
    if res.ttl is not None:
        out.add("mx_record_ttl_seconds", d, res.ttl)
    out.add("mx_probe_duration_seconds", d, report.probe_seconds)
    out.add("mx_last_probe_timestamp_seconds", d, report.finished_at)


def _fallback(report: DomainReport, sender: Sender) -> int:
    """A hand-built verdict may lack a sender: derive it from the tiers, never drop a closed-set member."""
    return delivery_preference(report.tiers, sender)


def _tier(out: _Families, domain: str, tier: Tier) -> None:
    t = (domain, str(tier.preference))
    out.add("mx_tier_exchanges", t, len(tier.exchanges))
    out.add("mx_tier_exchanges_up", t, sum(1 for e in tier.exchanges if e.up))
    for exchange in tier.exchanges:
        _exchange(out, t, exchange)


def _exchange(out: _Families, tier_labels: tuple[str, ...], exchange: Exchange) -> None:
    x = (*tier_labels, exchange.name)
    out.add("mx_exchange_up", x, _b(exchange.up))
    for family in Family:
        count = sum(1 for a in exchange.addresses if a.family is family)
        out.add("mx_exchange_addresses", (*x, family.value), count)
    for address in exchange.addresses:
        a = (*x, address.address, address.family.value)
        _address(out, a, address)
        _tls(out, a, address, exchange.name)


def _address(out: _Families, a: tuple[str, ...], result: AddressResult) -> None:
    out.add("mx_smtp_up", a, _b(result.up))
    for outcome in SmtpOutcome:
        out.add("mx_smtp_outcome", (*a, outcome.value), _b(result.outcome is outcome))
    out.add("mx_smtp_greeting_code", a, result.greeting_code)
    if result.connect_seconds is not None:
        out.add("mx_smtp_connect_duration_seconds", a, result.connect_seconds)
    if result.greeting_seconds is not None:
        out.add("mx_smtp_greeting_duration_seconds", a, result.greeting_seconds)
    out.add("mx_smtp_starttls_advertised", a, _b(result.starttls_advertised))


def _tls(out: _Families, a: tuple[str, ...], result: AddressResult, exchange_name: str) -> None:
    """TLS series only where STARTTLS was attempted (facts present); cert validity is per exchange name,
    since one address (one session) serves every exchange name that points at it."""
    tls = result.tls
    if tls is None:
        return
    out.add("mx_smtp_tls_handshake_success", a, _b(tls.handshake_ok))
    if tls.version is not None:
        out.add("mx_smtp_tls_version_info", (*a, tls.version), 1.0)
    if tls.cert_not_after is not None:
        out.add("mx_smtp_tls_cert_not_after_timestamp_seconds", a, tls.cert_not_after)
    valid = cert_valid_for(exchange_name, tls)
    if valid is not None:
        out.add("mx_smtp_tls_cert_valid", a, _b(valid))


def domain_families(reports: Iterable[DomainReport]) -> list[Metric]:
    """Every per-domain family of the catalogue, in catalogue order, with the series of every report.

    The same domain given twice: the last report wins (it is the newer one in every caller); domains keep the
    order of their first appearance. Families without samples are still returned.
    """
    latest: dict[str, DomainReport] = {}
    for report in reports:
        latest[report.domain] = report
    out = _Families()
    for report in latest.values():
        _domain(out, report)
        for tier in report.tiers:
            _tier(out, report.domain, tier)
    return out.all()


class ReportCollector:
    """A prometheus_client custom collector over a source of finished reports (the engine's last results)."""

    def __init__(self, source: Callable[[], Iterable[DomainReport]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from domain_families(self._source())

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering must not call collect(), and the series set changes with every refresh."""
        return iter(())
