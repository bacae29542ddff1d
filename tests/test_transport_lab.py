"""DANE, MTA-STS and TLS-RPT against real parts: NSD serving zones signed at test time, Unbound validating them,
aiosmtpd peers presenting trustme certificates, an HTTPS policy host, and the real console script scraped.

signed.test (secure), bogus.test (the TLSA RRset's signature broken) and unsigned.test (domain-insecure) hold one
domain per case; each domain's single exchange is mx1.<domain> on an address of its own. For every TLSA case the
test also asks `openssl s_client -dane_tlsa_rrdata` about the same peer and requires the same verdict.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.lab import plan
from tests.lab.dnssec import SignedZone, Unbound, break_signature, sign_zone, zone_header
from tests.lab.exporter import free_port, lab_config, value
from tests.lab.nsd import NsdServer
from tests.lab.policy_server import policy_server_thread

POLICY_HOST = "127.0.0.91"


@dataclass(frozen=True)
class Case:
    domain: str
    address: str
    tlsa: str  # "usage selector matching" of the published record
    published_for: str  # whose certificate the record was computed from: "own", "old" or "ca"
    chain_with_ca: bool  # the peer sends the CA certificate too (DANE-TA needs the anchor in the chain)
    want: str  # the exporter's mx_dane_state


CASES = (
    Case("ee.signed.test", "127.0.0.81", "3 1 1", "own", False, "secure_match"),
    Case("full.signed.test", "127.0.0.82", "3 0 1", "own", False, "secure_match"),
    Case("ta.signed.test", "127.0.0.83", "2 1 1", "ca", True, "secure_match"),
    Case("rotated.signed.test", "127.0.0.84", "3 1 1", "old", False, "secure_no_match"),
    Case("bogus.test", "127.0.0.85", "3 1 1", "own", False, "bogus"),
    Case("unsigned.test", "127.0.0.86", "3 1 1", "own", False, "insecure"),
)


class _Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _association(der: bytes, selector: int, matching: int) -> str:
    data = der
    if selector == 1:
        key = x509.load_der_x509_certificate(der).public_key()
        data = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = {0: data, 1: hashlib.sha256(data).digest(), 2: hashlib.sha512(data).digest()}[matching]
    return digest.hex()


@dataclass
class Lab:
    port: int
    nameserver: str
    ca_file: str
    policy_ca_file: str
    rrdata: dict[str, str]  # domain -> the published TLSA record's text
    workdir: Path


def _zones(tmp: Path, rrdata: dict[str, str]) -> tuple[SignedZone, SignedZone, Path]:
    by_origin: dict[str, list[str]] = {"signed.test": [], "bogus.test": [], "unsigned.test": []}
    for case in CASES:
        origin = next(o for o in by_origin if case.domain == o or case.domain.endswith("." + o))
        exchange = f"mx1.{case.domain}."
        by_origin[origin] += [
            f"{case.domain}. MX 10 {exchange}",
            f"{exchange} A {case.address}",
            f"_25._tcp.{exchange} TLSA {rrdata[case.domain]}",
        ]
    # MTA-STS and TLS-RPT on ee.signed.test (enforce, its exchange covered) and rotated.signed.test (enforce,
    # its exchange outside the policy); full.signed.test publishes a broken TLS-RPT record.
    for domain in ("ee.signed.test", "rotated.signed.test"):
        by_origin["signed.test"] += [
            f'_mta-sts.{domain}. TXT "v=STSv1; id=20261202"',
            f"mta-sts.{domain}. A {POLICY_HOST}",
            f'_smtp._tls.{domain}. TXT "v=TLSRPTv1; rua=mailto:tls-reports@{domain}"',
        ]
    by_origin["signed.test"].append('_smtp._tls.full.signed.test. TXT "v=TLSRPTv1; rua=ftp://nope"')
    signed = sign_zone(
        zone_header("signed.test") + "\n".join(by_origin["signed.test"]) + "\n", "signed.test", tmp
    )
    bogus = sign_zone(
        zone_header("bogus.test") + "\n".join(by_origin["bogus.test"]) + "\n", "bogus.test", tmp
    )
    bogus = break_signature(bogus, "_25._tcp.mx1.bogus.test.", "TLSA")
    plain = tmp / "unsigned.test.zone"
    plain.write_text(zone_header("unsigned.test") + "\n".join(by_origin["unsigned.test"]) + "\n")
    return signed, bogus, plain


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("transport")
    ca, old = trustme.CA(), trustme.CA()
    port = free_port(CASES[0].address)
    rrdata: dict[str, str] = {}
    controllers: list[Controller] = []
    for case in CASES:
        name = f"mx1.{case.domain}"
        leaf = ca.issue_cert(name)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        chain = tmp / f"{name}.pem"
        pems = [leaf.cert_chain_pems[0].bytes()] + ([ca.cert_pem.bytes()] if case.chain_with_ca else [])
        chain.write_bytes(b"".join(pems))
        key = tmp / f"{name}.key"
        leaf.private_key_pem.write_to_path(str(key))
        context.load_cert_chain(str(chain), str(key))
        source = {
            "own": _der(leaf.cert_chain_pems[0].bytes()),
            "old": _der(old.issue_cert(name).cert_chain_pems[0].bytes()),
            "ca": _der(ca.cert_pem.bytes()),
        }[case.published_for]
        _, selector, matching = (int(x) for x in case.tlsa.split())
        rrdata[case.domain] = f"{case.tlsa} {_association(source, selector, matching)}"
        controller = Controller(
            _Accept(), hostname=case.address, port=port, server_hostname=name, tls_context=context
        )
        controller.start()
        controllers.append(controller)
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    signed, bogus, plain = _zones(tmp, rrdata)
    policies = {"ee.signed.test": "enforce", "rotated.signed.test": "mismatch"}
    zones = [(signed.origin, signed.path), (bogus.origin, bogus.path), ("unsigned.test", plain)]
    try:
        with (
            NsdServer(extra_zones=zones) as nsd,
            Unbound(nsd.nameserver, [signed, bogus], ["unsigned.test"]) as unbound,
            policy_server_thread(policies, host=POLICY_HOST, port=443) as policy,
        ):
            yield Lab(port, unbound.nameserver, str(ca_file), policy.ca_file, rrdata, tmp)
    finally:
        for controller in controllers:
            controller.stop()


def _config(lab: Lab) -> dict[str, Any]:
    config = lab_config(lab.nameserver, lab.port, [c.domain for c in CASES])
    config["resolver"]["dnssec"] = "require"
    config["smtp"]["tls_ca_file"] = lab.ca_file
    config["mta_sts"] = {"ca_file": lab.policy_ca_file, "timeout": 5}
    config["allow_networks"] = plan.ALLOW_NETWORKS
    return config


def test_dane_state_per_address(lab: Lab, start_exporter: Any) -> None:
    s = start_exporter(_config(lab)).scrape()
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


def test_mta_sts_and_tls_rpt(lab: Lab, start_exporter: Any) -> None:
    s = start_exporter(_config(lab)).scrape()
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


def test_openssl_agrees_on_every_tlsa_case(lab: Lab, start_exporter: Any) -> None:
    """The scenario table of the issue's closing note: the exporter's verdict and openssl's, side by side."""
    s = start_exporter(_config(lab)).scrape()
    rows = []
    for case in CASES:
        if case.want not in ("secure_match", "secure_no_match"):
            continue  # bogus and insecure are DNS verdicts; openssl is handed the record directly
        exchange = f"mx1.{case.domain}"
        ours = (
            "match" if value(s, "mx_dane_state", exchange=exchange, state="secure_match") == 1 else "no_match"
        )
        rows.append((case.domain, lab.rrdata[case.domain][:5], ours, _openssl_verdict(case, lab)))
    (lab.workdir / "scenarios.txt").write_text("\n".join(" | ".join(r) for r in rows) + "\n")
    print("\n".join(" | ".join(r) for r in rows))
    assert all(ours == theirs for _, _, ours, theirs in rows), rows
    assert {r[2] for r in rows} == {"match", "no_match"}
