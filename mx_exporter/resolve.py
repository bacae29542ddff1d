"""Resolve a domain's mail hosts like a sending MTA and classify what DNS said (RFC 5321 §5.1, RFC 7505).

One entry point, ``resolve_domain``: it never raises for DNS trouble. Every answer, or failure, becomes a
``model.Resolution`` classified per docs/architecture.md "What DNS answers mean", with a timed human log of
each question and answer.
Addresses outside global unicast are marked not allowed unless inside ``allow_networks``: the SMTP stage never
connects to them (SSRF guard). An exchange written as an IP address is flagged and not looked up; it is probed as
that address, since Postfix and qmail use it while Exim refuses it (allow_mx_to_ip defaults to false).

The questions, their cache and their log are ``dnsask``'s.
"""

from __future__ import annotations

import asyncio
import ipaddress

import dns.name

from mx_exporter.dnsask import DNS_STATUS, NameCache, QueryObserver, ResolvePolicy, Run, describe_failure
from mx_exporter.dnsquery import DnsClient
from mx_exporter.dnswire import Mx, Reply
from mx_exporter.model import (
    DnsStatus,
    Family,
    Misconfiguration,
    Resolution,
    ResolvedAddress,
    ResolvedExchange,
)
from mx_exporter.names import address_allowed, looks_like_ip_literal, normalize_domain
from mx_exporter.text import count

__all__ = ["MAX_EXCHANGES", "resolve_domain"]

# Exchanges probed per domain, most preferred first: a hostile or broken zone with hundreds of MX records must not
# turn into hundreds of sessions and thousands of series. Real MX sets hold a handful.
MAX_EXCHANGES = 32

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
    run = Run(resolver, policy, limit, cache, observer)
    qname = dns.name.from_text(name + ".")
    reply = await run.ask(qname, "MX")
    if reply.result == "answer":
        return await _explicit_mx(name, reply, run)
    status = DNS_STATUS[reply.result]
    if status is DnsStatus.NODATA:
        return await _implicit_mx(name, qname, run)
    detail = _FAILURE_DETAIL[status]
    if status is DnsStatus.ERROR:
        detail = f"{detail}: {describe_failure(reply, policy.timeout)}"
    return Resolution(domain=name, status=status, detail=detail, log=run.log())


async def _explicit_mx(domain: str, answer: Reply, run: Run) -> Resolution:
    """An MX RRset: null MX, or every distinct exchange at its lowest preference (RFC 5321 §5.1, RFC 7505)."""
    records = answer.mx
    is_null = [rdata.exchange == dns.name.root for rdata in records]
    if len(records) == 1 and is_null[0]:
        detail = "null MX: the domain accepts no mail by design (RFC 7505)"
        return Resolution(
            domain=domain,
            status=DnsStatus.OK,
            mx_records=1,
            null_mx=True,
            ttl=answer.ttl,
            detail=detail,
            log=run.log(),
        )
    problems: set[Misconfiguration] = {Misconfiguration.NULL_MX_MIXED} if any(is_null) else set()
    order, duplicates = _distinct_exchanges([rdata for rdata in records if rdata.exchange != dns.name.root])
    if duplicates:
        problems.add(Misconfiguration.DUPLICATE_EXCHANGE)
    dropped = len(order) - MAX_EXCHANGES
    if dropped > 0:
        order = order[:MAX_EXCHANGES]
        run.note(f"{dropped} least preferred exchanges not probed (limit {MAX_EXCHANGES} per domain)")
    exchanges = await _exchanges(order, duplicates, run)
    for exchange in exchanges:
        problems |= exchange.problems
    return Resolution(
        domain=domain,
        status=DnsStatus.OK,
        mx_records=len(records),
        ttl=answer.ttl,
        exchanges=tuple(exchanges),
        misconfigurations=frozenset(problems),
        detail=_mx_detail(len(records), exchanges, dropped, problems),
        log=run.log(),
        mx_secure=answer.secure,
    )


# Distinct exchanges, most preferred first: (name in lower case without the final dot, (preference, target)).
_Ranked = list[tuple[str, tuple[int, dns.name.Name]]]


def _distinct_exchanges(records: list[Mx]) -> tuple[_Ranked, set[str]]:
    """Every exchange once, at its lowest preference (ties by name), and the names listed more than once."""
    best: dict[str, tuple[int, dns.name.Name]] = {}
    duplicates: set[str] = set()
    for rdata in records:
        text = rdata.exchange.to_text(omit_final_dot=True).lower()
        if text in best:
            duplicates.add(text)
        if text not in best or rdata.preference < best[text][0]:
            best[text] = (rdata.preference, rdata.exchange)
    return sorted(best.items(), key=lambda item: (item[1][0], item[0])), duplicates


async def _exchanges(order: _Ranked, duplicates: set[str], run: Run) -> list[ResolvedExchange]:
    """Each exchange, in order. Exchanges this cycle already resolved (hosted mail) are built at once; only the
    others need a task each."""
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
    return [done if done is not None else next(later) for done in now]


def _mx_detail(
    records: int, exchanges: list[ResolvedExchange], dropped: int, problems: set[Misconfiguration]
) -> str:
    """The Resolution's one-line summary: "3 MX records, 2 exchanges in 2 tiers; problems: ..."."""
    tiers = len({exchange.preference for exchange in exchanges})
    detail = f"{count(records, 'MX record')}, {count(len(exchanges), 'exchange')} in {count(tiers, 'tier')}"
    if dropped > 0:
        detail += f"; {dropped} least preferred exchanges not probed (limit {MAX_EXCHANGES})"
    if problems:
        detail += "; problems: " + ", ".join(sorted(problems))
    return detail


def _exchange_now(
    name: str, preference: int, target: dns.name.Name, duplicate: bool, run: Run
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
    name: str, preference: int, target: dns.name.Name, duplicate: bool, run: Run
) -> ResolvedExchange:
    """One MX target: flag what trips senders, then its A/AAAA addresses (CNAMEs followed, as senders do)."""
    now = _exchange_now(name, preference, target, duplicate, run)
    if now is not None:
        return now
    return _resolved_exchange(name, preference, duplicate, *await run.addresses(target, name))


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


async def _implicit_mx(domain: str, qname: dns.name.Name, run: Run) -> Resolution:
    """No MX RRset: the domain's own A/AAAA form one implicit exchange at preference 0 (RFC 5321 §5.1)."""
    addresses, canonical, _, secure = await run.addresses(qname, domain)
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
    detail = f"no MX records: the domain's own {count(len(addresses), 'address')} form its implicit MX"
    return Resolution(
        domain=domain,
        status=DnsStatus.NODATA,
        fallback_to_a=True,
        exchanges=(exchange,),
        misconfigurations=problems,
        detail=detail,
        log=run.log(),
    )
