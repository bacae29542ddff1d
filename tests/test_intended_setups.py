"""Intended setups against the real lab: nolisting, greylisting and a greeting bound, scraped and through `check`.

primary-down.lab.test refuses TCP on its MX 10 (as nolisting does) and accepts on MX 20; greylist.lab.test's MX 10
answers 421 (as greylisting does to first contact) and its MX 20 accepts; slow.lab.test greets after
plan.SLOW_GREETING_DELAY seconds. The same domains without expectations are the "degraded" control.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.lab import plan
from tests.lab.exporter import exporter_command, lab_config, value

DOMAINS = [
    {"name": "primary-down.lab.test", "expect": {"nolisting": True}},
    {"name": "greylist.lab.test", "expect": {"greylisting": True}},
    {"name": "healthy.lab.test", "expect": {"nolisting": True, "max_greeting_seconds": 5}},
    {"name": "undeliverable.lab.test", "expect": {"nolisting": True}},
    {"name": "slow.lab.test", "expect": {"max_greeting_seconds": plan.SLOW_GREETING_DELAY / 4}},
]


def _config(nsd_server: Any, smtp_lab: Any, domains: list[Any]) -> dict[str, Any]:
    # The slow peer must be allowed to greet: a greeting timeout above its delay.
    timeouts = {
        "greeting_timeout": plan.SLOW_GREETING_DELAY + 2,
        "session_timeout": plan.SLOW_GREETING_DELAY + 5,
    }
    return lab_config(nsd_server.nameserver, smtp_lab.port, domains, smtp=timeouts)


def test_expectations_scraped(nsd_server: Any, smtp_lab: Any, start_exporter: Any) -> None:
    s = start_exporter(_config(nsd_server, smtp_lab, DOMAINS)).scrape()

    def met(domain: str, expectation: str) -> float:
        return value(s, "mx_expectation_met", domain=domain, expectation=expectation)

    assert met("primary-down.lab.test", "nolisting") == 1  # refused at TCP level, backup accepts
    assert met("greylist.lab.test", "greylisting") == 1  # 421, but Postfix and Exim deliver to MX 20
    assert met("healthy.lab.test", "nolisting") == 0  # the primary accepts: the trick is broken
    assert met("undeliverable.lab.test", "nolisting") == 0  # nothing accepts
    assert met("healthy.lab.test", "max_greeting_seconds") == 1
    assert met("slow.lab.test", "max_greeting_seconds") == 0  # greets, but slower than the bound
    assert value(s, "mx_domain_deliverable", domain="slow.lab.test") == 1  # degraded, not down
    assert value(s, "mx_primary_up", domain="primary-down.lab.test") == 0  # the fact itself is unchanged


def test_check_calls_an_intended_setup_ok(nsd_server: Any, smtp_lab: Any, tmp_path: Path) -> None:
    path = tmp_path / "check.yml"
    path.write_text(yaml.safe_dump(_config(nsd_server, smtp_lab, DOMAINS)))

    def check(domain: str) -> subprocess.CompletedProcess[str]:
        command = [*exporter_command(), "check", "--config.file", str(path), domain]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    nolisting = check("primary-down.lab.test")
    assert nolisting.returncode == 0, nolisting.stdout + nolisting.stderr
    assert (
        "DELIVERABLE, nolisting as intended: primary does not accept, delivering to pref 20"
        in nolisting.stdout
    )
    greylisting = check("greylist.lab.test")
    assert greylisting.returncode == 0, greylisting.stdout
    assert "greylisting as intended" in greylisting.stdout
    broken = check("undeliverable.lab.test")
    assert broken.returncode == 2 and "expectation nolisting not met" in broken.stdout, broken.stdout
