"""DANE for SMTP (RFC 7672, RFC 6698, RFC 7671): does a presented chain match an exchange's TLSA records?

Pure: TLSA records come from the transport stage (transport.py), the chain from the STARTTLS stage (TlsFacts.chain,
DER, leaf first). Assessment calls ``address_state`` once per (exchange, address) and keeps the answer.

- Only DANE-TA(2) and DANE-EE(3) records are usable for SMTP; PKIX-TA(0) and PKIX-EE(1) are not (RFC 7672 §3.1.3),
  and neither are unknown selectors or matching types. A secure RRset with no usable record is treated as no TLSA:
  a DANE sender then uses TLS without authentication.
- DANE-EE(3) matches the leaf only; its names and dates are not checked (RFC 7672 §3.1.1).
- DANE-TA(2) matches a certificate of the presented chain; the leaf must then chain up to it (signatures, dates,
  CA constraints, via cryptography's verifier with that certificate as the only trust anchor) and carry the exchange
  name (RFC 7672 §3.1.2, §3.2.2). A DANE-TA key (selector 1) is matched against the chain's certificates' keys: a
  bare key that no presented certificate holds cannot be checked without the certificate, and does not match.
- Digests with hashlib (SHA2-256, SHA2-512); the SubjectPublicKeyInfo with cryptography.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from mx_exporter.model import AddressResult, DaneAddress, DaneState, TlsaLookup, TlsaRecord

DANE_TA, DANE_EE = 2, 3
_DIGEST_SIZE = {1: 32, 2: 64}  # matching type 1 SHA2-256, 2 SHA2-512


def parse_tlsa(rdata: bytes) -> TlsaRecord:
    """One TLSA record from its wire rdata (usage, selector, matching type, association data)."""
    if len(rdata) < 4:
        raise ValueError("a TLSA record shorter than 4 octets")
    return TlsaRecord(usage=rdata[0], selector=rdata[1], matching_type=rdata[2], data=bytes(rdata[3:]))


def usable(record: TlsaRecord) -> bool:
    """Usable for SMTP (RFC 7672 §3.1.3): DANE-TA or DANE-EE, a known selector and matching type, and a digest of
    the length its matching type says."""
    if record.usage not in (DANE_TA, DANE_EE) or record.selector not in (0, 1):
        return False
    if record.matching_type == 0:
        return bool(record.data)
    return _DIGEST_SIZE.get(record.matching_type) == len(record.data)


def _association(cert: x509.Certificate, selector: int, matching_type: int) -> bytes:
    if selector == 0:
        data = cert.public_bytes(serialization.Encoding.DER)
    else:
        data = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if matching_type == 1:
        return hashlib.sha256(data).digest()
    if matching_type == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: TlsaRecord, cert: x509.Certificate) -> bool:
    return _association(cert, record.selector, record.matching_type) == record.data


def _chains_to(
    leaf: x509.Certificate, others: list[x509.Certificate], anchor: x509.Certificate, name: str, now: float
) -> bool:
    """Does the leaf verify up to ``anchor`` (the DANE-TA certificate) for the DNS name ``name``?

    Signatures, dates and CA constraints as WebPKI checks them; the leaf's extensions are not held to the WebPKI
    profile (a DANE-TA issuer is the domain's own CA, RFC 7672 §3.1.2), except that its subjectAltName must name
    the exchange."""
    try:
        subject = x509.DNSName(name)
        at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        san = x509.SubjectAlternativeName
        ee = verification.ExtensionPolicy.permit_all().require_present(
            san, verification.Criticality.AGNOSTIC, None
        )
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([anchor]))
            .time(at)
            .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
            .build_server_verifier(subject)
        )
        verifier.verify(leaf, [c for c in others if c != anchor])
    except Exception:  # VerificationError, or a name or algorithm the verifier refuses: no match
        return False
    return True


def chain_matches(
    records: Sequence[TlsaRecord], chain: Sequence[bytes], exchange: str, now: float
) -> tuple[bool, str]:
    """Does the presented chain satisfy one usable record? Returns (matched, one short human line)."""
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError as exc:
        return False, f"unreadable certificate: {exc}"
    if not certs:
        return False, "no certificate presented"
    leaf = certs[0]
    for record in records:
        if not usable(record):
            continue
        if record.usage == DANE_EE and _matches(record, leaf):
            return True, f"leaf matches {record_text(record)}"
        if record.usage == DANE_TA:
            for anchor in certs:
                if _matches(record, anchor) and _chains_to(leaf, certs[1:], anchor, exchange, now):
                    return True, f"chain verifies to the trust anchor of {record_text(record)}"
    shown = ", ".join(record_text(r) for r in records if usable(r))
    return False, f"no usable record matches the presented chain ({shown})"


def record_text(record: TlsaRecord) -> str:
    """ "3 1 1 a1b2c3d4…": the parameters and the start of the association data, as `dig` shows them."""
    data = record.data.hex()
    return (
        f"{record.usage} {record.selector} {record.matching_type} {data[:16]}{'…' if len(data) > 16 else ''}"
    )


def address_state(tlsa: TlsaLookup, result: AddressResult, exchange: str, now: float) -> DaneAddress | None:
    """The DANE state of one address of one exchange; None when there is nothing to say (the address did not
    accept a session, so no chain could be matched, while the exchange has a usable secure TLSA RRset)."""
    if tlsa.state == "insecure":
        return DaneAddress(result.address, DaneState.INSECURE, tlsa.detail)
    if tlsa.state == "bogus":
        return DaneAddress(result.address, DaneState.BOGUS, tlsa.detail)
    records = [r for r in tlsa.records if usable(r)]
    if not records:
        detail = "secure: no TLSA records" if not tlsa.records else "secure: no record usable for SMTP"
        return DaneAddress(result.address, DaneState.NO_TLSA, detail)
    if not result.up or (result.tls is None and result.starttls_advertised):
        return None  # no session, or STARTTLS offered but not tried (smtp.starttls: false): nothing to match
    if result.tls is None or not result.tls.handshake_ok:
        why = "no STARTTLS offered" if not result.starttls_advertised else "STARTTLS failed"
        if result.tls is not None and result.tls.detail:
            why = f"{why}: {result.tls.detail}"
        return DaneAddress(result.address, DaneState.SECURE_NO_MATCH, f"{why}; a DANE sender defers the mail")
    matched, detail = chain_matches(records, result.tls.chain, exchange, now)
    state = DaneState.SECURE_MATCH if matched else DaneState.SECURE_NO_MATCH
    return DaneAddress(result.address, state, detail)
