"""DANE, MTA-STS and TLS-RPT against real parts (tests/lab/transport_lab.py): zones signed at test time behind a
validating Unbound, aiosmtpd peers presenting trustme certificates, an HTTPS policy host, the real console script
scraped. For every TLSA case the test also asks `openssl s_client -dane_tlsa_rrdata` about the same peer and
requires the same verdict.
"""

from __future__ import annotations

import subprocess
from typing import Any

from tests.lab.exporter import value
from tests.lab.transport_lab import CASES, Case, Lab, transport_config


def test_dane_state_per_address(transport_lab: Lab, start_exporter: Any) -> None:
    s = start_exporter(transport_config(transport_lab)).scrape()
    for case in CASES:
        exchange = f"mx1.{case.domain}"
        got = {
            x.labels["state"]: x.value
            for x in s
            if x.name == "mx_dane_state" and x.labels["exchange"] == exchange
        }
        assert got.get(case.want) == 1 and sum(got.values()) == 1, (case, got)
        usable = 0 if case.want in ("bogus", "insecure") else 1
        assert value(s, "mx_dane_tlsa_records", exchange=exchange) == usable, case
    assert value(s, "mx_dane_valid", domain="ee.signed.test") == 1
    assert value(s, "mx_dane_valid", domain="ta.signed.test") == 1
    assert value(s, "mx_dane_valid", domain="rotated.signed.test") == 0  # the rotated certificate
    assert value(s, "mx_dane_applies", domain="unsigned.test") == 0
    assert value(s, "mx_dane_bogus", domain="bogus.test") == 1
    assert value(s, "mx_dane_bogus", domain="ee.signed.test") == 0
    assert value(s, "mx_domain_deliverable", domain="rotated.signed.test") == 1  # every plain check is green


def test_mta_sts_and_tls_rpt(transport_lab: Lab, start_exporter: Any) -> None:
    s = start_exporter(transport_config(transport_lab)).scrape()
    assert value(s, "mx_mta_sts_policy_state", domain="ee.signed.test", state="valid") == 1
    assert value(s, "mx_mta_sts_mode", domain="ee.signed.test", mode="enforce") == 1
    assert value(s, "mx_mta_sts_max_age_seconds", domain="ee.signed.test") == 604800
    assert value(s, "mx_mta_sts_mx_match", domain="ee.signed.test") == 1
    assert value(s, "mx_mta_sts_certificates_valid", domain="ee.signed.test") == 1
    assert value(s, "mx_mta_sts_deliverable", domain="ee.signed.test") == 1
    # An enforce policy naming only mx.elsewhere.test: the MX set drifted outside it, enforcing senders stop.
    assert value(s, "mx_mta_sts_mx_match", domain="rotated.signed.test") == 0
    assert value(s, "mx_mta_sts_deliverable", domain="rotated.signed.test") == 0
    assert value(s, "mx_mta_sts_policy_state", domain="full.signed.test", state="none") == 1
    assert value(s, "mx_tls_rpt_valid", domain="ee.signed.test") == 1
    assert value(s, "mx_tls_rpt_valid", domain="full.signed.test") == 0
    assert value(s, "mx_tls_rpt_valid", domain="ta.signed.test") == 0  # none published


def _openssl_verdict(case: Case, lab: Lab) -> str:
    """What openssl's DANE implementation says of the same peer and record: "match" or "no_match"."""
    command = [
        "openssl", "s_client", "-starttls", "smtp", "-connect", f"{case.address}:{lab.port}",
        "-servername", f"mx1.{case.domain}", "-dane_tlsa_domain", f"mx1.{case.domain}",
        "-dane_tlsa_rrdata", lab.rrdata[case.domain], "-dane_ee_no_namechecks", "-verify_return_error",
        "-brief",
    ]  # fmt: skip
    done = subprocess.run(command, input="QUIT\r\n", capture_output=True, text=True, timeout=30)
    out = done.stdout + done.stderr
    if done.returncode == 0 and "Verification: OK" in out:
        return "match"
    # A refusal for DANE reasons, not a connection failure: openssl names the failed verification.
    assert "verify error" in out, out
    return "no_match"


def test_openssl_agrees_on_every_tlsa_case(transport_lab: Lab, start_exporter: Any) -> None:
    """The scenario table of the issue's closing note: the exporter's verdict and openssl's, side by side."""
    s = start_exporter(transport_config(transport_lab)).scrape()
    rows = []
    for case in CASES:
        if case.want not in ("secure_match", "secure_no_match"):
            continue  # bogus and insecure are DNS verdicts; openssl is handed the record directly
        exchange = f"mx1.{case.domain}"
        ours = (
            "match" if value(s, "mx_dane_state", exchange=exchange, state="secure_match") == 1 else "no_match"
        )
        rows.append(
            (case.domain, transport_lab.rrdata[case.domain][:5], ours, _openssl_verdict(case, transport_lab))
        )
    (transport_lab.workdir / "scenarios.txt").write_text("\n".join(" | ".join(r) for r in rows) + "\n")
    print("\n".join(" | ".join(r) for r in rows))
    assert all(ours == theirs for _, _, ours, theirs in rows), rows
    assert {r[2] for r in rows} == {"match", "no_match"}
