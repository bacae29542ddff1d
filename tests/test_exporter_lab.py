"""The real console script against the real lab (NSD + SMTP peers), scraped over HTTP and parsed like Prometheus."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.lab import plan
from tests.lab.exporter import Exporter, Samples, lab_config, series, value

ALL_DOMAINS = [*sorted(plan.DOMAINS), plan.REFUSED_DOMAIN, plan.SERVFAIL_DOMAIN]


@pytest.fixture(scope="module")
def lab_scrape(nsd_server: Any, smtp_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Samples:
    """One exporter watching every lab domain; the samples after its first full refresh."""
    folder = tmp_path_factory.mktemp("lab")
    smtp_lab.ca.cert_pem.write_to_path(str(folder / "lab-ca.pem"))
    config = lab_config(
        nsd_server.nameserver,
        smtp_lab.port,
        ALL_DOMAINS,
        refresh_interval=30,
        smtp={"tls_ca_file": str(folder / "lab-ca.pem")},
    )
    path = folder / "all.yml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MX_EXPORTER_")}
    proc = Exporter(config, path, [], env)
    try:
        proc.wait_ready(timeout=30)
        return proc.scrape()
    finally:
        proc.stop()


def exchanges_of(samples: Samples, domain: str) -> dict[str, float]:
    """The domain's MX set as exported: exchange -> preference, from the membership series."""
    return {x.labels["exchange"]: x.value for x in series(samples, "mx_exchange_preference", domain=domain)}


def joined(
    samples: Samples, name: str, domain: str, preference: str | None = None, **labels: str
) -> list[Any]:
    """Series of an exchange- or session-level metric for the domain's exchanges (PromQL's `and on (exchange)`)."""
    members = exchanges_of(samples, domain)
    if preference is not None:
        members = {x: p for x, p in members.items() if p == float(preference)}
    return [x for x in series(samples, name, **labels) if x.labels["exchange"] in members]


def d(samples: Samples, name: str, domain: str, **labels: str) -> float:
    """A domain's value; exchange and session metrics are reached through the domain's membership."""
    if name.startswith(("mx_smtp_", "mx_exchange_up")):
        found = joined(samples, name, domain, **labels)
        assert len(found) == 1, (name, domain, labels, found)
        return float(found[0].value)
    return value(samples, name, domain=domain, **labels)


def outcome_of(samples: Samples, domain: str, address: str) -> str:
    hot = [s for s in joined(samples, "mx_smtp_outcome", domain, address=address) if s.value == 1]
    assert len(hot) == 1, hot
    return hot[0].labels["outcome"]


def test_two_tier_healthy_domain(lab_scrape: Samples) -> None:
    s, dom = lab_scrape, "healthy.lab.test"
    assert d(s, "mx_dns_status", dom, status="ok") == 1
    assert d(s, "mx_records", dom) == 2
    assert d(s, "mx_tiers", dom) == 2
    assert d(s, "mx_preference_gap", dom) == 10
    assert d(s, "mx_domain_deliverable", dom) == 1
    assert d(s, "mx_primary_up", dom) == 1
    assert d(s, "mx_active_preference", dom) == 10
    assert d(s, "mx_fallback_to_a", dom) == 0
    mx1 = "mx1.healthy.lab.test"
    assert len(joined(s, "mx_smtp_up", dom, exchange=mx1, family="ipv4")) == 1
    assert len(joined(s, "mx_smtp_up", dom, exchange=mx1, family="ipv6")) == 1
    for address, pref in ((plan.ACCEPT_1, "10"), (plan.IPV6_ACCEPT, "10"), (plan.ACCEPT_2, "20")):
        assert d(s, "mx_smtp_up", dom, address=address, preference=pref) == 1
        assert d(s, "mx_smtp_greeting_code", dom, address=address) == 220
        assert 0 < d(s, "mx_smtp_connect_duration_seconds", dom, address=address) < 1
    assert d(s, "mx_smtp_starttls_advertised", dom, address=plan.ACCEPT_1) == 1
    assert d(s, "mx_smtp_starttls_advertised", dom, address=plan.ACCEPT_2) == 0
    assert exchanges_of(s, dom) == {mx1: 10, "mx2.healthy.lab.test": 20}
    assert d(s, "mx_exchange_up", dom, exchange="mx2.healthy.lab.test") == 1
    for kind in (
        "cname_target",
        "ip_literal_target",
        "unresolvable_target",
        "null_mx_mixed",
        "duplicate_exchange",
        "non_global_address",
    ):
        assert d(s, "mx_misconfiguration", dom, kind=kind) == 0
    assert d(s, "mx_record_ttl_seconds", dom) > 0


def test_primary_down_and_undeliverable(lab_scrape: Samples) -> None:
    s = lab_scrape
    dom = "primary-down.lab.test"
    assert (d(s, "mx_primary_up", dom), d(s, "mx_domain_deliverable", dom)) == (0, 1)
    assert d(s, "mx_active_preference", dom) == 20
    assert outcome_of(s, dom, plan.CLOSED) == "connection_refused"
    for sender in ("postfix", "exim", "qmail"):
        assert d(s, "mx_delivery_preference", dom, sender=sender) == 20
        assert d(s, "mx_delivery_outcome", dom, sender=sender, outcome="delivered") == 1
    dom = "undeliverable.lab.test"
    assert (d(s, "mx_primary_up", dom), d(s, "mx_domain_deliverable", dom)) == (0, 0)
    assert d(s, "mx_active_preference", dom) == -1
    assert outcome_of(s, dom, plan.SILENT) == "greeting_timeout"
    assert d(s, "mx_delivery_preference", dom, sender="postfix") == -1
    assert d(s, "mx_delivery_outcome", dom, sender="postfix", outcome="queued") == 1


def test_sender_profiles_where_the_mtas_disagree(lab_scrape: Samples) -> None:
    """The scraped outcome per profile for the lab's null MX mix and its EHLO-rejecting peer (which answers
    HELO with 250, so every sender delivers there through the HELO fallback)."""
    s = lab_scrape
    dom = "nullmixed.lab.test"
    assert d(s, "mx_delivery_outcome", dom, sender="postfix", outcome="bounced") == 1
    assert d(s, "mx_delivery_outcome", dom, sender="exim", outcome="delivered") == 1
    assert d(s, "mx_delivery_preference", dom, sender="postfix") == -1
    dom = "literal.lab.test"
    assert d(s, "mx_delivery_preference", dom, sender="postfix") == 10
    assert d(s, "mx_delivery_preference", dom, sender="exim") == 20
    dom = "ehloreject.lab.test"
    assert d(s, "mx_domain_deliverable", dom) == 0  # nothing accepted EHLO
    for sender in ("postfix", "exim", "qmail"):
        assert d(s, "mx_delivery_preference", dom, sender=sender) == 10


def test_equal_preferences_form_one_tier(lab_scrape: Samples) -> None:
    s, dom = lab_scrape, "equal.lab.test"
    assert d(s, "mx_tiers", dom) == 1
    assert d(s, "mx_preference_gap", dom) == 0
    members = exchanges_of(s, dom)
    assert len(members) == 2 and set(members.values()) == {10}
    assert sum(x.value for x in joined(s, "mx_exchange_up", dom, preference="10")) == 1
    assert d(s, "mx_primary_up", dom) == 1


@pytest.mark.parametrize(
    ("domain", "status", "fallback", "deliverable"),
    [
        ("fallback.lab.test", "nodata", 1, 1),
        ("noaddr.lab.test", "nodata", 0, 0),
        ("nxdomain.lab.test", "nxdomain", 0, 0),
        (plan.REFUSED_DOMAIN, "servfail", 0, 0),
        (plan.SERVFAIL_DOMAIN, "servfail", 0, 0),
        ("nullmx.lab.test", "ok", 0, 0),
    ],
)
def test_dns_classification(
    lab_scrape: Samples, domain: str, status: str, fallback: int, deliverable: int
) -> None:
    s = lab_scrape
    states = {x.labels["status"]: x.value for x in series(s, "mx_dns_status", domain=domain)}
    assert states == {
        k: (1.0 if k == status else 0.0) for k in ("ok", "nodata", "nxdomain", "servfail", "timeout", "error")
    }
    assert d(s, "mx_fallback_to_a", domain) == fallback
    assert d(s, "mx_domain_deliverable", domain) == deliverable


def test_implicit_mx_probes_the_domains_own_address(lab_scrape: Samples) -> None:
    s, dom = lab_scrape, "fallback.lab.test"
    assert d(s, "mx_records", dom) == 0
    assert d(s, "mx_smtp_up", dom, exchange=dom, preference="0", address=plan.ACCEPT_1) == 1
    assert d(s, "mx_active_preference", dom) == 0
    assert exchanges_of(s, dom) == {dom: 0}
    assert joined(s, "mx_smtp_up", "noaddr.lab.test") == []
    assert joined(s, "mx_smtp_up", "nxdomain.lab.test") == []
    assert not [x for x in series(s, "mx_smtp_up") if "domain" in x.labels]  # sessions carry no domain


def test_null_mx_is_not_an_error(lab_scrape: Samples) -> None:
    s, dom = lab_scrape, "nullmx.lab.test"
    assert d(s, "mx_null_mx", dom) == 1
    assert d(s, "mx_records", dom) == 1
    assert sum(x.value for x in series(s, "mx_misconfiguration", domain=dom)) == 0
    assert exchanges_of(s, dom) == {} and joined(s, "mx_smtp_up", dom) == []
    assert d(s, "mx_delivery_outcome", dom, sender="postfix", outcome="bounced") == 1


@pytest.mark.parametrize(
    ("domain", "kind", "deliverable", "primary_up"),
    [
        ("nullmixed.lab.test", "null_mx_mixed", 1, 1),
        ("cname.lab.test", "cname_target", 1, 1),
        # Probed as the address it spells (ACCEPT_1): Postfix and qmail deliver there, Exim refuses it.
        ("literal.lab.test", "ip_literal_target", 1, 1),
        ("unresolvable.lab.test", "unresolvable_target", 1, 0),
        ("duplicate.lab.test", "duplicate_exchange", 1, 1),
        ("nonglobal.lab.test", "non_global_address", 1, 0),
    ],
)
def test_misconfigurations(
    lab_scrape: Samples, domain: str, kind: str, deliverable: int, primary_up: int
) -> None:
    s = lab_scrape
    flags = {x.labels["kind"]: x.value for x in series(s, "mx_misconfiguration", domain=domain)}
    assert flags[kind] == 1, flags
    assert d(s, "mx_domain_deliverable", domain) == deliverable
    assert d(s, "mx_primary_up", domain) == primary_up


def test_duplicate_exchange_probed_once_and_private_address_skipped(lab_scrape: Samples) -> None:
    s = lab_scrape
    assert len(exchanges_of(s, "duplicate.lab.test")) == 1
    assert d(s, "mx_records", "duplicate.lab.test") == 2
    assert outcome_of(s, "nonglobal.lab.test", plan.PRIVATE) == "skipped"
    assert d(s, "mx_smtp_up", "nonglobal.lab.test", address=plan.ACCEPT_2) == 1


@pytest.mark.parametrize(
    ("domain", "address", "outcome", "code"),
    [
        ("multiline.lab.test", plan.MULTILINE, "accepted", 220),
        ("greet421.lab.test", plan.GREET_421, "greeting_4xx", 421),
        ("greet554.lab.test", plan.GREET_554, "greeting_5xx", 554),
        ("silent.lab.test", plan.SILENT, "greeting_timeout", 0),
        ("closed.lab.test", plan.CLOSED, "connection_refused", 0),
        ("slow.lab.test", plan.SLOW_GREETING, "greeting_timeout", 0),
        ("ehloreject.lab.test", plan.EHLO_REJECT, "ehlo_failed", 220),
        ("garbage.lab.test", plan.GARBAGE, "protocol_error", 0),
        ("dribble.lab.test", plan.DRIBBLE, "greeting_timeout", 0),
        ("sink.lab.test", plan.SINK, "accepted", 220),
        ("v6only.lab.test", plan.IPV6_ACCEPT, "accepted", 220),
    ],
)
def test_smtp_outcomes(lab_scrape: Samples, domain: str, address: str, outcome: str, code: int) -> None:
    s = lab_scrape
    assert outcome_of(s, domain, address) == outcome
    assert d(s, "mx_smtp_greeting_code", domain, address=address) == code
    assert d(s, "mx_smtp_up", domain, address=address) == (1 if outcome == "accepted" else 0)
    assert d(s, "mx_domain_deliverable", domain) == (1 if outcome == "accepted" else 0)
    if outcome == "accepted":
        assert d(s, "mx_smtp_greeting_duration_seconds", domain, address=address) >= 0
    if domain == "multiline.lab.test":
        assert d(s, "mx_smtp_greeting_duration_seconds", domain, address=address) >= plan.MULTILINE_PAUSE


def test_address_cap_ttl_and_families(lab_scrape: Samples) -> None:
    s = lab_scrape
    assert len(joined(s, "mx_smtp_up", "many.lab.test", family="ipv4")) == 5
    assert len(joined(s, "mx_smtp_up", "many.lab.test")) == 5
    assert d(s, "mx_record_ttl_seconds", "ttl.lab.test") == 1234
    assert len(joined(s, "mx_smtp_up", "v6only.lab.test", family="ipv6")) == 1
    assert value(s, "mx_exporter_domains") == len(ALL_DOMAINS)
    for name in ("mx_probe_duration_seconds", "mx_last_probe_timestamp_seconds"):
        assert {x.labels["domain"] for x in series(s, name)} == set(ALL_DOMAINS)


def test_failover_primary_then_backup(
    nsd_server: Any, smtp_lab: Any, start_exporter: Callable[..., Exporter]
) -> None:
    dom = "failover.lab.test"
    exporter = start_exporter(lab_config(nsd_server.nameserver, smtp_lab.port, [dom], refresh_interval=1))

    def verdict() -> tuple[float, float]:
        s = exporter.scrape()
        return d(s, "mx_primary_up", dom), d(s, "mx_domain_deliverable", dom)

    assert verdict() == (1, 1)
    try:
        smtp_lab.stop_peer(plan.FAILOVER_PRIMARY)
        exporter.wait_until(lambda: verdict() == (0, 1), 15, "primary down, deliverable via backup")
        assert d(exporter.scrape(), "mx_active_preference", dom) == 20
        smtp_lab.stop_peer(plan.FAILOVER_BACKUP)
        exporter.wait_until(lambda: verdict() == (0, 0), 15, "undeliverable")
        assert d(exporter.scrape(), "mx_active_preference", dom) == -1
    finally:
        smtp_lab.start_peer(plan.FAILOVER_PRIMARY)
        smtp_lab.start_peer(plan.FAILOVER_BACKUP)
    exporter.wait_until(lambda: verdict() == (1, 1), 15, "recovered")


def test_starttls_and_certificate_facts_per_exchange_name(lab_scrape: Samples) -> None:
    s = lab_scrape
    for dom, exchange, valid in (
        ("healthy.lab.test", "mx1.healthy.lab.test", 1),
        ("cname.lab.test", "alias.cname.lab.test", 0),  # the certificate names mx1.healthy.lab.test only
    ):
        labels = {"exchange": exchange, "address": plan.ACCEPT_1}
        assert d(s, "mx_smtp_tls_handshake_success", dom, **labels) == 1
        assert d(s, "mx_smtp_tls_cert_valid", dom, **labels) == valid
        assert d(s, "mx_smtp_tls_cert_not_after_timestamp_seconds", dom, **labels) > 1.7e9
        versions = joined(s, "mx_smtp_tls_version_info", dom, **labels)
        assert [v.labels["version"] for v in versions] in (["TLSv1.3"], ["TLSv1.2"])
    # No STARTTLS advertised: no TLS series at all.
    assert joined(s, "mx_smtp_tls_handshake_success", "healthy.lab.test", address=plan.ACCEPT_2) == []
