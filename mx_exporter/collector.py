"""Pure: finished ``DomainReport``s -> samples and Prometheus metric families. Never does I/O, decides nothing.

Probing finishes first; a scrape only turns the last finished reports into samples (client_python's
custom-collector guidance), so a scrape is fast and never touches DNS or port 25.

Each fact is exported once, at its level (docs/architecture.md, "Metric model"): a domain's DNS facts and
verdicts per ``domain``; its MX set as one ``mx_exchange_preference{domain, exchange}`` series per exchange;
an exchange name's facts per ``exchange``; a session's facts per ``(exchange, address, family)``, shared by every
domain behind that exchange. When reports disagree about a shared exchange (they finished at different times),
the newest report's copy wins.

Names, help texts, types and label names all come from ``metrics.CATALOGUE``. Closed sets (DNS status,
misconfiguration kind, SMTP outcome, sender) always get one 0/1 series per member, so an alert never waits on an
absent series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from mx_exporter import metrics
from mx_exporter.model import (
    AddressResult,
    DaneState,
    DeliveryOutcome,
    DnsStatus,
    DomainReport,
    Exchange,
    Misconfiguration,
    PolicyMode,
    PolicyState,
    SmtpOutcome,
    Verdict,
)

Sample = tuple[str, tuple[str, ...], float]  # (metric name, label values in catalogue order, value)

# The report part of the catalogue (everything not about the exporter itself), in catalogue order.
REPORT_SPECS: tuple[metrics.MetricSpec, ...] = tuple(
    m for m in metrics.CATALOGUE if m.labels[:1] in (("domain",), ("exchange",))
)


def _b(flag: bool) -> float:
    return 1.0 if flag else 0.0


def domain_samples(report: DomainReport) -> list[Sample]:
    """The domain's own facts and verdicts, and one membership series per exchange of its MX set."""
    d = (report.domain,)
    res, verdict = report.resolution, report.verdict
    out: list[Sample] = [
        ("mx_domain_deliverable", d, _b(verdict.deliverable)),
        ("mx_primary_up", d, _b(verdict.primary_up)),
        ("mx_active_preference", d, verdict.active_preference),
        ("mx_ipv6_deliverable", d, _b(verdict.ipv6_deliverable)),
    ]
    for sender, delivery in verdict.deliveries.items():
        out += [
            ("mx_delivery_outcome", (*d, sender.value, o.value), _b(delivery.outcome is o))
            for o in DeliveryOutcome
        ]
    out += [("mx_delivery_preference", (*d, s.value), p.preference) for s, p in verdict.deliveries.items()]
    out += [("mx_expectation_met", (*d, n), _b(met)) for n, met in verdict.expectations.items()]
    out += [
        ("mx_records", d, res.mx_records),
        ("mx_tiers", d, len(report.tiers)),
        ("mx_preference_gap", d, verdict.preference_gap),
        ("mx_fallback_to_a", d, _b(res.fallback_to_a)),
        ("mx_null_mx", d, _b(res.null_mx)),
    ]
    out += [("mx_dns_status", (*d, s.value), _b(res.status is s)) for s in DnsStatus]
    kinds = verdict.misconfigurations
    out += [("mx_misconfiguration", (*d, k.value), _b(k in kinds)) for k in Misconfiguration]
    if res.ttl is not None:
        out.append(("mx_record_ttl_seconds", d, res.ttl))
    out += _transport_samples(d, verdict)
    records = report.records
    if records is not None:
        out.append(("mx_record_set_info", (*d, records.digest, records.records), 1.0))
        out.append(("mx_records_changed_timestamp_seconds", d, records.changed_at))
    out.append(("mx_probe_duration_seconds", d, report.probe_seconds))
    out.append(("mx_last_probe_timestamp_seconds", d, report.finished_at))
    for tier in report.tiers:
        for exchange in tier.exchanges:
            out.append(("mx_exchange_preference", (*d, exchange.name), tier.preference))
    return out


def _transport_samples(d: tuple[str, ...], verdict: Verdict) -> list[Sample]:
    out: list[Sample] = []
    dane = verdict.dane
    if dane is not None:
        out += [
            ("mx_dane_applies", d, _b(dane.applies)),
            ("mx_dane_valid", d, _b(dane.valid)),
            ("mx_dane_bogus", d, _b(dane.bogus)),
        ]
    sts = verdict.mta_sts
    if sts is not None:
        out += [("mx_mta_sts_policy_state", (*d, s.value), _b(sts.state is s)) for s in PolicyState]
        out += [("mx_mta_sts_mode", (*d, m.value), _b(sts.mode is m)) for m in PolicyMode]
        if sts.mode is not None:
            out += [
                ("mx_mta_sts_max_age_seconds", d, float(sts.max_age or 0)),
                ("mx_mta_sts_mx_match", d, _b(sts.mx_match)),
                ("mx_mta_sts_certificates_valid", d, _b(sts.certificates_valid)),
            ]
        out.append(("mx_mta_sts_deliverable", d, _b(sts.deliverable)))
    if verdict.tls_rpt is not None:
        out.append(("mx_tls_rpt_valid", d, _b(verdict.tls_rpt.valid)))
    return out


def exchange_samples(exchange: Exchange) -> list[Sample]:
    """An exchange name's facts and the facts of each session with its addresses (no domain label)."""
    x = (exchange.name,)
    out: list[Sample] = [("mx_exchange_up", x, _b(exchange.up))]
    if exchange.tlsa is not None:
        out.append(("mx_dane_tlsa_records", x, float(exchange.tlsa_usable)))
    dane = {d.address: d.state for d in exchange.dane}
    for address in exchange.addresses:  # each once: assessment (assess._exchange) dropped any repeat
        a = (*x, address.address, address.family.value)
        out += _address_samples(a, address)
        state = dane.get(address.address)
        if state is not None:
            out += [("mx_dane_state", (*a, s.value), _b(state is s)) for s in DaneState]
    return out


def _address_samples(a: tuple[str, ...], result: AddressResult) -> list[Sample]:
    out: list[Sample] = [("mx_smtp_up", a, _b(result.up))]
    out += [("mx_smtp_outcome", (*a, o.value), _b(result.outcome is o)) for o in SmtpOutcome]
    out.append(("mx_smtp_greeting_code", a, result.greeting_code))
    if result.connect_seconds is not None:
        out.append(("mx_smtp_connect_duration_seconds", a, result.connect_seconds))
    if result.greeting_seconds is not None:
        out.append(("mx_smtp_greeting_duration_seconds", a, result.greeting_seconds))
    out.append(("mx_smtp_starttls_advertised", a, _b(result.starttls_advertised)))
    tls = result.tls  # TLS series only where STARTTLS was attempted
    if tls is None:
        return out
    out.append(("mx_smtp_tls_handshake_success", a, _b(tls.handshake_ok)))
    if tls.version is not None:
        out.append(("mx_smtp_tls_version_info", (*a, tls.version), 1.0))
    if tls.cert_not_after is not None:
        out.append(("mx_smtp_tls_cert_not_after_timestamp_seconds", a, tls.cert_not_after))
    if tls.cert_valid is not None:  # judged for this exchange name in assessment
        out.append(("mx_smtp_tls_cert_valid", a, _b(tls.cert_valid)))
    return out


def latest_reports(reports: Iterable[DomainReport]) -> list[DomainReport]:
    """One report per domain, the last given winning, in the order of each domain's first appearance."""
    latest: dict[str, DomainReport] = {}
    for report in reports:
        latest[report.domain] = report
    return list(latest.values())


def latest_exchanges(reports: Iterable[DomainReport]) -> dict[str, Exchange]:
    """Each exchange name once: the copy from the newest report that names it (ties: the later report)."""
    newest: dict[str, tuple[float, Exchange]] = {}
    for report in reports:
        for tier in report.tiers:
            for exchange in tier.exchanges:
                seen = newest.get(exchange.name)
                if seen is None or report.finished_at >= seen[0]:
                    newest[exchange.name] = (report.finished_at, exchange)
    return {name: exchange for name, (_, exchange) in newest.items()}


def report_families(reports: Iterable[DomainReport]) -> list[Metric]:
    """Every report family of the catalogue, in catalogue order; families without samples are still returned."""
    families = {s.name: GaugeMetricFamily(s.name, s.help, labels=s.labels) for s in REPORT_SPECS}
    unique = latest_reports(reports)
    samples = [s for r in unique for s in domain_samples(r)]
    samples += [s for x in latest_exchanges(unique).values() for s in exchange_samples(x)]
    for name, labels, value in samples:
        families[name].add_metric(labels, value)
    return list(families.values())


class ReportCollector:
    """A prometheus_client custom collector over a source of finished reports (used by /probe and tests)."""

    def __init__(self, source: Callable[[], Iterable[DomainReport]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from report_families(self._source())

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering must not call collect(), and the series set changes with every refresh."""
        return iter(())
