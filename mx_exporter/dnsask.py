"""Asking DNS for the resolve stage: the client, the per-cycle cache, the observer and the timed question log.

The questions go through ``dnsquery.DnsClient`` (``make_resolver``). A caller-owned ``NameCache`` makes every
(name, type) one question per refresh cycle, however many domains share it; a ``QueryObserver`` hears of every
question that went on the wire. A name's addresses (``Run.addresses``) are asked here too, for the MX logic in
``resolve`` and for ``Asker``: addresses outside global unicast are marked not allowed unless inside
``allow_networks`` (the SSRF guard, see ``resolve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.name
import dns.nameserver

from mx_exporter.dnsquery import DnsClient, system_nameservers
from mx_exporter.dnswire import Reply
from mx_exporter.model import DnsStatus, Family, ResolvedAddress
from mx_exporter.names import Network, address_allowed, parse_nameserver

__all__ = [
    "DNS_STATUS",
    "RESULTS",
    "Addresses",
    "Asker",
    "NameCache",
    "QueryObserver",
    "ResolvePolicy",
    "Run",
    "describe_failure",
    "make_resolver",
]

log = logging.getLogger(__name__)


_RDTYPES = {Family.IPV4: "A", Family.IPV6: "AAAA"}
_MAX_LOG_TEXT = 200  # characters of an error message kept in the log
_MAX_LOG_RECORDS = 10  # records of one answer shown in the log

# How a question that went on the wire ended (QueryObserver.query's ``result``).
RESULTS = ("answer", "nxdomain", "nodata", "servfail", "timeout", "error")


class QueryObserver(Protocol):
    """Told of every question put on the wire (not of those a NameCache answered), once it has ended."""

    def query(self, rdtype: str, result: str, tcp_retry: bool) -> None:
        """rdtype "MX", "A" or "AAAA"; result one of RESULTS; tcp_retry: truncated over UDP, asked over TCP."""


# A name's probed addresses, its CNAME target, how the lookup ended when it found no address, and whether every
# address answer (or denial) came back DNSSEC-validated (the resolver's AD bit).
Addresses = tuple[tuple[ResolvedAddress, ...], str | None, DnsStatus, bool]


@dataclass(frozen=True)
class _Memo:
    """A name's worked-out addresses, with the cache keys and replies they came from and their log lines."""

    keys: tuple[tuple[str, str], ...]
    replies: tuple[Reply, ...]
    lines: tuple[str, ...]  # "? question" and the answer's line, marked cached
    result: Addresses


class NameCache:
    """One refresh cycle's DNS answers: each (name, type) asked once, kept no longer than its TTL."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.hits = 0  # questions answered from the cache (or joined in flight)
        self._answers: dict[tuple[str, str], tuple[float, Reply]] = {}  # key -> (expires at, reply)
        self._in_flight: dict[tuple[str, str], asyncio.Future[Reply | None]] = {}
        # A name's processed addresses, with the replies they came from: reused only while those very replies
        # are still the cached ones, so the TTL rules above hold for it too (hosted mail: 6,000 domains, 5 names).
        self._addresses: dict[dns.name.Name, _Memo] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def _get(self, key: tuple[str, str]) -> Reply | None:
        entry = self._answers.get(key)
        if entry is None:
            return None
        if self.clock() < entry[0]:
            return entry[1]
        del self._answers[key]
        return None

    def _put(self, key: tuple[str, str], reply: Reply) -> None:
        # Answers live for their TTL, negative answers for their SOA's (else the cycle), failures for the cycle:
        # a thousand domains behind one dead nameserver cost one timeout, not a thousand.
        ttl = reply.cache_ttl if reply.result in ("answer", "nxdomain", "nodata") else None
        self._answers[key] = (float("inf") if ttl is None else self.clock() + ttl, reply)


@dataclass(frozen=True)
class ResolvePolicy:
    """How to ask DNS: which servers, how long, which address families, and which addresses may be probed.

    Plain data: the settings model validated every value (nameserver syntax, timeout > 0, at least one family).
    """

    nameservers: tuple[str, ...] = ()  # "ip", "ip:port", "[v6]:port"; empty = system resolver
    timeout: float = 5.0  # lifetime of one lookup (seconds)
    families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)
    max_addresses_per_exchange: int = 5
    allow_networks: tuple[Network, ...] = ()
    max_queries_per_second: float | None = None  # queries put on the wire, at most; None = unlimited


def make_resolver(policy: ResolvePolicy) -> DnsClient:
    """A client for the policy's nameservers (or the system's); no cache of its own: probes want fresh answers.

    Each attempt waits min(2 s, policy.timeout), retried within the lifetime policy.timeout; EDNS payload 1232.
    The client holds sockets: close it with ``await client.aclose()`` (or ``client.close()``) when done.
    """
    rotate = False
    listed: list[str | dns.nameserver.Nameserver] = []
    if policy.nameservers:
        servers = [parse_nameserver(text) for text in policy.nameservers]
    else:
        try:
            system, rotate = system_nameservers()
            servers = [_system_server(entry) for entry in system]
        except Exception as exc:  # dnspython's NoResolverConfiguration, OSError, an unusable entry
            raise ValueError(
                f"no usable system resolver (/etc/resolv.conf): {exc}; set resolver nameservers"
            ) from None
        listed = list(system)
    return DnsClient(
        servers,
        lifetime=policy.timeout,
        max_queries_per_second=policy.max_queries_per_second,
        rotate=rotate,
        nameservers=listed,
    )


def _system_server(entry: object) -> tuple[str, int]:
    """(address, port) of one resolv.conf nameserver as dnspython lists it (text, or a Do53Nameserver)."""
    if isinstance(entry, str):
        return entry, 53
    if isinstance(entry, dns.nameserver.Do53Nameserver):
        return entry.address, entry.port
    raise ValueError(f"nameserver {entry} is not a plain DNS server")


class Run:
    """One domain's resolution: client, policy, limit, cache and observer, and the timed log of questions."""

    def __init__(
        self,
        resolver: DnsClient,
        policy: ResolvePolicy,
        limit: asyncio.Semaphore | None,
        cache: NameCache | None,
        observer: QueryObserver | None,
    ) -> None:
        self.resolver = resolver
        self.policy = policy
        self.limit = limit
        self.cache = cache
        self.observer = observer
        self.started = time.monotonic()
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(f"{(time.monotonic() - self.started) * 1000:7.1f} ms  {text}")

    async def ask(self, qname: dns.name.Name, rdtype: str, cd: bool = False) -> Reply:
        """One question, from the cycle's cache, joined in flight, or on the wire; never raises.
        ``cd``: ask with checking disabled (telling a bogus answer from a failing server)."""
        question = f"{qname} {rdtype}" + (" +cd" if cd else "")
        cache = self.cache
        if cache is None:
            return await self._wire(qname, rdtype, question, cd)
        key = (question.lower(), rdtype)
        while True:
            reply = cache._get(key)
            if reply is not None:
                self.note(f"? {question}")
                return self._cached(question, reply, cache)
            shared = cache._in_flight.get(key)
            if shared is None:
                break
            self.note(f"? {question}")
            joined = await asyncio.shield(shared)
            if joined is not None:
                return self._cached(question, joined, cache)
            # The domain that asked was cancelled before its answer came: ask again.
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        cache._in_flight[key] = future
        try:
            reply = await self._wire(qname, rdtype, question, cd)
        except BaseException:
            future.set_result(None)  # cancelled before the answer: whoever joined asks again
            raise
        finally:
            if cache._in_flight.get(key) is future:
                del cache._in_flight[key]
        cache._put(key, reply)
        future.set_result(reply)
        return reply

    def known_addresses(self, qname: dns.name.Name, families: list[Family]) -> Addresses | None:
        """The name's addresses as this cycle already worked them out, without a question or a task; None when
        any of its replies is no longer cached (expired, or never asked)."""
        cache = self.cache
        if cache is None:
            return None
        memo = cache._addresses.get(qname)  # dns.name.Name compares and hashes case-free
        if memo is None or len(memo.keys) != len(families):
            return None
        for key, reply in zip(memo.keys, memo.replies, strict=True):
            if cache._get(key) is not reply:
                return None
        for line in memo.lines:
            self.note(line)
        cache.hits += len(memo.keys)
        return memo.result

    def _cached(self, question: str, reply: Reply, cache: NameCache) -> Reply:
        cache.hits += 1
        self.note(f"{_describe(question, reply, self.policy.timeout)} (cached)")
        return reply

    async def _wire(self, qname: dns.name.Name, rdtype: str, question: str, cd: bool) -> Reply:
        async with self.limit if self.limit is not None else contextlib.nullcontext():
            self.note(f"? {question}")
            reply = await self.resolver.query(qname, rdtype, self.policy.timeout, checking_disabled=cd)
        if self.observer is not None:
            try:
                self.observer.query(rdtype, reply.result, reply.tcp_retry)
            except Exception:  # a broken observer must not break resolution
                log.exception("DNS query observer failed")
        self.note(_describe(question, reply, self.policy.timeout))
        return reply

    async def addresses(self, qname: dns.name.Name, name: str) -> Addresses:
        """The name's A/AAAA (configured families, asked at once), IPv4 first, capped; and its CNAME target."""
        families = [family for family in (Family.IPV4, Family.IPV6) if family in self.policy.families]
        known = self.known_addresses(qname, families)
        if known is not None:
            return known
        replies = await asyncio.gather(*(self.ask(qname, _RDTYPES[family]) for family in families))
        found: list[tuple[Family, str]] = []
        canonical: dns.name.Name | None = None
        for family, reply in zip(families, replies, strict=True):
            if canonical is None:
                canonical = reply.canonical  # where a CNAME chain led (answer, NODATA or NXDOMAIN)
            ips = sorted({ipaddress.ip_address(address) for address in reply.addresses})
            found.extend((family, str(ip)) for ip in ips)
        limit = self.policy.max_addresses_per_exchange
        if len(found) > limit:
            self.note(f"  {name}: {len(found)} addresses, only the first {limit} are probed")
        addresses = tuple(
            ResolvedAddress(
                address=ip, family=family, allowed=address_allowed(ip, self.policy.allow_networks)
            )
            for family, ip in found[:limit]
        )
        result = (
            addresses,
            None if canonical is None else canonical.to_text(omit_final_dot=True).lower(),
            _lookup_status(replies) if not addresses else DnsStatus.OK,
            all(reply.secure for reply in replies),
        )
        if self.cache is not None:
            self._remember(self.cache, qname, families, replies, result)
        return result

    def _remember(
        self,
        cache: NameCache,
        qname: dns.name.Name,
        families: list[Family],
        replies: list[Reply],
        result: Addresses,
    ) -> None:
        """Keep the name's worked-out addresses for known_addresses, with the replies and log lines they came from."""
        questions = [f"{qname} {_RDTYPES[family]}" for family in families]
        lines = [
            line
            for question, reply in zip(questions, replies, strict=True)
            for line in (f"? {question}", f"{_describe(question, reply, self.policy.timeout)} (cached)")
        ]
        keys = tuple((q.lower(), _RDTYPES[f]) for q, f in zip(questions, families, strict=True))
        cache._addresses[qname] = _Memo(keys, tuple(replies), tuple(lines), result)

    def log(self) -> tuple[str, ...]:
        return tuple(self.lines)


def _describe(question: str, reply: Reply, timeout: float) -> str:
    """The log line of an answer ("= ...") or of a failure ("! ...")."""
    if reply.result == "answer":
        records = [f"{mx.preference} {mx.exchange}" for mx in reply.mx] if reply.mx else list(reply.addresses)
        shown = records[:_MAX_LOG_RECORDS]
        if len(records) > _MAX_LOG_RECORDS:
            shown.append(f"... ({len(records) - _MAX_LOG_RECORDS} more)")
        via = f" via CNAME {reply.canonical}" if reply.canonical is not None else ""
        return f"= {question}: {', '.join(shown)} (ttl {reply.ttl}){via}"
    return f"! {question}: {describe_failure(reply, timeout)}"


def describe_failure(reply: Reply, timeout: float) -> str:
    """A failed question in words, for the log and for a failed MX lookup's detail."""
    text = " ".join(reply.detail.split())[:_MAX_LOG_TEXT]
    via = f" (via CNAME {reply.canonical})" if reply.canonical is not None else ""
    if reply.result == "nxdomain":
        return f"NXDOMAIN (no such name){via}"
    if reply.result == "nodata":
        return f"NODATA (the name exists, no records of this type){via}"
    if reply.result == "timeout":
        return f"timeout: no answer within {timeout:g} s" + (f" ({text})" if text else "")
    if reply.result == "servfail":
        return f"no nameserver answered: {text}"
    return f"error: {text}"


# What a question's failure means for the domain (an answer is DnsStatus.OK, decided by the caller).
DNS_STATUS = {
    "nxdomain": DnsStatus.NXDOMAIN,
    "nodata": DnsStatus.NODATA,
    "servfail": DnsStatus.SERVFAIL,
    "timeout": DnsStatus.TIMEOUT,
    "error": DnsStatus.ERROR,
}


def _lookup_status(replies: list[Reply]) -> DnsStatus:
    """How an address lookup without addresses ended: a temporary failure of any question wins over
    NXDOMAIN/NODATA ("a soft error dominates", Postfix smtp_addr_one)."""
    results = {reply.result for reply in replies}
    for result in ("timeout", "servfail", "error"):
        if result in results:
            return DNS_STATUS[result]
    return DnsStatus.NXDOMAIN if "nxdomain" in results else DnsStatus.NODATA


class Asker:
    """Single questions for the stages after resolution (transport.py): same client, limit, cycle cache and
    observer as ``resolve.resolve_domain``, so TXT and TLSA questions are counted, paced and shared like the
    others."""

    def __init__(
        self,
        resolver: DnsClient,
        policy: ResolvePolicy,
        limit: asyncio.Semaphore | None = None,
        *,
        cache: NameCache | None = None,
        observer: QueryObserver | None = None,
    ) -> None:
        self._run = Run(resolver, policy, limit, cache, observer)

    async def ask(self, name: str, rdtype: str, checking_disabled: bool = False) -> Reply:
        """``name`` without the final dot; a name that is not a valid DNS name is an "error" reply."""
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except dns.exception.DNSException as exc:
            return Reply("error", detail=f"invalid name {name!r}: {exc}")
        return await self._run.ask(qname, rdtype, checking_disabled)

    async def addresses(self, name: str) -> tuple[str, ...]:
        """The name's addresses of the configured families (IPv4 first), at most max_addresses_per_exchange."""
        qname = dns.name.from_text(name.rstrip(".") + ".")
        found, _, _, _ = await self._run.addresses(qname, name)
        return tuple(a.address for a in found if a.allowed)
