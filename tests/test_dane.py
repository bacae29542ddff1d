"""DANE matching (dane.py) as table tests: real certificates from trustme, TLSA records computed from them the way
an operator publishes them (`openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum` = 3 1 1)."""

from __future__ import annotations

import datetime
import hashlib
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mx_exporter.dane import address_state, chain_matches, parse_tlsa, record_text, usable
from mx_exporter.model import (
    AddressResult,
    DaneState,
    Family,
    SmtpOutcome,
    TlsaLookup,
    TlsaRecord,
    TlsFacts,
)

NAME = "mx.dane.example"
NOW = time.time()


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _spki(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tlsa(usage: int, selector: int, matching: int, der: bytes) -> TlsaRecord:
    data = der if selector == 0 else _spki(der)
    digest = {
        0: lambda b: b,
        1: lambda b: hashlib.sha256(b).digest(),
        2: lambda b: hashlib.sha512(b).digest(),
    }
    return TlsaRecord(usage, selector, matching, digest[matching](data))


CA = trustme.CA()
LEAF = CA.issue_cert(NAME)
CHAIN = (_der(LEAF.cert_chain_pems[0].bytes()), _der(CA.cert_pem.bytes()))
OTHER_CA = trustme.CA()
OTHER_LEAF = OTHER_CA.issue_cert(NAME)
OTHER = (_der(OTHER_LEAF.cert_chain_pems[0].bytes()), _der(OTHER_CA.cert_pem.bytes()))
WRONG_NAME = (_der(CA.issue_cert("elsewhere.example").cert_chain_pems[0].bytes()), CHAIN[1])
LEAF_DER, CA_DER = CHAIN


@pytest.mark.parametrize(
    ("records", "chain", "matched"),
    [
        ([tlsa(3, 1, 1, LEAF_DER)], CHAIN, True),  # the common one: DANE-EE SPKI SHA2-256
        ([tlsa(3, 0, 1, LEAF_DER)], CHAIN, True),
        ([tlsa(3, 1, 2, LEAF_DER)], CHAIN, True),
        ([tlsa(3, 0, 0, LEAF_DER)], CHAIN, True),
        ([tlsa(3, 1, 1, LEAF_DER)], OTHER, False),  # rotated certificate, old TLSA
        ([tlsa(3, 1, 1, LEAF_DER)], WRONG_NAME[:1], False),
        ([tlsa(3, 1, 1, OTHER[0]), tlsa(3, 1, 1, LEAF_DER)], CHAIN, True),  # rollover: old and new published
        ([tlsa(3, 1, 1, CA_DER)], CHAIN, False),  # DANE-EE matches the leaf only
        ([tlsa(2, 1, 1, CA_DER)], CHAIN, True),  # DANE-TA: the issuer's key, and the leaf chains to it
        ([tlsa(2, 0, 1, CA_DER)], CHAIN, True),
        ([tlsa(2, 1, 1, CA_DER)], OTHER, False),
        ([tlsa(2, 1, 1, CA_DER)], WRONG_NAME, False),  # DANE-TA checks the exchange name (RFC 7672 §3.2.2)
        ([tlsa(2, 1, 1, CA_DER)], CHAIN[:1], False),  # the trust anchor is not in the presented chain
        ([tlsa(1, 1, 1, LEAF_DER)], CHAIN, False),  # PKIX-EE: not usable for SMTP
        ([tlsa(0, 1, 1, CA_DER)], CHAIN, False),  # PKIX-TA: not usable for SMTP
        ([TlsaRecord(3, 1, 1, b"\x00" * 32)], CHAIN, False),
        ([tlsa(3, 1, 1, LEAF_DER)], (), False),
    ],
)
def test_chain_matches(records: list[TlsaRecord], chain: tuple[bytes, ...], matched: bool) -> None:
    assert chain_matches(records, chain, NAME, NOW)[0] is matched


EXPIRED = (
    _der(
        CA.issue_cert(
            NAME,
            not_before=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30),
            not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1),
        )
        .cert_chain_pems[0]
        .bytes()
    ),
    CA_DER,
)


def test_dane_ee_ignores_names_and_dates() -> None:
    """RFC 7672 §3.1.1: a DANE-EE match authenticates the key; names and expiry do not matter."""
    wrong_name = WRONG_NAME[0]
    assert chain_matches([tlsa(3, 1, 1, wrong_name)], (wrong_name,), NAME, NOW)[0]
    assert chain_matches([tlsa(3, 1, 1, EXPIRED[0])], EXPIRED, NAME, NOW)[0]


def test_dane_ta_checks_dates() -> None:
    """RFC 7672 §3.1.2: under DANE-TA the leaf's validity period is checked like any chain."""
    assert not chain_matches([tlsa(2, 1, 1, CA_DER)], EXPIRED, NAME, NOW)[0]
    assert chain_matches([tlsa(2, 1, 1, CA_DER)], CHAIN, NAME, NOW)[0]


@pytest.mark.parametrize(
    ("record", "ok"),
    [
        (TlsaRecord(3, 1, 1, b"x" * 32), True),
        (TlsaRecord(2, 0, 2, b"x" * 64), True),
        (TlsaRecord(3, 1, 0, b"x"), True),
        (TlsaRecord(3, 1, 1, b"x" * 31), False),  # a digest of the wrong length
        (TlsaRecord(3, 1, 2, b"x" * 32), False),
        (TlsaRecord(3, 2, 1, b"x" * 32), False),  # unknown selector
        (TlsaRecord(3, 1, 3, b"x" * 32), False),  # unknown matching type
        (TlsaRecord(3, 1, 0, b""), False),
        (TlsaRecord(1, 1, 1, b"x" * 32), False),
        (TlsaRecord(4, 1, 1, b"x" * 32), False),
    ],
)
def test_usable(record: TlsaRecord, ok: bool) -> None:
    assert usable(record) is ok


def test_parse_tlsa_and_text() -> None:
    record = parse_tlsa(bytes([3, 1, 1]) + bytes(range(32)))
    assert (record.usage, record.selector, record.matching_type, len(record.data)) == (3, 1, 1, 32)
    assert record_text(record) == "3 1 1 0001020304050607…"
    with pytest.raises(ValueError, match="shorter than 4 octets"):
        parse_tlsa(b"\x03\x01\x01")


def _result(chain: tuple[bytes, ...], *, up: bool = True, tls: bool = True) -> AddressResult:
    outcome = SmtpOutcome.ACCEPTED if up else SmtpOutcome.CONNECT_TIMEOUT
    facts = TlsFacts(handshake_ok=True, chain_valid=True, names=(NAME,), chain=chain) if tls else None
    return AddressResult("192.0.2.1", Family.IPV4, outcome, starttls_advertised=tls, tls=facts)


SECURE = TlsaLookup("secure", records=(tlsa(3, 1, 1, LEAF_DER),))


@pytest.mark.parametrize(
    ("lookup", "result", "state"),
    [
        (SECURE, _result(CHAIN), DaneState.SECURE_MATCH),
        (SECURE, _result(OTHER), DaneState.SECURE_NO_MATCH),
        (SECURE, _result(CHAIN, tls=False), DaneState.SECURE_NO_MATCH),  # no STARTTLS: a DANE sender defers
        (TlsaLookup("insecure"), _result(OTHER), DaneState.INSECURE),
        (TlsaLookup("bogus"), _result(CHAIN), DaneState.BOGUS),
        (TlsaLookup("secure"), _result(OTHER), DaneState.NO_TLSA),
        (TlsaLookup("secure", records=(tlsa(1, 1, 1, LEAF_DER),)), _result(OTHER), DaneState.NO_TLSA),
    ],
)
def test_address_state(lookup: TlsaLookup, result: AddressResult, state: DaneState) -> None:
    found = address_state(lookup, result, NAME, NOW)
    assert found is not None and found.state is state, found


def test_address_state_says_nothing_without_a_session() -> None:
    assert address_state(SECURE, _result(CHAIN, up=False), NAME, NOW) is None
