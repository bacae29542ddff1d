"""The MTA-STS policy fetch (RFC 8461 §3.3) and the policy cache (§5.1).

One bounded HTTPS GET from the addresses the caller resolved (aiohttp, pinned resolver, no redirects, size and
time bounds, WebPKI validation); the cache decides when a policy is due again and keeps an unexpired policy in
force across a failed fetch. Never raises for what a peer serves: every ending is a ``PolicyState``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import os
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mx_exporter import __version__
from mx_exporter.model import PolicyState
from mx_exporter.mtasts import POLICY_PATH, Policy, PolicyError, parse_policy
from mx_exporter.names import normalize_name
from mx_exporter.text import duration, sanitize

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
    host = normalize_name(f"mta-sts.{domain}")
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
