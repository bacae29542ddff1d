"""/probe?target=: multi-target probing against the real process and lab."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mx_exporter.probe_endpoint import ProbeRejected, validate_target
from tests.lab import plan
from tests.lab.exporter import Exporter, lab_config, value

Start = Callable[..., Exporter]


def parse(body: str) -> list[Any]:
    return [s for fam in text_string_to_metric_families(body) for s in fam.samples]


@pytest.fixture
def prober(nsd_server: Any, smtp_lab: Any, start_exporter: Start) -> Exporter:
    config = lab_config(
        nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"], probe={"reuse_max_age": 0}
    )
    return start_exporter(config)


def test_probe_answers_with_the_same_metrics_as_metrics(prober: Exporter) -> None:
    status, body, headers = prober.get("/probe?target=primary-down.lab.test")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    s = parse(body)
    assert value(s, "mx_probe_success") == 1
    assert value(s, "mx_primary_up", domain="primary-down.lab.test") == 0
    assert value(s, "mx_domain_deliverable", domain="primary-down.lab.test") == 1
    assert (
        value(
            s,
            "mx_smtp_outcome",
            exchange="mx1.primary-down.lab.test",
            address=plan.CLOSED,
            outcome="connection_refused",
        )
        == 1
    )
    assert value(s, "mx_probe_duration_seconds", domain="primary-down.lab.test") > 0

    def names_for(samples: list[Any], domain: str) -> set[str]:
        """Metric names of the domain's series at every level: its own, its membership, its exchanges'."""
        members = {
            x.labels["exchange"]
            for x in samples
            if x.name == "mx_exchange_preference" and x.labels["domain"] == domain
        }
        return {
            x.name for x in samples if x.labels.get("domain") == domain or x.labels.get("exchange") in members
        }

    watched = names_for(prober.scrape(), "healthy.lab.test")
    probed = names_for(s, "primary-down.lab.test")
    # Self-contained: every exchange and session series of /probe belongs to the probed domain.
    assert {x.labels["exchange"] for x in s if "exchange" in x.labels} == {
        "mx1.primary-down.lab.test",
        "mx2.primary-down.lab.test",
    }
    # TLS series exist only where STARTTLS was tried: healthy's ACCEPT_1 offers it, primary-down has no such peer.
    tls_only = {n for n in watched if n.startswith("mx_smtp_tls_")}
    assert tls_only and probed == watched - tls_only
    assert value(parse(prober.get("/probe?target=nullmx.lab.test")[1]), "mx_probe_success") == 1
    assert value(parse(prober.get("/probe?target=undeliverable.lab.test")[1]), "mx_probe_success") == 0


@pytest.mark.parametrize(
    "target",
    [
        "",
        "127.0.0.1",
        "http://healthy.lab.test/",
        "a..b",
        "-bad.lab.test",
        "x" * 254,
        "user@lab.test",
        "[::1]",
        "has space.lab.test",
        "a" * 64 + ".test",
    ],
)
def test_invalid_targets_get_400_without_dns(prober: Exporter, blackhole_dns: Any, target: str) -> None:
    from urllib.parse import quote

    status, body, _ = prober.get("/probe?target=" + quote(target))
    assert status == 400
    assert body.count("\n") == 1 and body.strip()
    with pytest.raises(ProbeRejected):
        validate_target(target)


def test_invalid_target_sends_no_dns_query(
    nsd_server: Any, smtp_lab: Any, blackhole_dns: Any, start_exporter: Start
) -> None:
    config = lab_config(blackhole_dns.nameserver, smtp_lab.port, [])
    exporter = start_exporter(config)
    before = blackhole_dns.queries
    for target in ("127.0.0.1", "http://x.test/", "a..b"):
        assert exporter.get("/probe?target=" + target)[0] == 400
    assert blackhole_dns.queries == before
    exporter.get(
        "/probe?target=valid.lab.test", timeout=10, headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"}
    )
    assert blackhole_dns.queries > before


def test_probe_keeps_its_deadline_and_returns_what_finished(prober: Exporter) -> None:
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    started = time.monotonic()
    status, body, _ = prober.get("/probe?target=undeliverable.lab.test", headers=headers, timeout=10)
    elapsed = time.monotonic() - started
    # Greeting timeout 2.5 s > budget 1.5 s: the silent backup is cut off, the refused primary is known.
    assert status == 200 and elapsed < 2.0, elapsed
    s = parse(body)
    assert value(s, "mx_smtp_outcome", address=plan.CLOSED, outcome="connection_refused") == 1
    assert value(s, "mx_smtp_outcome", address=plan.SILENT, outcome="skipped") == 1
    assert value(s, "mx_probe_success") == 0


def test_debug_output_has_log_metrics_and_settings(prober: Exporter) -> None:
    status, body, headers = prober.get("/probe?target=healthy.lab.test&debug=true")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "== DNS" in body and "== SMTP" in body and "== Settings" in body
    assert "S: 220" in body and f"C: EHLO {plan.EHLO_NAME}" in body
    assert 'mx_primary_up{domain="healthy.lab.test"} 1.0' in body


def test_concurrent_requests_share_one_probe(prober: Exporter, smtp_lab: Any) -> None:
    before = smtp_lab.connections(plan.SLOW_GREETING)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: prober.get("/probe?target=slow.lab.test", timeout=15), range(4)))
    assert [a[0] for a in answers] == [200] * 4
    assert smtp_lab.connections(plan.SLOW_GREETING) - before == 1


def test_cap_on_concurrent_probes_answers_429(nsd_server: Any, smtp_lab: Any, start_exporter: Start) -> None:
    config = lab_config(nsd_server.nameserver, smtp_lab.port, [], probe={"max_concurrent": 1})
    exporter = start_exporter(config)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(exporter.get, "/probe?target=silent.lab.test", 15)
        time.sleep(0.5)
        second = exporter.get("/probe?target=slow.lab.test", timeout=15)
        assert second[0] == 429 and "too many probes" in second[1]
        assert first.result()[0] == 200


def test_watched_result_is_reused_when_fresh(nsd_server: Any, smtp_lab: Any, start_exporter: Start) -> None:
    config = lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"], refresh_interval=60)
    exporter = start_exporter(config)
    body = exporter.get("/probe?target=healthy.lab.test&debug=1")[1]
    assert "(reused from the watched refresh)" in body
    body = exporter.get("/probe?target=primary-down.lab.test&debug=1")[1]
    assert "reused" not in body


def test_a_thousand_targets_do_not_grow_metrics(prober: Exporter) -> None:
    before = prober.scrape()
    targets = [f"t{i}.nxdomain.lab.test" for i in range(1000)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda t: prober.get(f"/probe?target={t}", timeout=30)[0], targets))
    assert statuses == [200] * 1000
    after = prober.scrape()
    assert {
        (s.name, tuple(sorted(s.labels.items())))
        for s in after
        if s.name.startswith("mx_") and not s.name.startswith("mx_exporter")
    } == {
        (s.name, tuple(sorted(s.labels.items())))
        for s in before
        if s.name.startswith("mx_") and not s.name.startswith("mx_exporter")
    }
    assert len(after) == len(before)
