"""Resolve a domain's mail hosts like a sending MTA and classify what DNS said (RFC 5321 §5.1, RFC 7505).

One entry point, ``resolve_domain``: it never raises for DNS trouble. Every answer, or failure, becomes a
``model.Resolution`` classified per docs/architecture.md "What DNS answers mean", with a timed human log of
each question and answer.
Addresses outside global unicast are marked not allowed unless inside ``allow_networks``: the SMTP stage never
connects to them (SSRF guard). An exchange written as an IP address is flagged and not looked up; it is probed as
that address, since Postfix and qmail use it while Exim refuses it (allow_mx_to_ip defaults to false).

The questions go through ``dnsquery.DnsClient`` (``make_resolver``). A caller-owned ``NameCache`` makes every
(name, type) one question per refresh cycle, however many domains share it; a ``QueryObserver`` hears of every
question that went on the wire.
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

from mx_exporter.dnsquery import DnsClient, Reply, system_nameservers
from mx_exporter.model import (
    DnsStatus,
    Family,
    Misconfiguration,
    Resolution,
    ResolvedAddress,
    ResolvedExchange,
)
from mx_exporter.names import (
    Network,
    address_allowed,
    looks_like_ip_literal,
    normalize_domain,
    parse_nameserver,
)

__all__ = [
    "MAX_EXCHANGES",
    "RESULTS",
    "DnsClient",
    "NameCache",
    "QueryObserver",
    "ResolvePolicy",
    "address_allowed",
    "make_resolver",
    "normalize_domain",
    "parse_nameserver",
    "resolve_domain",
]

log = logging.getLogger(__name__)


_RDTYPES = {Family.IPV4: "A", Family.IPV6: "AAAA"}
_MAX_LOG_TEXT = 200  # characters of an error message kept in the log
_MAX_LOG_RECORDS = 10  # records of one answer shown in the log
# Exchanges probed per domain, most preferred first: a hostile or broken zone with hundreds of MX records must not
# turn into hundreds of sessions and thousands of series. Real MX sets hold a handful.
MAX_EXCHANGES = 32

# How a question that went on the wire ended (QueryObserver.query's ``result``).
RESULTS = ("answer", "nxdomain", "nodata", "servfail", "timeout", "error")


class QueryObserver(Protocol):
    """Told of every question put on the wire (not of those a NameCache answered), once it has ended."""

    def query(self, rdtype: str, result: str, tcp_retry: bool) -> None:
        """rdtype "MX", "A" or "AAAA"; result one of RESULTS; tcp_retry: truncated over UDP, asked over TCP."""


# A name's probed addresses, its CNAME target, how the lookup ended when it found no address, and whether every
# address answer (or denial) came back DNSSEC-validated (the resolver's AD bit).
_Addresses = tuple[tuple[ResolvedAddress, ...], str | None, DnsStatus, bool]


@dataclass(frozen=True)
class _Memo:
    """A name's worked-out addresses, with the cache keys and replies they came from and their log lines."""

    keys: tuple[tuple[str, str], ...]
    replies: tuple[Reply, ...]
    lines: tuple[str, ...]  # "? question" and the answer's line, marked cached
    result: _Addresses


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


class _Run:
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

    def known_addresses(self, qname: dns.name.Name, families: list[Family]) -> _Addresses | None:
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
    return f"! {question}: {_describe_failure(reply, timeout)}"


def _describe_failure(reply: Reply, timeout: float) -> str:
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


_STATUS = {
    "nxdomain": DnsStatus.NXDOMAIN,
    "nodata": DnsStatus.NODATA,
    "servfail": DnsStatus.SERVFAIL,
    "timeout": DnsStatus.TIMEOUT,
    "error": DnsStatus.ERROR,
}

_FAILURE_DETAIL = {
    DnsStatus.NXDOMAIN: "the domain does not exist (NXDOMAIN): no mail hosts, no fallback",
    DnsStatus.SERVFAIL: "no nameserver gave an answer (SERVFAIL or REFUSED): a sender would retry later",
    DnsStatus.TIMEOUT: "no DNS answer in time: a sender would retry later",
    DnsStatus.ERROR: "the MX lookup failed",
}


async def resolve_domain(
    domain: str,
    resolver: DnsClient,
    policy: ResolvePolicy,
    limit: asyncio.Semaphore | None = None,
    *,
    cache: NameCache | None = None,
    observer: QueryObserver | None = None,
) -> Resolution:
    """Look up the domain's MX (or implicit MX) and each exchange's addresses; DNS trouble is a status.

    ``limit`` bounds the questions on the wire at once; ``cache`` (one per refresh cycle, owned by the caller)
    answers a (name, type) already asked in that cycle; ``observer`` hears of every question put on the wire.
    """
    try:
        name = normalize_domain(domain)
    except ValueError as exc:
        return Resolution(domain=domain, status=DnsStatus.ERROR, detail=f"invalid domain name: {exc}")
    run = _Run(resolver, policy, limit, cache, observer)
    qname = dns.name.from_text(name + ".")
    reply = await run.ask(qname, "MX")
    if reply.result == "answer":
        return await _explicit_mx(name, reply, run)
    status = _STATUS[reply.result]
    if status is DnsStatus.NODATA:
        return await _implicit_mx(name, qname, run)
    detail = _FAILURE_DETAIL[status]
    if status is DnsStatus.ERROR:
        detail = f"{detail}: {_describe_failure(reply, policy.timeout)}"
    return Resolution(domain=name, status=status, detail=detail, log=run.log())


class Asker:
    """Single questions for the stages after resolution (transport.py): same client, limit, cycle cache and
    observer as ``resolve_domain``, so TXT and TLSA questions are counted, paced and shared like the others."""

    def __init__(
        self,
        resolver: DnsClient,
        policy: ResolvePolicy,
        limit: asyncio.Semaphore | None = None,
        *,
        cache: NameCache | None = None,
        observer: QueryObserver | None = None,
    ) -> None:
        self._run = _Run(resolver, policy, limit, cache, observer)

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
        found, _, _, _ = await _addresses(qname, name, self._run)
        return tuple(a.address for a in found if a.allowed)


async def _explicit_mx(domain: str, answer: Reply, run: _Run) -> Resolution:
    """An MX RRset: null MX, or every distinct exchange at its lowest preference (RFC 5321 §5.1, RFC 7505)."""
    records = answer.mx
    ttl = answer.ttl
    is_null = [rdata.exchange == dns.name.root for rdata in records]
    if len(records) == 1 and is_null[0]:
        detail = "null MX: the domain accepts no mail by design (RFC 7505)"
        return Resolution(
            domain=domain,
            status=DnsStatus.OK,
            mx_records=1,
            null_mx=True,
            ttl=ttl,
            detail=detail,
            log=run.log(),
        )
    problems: set[Misconfiguration] = {Misconfiguration.NULL_MX_MIXED} if any(is_null) else set()
    best: dict[str, tuple[int, dns.name.Name]] = {}
    duplicates: set[str] = set()
    for rdata, null in zip(records, is_null, strict=True):
        if null:
            continue
        text = rdata.exchange.to_text(omit_final_dot=True).lower()
        if text in best:
            duplicates.add(text)
        if text not in best or rdata.preference < best[text][0]:
            best[text] = (rdata.preference, rdata.exchange)
    if duplicates:
        problems.add(Misconfiguration.DUPLICATE_EXCHANGE)
    order = sorted(best.items(), key=lambda item: (item[1][0], item[0]))
    dropped = len(order) - MAX_EXCHANGES
    if dropped > 0:
        order = order[:MAX_EXCHANGES]
        run.note(f"{dropped} least preferred exchanges not probed (limit {MAX_EXCHANGES} per domain)")
    # Exchanges this cycle already resolved (hosted mail) are built at once; only the others need a task each.
    now = [_exchange_now(text, pref, target, text in duplicates, run) for text, (pref, target) in order]
    later = iter(
        await asyncio.gather(
            *(
                _exchange(text, pref, target, text in duplicates, run)
                for (text, (pref, target)), done in zip(order, now, strict=True)
                if done is None
            )
        )
    )
    exchanges = [done if done is not None else next(later) for done in now]
    for exchange in exchanges:
        problems |= exchange.problems
    tiers = len({exchange.preference for exchange in exchanges})
    detail = f"{_count(len(records), 'MX record')}, {_count(len(exchanges), 'exchange')} in {_count(tiers, 'tier')}"
    if dropped > 0:
        detail += f"; {dropped} least preferred exchanges not probed (limit {MAX_EXCHANGES})"
    if problems:
        detail += "; problems: " + ", ".join(sorted(problems))
    return Resolution(
        domain=domain,
        status=DnsStatus.OK,
        mx_records=len(records),
        ttl=ttl,
        exchanges=tuple(exchanges),
        misconfigurations=frozenset(problems),
        detail=detail,
        log=run.log(),
        mx_secure=answer.secure,
    )


def _exchange_now(
    name: str, preference: int, target: dns.name.Name, duplicate: bool, run: _Run
) -> ResolvedExchange | None:
    """The exchange when it needs no question: an IP literal, or a name this cycle already resolved."""
    if looks_like_ip_literal(target):
        # Not looked up: Postfix and qmail use the address as written, Exim refuses it (allow_mx_to_ip = false).
        # It is probed as that address, so the sender profiles can tell what each would do.
        literal = target.to_text(omit_final_dot=True)
        run.note(f"  {name} is an IP address written as a host name: not looked up, probed as {literal}")
        problems = {Misconfiguration.IP_LITERAL_TARGET}
        if duplicate:
            problems.add(Misconfiguration.DUPLICATE_EXCHANGE)
        address = _literal_address(literal, run.policy)
        if not address:
            problems.add(Misconfiguration.UNRESOLVABLE_TARGET)
        elif not address[0].allowed:
            problems.add(Misconfiguration.NON_GLOBAL_ADDRESS)
        return ResolvedExchange(
            name=name, preference=preference, addresses=address, problems=frozenset(problems)
        )
    families = [family for family in (Family.IPV4, Family.IPV6) if family in run.policy.families]
    known = run.known_addresses(target, families)
    return None if known is None else _resolved_exchange(name, preference, duplicate, *known)


async def _exchange(
    name: str, preference: int, target: dns.name.Name, duplicate: bool, run: _Run
) -> ResolvedExchange:
    """One MX target: flag what trips senders, then its A/AAAA addresses (CNAMEs followed, as senders do)."""
    now = _exchange_now(name, preference, target, duplicate, run)
    if now is not None:
        return now
    return _resolved_exchange(name, preference, duplicate, *await _addresses(target, name, run))


def _literal_address(literal: str, policy: ResolvePolicy) -> tuple[ResolvedAddress, ...]:
    """The one address an IP-literal exchange name stands for, when its family is asked for (none for
    all-digit names that are no address, such as 10.1)."""
    try:
        ip = ipaddress.ip_address(literal.strip("[]"))
    except ValueError:
        return ()
    family = Family.IPV4 if ip.version == 4 else Family.IPV6
    if family not in policy.families:
        return ()
    return (ResolvedAddress(str(ip), family, address_allowed(str(ip), policy.allow_networks)),)


def _resolved_exchange(
    name: str,
    preference: int,
    duplicate: bool,
    addresses: tuple[ResolvedAddress, ...],
    canonical: str | None,
    lookup: DnsStatus,
    secure: bool,
) -> ResolvedExchange:
    problems: set[Misconfiguration] = {Misconfiguration.DUPLICATE_EXCHANGE} if duplicate else set()
    if canonical is not None:
        problems.add(Misconfiguration.CNAME_TARGET)
    if not addresses:
        problems.add(Misconfiguration.UNRESOLVABLE_TARGET)
    if not all(address.allowed for address in addresses):
        problems.add(Misconfiguration.NON_GLOBAL_ADDRESS)
    return ResolvedExchange(
        name=name,
        preference=preference,
        addresses=addresses,
        cname_target=canonical,
        problems=frozenset(problems),
        lookup=lookup,
        secure=secure,
    )


async def _implicit_mx(domain: str, qname: dns.name.Name, run: _Run) -> Resolution:
    """No MX RRset: the domain's own A/AAAA form one implicit exchange at preference 0 (RFC 5321 §5.1)."""
    addresses, canonical, _, secure = await _addresses(qname, domain, run)
    if not addresses:
        detail = "no MX records and no A/AAAA: the domain has no mail hosts"
        return Resolution(domain=domain, status=DnsStatus.NODATA, detail=detail, log=run.log())
    problems = (
        frozenset() if all(a.allowed for a in addresses) else frozenset({Misconfiguration.NON_GLOBAL_ADDRESS})
    )
    exchange = ResolvedExchange(
        name=domain,
        preference=0,
        addresses=addresses,
        cname_target=canonical,
        problems=problems,
        secure=secure,
    )
    detail = f"no MX records: the domain's own {_count(len(addresses), 'address')} form its implicit MX"
    return Resolution(
        domain=domain,
        status=DnsStatus.NODATA,
        fallback_to_a=True,
        exchanges=(exchange,),
        misconfigurations=problems,
        detail=detail,
        log=run.log(),
    )


async def _addresses(qname: dns.name.Name, name: str, run: _Run) -> _Addresses:
    """The name's A/AAAA (configured families, asked at once), IPv4 first, capped; and its CNAME target."""
    families = [family for family in (Family.IPV4, Family.IPV6) if family in run.policy.families]
    known = run.known_addresses(qname, families)
    if known is not None:
        return known
    replies = await asyncio.gather(*(run.ask(qname, _RDTYPES[family]) for family in families))
    found: list[tuple[Family, str]] = []
    canonical: dns.name.Name | None = None
    for family, reply in zip(families, replies, strict=True):
        if canonical is None:
            canonical = reply.canonical  # where a CNAME chain led (answer, NODATA or NXDOMAIN)
        ips = sorted({ipaddress.ip_address(address) for address in reply.addresses})
        found.extend((family, str(ip)) for ip in ips)
    limit = run.policy.max_addresses_per_exchange
    if len(found) > limit:
        run.note(f"  {name}: {len(found)} addresses, only the first {limit} are probed")
    addresses = tuple(
        ResolvedAddress(address=ip, family=family, allowed=address_allowed(ip, run.policy.allow_networks))
        for family, ip in found[:limit]
    )
    result = (
        addresses,
        None if canonical is None else canonical.to_text(omit_final_dot=True).lower(),
        _lookup_status(replies) if not addresses else DnsStatus.OK,
        all(reply.secure for reply in replies),
    )
    if run.cache is not None:
        questions = [f"{qname} {_RDTYPES[family]}" for family in families]
        lines = [
            line
            for question, reply in zip(questions, replies, strict=True)
            for line in (f"? {question}", f"{_describe(question, reply, run.policy.timeout)} (cached)")
        ]
        keys = tuple((q.lower(), _RDTYPES[f]) for q, f in zip(questions, families, strict=True))
        run.cache._addresses[qname] = _Memo(keys, tuple(replies), tuple(lines), result)
    return result


def _lookup_status(replies: list[Reply]) -> DnsStatus:
    """How an address lookup without addresses ended: a temporary failure of any question wins over
    NXDOMAIN/NODATA ("a soft error dominates", Postfix smtp_addr_one)."""
    results = {reply.result for reply in replies}
    for result in ("timeout", "servfail", "error"):
        if result in results:
            return _STATUS[result]
    return DnsStatus.NXDOMAIN if "nxdomain" in results else DnsStatus.NODATA


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}{'es' if noun.endswith('s') else 's'}"
