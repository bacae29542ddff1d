"""Transport security in words and JSON, for `check` and the status page: read from the verdict, never decided.

One line each for DANE, MTA-STS and TLS-RPT (absent when that check is off), and the problems worth attention.
"""

from __future__ import annotations

from typing import Any

from mx_exporter.dane import record_text
from mx_exporter.model import DaneState, DomainReport, PolicyMode, PolicyState


def transport_lines(report: DomainReport) -> list[str]:
    """'DANE: …', 'MTA-STS: …', 'TLS-RPT: …' for the checks that ran."""
    verdict = report.verdict
    lines: list[str] = []
    if verdict.dane is not None:
        lines.append(f"DANE: {verdict.dane.detail}")
        for tier in report.tiers:
            for exchange in tier.exchanges:
                if exchange.tlsa is not None and exchange.tlsa.records:
                    shown = ", ".join(record_text(r) for r in exchange.tlsa.records[:4])
                    lines.append(f"  {exchange.name}: TLSA {shown}")
    sts = verdict.mta_sts
    if sts is not None:
        if sts.state is PolicyState.NONE and sts.mode is None:
            lines.append("MTA-STS: not published")
        else:
            mode = f"mode {sts.mode.value}, max_age {sts.max_age} s" if sts.mode is not None else "no policy"
            if sts.state is PolicyState.VALID:
                said = (
                    "" if sts.reason.startswith("mode ") else f"; {sts.reason}"
                )  # the fetch says the mode too
                lines.append(f"MTA-STS: {mode}{said}")
            else:
                lines.append(f"MTA-STS: {mode}; {sts.state.value}: {sts.reason}")
    if verdict.tls_rpt is not None:
        rpt = verdict.tls_rpt
        lines.append(f"TLS-RPT: {'rua=' + ','.join(rpt.rua) if rpt.valid else rpt.reason}")
    return lines


def transport_problems(report: DomainReport) -> list[str]:
    """What a DANE or MTA-STS enforcing sender would trip on."""
    verdict = report.verdict
    lines: list[str] = []
    if verdict.dane is not None:
        for tier in report.tiers:
            for exchange in tier.exchanges:
                for d in exchange.dane:
                    if d.state in (DaneState.SECURE_NO_MATCH, DaneState.BOGUS):
                        lines.append(f"DANE {d.state.value} at {exchange.name} {d.address}: {d.detail}")
    sts = verdict.mta_sts
    if sts is not None and sts.mode in (PolicyMode.TESTING, PolicyMode.ENFORCE):
        if sts.uncovered:
            lines.append(f"MTA-STS ({sts.mode.value}): not in the policy: {', '.join(sts.uncovered)}")
        if not sts.certificates_valid:
            lines.append(f"MTA-STS ({sts.mode.value}): an accepting address has no valid certificate")
        if not sts.deliverable:
            lines.append("MTA-STS: a sender enforcing the policy cannot deliver now")
    if sts is not None and sts.state not in (PolicyState.NONE, PolicyState.VALID):
        lines.append(f"MTA-STS policy {sts.state.value}: {sts.reason}")
    return lines


def transport_json(report: DomainReport) -> dict[str, Any]:
    """The `transport` object of `check --output json` (docs/check-json-schema.json)."""
    verdict = report.verdict
    dane = verdict.dane
    sts = verdict.mta_sts
    rpt = verdict.tls_rpt
    return {
        "dane": None
        if dane is None
        else {"applies": dane.applies, "valid": dane.valid, "bogus": dane.bogus, "detail": dane.detail},
        "mta_sts": None
        if sts is None
        else {
            "state": sts.state.value,
            "reason": sts.reason,
            "mode": None if sts.mode is None else sts.mode.value,
            "max_age": sts.max_age,
            "uncovered": list(sts.uncovered),
            "certificates_valid": sts.certificates_valid,
            "deliverable": sts.deliverable,
        },
        "tls_rpt": None if rpt is None else {"valid": rpt.valid, "reason": rpt.reason, "rua": list(rpt.rua)},
    }
