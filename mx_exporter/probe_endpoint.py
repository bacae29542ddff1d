"""/probe?target=DOMAIN: the multi-target pattern (like blackbox_exporter).

Each request renders from a fresh CollectorRegistry, so ad-hoc targets never add series to /metrics. Concurrent
requests for one domain share one probe; past ``probe.max_concurrent`` distinct probes the answer is 429. A
watched domain whose last report is younger than ``probe.reuse_max_age`` seconds is answered from that report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import yaml
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from mx_exporter.collector import ReportCollector
from mx_exporter.engine import Prober
from mx_exporter.metrics import spec
from mx_exporter.model import DnsStatus, DomainReport
from mx_exporter.names import normalize_domain
from mx_exporter.settings import DomainSettings, Settings

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
MIN_DEADLINE = 0.2


class ProbeRejected(Exception):
    """The request cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def validate_target(target: str | None) -> str:
    """The normalized domain, or ProbeRejected(400) with a one-line reason; never any I/O."""
    if target is None or not target.strip():
        raise ProbeRejected(400, "missing target parameter: /probe?target=example.org")
    try:
        return normalize_domain(target)
    except ValueError as err:
        raise ProbeRejected(400, f"invalid target {target[:100]!r}: {err}") from None


def probe_budget(settings: Settings, header: str | None) -> float:
    """Seconds this probe may take: the scrape timeout minus the offset, capped by the settings."""
    budget = settings.probe.timeout
    if header:
        try:
            scrape = float(header)
        except ValueError:
            raise ProbeRejected(400, f"invalid {SCRAPE_TIMEOUT_HEADER} header {header[:40]!r}") from None
        if scrape > 0:
            budget = min(budget, scrape - settings.probe.timeout_offset)
    return max(MIN_DEADLINE, budget)


def probe_success(report: DomainReport) -> bool:
    r = report.resolution
    return report.verdict.deliverable or (r.status is DnsStatus.OK and r.null_mx)


def render_probe(report: DomainReport) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(lambda: [report]))
    success = spec("mx_probe_success")
    Gauge(success.name, success.help, registry=registry).set(1 if probe_success(report) else 0)
    return generate_latest(registry)


def debug_text(report: DomainReport, settings: Settings, reused: bool) -> str:
    """The probe's log, the metrics it produced and the effective settings, for humans."""
    lines = [f"probe of {report.domain}" + (" (reused from the watched refresh)" if reused else ""), ""]
    lines += ["== DNS", *report.resolution.log, f"status: {report.resolution.status.value}", ""]
    lines.append("== SMTP")
    for tier in report.tiers:
        for exchange in tier.exchanges:
            for address in exchange.addresses:
                lines.append(
                    f"-- {exchange.name} [{address.address}] pref {tier.preference}: "
                    f"{address.outcome.value} {address.detail}"
                )
                lines.extend("   " + t for t in address.transcript)
    lines += ["", "== Metrics", render_probe(report).decode(), "== Settings"]
    lines.append(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return "\n".join(lines)


class ProbeService:
    """Shares probes between concurrent requests and caps how many distinct probes run at once."""

    def __init__(
        self,
        prober: Callable[[], Prober],
        watched: Callable[[], dict[str, DomainReport]],
        config: Callable[[], dict[str, DomainSettings]],
    ) -> None:
        self._prober = prober
        self._watched = watched
        self._config = config
        self._flights: dict[str, asyncio.Task[DomainReport]] = {}

    def reusable(self, domain: str, max_age: float) -> DomainReport | None:
        report = self._watched().get(domain)
        if report is not None and time.time() - report.finished_at <= max_age:
            return report
        return None

    async def probe(self, domain: str, budget: float, max_concurrent: int) -> DomainReport:
        flight = self._flights.get(domain)
        if flight is None:
            if len(self._flights) >= max_concurrent:
                raise ProbeRejected(429, f"too many probes in flight ({max_concurrent}); try again later")
            deadline = time.monotonic() + budget
            prober = self._prober()
            flight = asyncio.create_task(
                prober.probe(domain, prober.new_cycle(), self._config().get(domain), deadline)
            )
            self._flights[domain] = flight
            flight.add_done_callback(lambda _t: self._flights.pop(domain, None))
        # The shared probe honours its own deadline; this request also stops waiting at its own.
        return await asyncio.wait_for(asyncio.shield(flight), budget + 0.5)
