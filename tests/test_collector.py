"""The collector: golden exposition files, the catalogue contract, closed sets and Prometheus naming rules.

Golden files (tests/golden/*.prom) are compared byte for byte. After an intended change, regenerate them with
``UPDATE_GOLDEN=1 python -m pytest tests/test_collector.py`` and review the diff like code; CI refuses to
regenerate them.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import defaultdict
from dataclasses import fields, replace
from enum import StrEnum
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mx_exporter import metrics
from mx_exporter.assess import Expectations, build_report
from mx_exporter.collector import REPORT_SPECS, ReportCollector, report_families
from mx_exporter.model import (
    DeliveryOutcome,
    DnsStatus,
    DomainReport,
    Family,
    Misconfiguration,
    Sender,
    SmtpOutcome,
)
from tests.builders import FINISHED, REPORTS, Out, domain, render, res

GOLDEN = Path(__file__).parent / "golden"


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1"}


def _updating() -> bool:
    return os.environ.get("UPDATE_GOLDEN") == "1"


def test_update_golden_is_never_set_in_ci() -> None:
    update_in_ci = _ci() and "UPDATE_GOLDEN" in os.environ
    assert not update_in_ci, (
        "UPDATE_GOLDEN is set in CI: golden files must be regenerated locally and the diff reviewed, "
        "never rewritten by CI"
    )


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_golden_exposition(name: str) -> None:
    got = render([REPORTS[name]])
    path = GOLDEN / f"{name}.prom"
    if _updating():
        if _ci():
            pytest.fail("UPDATE_GOLDEN=1 in CI: refusing to rewrite golden files")
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(got)
    assert path.is_file(), f"{path} is missing: run UPDATE_GOLDEN=1 python -m pytest {__file__} and review it"
    want = path.read_bytes()
    diff = "".join(
        difflib.unified_diff(
            want.decode().splitlines(keepends=True),
            got.decode().splitlines(keepends=True),
            str(path),
            "rendered",
        )
    )
    assert got == want, f"exposition differs from {path}:\n{diff}"


ALL = render(REPORTS.values()).decode()
PARSED = {f.name: f for f in text_string_to_metric_families(ALL)}


def _samples(name: str) -> list[Sample]:
    return PARSED[name].samples


def test_every_family_matches_the_catalogue() -> None:
    assert sorted(PARSED) == sorted(m.name for m in REPORT_SPECS)
    for name, family in PARSED.items():
        spec = metrics.spec(name)
        assert (family.name, family.documentation, family.type) == (spec.name, spec.help, spec.type)
        for sample in family.samples:
            assert sample.name == spec.name
            assert sorted(sample.labels) == sorted(spec.labels), f"{name}: {sample.labels}"


def test_report_specs_are_the_report_part_of_the_catalogue_each_at_one_level() -> None:
    assert [m.name for m in REPORT_SPECS] == [
        m.name for m in metrics.CATALOGUE if not m.name.startswith("mx_exporter_")
    ]
    closed = {"sender", "expectation", "status", "kind", "family", "outcome", "version", "state", "mode"}
    for m in REPORT_SPECS:
        one_level = m.labels in metrics.LEVELS
        plus_closed = m.labels[:-1] in metrics.LEVELS and m.labels[-1] in closed
        # A closed set within a closed set: the state set of each sender profile's outcome.
        plus_closed |= m.labels[:-2] in metrics.LEVELS and set(m.labels[-2:]) <= closed
        # The record set's info series carries the set itself: still one series per domain.
        plus_closed |= m.name == "mx_record_set_info" and m.labels == ("domain", "digest", "records")
        assert one_level or plus_closed, f"{m.name}: labels {m.labels} are not one level (+ a closed set)"
    assert len(REPORT_SPECS) > 20


def test_session_facts_carry_no_domain_and_membership_joins_them() -> None:
    for name in ("mx_smtp_up", "mx_smtp_outcome", "mx_exchange_up", "mx_smtp_tls_cert_valid"):
        assert "domain" not in metrics.spec(name).labels
    assert metrics.spec("mx_exchange_preference").labels == ("domain", "exchange")


def test_no_duplicate_series() -> None:
    keys = [(s.name, tuple(sorted(s.labels.items()))) for f in PARSED.values() for s in f.samples]
    assert len(keys) == len(set(keys))


def _grouped(name: str, closed_label: str) -> dict[tuple[str, ...], dict[str, float]]:
    """Series of a closed-set family grouped by every label except the closed one."""
    groups: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for s in _samples(name):
        key = tuple(v for k, v in s.labels.items() if k != closed_label)
        groups[key][s.labels[closed_label]] = s.value
    return groups


DOMAINS = {r.domain for r in REPORTS.values()}


@pytest.mark.parametrize(
    ("name", "label", "members", "one_hot"),
    [
        ("mx_dns_status", "status", DnsStatus, True),
        ("mx_misconfiguration", "kind", Misconfiguration, False),
        ("mx_smtp_outcome", "outcome", SmtpOutcome, True),
        ("mx_delivery_preference", "sender", Sender, False),
        ("mx_delivery_outcome", "outcome", DeliveryOutcome, True),
    ],
)
def test_closed_sets_are_complete(name: str, label: str, members: type[StrEnum], one_hot: bool) -> None:
    groups = _grouped(name, label)
    assert groups, name
    for key, series in groups.items():
        assert set(series) == {m.value for m in members}, key
        if one_hot:
            assert sorted(series.values()) == [0.0] * (len(series) - 1) + [1.0], key
    if name != "mx_smtp_outcome":
        assert {key[0] for key in groups} == DOMAINS


def _addresses() -> set[tuple[str, ...]]:
    return {tuple(s.labels.values()) for s in _samples("mx_smtp_up")}


def test_every_address_has_one_outcome_series_set() -> None:
    assert set(_grouped("mx_smtp_outcome", "outcome")) == _addresses()
    # healthy 3, primary_down 2, fallback 1, nonglobal 2: 127.0.0.11 twice, behind two exchange names
    assert len(_addresses()) == 8


BOUNDED = {
    "status": {m.value for m in DnsStatus},
    "kind": {m.value for m in Misconfiguration},
    "outcome": {m.value for m in SmtpOutcome},
    "sender": {m.value for m in Sender},
    "family": {m.value for m in Family},
    "expectation": {f.name for f in fields(Expectations)},
}
# The same label name with another closed set on one metric.
BOUNDED_FOR = {("mx_delivery_outcome", "outcome"): {m.value for m in DeliveryOutcome}}


def test_label_values_stay_in_their_bounded_sets() -> None:
    checked = defaultdict(set)
    for family in PARSED.values():
        for s in family.samples:
            for label, value in s.labels.items():
                allowed = BOUNDED_FOR.get((s.name, label), BOUNDED.get(label))
                if allowed is not None:
                    assert value in allowed, f"{s.name}{s.labels}"
                    checked[(s.name, label) if (s.name, label) in BOUNDED_FOR else label].add(value)
    assert set(checked) == set(BOUNDED) | set(BOUNDED_FOR)  # every bounded label was really exercised
    assert "preference" not in {label for f in PARSED.values() for s in f.samples for label in s.labels}


def _value(name: str, **labels: str) -> float:
    found = [s.value for s in _samples(name) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _count(name: str, **labels: str) -> int:
    return sum(1 for s in _samples(name) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_domain_values() -> None:
    h, p, n, x = "healthy.lab.test", "primary-down.lab.test", "nullmx.lab.test", "nxdomain.lab.test"
    assert [_value("mx_domain_deliverable", domain=d) for d in (h, p, n, x)] == [1, 1, 0, 0]
    assert [_value("mx_primary_up", domain=d) for d in (h, p, n, x)] == [1, 0, 0, 0]
    assert [_value("mx_active_preference", domain=d) for d in (h, p, n, x)] == [10, 20, -1, -1]
    assert [_value("mx_tiers", domain=d) for d in (h, p, n, x)] == [2, 2, 0, 0]
    assert _value("mx_delivery_preference", domain="nonglobal.lab.test", sender="postfix") == -1
    assert _value("mx_delivery_outcome", domain="nonglobal.lab.test", sender="postfix", outcome="queued") == 1
    assert _value("mx_delivery_preference", domain=p, sender="exim") == 20
    assert _value("mx_delivery_outcome", domain=n, sender="qmail", outcome="bounced") == 1
    assert _value("mx_null_mx", domain=n) == 1 and _value("mx_records", domain=n) == 1
    assert _value("mx_fallback_to_a", domain="fallback.lab.test") == 1
    assert _value("mx_dns_status", domain=x, status="nxdomain") == 1
    assert _value("mx_last_probe_timestamp_seconds", domain=x) == FINISHED + 3
    assert _value("mx_probe_duration_seconds", domain=h) == 0.75


def test_optional_series_only_when_known() -> None:
    assert {s.labels["domain"] for s in _samples("mx_record_ttl_seconds")} == {
        "healthy.lab.test",
        "primary-down.lab.test",
    }
    refused = {"address": "127.0.0.23"}
    assert _count("mx_smtp_connect_duration_seconds", **refused) == 0
    assert _count("mx_smtp_greeting_duration_seconds", **refused) == 0
    assert _value("mx_smtp_connect_duration_seconds", address="127.0.0.20") == 0.002
    assert _count("mx_smtp_greeting_duration_seconds", address="127.0.0.20") == 0
    # TLS: only the healthy mx1 addresses have facts; ::1 failed its handshake: no version or cert facts.
    assert {s.labels["address"]: s.value for s in _samples("mx_smtp_tls_handshake_success")} == {
        "127.0.0.10": 1,
        "::1": 0,
    }
    assert [(s.labels["address"], s.labels["version"]) for s in _samples("mx_smtp_tls_version_info")] == [
        ("127.0.0.10", "TLSv1.3")
    ]
    assert [s.labels["address"] for s in _samples("mx_smtp_tls_cert_not_after_timestamp_seconds")] == [
        "127.0.0.10"
    ]
    assert _value("mx_smtp_tls_cert_valid", address="127.0.0.10") == 0


def test_expectations_only_when_configured() -> None:
    got = {(s.labels["domain"], s.labels["expectation"]): s.value for s in _samples("mx_expectation_met")}
    assert got == {
        ("healthy.lab.test", "min_tiers"): 1,
        ("healthy.lab.test", "starttls"): 0,  # ::1 and mx2 accept without STARTTLS
        ("healthy.lab.test", "deliverable"): 1,
        ("nullmx.lab.test", "null_mx"): 1,
    }


def test_exchanges_membership_and_misconfigurations() -> None:
    d = "nonglobal.lab.test"
    members = {
        (s.labels["domain"], s.labels["exchange"]): s.value for s in _samples("mx_exchange_preference")
    }
    assert {k: v for k, v in members.items() if k[0] == d} == {
        (d, "mx1.nonglobal.lab.test"): 10,
        (d, "nohost.nonglobal.lab.test"): 20,
        (d, "mx2.nonglobal.lab.test"): 30,
    }
    assert members[("fallback.lab.test", "fallback.lab.test")] == 0  # the implicit MX
    assert not [k for k in members if k[0] in ("nullmx.lab.test", "nxdomain.lab.test")]
    assert _count("mx_smtp_up", exchange="mx1.healthy.lab.test", family="ipv6") == 1
    assert _count("mx_smtp_up", exchange="nohost.nonglobal.lab.test") == 0
    assert _value("mx_exchange_up", exchange="nohost.nonglobal.lab.test") == 0
    assert _value("mx_exchange_up", exchange="mx2.primary-down.lab.test") == 1
    assert (
        _value(
            "mx_smtp_outcome", exchange="mx1.nonglobal.lab.test", address="10.255.255.1", outcome="skipped"
        )
        == 1
    )
    assert _value("mx_smtp_greeting_code", address="127.0.0.20") == 421
    flagged = {
        s.labels["kind"] for s in _samples("mx_misconfiguration") if s.labels["domain"] == d and s.value
    }
    assert flagged == {"non_global_address", "unresolvable_target", "cname_target"}


def test_no_reports_yields_every_family_without_samples() -> None:
    families = report_families([])
    assert [f.name for f in families] == [m.name for m in REPORT_SPECS]
    assert all(f.samples == [] for f in families)
    lines = render([]).decode().splitlines()
    assert lines and all(line.startswith(("# HELP ", "# TYPE ")) for line in lines)


def test_same_domain_twice_last_one_wins_without_duplicates() -> None:
    old, other = REPORTS["primary_down"], REPORTS["healthy"]
    new = build_report(
        *domain("primary-down.lab.test", (10, "mx1.primary-down.lab.test", (res("127.0.0.30"),))),
        0.1,
        FINISHED + 9,
    )
    assert render([old, other, new]) == render([new, other])
    assert render([old, other, new]) != render([other, new])  # first appearance keeps its place


def _shared(name: str, outcome: SmtpOutcome, finished: float) -> DomainReport:
    """A hosted domain whose only exchange, mx.provider.test, is shared with other domains."""
    return build_report(*domain(name, (10, "mx.provider.test", (res("127.0.0.50", outcome),))), 0.1, finished)


def test_a_shared_exchange_is_exported_once_and_the_newest_report_wins() -> None:
    older = _shared("a.hosted.test", Out.ACCEPTED, FINISHED)
    newer = _shared("b.hosted.test", Out.CONNECTION_REFUSED, FINISHED + 10)
    for order in ([older, newer], [newer, older]):
        text = render(order).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        ups = [s for s in families["mx_smtp_up"].samples]
        assert [(s.labels, s.value) for s in ups] == [
            ({"exchange": "mx.provider.test", "address": "127.0.0.50", "family": "ipv4"}, 0.0)
        ]
        assert len(families["mx_exchange_up"].samples) == 1
        members = {s.labels["domain"] for s in families["mx_exchange_preference"].samples}
        assert members == {"a.hosted.test", "b.hosted.test"}


def test_domain_series_do_not_grow_with_the_addresses_behind_the_exchanges() -> None:
    """Only the membership series is per domain and exchange; nothing per domain and address."""

    def count(domains: int) -> int:
        reports = [_shared(f"d{i}.hosted.test", Out.ACCEPTED, FINISHED) for i in range(domains)]
        return sum(len(f.samples) for f in text_string_to_metric_families(render(reports).decode()))

    per_domain = count(2) - count(1)
    assert count(50) == count(1) + 49 * per_domain
    # 25 before the sender profiles (3 x 3 outcome states and a preference), then IPv6 parity
    # (mx_ipv6_deliverable and the ipv6_broken kind), then the record set and its change time.
    assert per_domain <= 39
    assert count(1) - per_domain >= 13  # the exchange's and its session's series, once


def test_collector_never_collects_on_register_and_reads_the_source_each_scrape() -> None:
    calls: list[int] = []
    current = [REPORTS["nxdomain"]]

    def source() -> list[DomainReport]:
        calls.append(1)
        return list(current)

    registry = CollectorRegistry()
    collector = ReportCollector(source)
    assert list(collector.describe()) == []
    registry.register(collector)
    assert calls == []
    assert b'domain="nxdomain.lab.test"' in generate_latest(registry)
    current[:] = [REPORTS["null_mx"]]
    text = generate_latest(registry)
    assert b'domain="nullmx.lab.test"' in text and b"nxdomain.lab.test" not in text
    assert len(calls) == 2


# --- naming rules over the whole catalogue (not only what the collector emits)
CATALOGUE = metrics.CATALOGUE + metrics.PROBE_CATALOGUE
NON_BASE_UNITS = (
    "milliseconds",
    "microseconds",
    "minutes",
    "hours",
    "days",
    "ms",
    "kilobytes",
    "megabytes",
    "percent",
)


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_metric_naming(m: metrics.MetricSpec) -> None:
    n = m.name
    assert re.fullmatch(r"mx_[a-z0-9]+(_[a-z0-9]+)*", n), "lower snake_case with the mx_ prefix"
    if m in metrics.PROBE_CATALOGUE:
        assert n.startswith("mx_probe_"), "/probe-only metrics"
    else:
        about_reports = m.labels[:1] in (("domain",), ("exchange",))
        assert n.startswith("mx_exporter_") != about_reports, "mx_exporter_ = the exporter itself"
    assert not n.endswith(("_total", "_count", "_sum", "_bucket", "_created")), (
        "suffix reserved by exposition"
    )
    assert not any(n.endswith("_" + unit) or f"_{unit}_" in n for unit in NON_BASE_UNITS), "base units only"
    words = set(n.split("_"))
    if words & {"duration", "time", "ttl", "age", "latency", "timestamp", "seconds"}:
        assert n.endswith("_seconds"), "times and durations in seconds"
    if "timestamp" in n:
        assert n.endswith("_timestamp_seconds"), "points in time end in _timestamp_seconds"
    if n.endswith("_info") or "always 1" in m.help.lower():
        assert n.endswith("_info") and m.type in {"gauge", "info"} and m.labels, (
            "info-style: _info, labels, 1"
        )
    assert m.help.strip() and "\n" not in m.help
    assert len(set(m.labels)) == len(m.labels)
    for label in m.labels:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", label) and label not in {"le", "quantile"}, label


def test_exposed_names_never_collide() -> None:
    exposed: list[str] = []
    for m in CATALOGUE:
        base = metrics.exposed_name(m)
        exposed.append(base)
        if m.type == "histogram":
            exposed += [base + "_bucket", base + "_sum", base + "_count"]
    assert len(exposed) == len(set(exposed))


def test_an_address_dns_lists_twice_is_one_series_set() -> None:
    """Assessment lists each address of an exchange once; the collector reads that and never dedupes itself."""
    plain, results = domain("repeat.lab.test", (10, "mx.repeat.lab.test", (res("127.0.0.11"),)))
    (once,) = plain.exchanges
    twice = replace(once, addresses=once.addresses * 2)
    report = build_report(replace(plain, exchanges=(twice,)), results, 0.1, FINISHED)
    assert [a.address for a in report.tiers[0].exchanges[0].addresses] == ["127.0.0.11"]
    families = list(text_string_to_metric_families(render([report]).decode()))
    keys = [(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples]
    assert len(keys) == len(set(keys))
    ups = [s.labels for f in families for s in f.samples if s.name == "mx_smtp_up"]
    assert ups == [{"exchange": "mx.repeat.lab.test", "address": "127.0.0.11", "family": "ipv4"}]
