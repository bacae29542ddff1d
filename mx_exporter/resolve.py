"""Resolve a domain's mail hosts like a sending MTA and classify what DNS said (RFC 5321 §5.1, RFC 7505).

One entry point, ``resolve_domain``: it never raises for DNS trouble. Every answer, or failure, becomes a
``model.Resolution`` classified per DESIGN.md §3, with a timed human log of each question and answer.
Addresses outside global unicast are marked not allowed unless inside ``allow_networks``: the SMTP stage never
connects to them (SSRF guard). An exchange written as an IP address is flagged and not looked up: senders refuse
it (Exim's allow_mx_to_ip defaults to false, Postfix rejects numeric MX names).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna

from mx_exporter.model import (
    DnsStatus,
    Family,
    Misconfiguration,
    Resolution,
    ResolvedAddress,
    ResolvedExchange,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Reply = dns.resolver.Answer | Exception

_LDH_LABEL = re.compile(r"[a-z0-9-]{1,63}")
_RDTYPES = {Family.IPV4: dns.rdatatype.A, Family.IPV6: dns.rdatatype.AAAA}
_MAX_LOG_TEXT = 200  # characters of an error message kept in the log
_MAX_LOG_RECORDS = 10  # records of one answer shown in the log
# Exchanges probed per domain, most preferred first: a hostile or broken zone with hundreds of MX records must not
# turn into hundreds of sessions and thousands of series. Real MX sets hold a handful.
MAX_EXCHANGES = 32


@dataclass(frozen=True)
class ResolvePolicy:
    """How to ask DNS: which servers, how long, which address families, and which addresses may be probed."""

    nameservers: tuple[str, ...] = ()  # "ip", "ip:port", "[v6]:port"; empty = system resolver
    timeout: float = 5.0  # lifetime of one lookup (seconds)
    families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)
    max_addresses_per_exchange: int = 5
    allow_networks: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"resolver timeout must be above 0 seconds, got {self.timeout}")
        if not self.families:
            raise ValueError("at least one address family (ipv4, ipv6) is needed")
        if self.max_addresses_per_exchange < 1:
            raise ValueError(
                f"max_addresses_per_exchange must be 1 or more, got {self.max_addresses_per_exchange}"
            )
        for text in self.nameservers:
            parse_nameserver(text)


def parse_nameserver(text: str) -> tuple[str, int]:
    """Split "ip", "ip:port", "[v6]" or "[v6]:port" into (ip, port); the port defaults to 53."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"nameserver {text!r}: expected [ipv6] or [ipv6]:port")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError(f"nameserver {text!r}: empty port after ':'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ValueError(f"nameserver {text!r}: empty port after ':'")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: {host!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv4Address) and text.startswith("["):
        raise ValueError(f"nameserver {text!r}: brackets are only for IPv6 addresses")
    if not port_text:
        return str(address), 53
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"nameserver {text!r}: port must be a number from 1 to 65535")
    return str(address), int(port_text)


def make_resolver(policy: ResolvePolicy) -> dns.asyncresolver.Resolver:
    """A resolver with the policy's nameservers (or the system's); no cache: probes want fresh answers."""
    if policy.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        servers = [parse_nameserver(text) for text in policy.nameservers]
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except (dns.resolver.NoResolverConfiguration, OSError) as exc:
            raise ValueError(
                f"no usable system resolver (/etc/resolv.conf): {exc}; set resolver nameservers"
            ) from None
    resolver.cache = None
    resolver.lifetime = policy.timeout
    resolver.timeout = min(
        2.0, policy.timeout
    )  # per attempt: a lost UDP packet is retried within the lifetime
    resolver.use_edns(0, 0, 1232)  # DNS flag day 2020 size: fewer truncated answers; dnspython retries on TCP
    return resolver


def normalize_domain(text: str) -> str:
    """The IDNA 2008 (UTS #46) ASCII form, lower case, no trailing dot; ValueError with a one-line reason."""
    if not text:
        raise ValueError("domain is empty")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"domain {text!r} contains whitespace")
    if _is_ip(text.strip("[]")):
        raise ValueError(f"{text!r} is an IP address, not a domain name")
    if any(ch in text for ch in "/:@"):
        raise ValueError(f"{text!r} looks like a URL or mail address; give a bare domain name")
    bare = text[:-1] if text.endswith(".") else text
    if not bare:
        raise ValueError("the root '.' is not a mail domain")
    if bare.isascii():
        ascii_name = bare.lower()
    else:
        try:
            ascii_name = idna.encode(bare, uts46=True).decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"domain {text!r} is not a valid internationalized name: {exc}") from None
    if len(ascii_name) > 253:
        raise ValueError(f"domain is {len(ascii_name)} characters long, the limit is 253")
    for label in ascii_name.split("."):
        _check_label(label, text)
    if ascii_name.rsplit(".", 1)[-1].isdigit():
        raise ValueError(
            f"{text!r} looks like an IP address (its last label is all digits), not a domain name"
        )
    return ascii_name


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_label(label: str, text: str) -> None:
    if not label:
        raise ValueError(f"domain {text!r} has an empty label ('..' or a leading dot)")
    if len(label) > 63:
        raise ValueError(f"domain {text!r} has a label of {len(label)} characters, the limit is 63")
    if not _LDH_LABEL.fullmatch(label):
        raise ValueError(f"domain {text!r}: label {label!r} may only hold letters, digits and hyphens")
    if label.startswith("-") or label.endswith("-"):
        raise ValueError(f"domain {text!r}: label {label!r} starts or ends with a hyphen")


def address_allowed(address: str, allow_networks: Sequence[Network]) -> bool:
    """May this address be probed: global unicast, or inside an allowed network (ValueError if not an IP)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # judge ::ffff:10.0.0.1 as the IPv4 address it reaches
    if any(ip.version == net.version and ip in net for net in allow_networks):
        return True
    return ip.is_global and not ip.is_multicast


class _Run:
    """One domain's resolution: the resolver, policy, concurrency limit, and the timed log of questions."""

    def __init__(
        self, resolver: dns.asyncresolver.Resolver, policy: ResolvePolicy, limit: asyncio.Semaphore | None
    ):
        self.resolver = resolver
        self.policy = policy
        self.limit = limit
        self.started = time.monotonic()
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(f"{(time.monotonic() - self.started) * 1000:7.1f} ms  {text}")

    async def ask(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Reply:
        """One question; the answer or the exception that ended it (never raised)."""
        question = f"{qname} {rdtype.name}"
        async with self.limit if self.limit is not None else contextlib.nullcontext():
            self.note(f"? {question}")
            try:
                async with asyncio.timeout(self.policy.timeout):  # hard bound over dnspython's retry backoff
                    answer = await self.resolver.resolve(
                        qname, rdtype, lifetime=self.policy.timeout, search=False
                    )
            except Exception as exc:  # every failure is classified, none escapes
                self.note(f"! {question}: {_describe_error(exc, self.policy.timeout)}")
                return exc
        self.note(f"= {question}: {_describe_answer(answer)}")
        return answer

    def log(self) -> tuple[str, ...]:
        return tuple(self.lines)


def _describe_answer(answer: dns.resolver.Answer) -> str:
    assert answer.rrset is not None  # resolve() raises NoAnswer instead
    via = f" via CNAME {answer.canonical_name}" if answer.canonical_name != answer.qname else ""
    shown = [rdata.to_text() for rdata in list(answer.rrset)[:_MAX_LOG_RECORDS]]
    if len(answer.rrset) > _MAX_LOG_RECORDS:
        shown.append(f"... ({len(answer.rrset) - _MAX_LOG_RECORDS} more)")
    return f"{', '.join(shown)} (ttl {answer.rrset.ttl}){via}"


def _describe_error(exc: Exception, timeout: float) -> str:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "NXDOMAIN (no such name)"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "NODATA (the name exists, no records of this type)"
    if isinstance(exc, dns.exception.Timeout | TimeoutError):
        return f"timeout: no answer within {timeout:g} s"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, dns.resolver.NoNameservers):
        return f"no nameserver answered: {text[:_MAX_LOG_TEXT]}"
    return f"error ({type(exc).__name__}): {text[:_MAX_LOG_TEXT]}"


def _status_of(exc: Exception) -> DnsStatus:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DnsStatus.NXDOMAIN
    if isinstance(exc, dns.resolver.NoAnswer):
        return DnsStatus.NODATA
    if isinstance(exc, dns.resolver.NoNameservers):
        return DnsStatus.SERVFAIL
    if isinstance(exc, dns.exception.Timeout | TimeoutError):
        return DnsStatus.TIMEOUT
    return DnsStatus.ERROR


_FAILURE_DETAIL = {
    DnsStatus.NXDOMAIN: "the domain does not exist (NXDOMAIN): no mail hosts, no fallback",
    DnsStatus.SERVFAIL: "no nameserver gave an answer (SERVFAIL or REFUSED): a sender would retry later",
    DnsStatus.TIMEOUT: "no DNS answer in time: a sender would retry later",
    DnsStatus.ERROR: "the MX lookup failed",
}


async def resolve_domain(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    policy: ResolvePolicy,
    limit: asyncio.Semaphore | None = None,
) -> Resolution:
    """Look up the domain's MX (or implicit MX) and each exchange's addresses; DNS trouble is a status."""
    try:
        name = normalize_domain(domain)
    except ValueError as exc:
        return Resolution(domain=domain, status=DnsStatus.ERROR, detail=f"invalid domain name: {exc}")
    run = _Run(resolver, policy, limit)
    qname = dns.name.from_text(name + ".")
    reply = await run.ask(qname, dns.rdatatype.MX)
    if isinstance(reply, dns.resolver.Answer):
        return await _explicit_mx(name, reply, run)
    status = _status_of(reply)
    if status is DnsStatus.NODATA:
        return await _implicit_mx(name, qname, run)
    detail = _FAILURE_DETAIL[status]
    if status is DnsStatus.ERROR:
        detail = f"{detail}: {_describe_error(reply, policy.timeout)}"
    return Resolution(domain=name, status=status, detail=detail, log=run.log())


async def _explicit_mx(domain: str, answer: dns.resolver.Answer, run: _Run) -> Resolution:
    """An MX RRset: null MX, or every distinct exchange at its lowest preference (RFC 5321 §5.1, RFC 7505)."""
    assert answer.rrset is not None
    records = list(answer.rrset)
    ttl = answer.rrset.ttl
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
    exchanges = await asyncio.gather(
        *(_exchange(text, pref, target, text in duplicates, run) for text, (pref, target) in order)
    )
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
    )


async def _exchange(
    name: str, preference: int, target: dns.name.Name, duplicate: bool, run: _Run
) -> ResolvedExchange:
    """One MX target: flag what trips senders, then its A/AAAA addresses (CNAMEs followed, as senders do)."""
    problems: set[Misconfiguration] = {Misconfiguration.DUPLICATE_EXCHANGE} if duplicate else set()
    if _looks_like_ip_literal(target):
        # Senders refuse an address written as an MX name (Exim's allow_mx_to_ip, Postfix): never looked up.
        run.note(f"  {name} is an IP address written as a host name: senders refuse it, not looked up")
        problems.add(Misconfiguration.IP_LITERAL_TARGET)
        return ResolvedExchange(name=name, preference=preference, addresses=(), problems=frozenset(problems))
    addresses, canonical = await _addresses(target, name, run)
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
    )


async def _implicit_mx(domain: str, qname: dns.name.Name, run: _Run) -> Resolution:
    """No MX RRset: the domain's own A/AAAA form one implicit exchange at preference 0 (RFC 5321 §5.1)."""
    addresses, canonical = await _addresses(qname, domain, run)
    if not addresses:
        detail = "no MX records and no A/AAAA: the domain has no mail hosts"
        return Resolution(domain=domain, status=DnsStatus.NODATA, detail=detail, log=run.log())
    problems = (
        frozenset() if all(a.allowed for a in addresses) else frozenset({Misconfiguration.NON_GLOBAL_ADDRESS})
    )
    exchange = ResolvedExchange(
        name=domain, preference=0, addresses=addresses, cname_target=canonical, problems=problems
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


async def _addresses(
    qname: dns.name.Name, name: str, run: _Run
) -> tuple[tuple[ResolvedAddress, ...], str | None]:
    """The name's A/AAAA (configured families, asked at once), IPv4 first, capped; and its CNAME target."""
    families = [family for family in (Family.IPV4, Family.IPV6) if family in run.policy.families]
    replies = await asyncio.gather(*(run.ask(qname, _RDTYPES[family]) for family in families))
    found: list[tuple[Family, str]] = []
    canonical: dns.name.Name | None = None
    for family, reply in zip(families, replies, strict=True):
        if canonical is None:
            canonical = _canonical_name(reply, qname)
        if isinstance(reply, dns.resolver.Answer) and reply.rrset is not None:
            ips = sorted({ipaddress.ip_address(rdata.address) for rdata in reply.rrset})
            found.extend((family, str(ip)) for ip in ips)
    limit = run.policy.max_addresses_per_exchange
    if len(found) > limit:
        run.note(f"  {name}: {len(found)} addresses, only the first {limit} are probed")
    addresses = tuple(
        ResolvedAddress(address=ip, family=family, allowed=address_allowed(ip, run.policy.allow_networks))
        for family, ip in found[:limit]
    )
    return addresses, None if canonical is None else canonical.to_text(omit_final_dot=True).lower()


def _canonical_name(reply: Reply, qname: dns.name.Name) -> dns.name.Name | None:
    """Where a CNAME chain from qname led, when the reply (answer, NODATA or NXDOMAIN) shows one."""
    canonical: dns.name.Name | None = None
    try:
        if isinstance(reply, dns.resolver.Answer):
            canonical = reply.canonical_name
        elif isinstance(reply, dns.resolver.NoAnswer):
            response = reply.kwargs.get("response")
            if isinstance(response, dns.message.QueryMessage):
                canonical = response.canonical_name()
        elif isinstance(reply, dns.resolver.NXDOMAIN):
            canonical = reply.canonical_name
    except (dns.exception.DNSException, KeyError, TypeError):
        return None
    return canonical if canonical is not None and canonical != qname else None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}{'es' if noun.endswith('s') else 's'}"


def _looks_like_ip_literal(name: dns.name.Name) -> bool:
    """An exchange "name" that is an address: 192.0.2.1., [192.0.2.1], [2001:db8::1], all-digit labels."""
    if _is_ip(name.to_text(omit_final_dot=True).strip("[]")):
        return True
    labels = [label for label in name.labels if label]
    return bool(labels) and all(label.isdigit() for label in labels)
