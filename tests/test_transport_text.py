"""Transport security in words (transport_text.py): read from the verdict, one line per check."""

from __future__ import annotations

import dataclasses

from mx_exporter.model import (
    DnsStatus,
    DomainDane,
    DomainReport,
    PolicyMode,
    PolicyState,
    Resolution,
    StsVerdict,
    TlsRptVerdict,
    Verdict,
)
from mx_exporter.transport_text import transport_json, transport_lines, transport_problems


def _report(**verdict: object) -> DomainReport:
    base = Verdict(deliverable=True, primary_up=True, active_preference=10, preference_gap=0)
    return DomainReport(
        resolution=Resolution(domain="example.org", status=DnsStatus.OK),
        tiers=(),
        verdict=dataclasses.replace(base, **verdict),  # type: ignore[arg-type]
        probe_seconds=0.1,
        finished_at=0.0,
    )


def test_nothing_said_when_the_checks_are_off() -> None:
    report = _report()
    assert transport_lines(report) == [] and transport_problems(report) == []
    assert transport_json(report) == {"dane": None, "mta_sts": None, "tls_rpt": None}


def test_lines_and_problems() -> None:
    sts = StsVerdict(
        state=PolicyState.VALID,
        reason="mode enforce, max_age 604800, 1 mx pattern",
        mode=PolicyMode.ENFORCE,
        max_age=604800,
        uncovered=("mx9.example.org",),
        deliverable=False,
    )
    report = _report(
        dane=DomainDane(
            applies=False, valid=True, bogus=False, detail="no exchange publishes secure TLSA records"
        ),
        mta_sts=sts,
        tls_rpt=TlsRptVerdict(valid=True, rua=("mailto:r@example.org",)),
    )
    assert transport_lines(report) == [
        "DANE: no exchange publishes secure TLSA records",
        "MTA-STS: mode enforce, max_age 604800 s",
        "TLS-RPT: rua=mailto:r@example.org",
    ]
    assert transport_problems(report) == [
        "MTA-STS (enforce): not in the policy: mx9.example.org",
        "MTA-STS: a sender enforcing the policy cannot deliver now",
    ]
    assert transport_json(report)["mta_sts"]["uncovered"] == ["mx9.example.org"]


def test_a_failed_fetch_keeps_the_cached_policy_in_words() -> None:
    sts = StsVerdict(
        state=PolicyState.UNREACHABLE,
        reason="mta-sts.example.org: timed out after 10 s; the cached policy stays in force",
        mode=PolicyMode.TESTING,
        max_age=86400,
        deliverable=True,
    )
    report = _report(mta_sts=sts)
    assert transport_lines(report) == [
        "MTA-STS: mode testing, max_age 86400 s; unreachable: mta-sts.example.org: timed out after 10 s; "
        "the cached policy stays in force"
    ]
    assert transport_problems(report) == [
        "MTA-STS policy unreachable: mta-sts.example.org: timed out after 10 s; the cached policy stays in force"
    ]
