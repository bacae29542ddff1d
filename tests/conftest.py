"""Lab fixtures shared by the suite: NSD, the SMTP peers and the exporter process factory; the `lab` marker.

A test is marked `lab` when it uses a lab fixture or lives in a module that starts real parts itself (LAB_MODULES),
so `pytest -m "not lab"` runs the pure table tests (assessment, collector, parsers) in seconds.
"""

import pytest

from tests.lab.exporter import start_exporter
from tests.lab.nsd import blackhole_dns, nsd_server
from tests.lab.smtp_peers import smtp_lab
from tests.lab.transport_lab import transport_lab

__all__ = ["blackhole_dns", "nsd_server", "smtp_lab", "start_exporter", "transport_lab"]


LAB_FIXTURES = frozenset({"blackhole_dns", "nsd_server", "smtp_lab", "start_exporter", "transport_lab"})
# Modules whose tests start processes or servers of their own (subprocesses, netns, aiosmtpd, HTTPS, browsers).
LAB_MODULES = frozenset(
    {
        "test_bench_smoke",
        "test_check_cli",
        "test_dnssec_lab",
        "test_dockerfile",
        "test_egress",
        "test_exporter_lab",
        "test_exporter_process",
        "test_intended_setups",
        "test_ipv6_parity",
        "test_mtasts_fetch",
        "test_probe_endpoint",
        "test_prometheus_live",
        "test_record_changes_lab",
        "test_rules",
        "test_sender_conformance",
        "test_smtp",
        "test_status_page_browser",
        "test_tls",
        "test_transport_lab",
        "test_web_security",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in LAB_MODULES or LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)
