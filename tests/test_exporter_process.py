"""The exporter as a process: prompt scrapes, clean stops, dedupe across domains, reload, health endpoints."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.lab import plan
from tests.lab.exporter import Exporter, lab_config, series, value

Start = Callable[..., Exporter]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_scrape_answers_while_refresh_is_stuck_and_a_stop_signal_closes_everything_fast(
    nsd_server: Any, smtp_lab: Any, start_exporter: Start, stop_signal: int
) -> None:
    slow = {"greeting_timeout": 40, "session_timeout": 50}
    config = lab_config(
        nsd_server.nameserver,
        smtp_lab.port,
        [{"name": "silent.lab.test", "smtp": slow}, {"name": "dribble.lab.test", "smtp": slow}],
    )
    exporter = start_exporter(config, wait_ready=False)
    exporter.wait_until(lambda: exporter._status("/-/healthy") == 200, 20, "healthy")
    exporter.wait_until(lambda: smtp_lab.connections(plan.SILENT) > 0, 10, "session to the silent peer")
    for _ in range(5):
        started = time.monotonic()
        samples = exporter.scrape()
        assert time.monotonic() - started < 1.0
        assert value(samples, "mx_exporter_domains") == 2
        assert series(samples, "mx_exchange_preference", domain="silent.lab.test") == []
        assert series(samples, "mx_smtp_up") == []
    assert exporter.get("/-/ready")[0] == 503
    assert smtp_lab.open_connections(plan.SILENT) >= 1
    assert exporter.stop(stop_signal) < 5.0
    assert exporter.proc.returncode == 0
    # Every session socket was closed by the exporter, not left for the peer to time out.
    smtp_lab.wait_idle(plan.SILENT, timeout=1.0)
    smtp_lab.wait_idle(plan.DRIBBLE, timeout=1.0)


def test_shared_address_probed_once_per_cycle(nsd_server: Any, smtp_lab: Any, start_exporter: Start) -> None:
    users_of_accept_1 = [
        "healthy.lab.test",
        "shared1.lab.test",
        "shared2.lab.test",
        "equal.lab.test",
        "fallback.lab.test",
        "cname.lab.test",
        "duplicate.lab.test",
        "nullmixed.lab.test",
    ]
    config = lab_config(nsd_server.nameserver, smtp_lab.port, users_of_accept_1, refresh_interval=1)
    before = smtp_lab.connections(plan.ACCEPT_1)
    exporter = start_exporter(config)
    exporter.wait_until(
        lambda: value(exporter.scrape(), "mx_exporter_refreshes_total") >= 4, 30, "four refresh cycles"
    )
    cycles = value(exporter.scrape(), "mx_exporter_refreshes_total")
    opened = smtp_lab.connections(plan.ACCEPT_1) - before
    assert 4 <= opened <= cycles + 1, (opened, cycles)
    assert smtp_lab.max_concurrent(plan.ACCEPT_1) == 1
    samples = exporter.scrape()
    exchanges = {x.labels["exchange"] for x in series(samples, "mx_smtp_up", address=plan.ACCEPT_1)}
    for domain in users_of_accept_1:
        members = {x.labels["exchange"] for x in series(samples, "mx_exchange_preference", domain=domain)}
        assert members & exchanges, (domain, members)
    for x in series(samples, "mx_smtp_up", address=plan.ACCEPT_1):
        assert x.value == 1 and "domain" not in x.labels


def test_reload_applies_new_domains_and_keeps_old_settings_on_error(
    nsd_server: Any, smtp_lab: Any, start_exporter: Start
) -> None:
    config = lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test", "primary-down.lab.test"])
    exporter = start_exporter(config)
    assert {s.labels["domain"] for s in series(exporter.scrape(), "mx_domain_deliverable")} == {
        "healthy.lab.test",
        "primary-down.lab.test",
    }
    assert exporter.get("/-/reload")[0] == 405

    exporter.path.write_text(yaml.safe_dump({**config, "domains": ["healthy.lab.test", "nullmx.lab.test"]}))
    status, body, _ = exporter.get("/-/reload", method="POST")
    assert (status, body) == (200, "reloaded\n")
    domains = {s.labels["domain"] for s in series(exporter.scrape(), "mx_domain_deliverable")}
    assert "primary-down.lab.test" not in domains
    exporter.wait_until(
        lambda: (
            value(exporter.scrape(), "mx_null_mx", domain="nullmx.lab.test") == 1
            if series(exporter.scrape(), "mx_null_mx", domain="nullmx.lab.test")
            else False
        ),
        15,
        "the new domain probed",
    )
    assert value(exporter.scrape(), "mx_exporter_config_last_reload_successful") == 1

    exporter.path.write_text(yaml.safe_dump({**config, "smtp": {"prot": 25}}))
    status, body, _ = exporter.get("/-/reload", method="POST")
    assert status == 500
    assert f"{exporter.path}: smtp.prot: unknown key" in body
    samples = exporter.scrape()
    assert value(samples, "mx_exporter_config_last_reload_successful") == 0
    assert value(samples, "mx_exporter_domains") == 2

    exporter.path.write_text(yaml.safe_dump({**config, "domains": ["healthy.lab.test"]}))
    exporter.proc.send_signal(signal.SIGHUP)
    exporter.wait_until(
        lambda: value(exporter.scrape(), "mx_exporter_config_last_reload_successful") == 1,
        10,
        "SIGHUP reload",
    )
    samples = exporter.scrape()
    assert value(samples, "mx_exporter_domains") == 1
    assert {s.labels["domain"] for s in series(samples, "mx_domain_deliverable")} == {"healthy.lab.test"}


def test_health_config_and_build_info(nsd_server: Any, smtp_lab: Any, start_exporter: Start) -> None:
    exporter = start_exporter(lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"]))
    assert exporter.get("/-/healthy")[:2] == (200, "OK\n")
    assert exporter.get("/-/ready")[:2] == (200, "ready\n")
    status, body, headers = exporter.get("/config")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    shown = yaml.safe_load(body)
    assert shown["smtp"]["port"] == smtp_lab.port
    assert shown["domains"][0]["name"] == "healthy.lab.test"
    samples = exporter.scrape()
    info = series(samples, "mx_exporter_build_info")
    assert len(info) == 1 and info[0].value == 1 and info[0].labels["version"]
    assert value(samples, "mx_exporter_refresh_duration_seconds_count") >= 1
    assert value(samples, "mx_exporter_smtp_sessions_total") >= 3


def test_environment_and_flags_reach_the_process(
    nsd_server: Any, smtp_lab: Any, start_exporter: Start
) -> None:
    config = lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"])
    exporter = start_exporter(
        config,
        "--domain",
        "primary-down.lab.test",
        "--refresh_interval",
        "7",
        env={"MX_EXPORTER_REFRESH_INTERVAL": "5", "MX_EXPORTER_PROBE__MAX_CONCURRENT": "3"},
    )
    shown = yaml.safe_load(exporter.get("/config")[1])
    assert shown["refresh_interval"] == 7
    assert shown["probe"]["max_concurrent"] == 3
    assert value(exporter.scrape(), "mx_exporter_domains") == 2
