"""The DNSSEC lab (tests/lab/dnssec.py) against itself: real NSD serving zones signed at test time, real Unbound
validating them, queried with dnspython the way the exporter asks (AD=1, RFC 6840 §5.7; CD=1 to tell bogus from
down). The DANE tests build on exactly these answers, so each one is proven here first."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mx_exporter.names import parse_nameserver
from tests.lab import nsd, plan
from tests.lab.dnssec import SignedZone, Unbound, break_signature, sign_zone, zone_header
from tests.lab.nsd import NsdServer, free_port

SIGNED = "signed.test"  # every RRset signed and intact
BOGUS = "bogus.test"  # signed; the RRSIG over mx.bogus.test A is broken, ok.bogus.test A is intact
UNSIGNED = "unsigned.test"  # no DNSSEC at all: domain-insecure in Unbound


def _spki_sha256(cert_pem: bytes) -> str:
    """TLSA 3 1 1 data for a certificate: SHA2-256 of its SubjectPublicKeyInfo, in hex."""
    spki = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = spki.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Lab:
    nsd: NsdServer
    unbound: Unbound
    signed: SignedZone
    bogus: SignedZone
    tlsa_hex: str


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("dnssec-lab")
    leaf = trustme.CA().issue_cert(f"mx.{SIGNED}")
    tlsa_hex = _spki_sha256(leaf.cert_chain_pems[0].bytes())
    signed = sign_zone(
        zone_header(SIGNED) + f"mx A {plan.ACCEPT_1}\n_25._tcp.mx TLSA 3 1 1 {tlsa_hex}\n",
        SIGNED,
        workdir / "s",
    )
    intact = sign_zone(
        zone_header(BOGUS) + f"mx A {plan.ACCEPT_1}\nok A {plan.ACCEPT_2}\n", BOGUS, workdir / "b"
    )
    bogus = break_signature(intact, "mx", "A")
    unsigned = workdir / f"{UNSIGNED}.zone"
    unsigned.write_text(zone_header(UNSIGNED) + f"mx A {plan.ACCEPT_1}\n")
    zones = [(signed.origin, signed.path), (bogus.origin, bogus.path), (UNSIGNED, unsigned)]
    with NsdServer(extra_zones=zones) as nsd, Unbound(nsd.nameserver, [signed, bogus], [UNSIGNED]) as unbound:
        yield Lab(nsd, unbound, signed, bogus, tlsa_hex)


def ask(server: Unbound, name: str, rdtype: str, cd: bool = False) -> dns.message.Message:
    """One UDP query as the exporter sends it with resolver.dnssec require: AD=1, no DO; CD=1 on request."""
    query = dns.message.make_query(name, rdtype)
    query.flags |= dns.flags.AD | (dns.flags.CD if cd else 0)
    return dns.query.udp(query, server.address, port=server.port, timeout=3)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rdata in rrset]


def test_the_nameserver_setting_is_what_the_exporter_parses(lab: Lab) -> None:
    assert parse_nameserver(lab.unbound.nameserver) == ("127.0.0.1", lab.unbound.port)
    assert lab.unbound.address == "127.0.0.1" and lab.unbound.port != lab.nsd.port


def test_a_signed_zone_answers_with_ad(lab: Lab) -> None:
    reply = ask(lab.unbound, f"mx.{SIGNED}", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AD
    assert addresses(reply) == [plan.ACCEPT_1]


def test_an_unsigned_zone_answers_without_ad(lab: Lab) -> None:
    reply = ask(lab.unbound, f"mx.{UNSIGNED}", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.flags & dns.flags.AD
    assert addresses(reply) == [plan.ACCEPT_1]


def test_the_broken_rrset_is_servfail_and_answers_with_cd(lab: Lab) -> None:
    reply = ask(lab.unbound, f"mx.{BOGUS}", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert reply.answer == []
    checking_disabled = ask(lab.unbound, f"mx.{BOGUS}", "A", cd=True)
    assert checking_disabled.rcode() == dns.rcode.NOERROR
    assert not checking_disabled.flags & dns.flags.AD  # the data, unvalidated: never "secure"
    assert addresses(checking_disabled) == [plan.ACCEPT_1]
    assert f"validation failure <mx.{BOGUS}. A IN>" in lab.unbound.log()


def test_another_rrset_in_the_bogus_zone_stays_secure(lab: Lab) -> None:
    reply = ask(lab.unbound, f"ok.{BOGUS}", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AD
    assert addresses(reply) == [plan.ACCEPT_2]


def test_a_tlsa_record_in_the_signed_zone_answers_with_ad(lab: Lab) -> None:
    reply = ask(lab.unbound, f"_25._tcp.mx.{SIGNED}", "TLSA")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AD
    records = [
        rdata.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TLSA for rdata in rrset
    ]
    assert records == [f"3 1 1 {lab.tlsa_hex}"]


def test_a_missing_name_in_the_signed_zone_is_a_secure_nxdomain(lab: Lab) -> None:
    reply = ask(lab.unbound, f"nothing.{SIGNED}", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AD  # proven by NSEC: what "no TLSA" will look like


@pytest.mark.parametrize("name", ["example.com", "elsewhere.example.test", f"mx1.healthy.{plan.ZONE}"])
def test_names_outside_the_configured_zones_fail_at_once_without_the_internet(lab: Lab, name: str) -> None:
    # lab.test is served by this NSD too, but this Unbound was not told about it: the root stub does not leak it.
    started = time.monotonic()
    reply = ask(lab.unbound, name, "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started < 1.0


def test_the_trust_anchor_is_the_ksk_ds_on_one_line(lab: Lab) -> None:
    owner, klass, rrtype, _tag, algorithm, digest_type, digest = lab.signed.trust_anchor.split()
    assert (owner, klass, rrtype, algorithm, digest_type) == (f"{SIGNED}.", "IN", "DS", "13", "2")
    assert len(digest) == 64
    assert lab.bogus.trust_anchor != lab.signed.trust_anchor


def test_break_signature_leaves_the_original_and_refuses_an_unsigned_rrset(lab: Lab) -> None:
    intact = lab.bogus.path.with_name(f"{BOGUS}.zone.signed")
    assert intact.exists() and intact.read_text() != lab.bogus.path.read_text()
    with pytest.raises(ValueError, match="no RRSIG covers"):
        break_signature(lab.signed, "mx", "AAAA")


def test_a_bad_config_fails_with_unbound_s_log(tmp_path: Path, lab: Lab) -> None:
    broken = SignedZone(
        origin="broken.test", path=tmp_path / "none", trust_anchor="broken.test. IN DS nonsense"
    )
    with pytest.raises(RuntimeError, match="Unbound did not start") as failure:
        Unbound(lab.nsd.nameserver, [broken], startup_timeout=5).start()
    assert "--- unbound log ---" in str(failure.value)
    assert "unbound exited with status" in str(failure.value)


def test_stop_ends_the_process(lab: Lab) -> None:
    with Unbound(lab.nsd.nameserver, insecure_zones=[UNSIGNED]) as unbound:
        process = unbound._process
        assert process is not None
        pid = process.pid
        assert not ask(unbound, f"mx.{UNSIGNED}", "A").flags & dns.flags.AD
    assert process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_port_taken_between_choice_and_bind_is_retried_on_another(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(nsd, "free_port", lambda: next(ports))  # the shared start loop's port source
        with Unbound(lab.nsd.nameserver, insecure_zones=[UNSIGNED]) as unbound:
            assert unbound.port != taken
            assert ask(unbound, f"mx.{UNSIGNED}", "A").rcode() == dns.rcode.NOERROR
