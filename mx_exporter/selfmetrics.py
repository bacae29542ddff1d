"""The exporter's own metrics (``mx_exporter_*``): live prometheus_client objects, named from the catalogue."""

from __future__ import annotations

import asyncio
import platform
from collections import Counter as Counter_
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mx_exporter import __version__
from mx_exporter.dnsask import RESULTS as DNS_RESULTS
from mx_exporter.egress import Egress, EgressState
from mx_exporter.metrics import spec

REFRESH_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))


class ExporterMetrics:
    """Registered once per process; the refresh loop, reload and web layer update them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str) -> Gauge:
            s = spec(name)
            return Gauge(s.name, s.help, s.labels, registry=registry)

        def counter(name: str) -> Counter:
            s = spec(name)
            return Counter(s.name, s.help, s.labels, registry=registry)

        self.build_info = gauge("mx_exporter_build_info")
        self.build_info.labels(version=__version__, python=platform.python_version()).set(1)
        refresh = spec("mx_exporter_refresh_duration_seconds")
        self.refresh_duration = Histogram(
            refresh.name, refresh.help, registry=registry, buckets=REFRESH_BUCKETS
        )
        self.domains = gauge("mx_exporter_domains")
        self.reload_ok = gauge("mx_exporter_config_last_reload_successful")
        self.reload_timestamp = gauge("mx_exporter_config_last_reload_success_timestamp_seconds")
        self.refreshes = counter("mx_exporter_refreshes")
        self.probe_errors = counter("mx_exporter_probe_errors")
        self.sessions = counter("mx_exporter_smtp_sessions")
        self.last_refresh = gauge("mx_exporter_last_refresh_timestamp_seconds")
        self.dns_queries = counter("mx_exporter_dns_queries")
        self.dns_tcp_retries = counter("mx_exporter_dns_tcp_retries")
        self.dns_cache_hits = counter("mx_exporter_dns_cache_hits")
        self.last_refresh_dns = gauge("mx_exporter_last_refresh_dns_queries")
        self.last_refresh_sessions = gauge("mx_exporter_last_refresh_smtp_sessions")
        self.tasks = gauge("mx_exporter_asyncio_tasks")
        self.tasks.set_function(_running_tasks)
        self.egress_suspected = gauge("mx_exporter_egress_suspected")
        self.ipv6_no_route = gauge("mx_exporter_ipv6_no_route")
        self.egress: Egress | None = None  # the last canary check; None without canaries (no series)
        registry.register(_EgressCollector(self))
        for result in DNS_RESULTS:  # every result of the closed set from the start, so rates never miss one
            self.last_refresh_dns.labels(result=result).set(0)
            for rdtype in ("MX", "A", "AAAA"):
                self.dns_queries.labels(type=rdtype, result=result)


class _EgressCollector(Collector):
    """The canary check's series, present only while canaries are configured (an absent check is no "up")."""

    def __init__(self, metrics: ExporterMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        egress = self.metrics.egress
        if egress is None:
            return
        up, state = spec("mx_exporter_egress_up"), spec("mx_exporter_egress_state")
        yield GaugeMetricFamily(up.name, up.help, value=1.0 if egress.up else 0.0)
        family = GaugeMetricFamily(state.name, state.help, labels=state.labels)
        for member in EgressState:
            family.add_metric([member.value], 1.0 if egress.state is member else 0.0)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected on demand: nothing to check at registration


class RefreshTally:
    """One refresh cycle's DNS questions and SMTP sessions; also feeds the exporter's live counters.

    It is the resolver's ``QueryObserver`` for the cycle, so what the exporter says it asked is what went on
    the wire.
    """

    def __init__(self, metrics: ExporterMetrics | None) -> None:
        self.metrics = metrics
        self.queries: Counter_[tuple[str, str]] = Counter_()
        self.tcp_retries = 0
        self.sessions = 0

    def query(self, rdtype: str, result: str, tcp_retry: bool) -> None:
        self.queries[(rdtype, result)] += 1
        if self.metrics is not None:
            self.metrics.dns_queries.labels(type=rdtype, result=result).inc()
        if tcp_retry:
            self.tcp_retries += 1
            if self.metrics is not None:
                self.metrics.dns_tcp_retries.labels(type=rdtype).inc()

    def session(self) -> None:
        self.sessions += 1
        if self.metrics is not None:
            self.metrics.sessions.inc()

    def finish(self, cache_hits: int) -> None:
        """Publish the cycle's totals as the last refresh's figures."""
        if self.metrics is None:
            return
        self.metrics.dns_cache_hits.inc(cache_hits)
        for result in DNS_RESULTS:
            total = sum(n for (_, r), n in self.queries.items() if r == result)
            self.metrics.last_refresh_dns.labels(result=result).set(total)
        self.metrics.last_refresh_sessions.set(self.sessions)


def _running_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped from a thread without a running loop
        return float("nan")
