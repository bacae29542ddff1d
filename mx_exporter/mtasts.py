"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): record and policy parsing, one bounded policy fetch, a policy cache.

No DNS here: the caller (transport.py) passes the TXT strings (each record's strings already joined) and the
addresses of ``mta-sts.<domain>`` it resolved with the exporter's own client, limits and address guard. The
parsers follow the RFCs' ABNF strictly: a policy a strict sender rejects is reported, not silently repaired.
Nothing here raises for what a peer publishes or serves: every ending is a ``PolicyState`` with a short reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiohttp
import idna
from aiohttp.abc import AbstractResolver, ResolveResult

from mx_exporter import __version__
from mx_exporter.model import PolicyMode as PolicyMode  # re-exported: the enums live with the model
from mx_exporter.model import PolicyState as PolicyState
from mx_exporter.smtp_wire import duration, sanitize

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


def _norm(name: str) -> str:
    """Lower case, no trailing dot, U-labels as A-labels (so a pattern and an exchange compare in one form)."""
    name = name.strip().rstrip(".").lower()
    wild, rest = ("*.", name[2:]) if name.startswith("*.") else ("", name)
    if rest.isascii():
        return name
    try:
        return wild + idna.encode(rest, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError is a UnicodeError: such a name matches only itself
        return name


def mx_matches(pattern: str, exchange: str) -> bool:
    """Does the MX host name match the policy pattern (RFC 8461 §4.1)? Case-insensitive, trailing dots ignored;
    ``*.example.com`` matches exactly one more leftmost label (``mx.example.com``; not ``example.com``, not
    ``a.b.example.com``); a ``*`` anywhere else matches nothing."""
    pattern, host = _norm(pattern), _norm(exchange)
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


# --- the fetch (RFC 8461 §3.3)


@dataclass(frozen=True)
class FetchResult:
    state: PolicyState
    policy: Policy | None  # set when state is valid
    reason: str
    seconds: float  # the whole fetch, session set-up to the last byte


class _PinnedResolver(AbstractResolver):
    """Answers the policy host with the addresses the caller resolved, so aiohttp looks nothing up (the
    exporter's DNS client and address guard decide where it connects); SNI and the certificate check still
    use the host name from the URL. Any other name (there is none: redirects are not followed) is refused."""

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        self._host = host
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.rstrip(".").lower() != self._host:
            raise OSError(errno.EPERM, f"{host} is not the policy host")
        results: list[ResolveResult] = [
            {"hostname": host, "host": a, "port": port, "family": fam, "proto": 0, "flags": 0}
            for a in self._addresses
            if family in (socket.AF_UNSPEC, fam := socket.AF_INET6 if ":" in a else socket.AF_INET)
        ]
        if not results:
            raise OSError(errno.EADDRNOTAVAIL, f"{host} has no address of the family asked for")
        return results

    async def close(self) -> None:
        return None


def _stamp(path: str | None) -> tuple[int, int] | None:
    """When the trust file last changed (None: no file), so a cached context is rebuilt after an update."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return None if st is None else (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _cached_context(ca_file: str | None, _stamp: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """WebPKI client context (CERT_REQUIRED, hostname checked, TLS >= 1.2) trusting ``ca_file`` or the system
    store. Shared by all fetches and rebuilt when the file changes: loading the system store costs tens of ms
    of CPU on the event loop, and thousands of domains fetch their policies at start-up."""
    path = ca_file if ca_file is not None else ssl.get_default_verify_paths().cafile
    return _cached_context(ca_file, _stamp(path))


async def fetch_policy(
    domain: str,
    addresses: Sequence[str],
    *,
    ca_file: str | None,
    timeout: float,  # noqa: ASYNC109 -- the fetch's bound, passed on to aiohttp's ClientTimeout as well
    port: int = 443,
    max_bytes: int = 64 * 1024,
) -> FetchResult:
    """GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` from the given addresses, as RFC 8461 §3.3 asks:
    a certificate valid for the host, no redirects, HTTP 200, text/plain, at most ``max_bytes``, all within
    ``timeout`` seconds. Never raises for what the peer does (cancellation propagates)."""
    host = _norm(f"mta-sts.{domain}")
    started = time.monotonic()
    if not addresses:
        return FetchResult(PolicyState.UNREACHABLE, None, f"{host} has no address", 0.0)
    try:
        context = _ssl_context(ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a CA file without certificates
        reason = f"CA file {ca_file} unusable: {sanitize(str(exc))}"
        return FetchResult(PolicyState.CERTIFICATE_INVALID, None, reason, time.monotonic() - started)
    try:
        async with asyncio.timeout(timeout):  # aiohttp's total covers the request; this one the set-up too
            state, policy, reason = await _get(host, addresses, context, timeout, port, max_bytes)
    except TimeoutError:
        state, policy, reason = PolicyState.UNREACHABLE, None, f"{host}: timed out after {duration(timeout)}"
    return FetchResult(state, policy, reason, time.monotonic() - started)


_Outcome = tuple[PolicyState, Policy | None, str]


async def _get(
    host: str, addresses: Sequence[str], context: ssl.SSLContext, seconds: float, port: int, max_bytes: int
) -> _Outcome:
    """One request on a session of its own: fetches are rare (once per max_age per domain), and a private
    connector is what pins the addresses. No force_close: a connection whose body was read whole goes back to
    the pool, and closing the session aborts pooled TLS connections at once (aiohttp's ssl_shutdown_timeout 0),
    whereas a force-closed one waits for the peer's close_notify and can outlive the session."""
    url = f"https://{host}{'' if port == 443 else f':{port}'}{POLICY_PATH}"
    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(host, addresses), ssl=context, use_dns_cache=False
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=seconds),
        trust_env=False,  # never a proxy from the environment: the address guard decided where to connect
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": f"mx-exporter/{__version__}", "Accept-Encoding": "identity"},
    )
    async with session:
        try:
            async with session.get(url, allow_redirects=False) as response:
                return await _judge(response, max_bytes)
        except TimeoutError:
            raise  # aiohttp's ServerTimeoutError is a ClientError too: let fetch_policy word it
        except aiohttp.ClientConnectorCertificateError as exc:
            message = getattr(exc.certificate_error, "verify_message", "") or str(exc.certificate_error)
            reason = f"{host}: certificate verification failed: {sanitize(message).rstrip('.')}"
            return PolicyState.CERTIFICATE_INVALID, None, reason
        except aiohttp.ClientConnectorSSLError as exc:
            why = getattr(exc.os_error, "reason", None) or exc.os_error
            return PolicyState.UNREACHABLE, None, f"{host}: TLS handshake failed: {sanitize(str(why))}"
        except aiohttp.ClientConnectorError as exc:
            return PolicyState.UNREACHABLE, None, f"{host}: cannot connect: {_os_reason(exc.os_error)}"
        except (aiohttp.ClientError, OSError) as exc:  # disconnects, broken HTTP, a body cut short
            why = sanitize(str(exc)) or type(exc).__name__
            return PolicyState.UNREACHABLE, None, f"{host}: HTTP exchange failed: {why}"


def _os_reason(exc: OSError) -> str:
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return sanitize(str(exc)) or type(exc).__name__


async def _judge(response: aiohttp.ClientResponse, max_bytes: int) -> _Outcome:
    """Status, content type, size and syntax of the response, in the order a sender checks them."""
    status = response.status
    if 300 <= status < 400:
        location = sanitize(response.headers.get("Location", "")) or "nowhere (no Location)"
        return PolicyState.HTTP_ERROR, None, f"redirect to {location} (HTTP {status}, not followed)"
    if status != 200:
        return PolicyState.HTTP_ERROR, None, f"HTTP {status} {sanitize(response.reason or '')}".rstrip()
    if response.content_type != "text/plain":
        raw = response.headers.get("Content-Type")
        said = "no content type" if raw is None else f"content type {sanitize(raw, 60)!r}"
        return PolicyState.MALFORMED, None, f"{said}, not text/plain"
    body = bytearray()
    while len(body) <= max_bytes:  # read at most max_bytes + 1: enough to know it is too large
        chunk = await response.content.read(max_bytes + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > max_bytes:
        return PolicyState.MALFORMED, None, f"policy larger than {max_bytes} bytes"
    try:
        policy = parse_policy(body.decode("utf-8"))
    except UnicodeDecodeError:
        return PolicyState.MALFORMED, None, "policy is not UTF-8 text"
    except PolicyError as exc:
        return PolicyState.MALFORMED, None, exc.reason
    count = len(policy.mx)
    reason = (
        f"mode {policy.mode.value}, max_age {policy.max_age}, {count} mx pattern{'' if count == 1 else 's'}"
    )
    return PolicyState.VALID, policy, reason


# --- the cache (RFC 8461 §5.1)


@dataclass(frozen=True)
class CachedPolicy:
    last: FetchResult  # the most recent fetch, valid or not
    last_id: str  # the record id it was made for
    last_at: float
    policy: Policy | None  # the last valid policy still in force (RFC 8461 §5.1); None when there is none
    policy_id: str = ""  # the record id ``policy`` was fetched under
    policy_at: float = 0.0  # when ``policy`` was fetched


class PolicyCache:
    """Policies by domain with their record id and fetch time; pure, the clock is passed in (``now``, seconds).

    A failed fetch keeps a cached policy in force until its max_age runs out, as senders do (RFC 8461 §5.1);
    the failure itself is kept as ``last`` so it can be reported. After a failed fetch the next check is due
    again, so the failure is seen (and can alert) on every refresh while it lasts.
    """

    def __init__(self, refetch_seconds: float = 86_400.0) -> None:
        self.refetch_seconds = refetch_seconds
        self._entries: dict[str, CachedPolicy] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def due(self, domain: str, record_id: str, now: float) -> bool:
        """Fetch now? When nothing is cached, the last fetch failed, the record id changed, or the policy is
        older than min(max_age, refetch_seconds)."""
        entry = self._entries.get(domain)
        if entry is None or entry.policy is None or entry.last.state is not PolicyState.VALID:
            return True
        if record_id != entry.policy_id:
            return True
        return now - entry.policy_at >= min(entry.policy.max_age, self.refetch_seconds)

    def store(self, domain: str, record_id: str, result: FetchResult, now: float) -> None:
        """Remember a fetch; a valid one replaces the policy, a failed one keeps an unexpired policy."""
        entry = CachedPolicy(result, record_id, now, None)
        if result.state is PolicyState.VALID and result.policy is not None:
            entry = dataclasses.replace(entry, policy=result.policy, policy_id=record_id, policy_at=now)
        elif (kept := _unexpired(self._entries.get(domain), now)) is not None:
            entry = dataclasses.replace(
                entry, policy=kept.policy, policy_id=kept.policy_id, policy_at=kept.policy_at
            )
        self._entries[domain] = entry

    def get(self, domain: str, now: float | None = None) -> CachedPolicy | None:
        """The domain's entry; with ``now``, a policy past its max_age is no longer in force (policy None)."""
        entry = self._entries.get(domain)
        if entry is None or now is None or entry.policy is None or _unexpired(entry, now) is not None:
            return entry
        return dataclasses.replace(entry, policy=None, policy_id="", policy_at=0.0)

    def retain(self, domains: Iterable[str]) -> None:
        """Forget every domain not in ``domains`` (no longer watched), so the cache stays bounded."""
        keep = set(domains)
        for domain in [d for d in self._entries if d not in keep]:
            del self._entries[domain]


def _unexpired(entry: CachedPolicy | None, now: float) -> CachedPolicy | None:
    if entry is None or entry.policy is None or now - entry.policy_at >= entry.policy.max_age:
        return None
    return entry
