"""STARTTLS facts: what a peer's TLS handshake and certificate chain say, and whether they fit an exchange name.

The SMTP stage (smtp.py) does STARTTLS itself with ``handshake_context()``, which accepts ANY certificate, so
the facts are always collected and a bad certificate never hides anything. Verification happens afterwards,
here, with cryptography's ``x509.verification``:

- ``certificate_facts`` (per address): the leaf's expiry and DNS names, and whether the presented chain leads to
  a trusted root (the system store, or ``tls_ca_file``). A session is per address and shared by every exchange
  name that points at the address, so the name is NOT checked here.
- ``cert_valid_for`` (per exchange name, pure): a verified chain whose leaf names the exchange (RFC 6125
  matching, ``name_matches``). Assessment calls it once per exchange and stores the answer in the exchange's
  ``TlsFacts.cert_valid``; everything downstream only reads that.

Nothing here raises for peer data: failures become facts with a short human ``detail``.
"""

from __future__ import annotations

import datetime
import functools
import os
import ssl
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from mx_exporter.model import TlsFacts
from mx_exporter.names import normalize_name
from mx_exporter.text import sanitize

MAX_CHAIN = 10  # certificates looked at from the peer (leaf included); real chains have 2-4
MAX_NAMES = 100  # DNS names kept from the leaf
MAX_CA_BYTES = 16 * 1024 * 1024  # one CA bundle file
MAX_CA_FILES = 2000  # files read from a CA directory (capath)
MAX_DETAIL = 160


# --- the handshake


@functools.cache
def handshake_context() -> ssl.SSLContext:
    """Client context for the handshake itself: no hostname check, no chain check (CERT_NONE).

    Verification is done afterwards on the presented chain, so an expired or self-signed certificate still
    yields its facts. Protocol versions and ciphers are OpenSSL's defaults: a peer only they refuse (say,
    TLS 1.0 only) shows as a failed handshake, as it would for a modern sender.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the peer presented (DER, leaf first), at most MAX_CHAIN.

    Python 3.11 has no public API for the peer's chain (``SSLObject.get_unverified_chain`` arrives in 3.13);
    the private ``_sslobj.get_unverified_chain()`` has it since 3.10 and works with CERT_NONE (checked by
    experiment). When neither is there, the leaf alone is used (``getpeercert(binary_form=True)``): a chain
    that needs an intermediate then fails to verify.
    """
    for owner in (ssl_object, getattr(ssl_object, "_sslobj", None)):
        get_chain = getattr(owner, "get_unverified_chain", None)
        if get_chain is None:
            continue
        try:
            chain = get_chain() or []
            return [_der(cert) for cert in chain[:MAX_CHAIN]]
        except (ssl.SSLError, ValueError, TypeError, AttributeError):
            break
    try:
        leaf = ssl_object.getpeercert(binary_form=True)
    except (ssl.SSLError, ValueError, AttributeError):
        return []
    return [leaf] if isinstance(leaf, bytes) and leaf else []


def _der(cert: Any) -> bytes:
    """DER bytes of one chain entry: an ``_ssl.Certificate`` (3.10-3.12) or already bytes."""
    if isinstance(cert, bytes):
        return cert
    der = cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
    if not isinstance(der, bytes):
        raise TypeError("certificate did not give DER bytes")
    return der


# --- the trust store


def load_trust_store(ca_file: str | None) -> verification.Store:
    """Trusted roots: the PEM bundle ``ca_file`` or, when None, the system store OpenSSL would use
    (``ssl.get_default_verify_paths()``: its cafile, else every PEM file in its capath).

    Cached per file and modification time, so an updated bundle is picked up. Raises ValueError with a
    clear message when no certificate can be loaded.
    """
    if ca_file is not None:
        return _store_from_files((ca_file,), _stamp(ca_file))
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return _store_from_files((paths.cafile,), _stamp(paths.cafile))
    if paths.capath and os.path.isdir(paths.capath):
        files = _ca_dir_files(paths.capath)
        return _store_from_files(files, tuple(_stamp(f) for f in files))
    raise ValueError("no system CA store found (ssl.get_default_verify_paths gives no cafile or capath)")


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"CA file {path}: {exc.strerror or exc}") from None
    return st.st_mtime_ns, st.st_size


def _ca_dir_files(directory: str) -> tuple[str, ...]:
    """Distinct regular files of a capath (its hash names are symlinks to the same files)."""
    seen: dict[str, None] = {}
    for name in sorted(os.listdir(directory))[:MAX_CA_FILES]:
        real = os.path.realpath(os.path.join(directory, name))
        if os.path.isfile(real):
            seen.setdefault(real)
    return tuple(seen)


@functools.lru_cache(maxsize=8)
def _store_from_files(files: tuple[str, ...], _stamp: object) -> verification.Store:
    certs: list[x509.Certificate] = []
    for path in files:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CA_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"CA file {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_CA_BYTES:
            raise ValueError(f"CA file {path}: larger than {MAX_CA_BYTES} bytes")
        certs.extend(_pem_certificates(data))
    if not certs:
        raise ValueError(f"no PEM certificate in {', '.join(files[:3]) or 'the CA directory'}")
    return verification.Store(certs)


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; a broken entry is skipped rather than losing the whole bundle."""
    with warnings.catch_warnings():  # old roots with e.g. negative serials warn; they are still roots
        warnings.simplefilter("ignore")
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            pass
        marker = b"-----BEGIN CERTIFICATE-----"
        certs = []
        for block in data.split(marker)[1:]:
            try:
                certs.append(x509.load_pem_x509_certificate(marker + block))
            except ValueError:
                continue
        return certs


# --- facts from a finished handshake


def certificate_facts(
    version: str | None, chain: Sequence[bytes], store: verification.Store | str, now: float
) -> TlsFacts:
    """Facts of a successful handshake: version, the leaf's expiry and DNS names, whether the chain verifies
    to ``store`` at ``now`` (unix seconds). ``store`` may be a string: why no trust store could be loaded.
    Never raises: a certificate the parser chokes on is a fact (chain_valid False) like any other."""
    try:
        return _certificate_facts(version, chain, store, now)
    except Exception as exc:
        return TlsFacts(True, version, chain_valid=False, detail=_short(f"certificate not understood: {exc}"))


def _certificate_facts(
    version: str | None, chain: Sequence[bytes], store: verification.Store | str, now: float
) -> TlsFacts:
    if not chain:
        return TlsFacts(True, version, chain_valid=False, detail="no certificate presented")
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        not_after = leaf.not_valid_after_utc.timestamp()
    except ValueError as exc:
        return TlsFacts(True, version, chain_valid=False, detail=_short(f"unreadable certificate: {exc}"))
    names = leaf_names(leaf)
    intermediates = []
    for der in chain[1:MAX_CHAIN]:
        try:
            intermediates.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue  # an unreadable extra certificate cannot help the chain; the leaf decides
    if isinstance(store, str):
        return TlsFacts(True, version, not_after, chain_valid=False, names=names, detail=_short(store))
    valid, why = verify_chain(leaf, intermediates, store, now)
    return TlsFacts(True, version, not_after, chain_valid=valid, names=names, detail=_short(why))


def leaf_names(leaf: x509.Certificate) -> tuple[str, ...]:
    """The leaf's DNS subjectAltNames, lower case, without a trailing dot, each once, at most MAX_NAMES."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        raw = san.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    names = dict.fromkeys(n.strip().rstrip(".").lower() for n in raw if n.strip().rstrip("."))
    return tuple(names)[:MAX_NAMES]


def _server_eku(_policy: Any, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    """An EKU, when present, must allow TLS server authentication (or any purpose)."""
    if eku is not None and not (
        ExtendedKeyUsageOID.SERVER_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    ):
        raise ValueError("certificate not for TLS servers (no serverAuth EKU)")


def verify_chain(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], store: verification.Store, now: float
) -> tuple[bool, str]:
    """Does the presented chain lead to a root in ``store``, valid at ``now``? Returns (ok, short reason).

    Without a name: a server verifier always checks one, so this is the client verifier with the
    end-entity's EKU rule changed from clientAuth to serverAuth (on the leaf and on intermediates), and the
    leaf's subjectAltName not required (its names are matched per exchange by ``cert_valid_for``).
    """
    eku = x509.ExtendedKeyUsage
    agnostic = verification.Criticality.AGNOSTIC
    ee = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(eku, agnostic, _server_eku)
        .may_be_present(x509.SubjectAlternativeName, agnostic, None)
    )
    ca = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(eku, agnostic, _server_eku)
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(store)
            .time(at)
            .extension_policies(ca_policy=ca, ee_policy=ee)
            .build_client_verifier()
        )
        verifier.verify(leaf, intermediates)
    except verification.VerificationError as exc:
        reason = str(exc).split(" (encountered", 1)[0].removeprefix("validation failed: ")
        if reason.startswith("candidates exhausted"):
            reason = "no path to a trusted root"
        return False, f"chain not verified: {reason}"
    except Exception as exc:  # e.g. an algorithm cryptography does not support: not verified either
        return False, f"chain not verified: {exc}"
    return True, "chain verified"


def _short(text: str) -> str:
    return sanitize(text, MAX_DETAIL)


# --- per exchange name (pure)


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Does the host ``name`` match one of the certificate's DNS names (RFC 6125 §6.4)?

    Case-insensitive, trailing dots ignored. A wildcard is only a whole left-most label ("*.example.org"): it
    matches exactly one label ("mx.example.org", not "example.org" nor "a.b.example.org"), and needs at least
    two labels after it ("*.org" matches nothing). Partial wildcards ("mx*.example.org") match nothing.
    """
    host = normalize_name(name)
    if not host or "*" in host or ".." in host:
        return False
    return any(_match(host, normalize_name(p)) for p in patterns)


def _match(host: str, pattern: str) -> bool:
    if "*" not in pattern:
        return host == pattern
    if not pattern.startswith("*."):
        return False
    rest = pattern[2:]
    if "*" in rest or rest.count(".") < 1 or "" in rest.split("."):
        return False
    first, _, host_rest = host.partition(".")
    return bool(first) and host_rest == rest


def cert_valid_for(exchange_name: str, facts: TlsFacts) -> bool | None:
    """Certificate valid for this exchange: the chain verified and the leaf names the exchange.

    None when there is nothing to judge (the handshake failed). The per-address ``facts.cert_valid`` is not
    consulted: one address serves every exchange name pointing at it, so validity is decided per name here.
    """
    if not facts.handshake_ok:
        return None
    return facts.chain_valid is True and name_matches(exchange_name, facts.names)
