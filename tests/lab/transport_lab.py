"""The transport-security lab: NSD serving zones signed at test time (signed.test secure, bogus.test with its TLSA
signature broken, unsigned.test domain-insecure), Unbound validating them, one aiosmtpd peer per case presenting a
trustme certificate, and an HTTPS MTA-STS policy host on 127.0.0.91:443.

Each case is one domain whose single exchange mx1.<domain> has an address of its own and a TLSA record computed
at start-up from the certificate named in the case. Used by tests/test_transport_lab.py and, as a second scrape
target, by the live-Prometheus test (so the dashboard's transport panels are proven on real data).
"""

from __future__ import annotations

import hashlib
import ssl
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
from tests.lab.exporter import free_port, lab_config
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


@pytest.fixture(scope="session")
def transport_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
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


def transport_config(lab: Lab) -> dict[str, Any]:
    """The exporter settings for the lab: DNSSEC trusted, both CAs, every case domain."""
    config = lab_config(lab.nameserver, lab.port, [c.domain for c in CASES])
    config["resolver"]["dnssec"] = "require"
    config["smtp"]["tls_ca_file"] = lab.ca_file
    config["mta_sts"] = {"ca_file": lab.policy_ca_file, "timeout": 5}
    config["allow_networks"] = plan.ALLOW_NETWORKS
    return config
