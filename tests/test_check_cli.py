"""`mx-exporter check DOMAIN…` against the real lab: output, JSON schema and exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.lab import plan
from tests.lab.exporter import exporter_command, lab_config

SCHEMA = Path(__file__).parents[1] / "docs" / "check-json-schema.json"


@pytest.fixture
def check(nsd_server: Any, smtp_lab: Any, tmp_path: Path) -> Any:
    path = tmp_path / "check.yml"
    path.write_text(yaml.safe_dump(lab_config(nsd_server.nameserver, smtp_lab.port, [])))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*exporter_command(), "check", "--config.file", str(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.mark.parametrize(
    ("domain", "code", "verdict"),
    [
        ("healthy.lab.test", 0, "DELIVERABLE"),
        ("nullmx.lab.test", 0, "accepts no mail by design"),
        ("primary-down.lab.test", 1, "DEGRADED"),
        ("undeliverable.lab.test", 2, "UNDELIVERABLE"),
        ("nxdomain.lab.test", 2, "UNDELIVERABLE"),
        (plan.SERVFAIL_DOMAIN, 3, "DNS FAILURE"),
    ],
)
def test_exit_code_and_verdict(check: Any, domain: str, code: int, verdict: str) -> None:
    done = check(domain)
    assert done.returncode == code, done.stdout + done.stderr
    assert verdict in done.stdout
    assert domain in done.stdout
    assert "\x1b[" not in done.stdout  # no colour when not a terminal


def test_table_shows_tiers_exchanges_addresses_and_outcomes(check: Any) -> None:
    out = check("primary-down.lab.test").stdout
    for text in ("10", "20", plan.CLOSED, plan.ACCEPT_2, "connection_refused", "accepted", "220"):
        assert text in out, text


def test_several_domains_exit_with_the_worst(check: Any) -> None:
    done = check("healthy.lab.test", "primary-down.lab.test", "undeliverable.lab.test")
    assert done.returncode == 2
    assert done.stdout.count("lab.test") >= 3


def test_several_domains_print_problems_first_and_end_with_a_summary(check: Any) -> None:
    done = check("healthy.lab.test", "nullmx.lab.test", "primary-down.lab.test", "undeliverable.lab.test")
    assert done.returncode == 2, done.stdout + done.stderr
    blocks = done.stdout.rstrip("\n").split("\n\n")  # one per domain, then the summary
    headings = [block.split(" - ")[0] for block in blocks[:-1]]
    assert headings == [
        "undeliverable.lab.test",
        "primary-down.lab.test",
        "nullmx.lab.test",
        "healthy.lab.test",
    ]
    assert blocks[-1] == "4 domains: 1 ok, 1 null MX, 1 primary down, 1 undeliverable"


def test_one_domain_has_no_summary_line(check: Any) -> None:
    done = check("primary-down.lab.test")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1].startswith("  Verdict: DEGRADED")
    assert "domains:" not in done.stdout


def test_json_output_follows_the_documented_schema(check: Any) -> None:
    done = check("--output", "json", "healthy.lab.test", "primary-down.lab.test")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert document["exit_code"] == 1
    assert [d["domain"] for d in document["domains"]] == [
        "healthy.lab.test",
        "primary-down.lab.test",
    ]  # as given


def test_bad_domain_or_config_exits_3(check: Any, tmp_path: Path) -> None:
    done = check("http://bad/")
    assert done.returncode == 3 and "URL" in done.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("smtp: {prot: 1}\n")
    done = subprocess.run(
        [*exporter_command(), "check", "--config.file", str(bad), "healthy.lab.test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert f"{bad}: smtp.prot: unknown key" in done.stderr
