"""The alert and recording rules: promtool validates and unit-tests them; these tests hold the conventions.

promtool comes from the Debian ``prometheus`` package. It is a real part of the suite: when it is missing the
tests fail and say how to get it, they never skip.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mx_exporter import metrics
from tests.prometheus_files import (
    PROM_DIR,
    PROMETHEUS_SERIES,
    ROOT,
    RULES,
    alerts,
    exposed_metric_names,
    first_label,
    load_rules,
    promql_metric_names,
    run_promtool,
)

RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
RUNBOOK = ROOT / "README.md"  # the runbook is a section of the README
SEVERITIES = {"critical", "warning", "info"}
REFRESH_SECONDS = 60  # the default refresh interval: `for:` must span several refreshes
MIN_FOR_SECONDS = 5 * REFRESH_SECONDS
MEMBERSHIP = "mx_exchange_preference"  # {domain, exchange}: the join between domain and exchange series
TIER_RECORDS = ("domain_preference:mx_tier_exchanges:count", "domain_preference:mx_tier_exchanges_up:count")


def duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"unexpected duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for headings: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


# --------------------------------------------------------------------------- the helpers themselves


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('mx_primary_up{job="x"} == 0', {"mx_primary_up"}),
        ('sum by (domain, le) (rate(a_bucket{job=~"$job"}[$__rate_interval]))', {"a_bucket"}),
        ('count_values by (job) ("preference", mx_active_preference >= 0)', {"mx_active_preference"}),
        (
            'count_values without () ("preference", p) * on (job, instance, exchange) group_left () x{a="b"}',
            {"p", "x"},
        ),
        ("a and on (job, instance) b unless ignoring (x) c offset 5m", {"a", "b", "c"}),
        ("time() - mx_last_probe_timestamp_seconds > 1e3", {"mx_last_probe_timestamp_seconds"}),
        ('absent(up{job="mx-exporter"}) or vector(0)', {"up"}),
        ("histogram_quantile(0.95, x) * 1000", {"x"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_github_anchors() -> None:
    assert github_anchors("# A runbook\n## MxPrimaryDown\ntext # no\n### Fix it, now!\n") == {
        "a-runbook",
        "mxprimarydown",
        "fix-it-now",
    }


# --------------------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = run_promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests can fail: with `for: 0m` everywhere, the "one bad probe" cases must break."""
    (tmp_path / "tests").mkdir()
    broken, count = re.subn(r"for: \d+[smhd]\b", "for: 0m", RULES.read_text())
    assert count == len(alerts()), "every alert's `for:` must be replaced"
    (tmp_path / RULES.name).write_text(broken)
    for test in RULE_TESTS:
        shutil.copy(test, tmp_path / "tests" / test.name)
    result = run_promtool("test", "rules", *(f"tests/{p.name}" for p in RULE_TESTS), cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert output.count("FAILED:") == len(RULE_TESTS), output


# --------------------------------------------------------------------------- conventions


def test_alert_names_are_camel_case_with_the_shared_prefix() -> None:
    names = [a["alert"] for a in alerts()]
    # One rule per alert and severity: where the severity depends on a condition (MTA-STS mode enforce or testing),
    # the alert is two rules of one name, as Prometheus allows; never two rules of one name and severity.
    keys = [(a["alert"], a["labels"]["severity"]) for a in alerts()]
    assert len(keys) == len(set(keys)), keys
    for name in names:
        assert re.fullmatch(r"Mx(?:[A-Z][a-z0-9]*)+", name), name
    required = {
        "MxPrimaryDown", "MxDomainUndeliverable", "MxDnsLookupFailing", "MxFallbackToA", "MxMisconfigured",
        "MxBackupExchangeDown", "MxResultsStale", "MxExporterDown", "MxTlsCertificateExpiringSoon",
        "MxTlsCertificateInvalid", "MxStarttlsHandshakeFailing", "MxDaneMismatch", "MxDaneBogus",
        "MxMtaStsMxMismatch", "MxMtaStsPolicyUnreachable", "MxMtaStsCertificateInvalid",
    }  # fmt: skip
    assert required <= set(names), required - set(names)


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_has_for_severity_and_annotations(alert: dict[str, Any]) -> None:
    assert duration_seconds(alert["for"]) >= MIN_FOR_SECONDS, "one failed probe must never be enough"
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["runbook_url"] == f"README.md#{alert['alert'].lower()}"
    used = promql_metric_names(alert["expr"])
    labels = {label for name in used if name in metrics.BY_NAME for label in metrics.BY_NAME[name].labels}
    for label in ("domain", "exchange", "address"):
        if label in labels:
            for key in ("summary", "description"):
                assert "{{ $labels." + label + " }}" in annotations[key], f"{key} must name the {label}"


def test_every_alert_has_a_runbook_section() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    missing = [a["alert"] for a in alerts() if a["alert"].lower() not in anchors]
    assert not missing, f"the README runbook lacks sections for {missing}"


def test_rules_use_only_catalogue_metrics() -> None:
    rules = load_rules()
    known = exposed_metric_names() | PROMETHEUS_SERIES | {r["record"] for r in rules if "record" in r}
    for rule in rules:
        unknown = promql_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: not in the catalogue: {unknown}"


def test_exchange_and_session_series_reach_domains_only_through_membership() -> None:
    """Exchange and session series have no domain label (issue 7): joined to domain series, they must go through
    mx_exchange_preference on (job, instance, exchange). Matching them on domain would find nothing on /metrics
    and, on /probe, where the target adds `domain`, something else."""
    for rule in load_rules():
        used = promql_metric_names(rule["expr"])
        name = rule.get("alert") or rule.get("record")
        if any(first_label(n) == "exchange" for n in used) and any(first_label(n) == "domain" for n in used):
            assert MEMBERSHIP in used, f"{name}: exchange series joined to domains without {MEMBERSHIP}"
            assert "on (job, instance, exchange)" in rule["expr"], name
            for match in re.findall(r"\bon \(([^)]*)\)", rule["expr"]):
                assert "domain" not in match or "exchange" not in match, f"{name}: on ({match})"


def test_tier_recording_rules_replace_the_removed_metrics() -> None:
    """mx_tier_exchanges and mx_tier_exchanges_up are gone from the exporter; the README points at these."""
    records = {r["record"]: r["expr"] for r in load_rules() if "record" in r}
    for record in TIER_RECORDS:
        assert record in records, f"missing recording rule {record}"
        assert MEMBERSHIP in promql_metric_names(records[record]), record
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z_]+", record), f"{record}: name it level:metric:operation"
    assert not {"mx_tier_exchanges", "mx_tier_exchanges_up"} & set(metrics.BY_NAME)


def test_tls_alerts_fire_per_exchange_and_address_not_per_domain() -> None:
    """A provider's exchange shared by many domains presents one certificate: one alert, not one per domain."""
    tls = [a for a in alerts() if any(n.startswith("mx_smtp_tls_") for n in promql_metric_names(a["expr"]))]
    assert len(tls) == 4, [a["alert"] for a in tls]
    for alert in tls:
        assert all(first_label(n) == "exchange" for n in promql_metric_names(alert["expr"])), alert["alert"]


def test_null_mx_never_counts_as_an_outage() -> None:
    """mx_null_mx == 1 is a domain's choice: the delivery alerts must exclude it explicitly."""
    for alert in alerts():
        if alert["alert"] in ("MxDomainUndeliverable", "MxPrimaryDown"):
            assert "unless on (job, instance, domain) (mx_null_mx == 1)" in alert["expr"], alert["alert"]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    recorded: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../mx-exporter.rules.yml"], path
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
            recorded.update(check["expr"] for check in case.get("promql_expr_test", []))
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), f"never tested firing: {names - firing}"
    assert names - quiet == set(), f"never tested quiet: {names - quiet}"
    records = {r["record"] for r in load_rules() if "record" in r}
    assert records <= recorded, f"recording rules without a promql_expr_test: {records - recorded}"


def test_runbook_table_matches_the_rules() -> None:
    rows = re.findall(
        r"^\| \[(Mx\w+)\]\(#\w+\) \| (\w+) \| (\w+) \|$", RUNBOOK.read_text(), flags=re.MULTILINE
    )
    assert sorted(rows) == sorted((a["alert"], a["labels"]["severity"], a["for"]) for a in alerts())
