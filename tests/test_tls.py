"""The STARTTLS stage: real handshakes against the lab's ACCEPT_1 and one-off peers on 127.0.0.1 (aiosmtpd with
chosen certificates, raw scripts for refusals and stalls), table tests of name matching, and the TLS series."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import smtplib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mx_exporter.assess import build_report
from mx_exporter.collector import report_families
from mx_exporter.model import SmtpOutcome, TlsFacts
from mx_exporter.smtp import probe_address
from mx_exporter.smtp_wire import SmtpPolicy
from mx_exporter.tls import (
    cert_valid_for,
    certificate_facts,
    load_trust_store,
    name_matches,
    peer_chain,
)
from tests.builders import domain, res
from tests.lab import plan
from tests.lab.smtp_peers import TLS_NAME, SmtpLab
from tests.lab.smtp_sessions import EHLO, T, assert_polite, commands, policy, probe_lab, scripted_peer, target

UTC = datetime.UTC
NOW = datetime.datetime.now(UTC)


@pytest.fixture
def lab_ca_file(smtp_lab: SmtpLab, tmp_path: Path) -> str:
    path = tmp_path / "lab-ca.pem"
    path.write_bytes(smtp_lab.ca.cert_pem.bytes())
    return str(path)


def independent_leaf(port: int) -> x509.Certificate:
    """ACCEPT_1's certificate as the standard library's smtplib sees it: an independent STARTTLS client."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(plan.ACCEPT_1, port, local_hostname=plan.EHLO_NAME, timeout=5) as client:
        client.starttls(context=context)
        assert isinstance(client.sock, ssl.SSLSocket)
        der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# --- the lab's ACCEPT_1 (aiosmtpd, STARTTLS, a trustme certificate for mx1.healthy.lab.test)


async def test_accept_1_handshake_and_facts_with_the_lab_ca(smtp_lab: SmtpLab, lab_ca_file: str) -> None:
    result, conversation = await probe_lab(smtp_lab, plan.ACCEPT_1, tls_ca_file=lab_ca_file)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.ACCEPTED, 220, 250)
    tls = result.tls
    assert tls is not None and tls.handshake_ok and tls.version in {"TLSv1.2", "TLSv1.3"}
    leaf = await asyncio.to_thread(independent_leaf, smtp_lab.port)
    assert tls.cert_not_after == leaf.not_valid_after_utc.timestamp()
    assert (tls.chain_valid, tls.names, tls.detail) == (True, (TLS_NAME,), "chain verified")
    assert tls.cert_valid is None  # per address, the name is not known: cert_valid_for decides per name
    assert cert_valid_for("mx1.healthy.lab.test", tls) is True
    assert cert_valid_for("MX1.healthy.lab.test.", tls) is True
    assert cert_valid_for("alias.cname.lab.test", tls) is False  # the CNAME's name is not on the certificate
    # RFC 3207: EHLO again after the handshake; polite throughout, QUIT answered inside TLS.
    assert commands(conversation) == [EHLO, "STARTTLS", EHLO, "QUIT"]
    assert "S: 220 Ready to start TLS" in conversation and conversation[-1].startswith("S: 221")
    assert_polite(conversation)
    lines = [line.split(" ", 1)[1] for line in result.transcript]
    assert lines.index("C: STARTTLS") < lines.index("S: 220 Ready to start TLS")
    done = [line for line in lines if line.startswith("TLS handshake done: ")]
    assert done == [f"TLS handshake done: {tls.version}, 1 certificate(s), chain verified"]
    assert lines.count(f"C: {EHLO}") == 2 and lines[-1].startswith("S: 221")


async def test_accept_1_without_the_lab_ca_is_not_trusted(smtp_lab: SmtpLab) -> None:
    """The system store does not know the lab's CA: the facts are all there, the chain is not verified."""
    result, _ = await probe_lab(smtp_lab, plan.ACCEPT_1)
    tls = result.tls
    assert result.outcome is SmtpOutcome.ACCEPTED and tls is not None and tls.handshake_ok
    assert tls.chain_valid is False and tls.names == (TLS_NAME,)
    assert tls.detail == "chain not verified: no path to a trusted root"
    assert tls.cert_not_after is not None and tls.version is not None
    assert cert_valid_for("mx1.healthy.lab.test", tls) is False


async def test_starttls_off_by_policy_and_not_advertised(smtp_lab: SmtpLab) -> None:
    off, conversation = await probe_lab(smtp_lab, plan.ACCEPT_1, starttls=False)
    assert off.outcome is SmtpOutcome.ACCEPTED and off.starttls_advertised and off.tls is None
    assert commands(conversation) == [EHLO, "QUIT"]
    plain, conversation = await probe_lab(smtp_lab, plan.ACCEPT_2)
    assert plain.outcome is SmtpOutcome.ACCEPTED and not plain.starttls_advertised and plain.tls is None
    assert commands(conversation) == [EHLO, "QUIT"]


# --- one-off aiosmtpd peers with chosen certificates


class _Handler:
    """aiosmtpd handler without hooks: its default replies are enough."""


@contextlib.asynccontextmanager
async def tls_peer(context: ssl.SSLContext) -> AsyncIterator[int]:
    """An aiosmtpd peer on 127.0.0.1 offering STARTTLS with ``context``; yields its port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AiosmtpdSMTP(_Handler(), hostname="tls.lab.test", tls_context=context, loop=loop),
        "127.0.0.1",
        0,
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.sleep(0.05)  # let the peer's side of the closed session finish


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


async def probe_tls(port: int, **overrides: Any) -> TlsFacts:
    result = await probe_address(target("127.0.0.1"), policy(port, **overrides))
    assert result.outcome is SmtpOutcome.ACCEPTED, result.detail
    assert result.tls is not None
    return result.tls


async def test_full_chain_with_an_intermediate_verifies(tmp_path: Path) -> None:
    """Only the root is trusted: verifying proves the intermediate the peer sent was used."""
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert("mx.wild.lab.test", "*.wild.lab.test")
    ca_file = tmp_path / "root.pem"
    ca_file.write_bytes(root.cert_pem.bytes())
    async with tls_peer(server_context(leaf)) as port:
        tls = await probe_tls(port, tls_ca_file=str(ca_file))
    assert tls.handshake_ok and tls.chain_valid is True
    assert tls.names == ("mx.wild.lab.test", "*.wild.lab.test")
    assert cert_valid_for("mx2.wild.lab.test", tls) is True  # by the wildcard
    assert cert_valid_for("a.mx.wild.lab.test", tls) is False


async def test_expired_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    ends = (NOW - datetime.timedelta(days=1)).replace(microsecond=0)
    leaf = ca.issue_cert("expired.lab.test", not_before=ends - datetime.timedelta(days=90), not_after=ends)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    async with tls_peer(server_context(leaf)) as port:
        tls = await probe_tls(port, tls_ca_file=str(ca_file))
    assert tls.handshake_ok and tls.cert_not_after == ends.timestamp()
    assert tls.chain_valid is False
    assert tls.detail == "chain not verified: cert is not valid at validation time"
    assert tls.names == ("expired.lab.test",) and cert_valid_for("expired.lab.test", tls) is False


def self_signed(folder: Path, name: str) -> tuple[ssl.SSLContext, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, pem


async def test_self_signed_certificate(smtp_lab: SmtpLab, lab_ca_file: str, tmp_path: Path) -> None:
    context, _ = self_signed(tmp_path, "selfsigned.lab.test")
    async with tls_peer(context) as port:
        system = await probe_tls(port)
        lab = await probe_tls(port, tls_ca_file=lab_ca_file)
    for tls in (system, lab):
        assert tls.handshake_ok and tls.names == ("selfsigned.lab.test",)
        assert tls.chain_valid is False and tls.detail.startswith("chain not verified: ")
        assert cert_valid_for("selfsigned.lab.test", tls) is False


# --- raw peers: STARTTLS refused, stalled, broken


Action = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
STARTTLS_EHLO = b"250-scripted\r\n250-8BITMIME\r\n250 STARTTLS\r\n"


def starttls_then(action: Action) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Greet, advertise STARTTLS, run ``action`` on STARTTLS; answer QUIT with 221."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted\r\n")
        while line := await reader.readline():
            if line.startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                return
            if line.startswith(b"STARTTLS"):
                await action(reader, writer)
            else:
                writer.write(STARTTLS_EHLO)

    return script


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"454 4.7.0 TLS not available due to temporary reason\r\n")


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client leaves


async def ready_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 2.0.0 ready\r\n")
    await reader.read()


async def ready_then_plaintext(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 2.0.0 ready\r\n")
    await reader.read(1)  # the ClientHello has begun
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await reader.read()


async def ready_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 2.0.0 ready\r\n")
    await writer.drain()
    writer.transport.abort()


async def malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"go ahead\r\n")
    await reader.read()


TLS_CASES = [
    # (name, action, policy overrides, detail, QUIT sent)
    ("refused 454", refuse, {}, "STARTTLS refused: 454 4.7.0 TLS not available due to temporary reason", True),
    ("STARTTLS unanswered", stall, {"ehlo_timeout": 0.5}, "no complete STARTTLS reply within 500 ms", False),
    ("220 then no handshake", ready_then_stall, {"ehlo_timeout": 0.5}, "TLS handshake not done within 500 ms", False),
    ("220 then plaintext", ready_then_plaintext, {}, "TLS handshake failed: WRONG_VERSION_NUMBER", False),
    ("220 then closed", ready_then_close, {}, "connection closed during STARTTLS", False),
    ("malformed reply", malformed, {}, "malformed STARTTLS reply: go ahead", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("action", "overrides", "detail", "quit_sent"),
    [case[1:] for case in TLS_CASES],
    ids=[case[0] for case in TLS_CASES],
)
async def test_tls_trouble_is_a_fact_never_the_outcome(
    action: Action, overrides: dict[str, Any], detail: str, quit_sent: bool
) -> None:
    async with scripted_peer(starttls_then(action)) as (port, lines):
        result = await probe_address(target("127.0.0.1"), policy(port, **overrides))
        await asyncio.sleep(0.1)
    assert result.outcome is SmtpOutcome.ACCEPTED and result.up and result.starttls_advertised
    assert result.tls is not None and result.tls.handshake_ok is False
    assert (result.tls.version, result.tls.cert_not_after, result.tls.chain_valid) == (None, None, None)
    assert result.tls.detail == detail
    assert any(line.endswith(result.tls.detail) for line in result.transcript)
    received = [line.decode().rstrip("\r\n") for line in lines]
    assert received == [EHLO, "STARTTLS", *(["QUIT"] if quit_sent else [])]
    assert result.session_seconds is not None and result.session_seconds < T["session_timeout"]


async def test_stalled_handshake_is_bounded_by_the_session_deadline() -> None:
    """Phase timeout longer than the deadline: the deadline alone ends it; the outcome stays accepted."""
    deadline = 1.0
    async with scripted_peer(starttls_then(ready_then_stall)) as (port, _):
        result = await probe_address(
            target("127.0.0.1"), policy(port, ehlo_timeout=30.0, session_timeout=deadline)
        )
        await asyncio.sleep(0.1)
    assert result.outcome is SmtpOutcome.ACCEPTED
    assert result.session_seconds is not None and deadline <= result.session_seconds < deadline + 0.5
    assert result.tls == TlsFacts(False, detail="STARTTLS not finished before the session deadline")
    assert result.transcript[-2].endswith("S: 220 2.0.0 ready")
    assert result.transcript[-1].endswith("session deadline 1 s hit during tls")


# --- pure parts


def test_policy_tls_fields() -> None:
    p = SmtpPolicy(ehlo_name=plan.EHLO_NAME)
    assert (p.starttls, p.tls_ca_file) == (True, None)  # an unreadable tls_ca_file is refused in settings


@pytest.mark.parametrize(
    ("name", "patterns", "matches"),
    [
        ("mx1.healthy.lab.test", ["mx1.healthy.lab.test"], True),
        ("MX1.Healthy.Lab.Test.", ["mx1.healthy.lab.test"], True),
        ("mx1.healthy.lab.test", ["MX1.HEALTHY.LAB.TEST."], True),
        ("alias.cname.lab.test", ["mx1.healthy.lab.test"], False),
        ("mx.example.org", ["other.example.org", "*.example.org"], True),
        ("mx.example.org", ["*.example.org"], True),
        ("xn--bcher-kva.example.org", ["*.example.org"], True),
        ("example.org", ["*.example.org"], False),  # the wildcard needs one label
        ("a.b.example.org", ["*.example.org"], False),  # ... and only one
        (".example.org", ["*.example.org"], False),
        ("mx.org", ["*.org"], False),  # not over a single label
        ("mx1.example.org", ["mx*.example.org"], False),  # partial wildcards are not honoured
        ("mx.example.org", ["*x.example.org"], False),
        ("mx.a.example.org", ["mx.*.example.org"], False),  # only the left-most label
        ("mx.example.org", ["*.*.org"], False),
        ("mx.example.org", ["*."], False),
        ("mx.example.org", ["*.example..org"], False),
        ("mx..example.org", ["mx..example.org"], False),
        ("*.example.org", ["*.example.org"], False),  # a wildcard is a pattern, never a host
        ("", ["*.example.org", ""], False),
        ("mx.example.org", [], False),
        ("mx.example.org", ["example.org"], False),
        ("mx.example.org.evil.test", ["mx.example.org"], False),
    ],
)
def test_name_matches(name: str, patterns: list[str], matches: bool) -> None:
    assert name_matches(name, patterns) is matches


@pytest.mark.parametrize(
    ("facts", "name", "valid"),
    [
        (TlsFacts(False, detail="STARTTLS refused: 454"), "mx.lab.test", None),
        (TlsFacts(True, "TLSv1.3", 1.0, chain_valid=True, names=("mx.lab.test",)), "mx.lab.test", True),
        (TlsFacts(True, "TLSv1.3", 1.0, chain_valid=True, names=("*.lab.test",)), "mx.lab.test", True),
        (TlsFacts(True, "TLSv1.3", 1.0, chain_valid=True, names=("mx.lab.test",)), "mx2.lab.test", False),
        (TlsFacts(True, "TLSv1.3", 1.0, chain_valid=False, names=("mx.lab.test",)), "mx.lab.test", False),
        (TlsFacts(True, "TLSv1.3", 1.0, chain_valid=None, names=("mx.lab.test",)), "mx.lab.test", False),
        (TlsFacts(True, "TLSv1.3", 1.0, chain_valid=True, names=()), "mx.lab.test", False),
    ],
)
def test_cert_valid_for(facts: TlsFacts, name: str, valid: bool | None) -> None:
    assert cert_valid_for(name, facts) is valid


def test_certificate_facts_never_raise() -> None:
    ca = trustme.CA()
    leaf = x509.load_pem_x509_certificate(ca.issue_cert("mx.lab.test").cert_chain_pems[0].bytes())
    der = leaf.public_bytes(serialization.Encoding.DER)
    now = NOW.timestamp()
    store = load_trust_store(None)
    assert certificate_facts("TLSv1.3", [], store, now) == TlsFacts(
        True, "TLSv1.3", chain_valid=False, detail="no certificate presented"
    )
    garbage = certificate_facts("TLSv1.2", [b"\x30\x03not a certificate"], store, now)
    assert garbage.handshake_ok and garbage.chain_valid is False
    assert garbage.detail.startswith("unreadable certificate: ")
    no_store = certificate_facts("TLSv1.3", [der, b"junk"], "trust store unavailable: gone", now)
    assert (no_store.chain_valid, no_store.names, no_store.detail) == (
        False,
        ("mx.lab.test",),
        "trust store unavailable: gone",
    )
    assert no_store.cert_not_after == x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


def test_load_trust_store_errors_and_updates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"CA file {tmp_path}/missing.pem: No such file or directory"):
        load_trust_store(str(tmp_path / "missing.pem"))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=f"no PEM certificate in {empty}"):
        load_trust_store(str(empty))
    # A bundle with one broken entry still loads the good one; a rewritten bundle is picked up.
    trusted, other = trustme.CA(), trustme.CA()
    leaf = x509.load_pem_x509_certificate(trusted.issue_cert("mx.lab.test").cert_chain_pems[0].bytes())
    der = leaf.public_bytes(serialization.Encoding.DER)
    bundle = tmp_path / "bundle.pem"
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle.write_bytes(broken + other.cert_pem.bytes())
    os.utime(bundle, ns=(1_000_000_000, 1_000_000_000))
    facts = certificate_facts("TLSv1.3", [der], load_trust_store(str(bundle)), NOW.timestamp())
    assert facts.chain_valid is False
    bundle.write_bytes(broken + trusted.cert_pem.bytes())
    os.utime(bundle, ns=(2_000_000_000, 2_000_000_000))
    facts = certificate_facts("TLSv1.3", [der], load_trust_store(str(bundle)), NOW.timestamp())
    assert facts.chain_valid is True


def test_system_store_loads() -> None:
    """The default store OpenSSL would use (Debian: ca-certificates); absent, this fails with the reason."""
    load_trust_store(None)


class _LeafOnly:
    """What an SSL object without any chain API offers: the leaf, DER."""

    def __init__(self, der: bytes | None) -> None:
        self._der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        return self._der


def test_peer_chain_falls_back_to_the_leaf() -> None:
    assert peer_chain(_LeafOnly(b"\x30\x01")) == [b"\x30\x01"]
    assert peer_chain(_LeafOnly(None)) == []


# --- the TLS series


def _series(reports: list[Any]) -> dict[str, dict[tuple[str, ...], float]]:
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for family in report_families(reports):
        for sample in family.samples:
            if sample.name.startswith("mx_smtp_tls_"):
                key = (sample.labels["exchange"], sample.labels["address"], sample.labels.get("version", ""))
                found.setdefault(sample.name, {})[key] = sample.value
    return found


def test_tls_series_per_exchange_name() -> None:
    """One address behind two exchange names: the same handshake, cert validity decided per name."""
    facts = TlsFacts(True, "TLSv1.3", 1798761600.0, chain_valid=True, names=("mx1.healthy.lab.test",))
    shared = res("127.0.0.10", starttls_advertised=True, tls=facts)
    refused = res("127.0.0.12", starttls_advertised=True, tls=TlsFacts(False, detail="STARTTLS refused: 454"))
    plain = res("127.0.0.11")  # no STARTTLS advertised: no TLS series at all
    scenario = domain(
        "tls.lab.test",
        (10, "mx1.healthy.lab.test", (shared,)),
        (10, "alias.cname.lab.test", (shared,)),
        (20, "mx2.tls.lab.test", (refused, plain)),
    )
    got = _series([build_report(*scenario, 0.1, 1767225600.0)])
    mx1 = ("mx1.healthy.lab.test", "127.0.0.10", "")
    alias = ("alias.cname.lab.test", "127.0.0.10", "")
    mx2 = ("mx2.tls.lab.test", "127.0.0.12", "")
    assert got["mx_smtp_tls_handshake_success"] == {mx1: 1, alias: 1, mx2: 0}
    assert got["mx_smtp_tls_version_info"] == {
        ("mx1.healthy.lab.test", "127.0.0.10", "TLSv1.3"): 1,
        ("alias.cname.lab.test", "127.0.0.10", "TLSv1.3"): 1,
    }
    assert got["mx_smtp_tls_cert_not_after_timestamp_seconds"] == {mx1: 1798761600.0, alias: 1798761600.0}
    assert got["mx_smtp_tls_cert_valid"] == {mx1: 1, alias: 0}
