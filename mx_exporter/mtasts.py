"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): record and policy parsing, MX pattern matching (all pure).

The bounded policy fetch and the policy cache are in policy_fetch.py.

No DNS here: the caller (transport.py) passes the TXT strings (each record's strings already joined) and the
addresses of ``mta-sts.<domain>`` it resolved with the exporter's own client, limits and address guard. The
parsers follow the RFCs' ABNF strictly: a policy a strict sender rejects is reported, not silently repaired.
Nothing here raises for what a peer publishes or serves: every ending is a ``PolicyState`` with a short reason.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mx_exporter.model import PolicyMode as PolicyMode  # re-exported: the enums live with the model
from mx_exporter.model import PolicyState as PolicyState
from mx_exporter.names import normalize_name
from mx_exporter.text import sanitize

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: max_age at most one year
POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.2

_WSP = " \t"
_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # RFC 8461 §3.1 sts-id
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # §3.1 sts-ext-name, §3.2, RFC 8460 §3
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # §3.1 sts-ext-value: no '=', ';', space or CTL
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\.?\Z){_LABEL}(?:\.{_LABEL})*\.?")  # RFC 5321 §4.1.2 Domain
_POLICY_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*")  # §3.2 field, delim, *WSP
# RFC 8461 §3.2 sts-policy-ext-value: printable (UTF-8 too), inner spaces only
_POLICY_VALUE = re.compile(r"[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")


# --- the TXT records (RFC 8461 §3.1, RFC 8460 §3)


@dataclass(frozen=True)
class StsRecord:
    state: PolicyState  # none, record_invalid or valid (transport.py adds unreachable for a failed lookup)
    id: str  # the record's id when valid, else ""
    reason: str  # one short human line


@dataclass(frozen=True)
class TlsRptRecord:
    valid: bool
    rua: tuple[str, ...]
    reason: str


def _one_record(txts: Sequence[str], version: str, key: str) -> tuple[str | None, str]:
    """The ``key`` value of the one record beginning with ``version``, or None and why not (RFC 8461 §3.1,
    RFC 8460 §3: records not beginning with the version are discarded; the rest must be exactly one).

    Both ABNFs: ``version 1*(*WSP ";" *WSP field) [*WSP ";" *WSP]``; field names are case-sensitive, extension
    fields (``name=value``, the value without ``=``, ``;``, spaces or controls) are checked and ignored.
    """
    records = [t for t in txts if t.startswith(version)]
    if len(records) != 1:
        return None, f"{len(records)} {version} TXT records (one allowed)"
    pieces = records[0][len(version) :].split(";")
    fields = pieces[1:-1] if len(pieces) > 1 and not pieces[-1].strip(_WSP) else pieces[1:]
    if pieces[0].strip(_WSP):
        return None, f"{version} record: no ';' after {version}"
    if not fields:
        return None, f"{version} record: no fields"
    values = []
    for raw in fields:
        name, eq, value = raw.strip(_WSP).partition("=")
        if not eq or not _EXT_NAME.fullmatch(name):
            return None, f"{version} record: field {sanitize(raw.strip(_WSP), 40)!r} is not name=value"
        if name == key:
            values.append(value)
        elif not _EXT_VALUE.fullmatch(value):
            return None, f"{version} record: field {name!r} has a bad value"
    if len(values) != 1:
        return None, f"{version} record: {'no' if not values else 'more than one'} {key} field"
    return values[0], ""


def parse_sts_record(txts: Sequence[str]) -> StsRecord:
    """The ``_mta-sts`` TXT answer: exactly one ``v=STSv1`` record whose ``id`` is 1-32 letters or digits
    (RFC 8461 §3.1). Anything else means senders apply no policy, so it is reported as record_invalid."""
    if not any(t.startswith("v=STSv1") for t in txts):
        return StsRecord(PolicyState.NONE, "", "no v=STSv1 TXT record")
    record_id, why = _one_record(txts, "v=STSv1", "id")
    if record_id is None:
        return StsRecord(PolicyState.RECORD_INVALID, "", why)
    if not _ID.fullmatch(record_id):
        reason = f"v=STSv1 record: id {sanitize(record_id, 40)!r} is not 1-32 letters or digits"
        return StsRecord(PolicyState.RECORD_INVALID, "", reason)
    return StsRecord(PolicyState.VALID, record_id, f"record id {record_id}")


def parse_tlsrpt_record(txts: Sequence[str]) -> TlsRptRecord:
    """The ``_smtp._tls`` TXT answer: exactly one ``v=TLSRPTv1`` record with ``rua=``: URIs separated by
    ``,`` (optional WSP around it), each ``mailto:`` or ``https:`` (RFC 8460 §3)."""
    if not any(t.startswith("v=TLSRPTv1") for t in txts):
        return TlsRptRecord(False, (), "no TLS-RPT record")
    rua, why = _one_record(txts, "v=TLSRPTv1", "rua")
    if rua is None:
        return TlsRptRecord(False, (), why)
    uris = tuple(uri.strip(_WSP) for uri in rua.split(","))
    for uri in uris:
        if not _report_uri(uri):
            reason = f"v=TLSRPTv1 record: rua {sanitize(uri, 60)!r} is not a mailto: or https: URI"
            return TlsRptRecord(False, (), reason)
    return TlsRptRecord(True, uris, f"reports to {', '.join(sanitize(u, 60) for u in uris)}")


def _report_uri(uri: str) -> bool:
    """A ``mailto:`` URI with an address, or an ``https:`` URI with a host (RFC 8460 §3, rua)."""
    if not uri or any(ch <= " " or ch == "\x7f" for ch in uri):
        return False
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() == "mailto":
        local, at, host = parts.path.rpartition("@")
        return bool(local and at and host)
    return parts.scheme.lower() == "https" and bool(parts.hostname)


# --- the policy (RFC 8461 §3.2) and MX matching (§4.1)


@dataclass(frozen=True)
class Policy:
    mode: PolicyMode
    mx: tuple[str, ...]  # patterns as published (lower case); may be empty when mode is none
    max_age: int  # seconds


class PolicyError(ValueError):
    """A policy body a strict parser rejects; ``reason`` is one short human line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _policy_lines(text: str) -> list[tuple[str, str]]:
    """(key, value) of every line; lines end in LF or CRLF, the last one optionally (§3.2 sts-policy-term)."""
    if not text:
        raise PolicyError("policy is empty")
    body = text[:-1] if text.endswith("\n") else text
    out = []
    for number, raw in enumerate(body.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            raise PolicyError(f"line {number} is empty")
        match = _POLICY_LINE.fullmatch(line)
        if match is None:
            raise PolicyError(f"line {number} is not 'key: value'")
        key, value = match.groups()
        if not _POLICY_VALUE.fullmatch(value):
            raise PolicyError(f"line {number}: {key!r} has an empty or unprintable value")
        out.append((key, value))
    return out


def parse_policy(text: str) -> Policy:
    """A policy body per RFC 8461 §3.2, strictly: ``version: STSv1``, ``mode``, ``max_age`` each exactly once,
    ``mx`` at least once unless mode is none; keys are case-sensitive, unknown keys are ignored."""
    single: dict[str, str] = {}
    patterns: list[str] = []
    for key, value in _policy_lines(text):
        if key == "mx":
            if not _valid_pattern(value):
                raise PolicyError(f"mx pattern {sanitize(value, 60)!r} is not a host name or *.host name")
            patterns.append(value.lower())
        elif key in ("version", "mode", "max_age"):
            if key in single:
                raise PolicyError(f"{key!r} appears more than once")
            single[key] = value
    for key in ("version", "mode", "max_age"):
        if key not in single:
            raise PolicyError(f"no {key} field")
    if single["version"] != "STSv1":
        raise PolicyError(f"version must be STSv1, got {sanitize(single['version'], 40)!r}")
    try:
        mode = PolicyMode(single["mode"])
    except ValueError:
        raise PolicyError(
            f"mode must be none, testing or enforce, got {sanitize(single['mode'], 40)!r}"
        ) from None
    raw_age = single["max_age"]
    if not (raw_age.isascii() and raw_age.isdigit() and len(raw_age) <= 10):
        raise PolicyError(f"max_age must be 1-10 digits, got {sanitize(raw_age, 40)!r}")
    max_age = int(raw_age)
    if max_age > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age} is above the limit {MAX_AGE_LIMIT}")
    if mode is not PolicyMode.NONE and not patterns:
        raise PolicyError(f"no mx field (required when mode is {mode.value})")
    return Policy(mode, tuple(dict.fromkeys(patterns)), max_age)


def _valid_pattern(value: str) -> bool:
    """``["*."] Domain`` (RFC 8461 §3.2, Domain of RFC 5321 §4.1.2); one trailing dot is tolerated."""
    host = value[2:] if value.startswith("*.") else value
    return _HOST.fullmatch(host) is not None


def mx_matches(pattern: str, exchange: str) -> bool:
    """Does the MX host name match the policy pattern (RFC 8461 §4.1)? Case-insensitive, trailing dots ignored;
    ``*.example.com`` matches exactly one more leftmost label (``mx.example.com``; not ``example.com``, not
    ``a.b.example.com``); a ``*`` anywhere else matches nothing."""
    pattern, host = normalize_name(pattern), normalize_name(exchange)
    if not host or "*" in host or ".." in host or host.startswith("."):
        return False
    wild = pattern.startswith("*.")
    rest = pattern[2:] if wild else pattern
    if not rest or "*" in rest or ".." in rest or rest.startswith("."):
        return False
    if not wild:
        return host == rest
    first, _, host_rest = host.partition(".")
    return bool(first) and host_rest == rest


def uncovered(policy: Policy, exchanges: Iterable[str]) -> tuple[str, ...]:
    """The exchanges no ``mx`` pattern of the policy matches, each once, in order (every one for mode none
    without patterns: the caller decides whether the mode makes that matter)."""
    names = dict.fromkeys(exchanges)
    return tuple(n for n in names if not any(mx_matches(p, n) for p in policy.mx))
