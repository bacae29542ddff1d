"""The exporter's own metrics (``mx_exporter_*``): live prometheus_client objects, named from the catalogue."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mx_exporter import __version__
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
