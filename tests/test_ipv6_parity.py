"""IPv6 parity against the real lab: an exchange whose A accepts while its AAAA (::1) refuses, and the reverse.

dualstack.lab.test has one exchange with A 127.0.0.77 and AAAA ::1. Here an aiosmtpd peer listens on
127.0.0.77 only, on a port of its own that nothing listens on at ::1, and the exporter probes that port: IPv4
accepts, IPv6 is refused — ipv6_broken. On the shared lab's port the opposite holds (::1 accepts, nothing on
127.0.0.77): IPv6 deliverable, not broken.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.lab import plan
from tests.lab.exporter import free_port, lab_config, value

DOMAIN = "dualstack.lab.test"


class _Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture
def v4_only_peer() -> Iterator[int]:
    port = free_port(plan.V4_ONLY_PEER)
    controller = Controller(_Accept(), hostname=plan.V4_ONLY_PEER, port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def test_aaaa_refused_while_a_accepts_is_ipv6_broken(
    nsd_server: Any, v4_only_peer: int, start_exporter: Any
) -> None:
    s = start_exporter(lab_config(nsd_server.nameserver, v4_only_peer, [DOMAIN])).scrape()
    assert value(s, "mx_smtp_up", address=plan.V4_ONLY_PEER) == 1
    assert value(s, "mx_smtp_up", address=plan.IPV6_ACCEPT) == 0
    assert value(s, "mx_misconfiguration", domain=DOMAIN, kind="ipv6_broken") == 1
    assert value(s, "mx_ipv6_deliverable", domain=DOMAIN) == 0
    assert value(s, "mx_domain_deliverable", domain=DOMAIN) == 1  # every IPv4 check is green
    assert value(s, "mx_exporter_ipv6_no_route") == 0  # ::1 answered with a refusal: a real result


def test_aaaa_accepting_is_ipv6_deliverable(nsd_server: Any, smtp_lab: Any, start_exporter: Any) -> None:
    s = start_exporter(lab_config(nsd_server.nameserver, smtp_lab.port, [DOMAIN])).scrape()
    assert value(s, "mx_ipv6_deliverable", domain=DOMAIN) == 1
    assert value(s, "mx_misconfiguration", domain=DOMAIN, kind="ipv6_broken") == 0
