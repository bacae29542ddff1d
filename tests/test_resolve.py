"""The DNS stage against real NSD (tests/lab/zones), plus table tests for its pure helpers."""

from __future__ import annotations

import asyncio
import ipaddress
import selectors
import socket
import threading
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.ttl
import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mx_exporter import dnsquery, dnssocket, dnswire
from mx_exporter.dnsask import RESULTS, NameCache, ResolvePolicy, make_resolver
from mx_exporter.model import DnsStatus, Family, Misconfiguration, Resolution, ResolvedAddress
from mx_exporter.names import address_allowed, normalize_domain, parse_nameserver
from mx_exporter.resolve import MAX_EXCHANGES, resolve_domain
from tests.lab import nsd as lab_nsd
from tests.lab import plan

if TYPE_CHECKING:
    from tests.lab.nsd import BlackholeDns, NsdServer


LAB_NETWORKS = tuple(ipaddress.ip_network(net) for net in plan.ALLOW_NETWORKS)
M = Misconfiguration


def lab_policy(nsd: NsdServer, **changes: object) -> ResolvePolicy:
    fields: dict[str, object] = {
        "nameservers": (nsd.nameserver,),
        "timeout": plan.LAB_TIMEOUTS["dns_timeout"],
        "allow_networks": LAB_NETWORKS,
    }
    fields.update(changes)
    return ResolvePolicy(**fields)  # type: ignore[arg-type]


async def resolve(nsd: NsdServer, domain: str, **changes: object) -> Resolution:
    policy = lab_policy(nsd, **changes)
    return await resolve_domain(domain, make_resolver(policy), policy)


# --- Every lab domain, classified as its comment in plan.DOMAINS says.


@dataclass(frozen=True)
class Expect:
    exchanges: tuple[tuple[int, str, tuple[str, ...]], ...] = ()  # (preference, name, addresses)
    status: DnsStatus = DnsStatus.OK
    problems: frozenset[Misconfiguration] = frozenset()
    mx_records: int | None = None  # default: one record per exchange
    null_mx: bool = False
    fallback_to_a: bool = False


def mx10(name: str, *addresses: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    return ((10, name, addresses),)


EXPECTED: dict[str, Expect] = {
    "healthy.lab.test": Expect(
        (
            (10, "mx1.healthy.lab.test", (plan.ACCEPT_1, plan.IPV6_ACCEPT)),
            (20, "mx2.healthy.lab.test", (plan.ACCEPT_2,)),
        )
    ),
    "primary-down.lab.test": Expect(
        (
            (10, "mx1.primary-down.lab.test", (plan.CLOSED,)),
            (20, "mx2.primary-down.lab.test", (plan.ACCEPT_2,)),
        )
    ),
    "greylist.lab.test": Expect(
        (
            (10, "mx1.greylist.lab.test", (plan.GREET_421,)),
            (20, "mx2.greylist.lab.test", (plan.ACCEPT_2,)),
        )
    ),
    "failover.lab.test": Expect(
        (
            (10, "mx1.failover.lab.test", (plan.FAILOVER_PRIMARY,)),
            (20, "mx2.failover.lab.test", (plan.FAILOVER_BACKUP,)),
        )
    ),
    "undeliverable.lab.test": Expect(
        (
            (10, "mx1.undeliverable.lab.test", (plan.CLOSED,)),
            (20, "mx2.undeliverable.lab.test", (plan.SILENT,)),
        )
    ),
    "equal.lab.test": Expect(
        ((10, "a.equal.lab.test", (plan.ACCEPT_1,)), (10, "b.equal.lab.test", (plan.SILENT,)))
    ),
    "fallback.lab.test": Expect(
        ((0, "fallback.lab.test", (plan.ACCEPT_1,)),),
        status=DnsStatus.NODATA,
        mx_records=0,
        fallback_to_a=True,
    ),
    "noaddr.lab.test": Expect(status=DnsStatus.NODATA, mx_records=0),
    "nxdomain.lab.test": Expect(status=DnsStatus.NXDOMAIN, mx_records=0),
    "nullmx.lab.test": Expect(mx_records=1, null_mx=True),
    "nullmixed.lab.test": Expect(
        mx10("mx1.nullmixed.lab.test", plan.ACCEPT_1), problems=frozenset({M.NULL_MX_MIXED}), mx_records=2
    ),
    "cname.lab.test": Expect(
        mx10("alias.cname.lab.test", plan.ACCEPT_1, plan.IPV6_ACCEPT), problems=frozenset({M.CNAME_TARGET})
    ),
    "literal.lab.test": Expect(
        # Not looked up, probed as the address it spells: Postfix and qmail deliver there, Exim refuses it.
        ((10, "127.0.0.10", ("127.0.0.10",)), (20, "mx2.literal.lab.test", (plan.ACCEPT_2,))),
        problems=frozenset({M.IP_LITERAL_TARGET}),
    ),
    "unresolvable.lab.test": Expect(
        ((10, "nohost.unresolvable.lab.test", ()), (20, "mx2.unresolvable.lab.test", (plan.ACCEPT_2,))),
        problems=frozenset({M.UNRESOLVABLE_TARGET}),
    ),
    "duplicate.lab.test": Expect(
        mx10("mx1.duplicate.lab.test", plan.ACCEPT_1),
        problems=frozenset({M.DUPLICATE_EXCHANGE}),
        mx_records=2,
    ),
    "nonglobal.lab.test": Expect(
        ((10, "mx1.nonglobal.lab.test", (plan.PRIVATE,)), (20, "mx2.nonglobal.lab.test", (plan.ACCEPT_2,))),
        problems=frozenset({M.NON_GLOBAL_ADDRESS}),
    ),
    "multiline.lab.test": Expect(mx10("mx.multiline.lab.test", plan.MULTILINE)),
    "greet421.lab.test": Expect(mx10("mx.greet421.lab.test", plan.GREET_421)),
    "greet554.lab.test": Expect(mx10("mx.greet554.lab.test", plan.GREET_554)),
    "silent.lab.test": Expect(mx10("mx.silent.lab.test", plan.SILENT)),
    "closed.lab.test": Expect(mx10("mx.closed.lab.test", plan.CLOSED)),
    "slow.lab.test": Expect(mx10("mx.slow.lab.test", plan.SLOW_GREETING)),
    "ehloreject.lab.test": Expect(mx10("mx.ehloreject.lab.test", plan.EHLO_REJECT)),
    "garbage.lab.test": Expect(mx10("mx.garbage.lab.test", plan.GARBAGE)),
    "dribble.lab.test": Expect(mx10("mx.dribble.lab.test", plan.DRIBBLE)),
    "sink.lab.test": Expect(mx10("mx.sink.lab.test", plan.SINK)),
    "v6only.lab.test": Expect(mx10("mx.v6only.lab.test", plan.IPV6_ACCEPT)),
    "dualstack.lab.test": Expect(mx10("mx.dualstack.lab.test", plan.V4_ONLY_PEER, plan.IPV6_ACCEPT)),
    "many.lab.test": Expect(mx10("mx.many.lab.test", *plan.MANY[:5])),
    "shared1.lab.test": Expect(mx10("mx.shared1.lab.test", plan.ACCEPT_1)),
    "shared2.lab.test": Expect(mx10("mx.shared2.lab.test", plan.ACCEPT_1)),
    "ttl.lab.test": Expect(mx10("mx.ttl.lab.test", plan.ACCEPT_2)),
}


def test_every_plan_domain_has_an_expectation() -> None:
    assert set(EXPECTED) == set(plan.DOMAINS)


@pytest.mark.parametrize("domain", sorted(plan.DOMAINS))
async def test_plan_domain_is_classified_as_planned(nsd_server: NsdServer, domain: str) -> None:
    expect = EXPECTED[domain]
    result = await resolve(nsd_server, domain)
    assert result.domain == domain
    assert result.status is expect.status, result.log
    got = tuple((ex.preference, ex.name, tuple(a.address for a in ex.addresses)) for ex in result.exchanges)
    assert got == expect.exchanges
    assert result.misconfigurations == expect.problems
    assert result.mx_records == (len(expect.exchanges) if expect.mx_records is None else expect.mx_records)
    assert (result.null_mx, result.fallback_to_a) == (expect.null_mx, expect.fallback_to_a)
    assert (result.ttl is not None) == (expect.status is DnsStatus.OK)
    assert result.detail and "\n" not in result.detail
    for exchange in result.exchanges:
        for address in exchange.addresses:
            assert address.allowed == (address.address != plan.PRIVATE)
            assert address.family is (Family.IPV6 if ":" in address.address else Family.IPV4)


async def test_log_has_one_timed_line_per_question_and_answer(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "healthy.lab.test")
    questions = [line for line in result.log if "  ? " in line]
    answers = [line for line in result.log if "  = " in line or "  ! " in line]
    assert len(questions) == len(answers) == 5  # MX, then A and AAAA for each of two exchanges
    assert all(" ms  " in line for line in result.log)
    assert any("mx1.healthy.lab.test. AAAA: ::1" in line for line in answers)


async def test_nxdomain_asks_nothing_more(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "nxdomain.lab.test")
    assert [line.split(" ms  ", 1)[1] for line in result.log] == [
        "? nxdomain.lab.test. MX",
        "! nxdomain.lab.test. MX: NXDOMAIN (no such name)",
    ]


async def test_nodata_without_addresses_asked_for_a_and_aaaa(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "noaddr.lab.test")
    assert sum("? noaddr.lab.test. A" in line for line in result.log) == 2  # A and AAAA
    assert result.exchanges == () and not result.fallback_to_a


async def test_refused_zone_is_servfail(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, plan.REFUSED_DOMAIN)
    assert result.status is DnsStatus.SERVFAIL
    assert any("REFUSED" in line for line in result.log)
    assert result.exchanges == ()


async def test_missing_zone_file_is_servfail(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, plan.SERVFAIL_DOMAIN)
    assert result.status is DnsStatus.SERVFAIL
    assert any("SERVFAIL" in line for line in result.log)
    assert result.exchanges == ()


async def test_silent_nameserver_times_out_within_the_lifetime(blackhole_dns: BlackholeDns) -> None:
    policy = ResolvePolicy(nameservers=(blackhole_dns.nameserver,), timeout=1.0)
    before = blackhole_dns.queries
    started = time.monotonic()
    result = await resolve_domain("healthy.lab.test", make_resolver(policy), policy)
    elapsed = time.monotonic() - started
    assert result.status is DnsStatus.TIMEOUT
    assert 0.9 <= elapsed < policy.timeout + 0.5
    assert blackhole_dns.queries > before  # the question really reached the silent server
    assert not result.fallback_to_a and result.exchanges == ()


async def test_ipv4_only_skips_aaaa(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "healthy.lab.test", families=(Family.IPV4,))
    assert [a.address for a in result.exchanges[0].addresses] == [plan.ACCEPT_1]
    assert not any(" AAAA" in line for line in result.log)


async def test_ipv6_only_leaves_ipv4_hosts_unresolvable(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "healthy.lab.test", families=(Family.IPV6,))
    mx1, mx2 = result.exchanges
    assert [a.address for a in mx1.addresses] == [plan.IPV6_ACCEPT] and mx1.problems == frozenset()
    assert mx2.addresses == () and mx2.problems == {M.UNRESOLVABLE_TARGET}
    assert not any(line.endswith(". A") or ". A: " in line for line in result.log)


@pytest.mark.parametrize("cap", [1, 5, 7, 10])
async def test_addresses_are_capped_per_exchange(nsd_server: NsdServer, cap: int) -> None:
    result = await resolve(nsd_server, "many.lab.test", max_addresses_per_exchange=cap)
    assert [a.address for a in result.exchanges[0].addresses] == list(plan.MANY[:cap])


async def test_mx_ttl_is_the_rrset_ttl(nsd_server: NsdServer) -> None:
    assert (await resolve(nsd_server, "ttl.lab.test")).ttl == 1234
    assert (await resolve(nsd_server, "healthy.lab.test")).ttl == 300


async def test_private_address_is_never_allowed_by_the_lab_networks(nsd_server: NsdServer) -> None:
    mx1, mx2 = (await resolve(nsd_server, "nonglobal.lab.test")).exchanges
    assert [(a.address, a.allowed) for a in mx1.addresses] == [(plan.PRIVATE, False)]
    assert mx1.problems == {M.NON_GLOBAL_ADDRESS} and mx2.problems == frozenset()


async def test_default_policy_allows_no_loopback(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "healthy.lab.test", allow_networks=())
    assert all(not a.allowed for ex in result.exchanges for a in ex.addresses)
    assert all(ex.problems == {M.NON_GLOBAL_ADDRESS} for ex in result.exchanges)
    assert result.misconfigurations == {M.NON_GLOBAL_ADDRESS}


async def test_allow_networks_admits_exactly_what_it_lists(nsd_server: NsdServer) -> None:
    result = await resolve(
        nsd_server, "nonglobal.lab.test", allow_networks=(ipaddress.ip_network("10.0.0.0/8"),)
    )
    assert [(a.address, a.allowed) for ex in result.exchanges for a in ex.addresses] == [
        (plan.PRIVATE, True),
        (plan.ACCEPT_2, False),
    ]


async def test_implicit_mx_flags_non_global_addresses(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "fallback.lab.test", allow_networks=())
    assert result.fallback_to_a and result.misconfigurations == {M.NON_GLOBAL_ADDRESS}


async def test_exchange_flags(nsd_server: NsdServer) -> None:
    cname = (await resolve(nsd_server, "cname.lab.test")).exchanges[0]
    assert (cname.cname_target, cname.problems) == ("mx1.healthy.lab.test", {M.CNAME_TARGET})
    literal = (await resolve(nsd_server, "literal.lab.test")).exchanges[0]
    assert (literal.addresses, literal.problems) == (
        (ResolvedAddress("127.0.0.10", Family.IPV4, True),),
        {M.IP_LITERAL_TARGET},
    )
    assert not any("? 127.0.0.10" in line for line in (await resolve(nsd_server, "literal.lab.test")).log)
    unlisted = (await resolve(nsd_server, "literal.lab.test", allow_networks=())).exchanges[0]
    assert unlisted.problems == {M.IP_LITERAL_TARGET, M.NON_GLOBAL_ADDRESS}
    duplicate = (await resolve(nsd_server, "duplicate.lab.test")).exchanges[0]
    assert (duplicate.preference, duplicate.problems) == (10, {M.DUPLICATE_EXCHANGE})
    unresolvable = (await resolve(nsd_server, "unresolvable.lab.test")).exchanges[0]
    assert (unresolvable.addresses, unresolvable.problems) == ((), {M.UNRESOLVABLE_TARGET})


async def test_dangling_cname_exchange_is_followed_and_unresolvable(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "dangling.lab.test")  # zone extra, not a plan domain
    (exchange,) = result.exchanges
    assert exchange.cname_target == "gone.dangling.lab.test"
    assert exchange.problems == {M.CNAME_TARGET, M.UNRESOLVABLE_TARGET} == result.misconfigurations


async def test_domain_is_normalized_before_asking(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "Healthy.LAB.test.")
    assert (result.domain, result.status) == ("healthy.lab.test", DnsStatus.OK)


async def test_invalid_domain_is_an_error_without_a_question(nsd_server: NsdServer) -> None:
    result = await resolve(nsd_server, "http://healthy.lab.test/")
    assert result.status is DnsStatus.ERROR and result.log == ()
    assert result.detail.startswith("invalid domain name: ")


async def test_every_question_waits_for_the_limit(nsd_server: NsdServer) -> None:
    policy = lab_policy(nsd_server)
    limit = asyncio.Semaphore(1)
    await limit.acquire()
    task = asyncio.create_task(resolve_domain("healthy.lab.test", make_resolver(policy), policy, limit))
    await asyncio.sleep(0.3)
    assert not task.done()
    limit.release()
    result = await asyncio.wait_for(task, 10)
    assert result.status is DnsStatus.OK and len(result.exchanges) == 2


# --- Resolver construction.


def test_make_resolver_uses_explicit_nameservers_and_ports() -> None:
    policy = ResolvePolicy(nameservers=("127.0.0.1:5300", "[::1]:5301", "127.0.0.2"), timeout=3.0)
    resolver = make_resolver(policy)
    servers = [
        (ns.address, ns.port) for ns in resolver.nameservers if isinstance(ns, dns.nameserver.Do53Nameserver)
    ]
    assert servers == [("127.0.0.1", 5300), ("::1", 5301), ("127.0.0.2", 53)]
    assert (resolver.lifetime, resolver.cache) == (3.0, None)


def test_make_resolver_without_nameservers_reads_the_system_configuration() -> None:
    system = dns.resolver.Resolver()  # reads /etc/resolv.conf; no question is sent
    resolver = make_resolver(ResolvePolicy())
    assert [str(ns) for ns in resolver.nameservers] == [str(ns) for ns in system.nameservers]
    assert resolver.lifetime == ResolvePolicy().timeout


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is not an IP address"),
        ("localhost", "is not an IP address"),
        ("dns.example:53", "is not an IP address"),
        (" 127.0.0.1", "is not an IP address"),
        ("127.0.0.1:", "empty port"),
        ("127.0.0.1:0", "port must be a number from 1 to 65535"),
        ("127.0.0.1:65536", "port must be a number from 1 to 65535"),
        ("127.0.0.1:abc", "port must be a number"),
        ("127.0.0.1:\u0665\u0663", "port must be a number"),
        ("[127.0.0.1]:53", "brackets are only for IPv6"),
        ("[::1]53", r"expected \[ipv6\]"),
        ("[::1", r"expected \[ipv6\]"),
        ("[::1]:", "empty port"),
    ],
)
def test_parse_nameserver_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_nameserver(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.org", "example.org"),
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),
        ("a-b.c0.test", "a-b.c0.test"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.Test.", "xn--bcher-kva.test"),
        ("xn--bcher-kva.test", "xn--bcher-kva.test"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008: ß is kept, not mapped to "ss" as IDNA 2003 would
        ("a" * 63 + ".test", "a" * 63 + ".test"),
        (".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),  # 253 characters
        ("test", "test"),
    ],
)
def test_normalize_domain(text: str, expected: str) -> None:
    assert normalize_domain(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "domain is empty"),
        (".", "the root"),
        (" example.org", "whitespace"),
        ("exa mple.org", "whitespace"),
        ("example.org\n", "whitespace"),
        ("example.org\u3000", "whitespace"),
        ("127.0.0.1", "is an IP address"),
        ("::1", "is an IP address"),
        ("[2001:db8::1]", "is an IP address"),
        ("10.0.0.256", "last label is all digits"),
        ("example.123", "last label is all digits"),
        ("http://example.org", "URL or mail address"),
        ("example.org/path", "URL or mail address"),
        ("postmaster@example.org", "URL or mail address"),
        ("example.org:25", "URL or mail address"),
        ("a..b", "empty label"),
        (".example.org", "empty label"),
        ("example.org..", "empty label"),
        ("a" * 64 + ".test", "label of 64 characters"),
        (".".join(["a" * 63] * 3 + ["b" * 62]), "254 characters long"),
        ("-a.test", "starts or ends with a hyphen"),
        ("a-.test", "starts or ends with a hyphen"),
        ("a_b.test", "letters, digits and hyphens"),
        ("ex!ample.org", "letters, digits and hyphens"),
        ("ex\\046ample.org", "letters, digits and hyphens"),
        ("☃.test", "not a valid internationalized name"),
        ("a\u200db.test", "not a valid internationalized name"),
    ],
)
def test_normalize_domain_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        normalize_domain(text)
    assert "\n" not in str(caught.value)


DOMAIN_PIECES = [*"aZ9-._ äßÜ☃\u200d\u3002:/@[]\\\n", "xn--", "a" * 63]
DOMAINISH = st.lists(st.sampled_from(DOMAIN_PIECES), max_size=40).map("".join)


@given(st.one_of(st.text(max_size=300), DOMAINISH))
def test_normalize_domain_returns_a_clean_name_or_raises_value_error(text: str) -> None:
    try:
        name = normalize_domain(text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert name.isascii() and name == name.lower() and len(name) <= 253 and not name.endswith(".")
    assert normalize_domain(name) == name


@pytest.mark.parametrize(
    ("address", "networks", "allowed"),
    [
        ("1.1.1.1", (), True),
        ("2606:4700:4700::1111", (), True),
        ("127.0.0.1", (), False),
        ("::1", (), False),
        ("10.255.255.1", (), False),
        ("192.168.1.1", (), False),
        ("100.64.0.1", (), False),  # shared address space (CGNAT)
        ("169.254.1.1", (), False),
        ("fe80::1", (), False),
        ("fd00::1", (), False),
        ("2001:db8::1", (), False),  # documentation
        ("0.0.0.0", (), False),
        ("255.255.255.255", (), False),
        ("224.0.0.1", (), False),  # multicast: Python calls it global, it is not unicast
        ("ff02::1", (), False),
        ("::ffff:10.0.0.1", (), False),  # judged as the IPv4 address it maps to
        ("127.0.0.1", LAB_NETWORKS, True),
        ("127.0.0.56", LAB_NETWORKS, True),
        ("::1", LAB_NETWORKS, True),
        ("::ffff:127.0.0.1", LAB_NETWORKS, True),
        ("10.255.255.1", LAB_NETWORKS, False),
        ("10.255.255.1", (ipaddress.ip_network("10.0.0.0/8"),), True),
        ("127.0.0.1", (ipaddress.ip_network("::1/128"),), False),
    ],
)
def test_address_allowed(
    address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], allowed: bool
) -> None:
    assert address_allowed(address, networks) is allowed


def test_address_allowed_rejects_non_addresses() -> None:
    with pytest.raises(ValueError):
        address_allowed("mx.example.org", ())


# --- The lab's NSD itself: clear failures, and no trust in a port someone else holds.


def test_missing_nsd_fails_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_nsd, "NSD_BINARY", Path("/nonexistent/nsd"))
    with pytest.raises(RuntimeError, match="nsd not installed: run the README test command"):
        lab_nsd.NsdServer().start()


def test_unloadable_zone_fails_with_nsd_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)answered SERVFAIL.*lab\.test\.zone does not exist"):
        lab_nsd.NsdServer(zones_dir=tmp_path).start()


def test_port_held_by_another_nsd_is_not_trusted(
    nsd_server: NsdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([nsd_server.port])
    real_free_port = lab_nsd.free_port
    monkeypatch.setattr(
        lab_nsd, "free_port", lambda address=lab_nsd.ADDRESS: next(ports, 0) or real_free_port()
    )
    with lab_nsd.NsdServer() as second:
        assert second.port != nsd_server.port
        assert second.identity != nsd_server.identity


async def test_huge_mx_set_is_capped_to_the_most_preferred_exchanges(nsd_server: NsdServer) -> None:
    r = await resolve(nsd_server, "hugemx.lab.test")
    assert r.status is DnsStatus.OK and r.mx_records == 40
    assert [e.preference for e in r.exchanges] == list(range(1, MAX_EXCHANGES + 1))
    assert all(e.addresses for e in r.exchanges)
    assert "8 least preferred exchanges not probed" in r.detail
    assert any("not probed (limit 32 per domain)" in line for line in r.log)


# --- The DNS client (mx_exporter.dnsquery) against NSD: answers exactly as dnspython's resolver classifies them.


class RecordingObserver:
    """A QueryObserver that keeps every report."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str, bool]] = []

    def query(self, rdtype: str, result: str, tcp_retry: bool) -> None:
        assert rdtype in ("MX", "A", "AAAA") and result in RESULTS
        self.queries.append((rdtype, result, tcp_retry))

    def count(self, rdtype: str | None = None) -> int:
        return sum(1 for q in self.queries if rdtype is None or q[0] == rdtype)


ZONE_FILE = Path(lab_nsd.ZONES_DIR) / f"{plan.ZONE}.zone"


def zone_names() -> list[str]:
    """Every owner name of the lab zone, plus names that do not exist, sit below a CNAME, or are not served."""
    zone = dns.zone.from_file(str(ZONE_FILE), origin=plan.ZONE, relativize=False)
    names = sorted(str(name) for name in zone.nodes)
    extra = ["nxdomain.lab.test.", "gone.dangling.lab.test.", "below.alias.cname.lab.test."]
    return names + extra + [plan.REFUSED_DOMAIN + ".", plan.SERVFAIL_DOMAIN + "."]


View = tuple[str, tuple[str, ...], int | None, int | None, str | None]


async def dnspython_view(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> View:
    """(result, records, RRset TTL, reuse TTL, CNAME target) as dnspython's Resolver.resolve sees the question."""
    qname = dns.name.from_text(name)

    def target(canonical: dns.name.Name | None) -> str | None:
        return None if canonical is None or canonical == qname else str(canonical)

    try:
        answer = await resolver.resolve(qname, rdtype, search=False)
    except dns.resolver.NXDOMAIN as exc:
        response = exc.responses()[qname]
        return ("nxdomain", (), None, _dnspython_negative_ttl(response), target(exc.canonical_name))
    except dns.resolver.NoAnswer as exc:
        response = exc.kwargs["response"]
        return ("nodata", (), None, _dnspython_negative_ttl(response), target(response.canonical_name()))
    except dns.resolver.NoNameservers:
        return ("servfail", (), None, None, None)
    assert answer.rrset is not None
    records = tuple(rdata.to_text() for rdata in answer.rrset)
    minimum = answer.chaining_result.minimum_ttl
    return ("answer", records, answer.rrset.ttl, minimum, target(answer.canonical_name))


def _dnspython_negative_ttl(response: dns.message.Message) -> int | None:
    assert isinstance(response, dns.message.QueryMessage)
    minimum = response.resolve_chaining().minimum_ttl
    return None if minimum == dns.ttl.MAX_TTL else minimum


def client_view(reply: dnswire.Reply) -> View:
    records = tuple(f"{mx.preference} {mx.exchange}" for mx in reply.mx) or reply.addresses
    canonical = None if reply.canonical is None else str(reply.canonical)
    return (reply.result, records, reply.ttl, reply.cache_ttl, canonical)


async def test_client_classifies_every_lab_name_exactly_as_dnspython(nsd_server: NsdServer) -> None:
    host, port = parse_nameserver(nsd_server.nameserver)
    reference = dns.asyncresolver.Resolver(configure=False)
    reference.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
    reference.cache = None
    reference.lifetime = reference.timeout = 2.0
    reference.use_edns(0, 0, 1232)
    async with make_resolver(lab_policy(nsd_server)) as client:
        compared = 0
        seen: set[str] = set()
        for name in zone_names():
            for rdtype in ("MX", "A", "AAAA"):
                want = await dnspython_view(reference, name, rdtype)
                got = client_view(await client.query(dns.name.from_text(name), rdtype))
                assert got == want, (name, rdtype)
                seen.add(want[0])
                compared += 1
    assert compared > 300
    assert seen == {"answer", "nodata", "nxdomain", "servfail"}


async def test_observer_hears_each_result(nsd_server: NsdServer, blackhole_dns: BlackholeDns) -> None:
    cases = {
        "healthy.lab.test": ("answer", DnsStatus.OK),
        "nxdomain.lab.test": ("nxdomain", DnsStatus.NXDOMAIN),
        "noaddr.lab.test": ("nodata", DnsStatus.NODATA),
        plan.REFUSED_DOMAIN: ("servfail", DnsStatus.SERVFAIL),
        plan.SERVFAIL_DOMAIN: ("servfail", DnsStatus.SERVFAIL),
    }
    for domain, (result, status) in cases.items():
        observer = RecordingObserver()
        policy = lab_policy(nsd_server)
        async with make_resolver(policy) as client:
            resolution = await resolve_domain(domain, client, policy, observer=observer)
        assert resolution.status is status
        assert observer.queries[0] == ("MX", result, False), domain
    observer = RecordingObserver()
    policy = ResolvePolicy(nameservers=(blackhole_dns.nameserver,), timeout=0.5)
    async with make_resolver(policy) as client:
        resolution = await resolve_domain("healthy.lab.test", client, policy, observer=observer)
    assert resolution.status is DnsStatus.TIMEOUT
    assert observer.queries == [("MX", "timeout", False)]
    assert typing.get_args(dnswire.Result) == RESULTS


async def test_observer_hears_every_wire_question_of_a_domain(nsd_server: NsdServer) -> None:
    observer = RecordingObserver()
    policy = lab_policy(nsd_server)
    async with make_resolver(policy) as client:
        await resolve_domain("healthy.lab.test", client, policy, observer=observer)
    assert sorted(observer.queries) == sorted(
        [
            ("MX", "answer", False),
            *[("A", "answer", False), ("AAAA", "answer", False)],  # mx1.healthy
            *[("A", "answer", False), ("AAAA", "nodata", False)],  # mx2.healthy
        ]
    )


def udp_answer(nsd: NsdServer, name: str, rdtype: str) -> bytes:
    query = dns.message.make_query(name, rdtype)
    query.use_edns(0, 0, dnswire.PAYLOAD)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((nsd.address, nsd.port))
        sock.send(query.to_wire())
        return sock.recv(65535)


async def test_truncated_answer_is_asked_again_over_tcp(nsd_server: NsdServer) -> None:
    udp = udp_answer(nsd_server, "mx.truncated.lab.test.", "AAAA")
    assert dns.flags.TC & dns.message.from_wire(udp, raise_on_truncation=False).flags  # the zone truncates
    observer = RecordingObserver()
    policy = lab_policy(nsd_server, max_addresses_per_exchange=64)
    async with make_resolver(policy) as client:
        result = await resolve_domain("truncated.lab.test", client, policy, observer=observer)
    (exchange,) = result.exchanges
    assert [a.address for a in exchange.addresses] == ["127.0.0.11"] + [
        f"2001:db8::{i:x}" for i in range(1, 61)
    ]
    assert sorted(observer.queries) == [
        ("A", "answer", False),
        ("AAAA", "answer", True),
        ("MX", "answer", False),
    ]
    assert any(
        "mx.truncated.lab.test. AAAA: 2001:db8::1, " in line and "(50 more)" in line for line in result.log
    )


# --- The per-cycle name cache.


async def test_cache_asks_a_shared_exchange_once(nsd_server: NsdServer) -> None:
    observer = RecordingObserver()
    cache = NameCache()
    policy = lab_policy(nsd_server)
    async with make_resolver(policy) as client:
        first = await resolve_domain("hosted1.lab.test", client, policy, cache=cache, observer=observer)
        second = await resolve_domain("hosted2.lab.test", client, policy, cache=cache, observer=observer)
    assert (observer.count("MX"), observer.count("A"), observer.count("AAAA")) == (2, 1, 1)
    assert cache.hits == 2
    assert first.exchanges == second.exchanges and first.status is second.status is DnsStatus.OK
    assert [a.address for a in second.exchanges[0].addresses] == [plan.ACCEPT_1, plan.IPV6_ACCEPT]
    cached = [line.split(" ms  ", 1)[1] for line in second.log if line.endswith("(cached)")]
    assert sorted(cached) == [
        "= mx.hosted.lab.test. A: 127.0.0.10 (ttl 300) (cached)",
        "= mx.hosted.lab.test. AAAA: ::1 (ttl 300) (cached)",
    ]
    assert (
        sum(" ? mx.hosted.lab.test. A" in line for line in second.log) == 2
    )  # the questions are still logged
    assert not any("(cached)" in line for line in first.log)


async def test_cache_shares_a_question_in_flight(nsd_server: NsdServer) -> None:
    observer = RecordingObserver()
    cache = NameCache()
    policy = lab_policy(nsd_server)
    limit = asyncio.Semaphore(1)
    await limit.acquire()  # the first asker's question waits here, in flight, while the others join it
    async with make_resolver(policy) as client:
        tasks = [
            asyncio.create_task(
                resolve_domain("healthy.lab.test", client, policy, limit, cache=cache, observer=observer)
            )
            for _ in range(5)
        ]
        await asyncio.sleep(0.2)
        assert observer.queries == [] and not any(task.done() for task in tasks)
        limit.release()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(r.status is DnsStatus.OK and r.exchanges == results[0].exchanges for r in results)
    assert (observer.count("MX"), observer.count("A"), observer.count("AAAA")) == (1, 2, 2)
    assert cache.hits == 4 * 5  # four domains each had MX and 2 x (A, AAAA) from the first one
    assert all(sum("(cached)" in line for line in r.log) == 5 for r in results[1:])


async def test_cancelled_asker_lets_the_others_ask_again(nsd_server: NsdServer) -> None:
    observer = RecordingObserver()
    cache = NameCache()
    policy = lab_policy(nsd_server)
    limit = asyncio.Semaphore(1)
    await limit.acquire()
    async with make_resolver(policy) as client:
        first = asyncio.create_task(resolve_domain("nullmx.lab.test", client, policy, limit, cache=cache))
        await asyncio.sleep(0.05)
        joined = asyncio.create_task(
            resolve_domain("nullmx.lab.test", client, policy, limit, cache=cache, observer=observer)
        )
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.sleep(0.05)
        limit.release()
        result = await asyncio.wait_for(joined, 10)
    assert first.cancelled()
    assert result.status is DnsStatus.OK and result.null_mx
    assert observer.queries == [("MX", "answer", False)]  # the joiner asked itself


async def test_cache_keeps_answers_for_their_ttl(nsd_server: NsdServer) -> None:
    now = [1000.0]
    observer = RecordingObserver()
    cache = NameCache(clock=lambda: now[0])
    policy = lab_policy(nsd_server)

    async def wire_questions() -> list[tuple[str, str, bool]]:
        before = len(observer.queries)
        result = await resolve_domain("ttl.lab.test", client, policy, cache=cache, observer=observer)
        assert result.status is DnsStatus.OK and result.ttl == 1234
        return sorted(observer.queries[before:])

    async with make_resolver(policy) as client:
        assert await wire_questions() == [
            ("A", "answer", False),
            ("AAAA", "nodata", False),
            ("MX", "answer", False),
        ]
        now[0] += 299  # MX: TTL 1234; A: 300; AAAA NODATA: SOA minimum 300
        assert await wire_questions() == []
        now[0] += 2
        assert await wire_questions() == [("A", "answer", False), ("AAAA", "nodata", False)]
        now[0] += 1234 - 301 - 1  # one second before the MX expires
        assert await wire_questions() == [("A", "answer", False), ("AAAA", "nodata", False)]
        now[0] += 1
        assert await wire_questions() == [("MX", "answer", False)]
    assert cache.hits == 3 + 1 + 1 + 2


async def test_cache_keeps_nxdomain_for_the_soa_minimum_and_failures_for_the_cycle(
    nsd_server: NsdServer,
) -> None:
    now = [0.0]
    observer = RecordingObserver()
    cache = NameCache(clock=lambda: now[0])
    policy = lab_policy(nsd_server)
    async with make_resolver(policy) as client:
        for step in (0, 299, 2):
            now[0] += step
            for domain in ("nxdomain.lab.test", plan.SERVFAIL_DOMAIN, plan.REFUSED_DOMAIN):
                await resolve_domain(domain, client, policy, cache=cache, observer=observer)
        now[0] += 10**9
        await resolve_domain(plan.SERVFAIL_DOMAIN, client, policy, cache=cache, observer=observer)
    assert [q[1] for q in observer.queries] == ["nxdomain", "servfail", "servfail", "nxdomain"]


async def test_dead_nameserver_costs_one_timeout_per_cycle(blackhole_dns: BlackholeDns) -> None:
    observer = RecordingObserver()
    cache = NameCache()
    policy = ResolvePolicy(nameservers=(blackhole_dns.nameserver,), timeout=0.5)
    before = blackhole_dns.queries
    async with make_resolver(policy) as client:
        results = await asyncio.gather(
            *(
                resolve_domain("healthy.lab.test", client, policy, cache=cache, observer=observer)
                for _ in range(20)
            )
        )
        assert all(r.status is DnsStatus.TIMEOUT for r in results)
        started = time.monotonic()
        again = await resolve_domain("healthy.lab.test", client, policy, cache=cache, observer=observer)
        assert again.status is DnsStatus.TIMEOUT and time.monotonic() - started < 0.2
    assert observer.queries == [("MX", "timeout", False)]
    assert blackhole_dns.queries - before == 1
    assert any(
        line.endswith("timeout: no answer within 0.5 s (1 attempt got no answer in time) (cached)")
        for line in again.log
    )


# --- Retries, failover, rate limit.


async def test_attempts_are_retried_within_the_lifetime(blackhole_dns: BlackholeDns) -> None:
    policy = ResolvePolicy(nameservers=(blackhole_dns.nameserver,), timeout=2.5)
    before = blackhole_dns.queries
    started = time.monotonic()
    async with make_resolver(policy) as client:
        reply = await client.query(dns.name.from_text("healthy.lab.test."), "MX")
    elapsed = time.monotonic() - started
    assert reply.result == "timeout" and 2.4 <= elapsed < 3.0
    assert (
        blackhole_dns.queries - before == 2
    )  # 2 s (the per-attempt cap), 0.1 s backoff, the remaining 0.4 s


async def test_unreachable_nameserver_is_skipped_and_alone_is_servfail(nsd_server: NsdServer) -> None:
    closed = lab_nsd.free_port()  # nothing listens there: the kernel answers ICMP port unreachable
    policy = lab_policy(nsd_server, nameservers=(f"127.0.0.1:{closed}", nsd_server.nameserver))
    async with make_resolver(policy) as client:
        assert (await resolve_domain("healthy.lab.test", client, policy)).status is DnsStatus.OK
    # A lifetime with three attempts: the kernel's global ICMP rate limit may drop one error on a busy machine.
    alone = lab_policy(nsd_server, nameservers=(f"127.0.0.1:{closed}",), timeout=5.0)
    async with make_resolver(alone) as client:
        result = await resolve_domain("healthy.lab.test", client, alone)
    assert result.status is DnsStatus.SERVFAIL
    assert any("refused" in line.lower() for line in result.log)


async def test_unreachable_nameserver_fails_every_question_sharing_its_sockets(nsd_server: NsdServer) -> None:
    closed = lab_nsd.free_port()
    policy = lab_policy(nsd_server, nameservers=(f"127.0.0.1:{closed}", nsd_server.nameserver))
    domains = ["healthy.lab.test", "many.lab.test", "equal.lab.test", "nonglobal.lab.test", "hugemx.lab.test"]
    async with make_resolver(policy) as client:  # dozens of questions on the dead server's few sockets
        results = await asyncio.gather(*(resolve_domain(d, client, policy) for d in domains))
    assert all(r.status is DnsStatus.OK for r in results)
    waited = [line for r in results for line in r.log if "timeout" in line]
    assert (
        waited == []
    )  # each question heard "refused" at once (an ICMP error is the socket's, not one query's)


async def test_rate_limit_paces_wire_questions(nsd_server: NsdServer) -> None:
    policy = lab_policy(nsd_server, max_queries_per_second=50.0)
    observer = RecordingObserver()
    started = time.monotonic()
    async with make_resolver(policy) as client:
        results = await asyncio.gather(
            *(resolve_domain(f"nx{i}.lab.test", client, policy, observer=observer) for i in range(20))
        )
    elapsed = time.monotonic() - started
    assert all(r.status is DnsStatus.NXDOMAIN for r in results)
    assert len(observer.queries) == 20
    assert elapsed >= 0.35  # 19 intervals of 20 ms after the first


async def test_rate_limit_wait_beyond_the_lifetime_is_a_timeout(nsd_server: NsdServer) -> None:
    policy = lab_policy(nsd_server, max_queries_per_second=2.0, timeout=0.3)
    observer = RecordingObserver()
    started = time.monotonic()
    async with make_resolver(policy) as client:
        results = await asyncio.gather(
            *(resolve_domain(f"nx{i}.lab.test", client, policy, observer=observer) for i in range(3))
        )
    assert sorted(r.status for r in results) == sorted(
        [DnsStatus.NXDOMAIN, DnsStatus.TIMEOUT, DnsStatus.TIMEOUT]
    )
    assert sorted(q[1] for q in observer.queries) == ["nxdomain", "timeout", "timeout"]
    assert time.monotonic() - started < 0.3 + 0.2  # nobody waited past the lifetime
    timed_out = next(r for r in results if r.status is DnsStatus.TIMEOUT)
    assert any("rate limit" in line for line in timed_out.log)


# --- The wire: what goes out, what is accepted back, sockets.


class Relay:
    """A UDP front for NSD that records each query and, before NSD's real answer, sends forgeries of it.

    Forgeries carry NXDOMAIN instead of the real rcode: wrong id, another question, QR clear, too short, and the
    right id and question from another port. A client that took any of them would report nxdomain.
    """

    def __init__(self, nsd: NsdServer, answer: bool = True, delay: float = 0.01) -> None:
        self.nsd = nsd
        self.answer = answer
        self.delay = delay  # between the forgeries and the real answer
        self.queries: list[tuple[int, bytes]] = []  # (client port, query)
        self._stop = threading.Event()
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect((nsd.address, nsd.port))
        self.back.settimeout(2)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.front.getsockname()[1]}"

    def __enter__(self) -> Relay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        for sock in (self.front, self.other, self.back):
            sock.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.front, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(timeout=0.05):
                    continue
                query, client = self.front.recvfrom(65535)
                self.queries.append((client[1], query))
                self.back.send(query)
                real = self.back.recv(65535)
                forged = real[:3] + bytes([(real[3] & 0xF0) | 3]) + real[4:]  # rcode NXDOMAIN
                wrong_id = bytes([forged[0] ^ 0x5A]) + forged[1:]
                other_question = forged[:13] + bytes([forged[13] ^ 0x01]) + forged[14:]
                no_qr = forged[:2] + bytes([forged[2] & 0x7F]) + forged[3:]
                for datagram in (wrong_id, other_question, no_qr, forged[:11]):
                    self.front.sendto(datagram, client)
                self.other.sendto(forged, client)
                time.sleep(self.delay)
                if self.answer:
                    self.front.sendto(real, client)


async def test_only_the_real_answer_is_accepted(nsd_server: NsdServer) -> None:
    with Relay(nsd_server) as relay:
        policy = lab_policy(nsd_server, nameservers=(relay.nameserver,))
        async with make_resolver(policy) as client:
            result = await resolve_domain("healthy.lab.test", client, policy)
    assert result.status is DnsStatus.OK and len(result.exchanges) == 2, result.log
    assert len(relay.queries) == 5


async def test_forgeries_alone_are_never_taken(nsd_server: NsdServer) -> None:
    with Relay(nsd_server, answer=False) as relay:
        policy = lab_policy(nsd_server, nameservers=(relay.nameserver,), timeout=0.5)
        async with make_resolver(policy) as client:
            reply = await client.query(dns.name.from_text("healthy.lab.test."), "MX")
    assert reply.result == "timeout"
    assert relay.queries


async def test_queries_carry_random_ids_edns_1232_and_change_ports(
    nsd_server: NsdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    retire_after = 32  # the default (512 per socket) would need thousands of questions here
    monkeypatch.setattr(dnssocket, "RETIRE_AFTER_QUERIES", retire_after)
    count = 600
    with Relay(nsd_server, delay=0) as relay:
        policy = lab_policy(nsd_server, nameservers=(relay.nameserver,))
        async with make_resolver(policy) as client:
            limit = asyncio.Semaphore(32)

            async def ask(i: int) -> str:
                async with limit:
                    return (await client.query(dns.name.from_text(f"nx{i}.lab.test."), "A")).result

            results = await asyncio.gather(*(ask(i) for i in range(count)))
            assert dnsquery.open_sockets(client) <= dnssocket.POOL_SIZE
        assert dnsquery.open_sockets(client) == 0  # closed by aclose()
    assert results == ["nxdomain"] * count
    messages = [dns.message.from_wire(query) for _, query in relay.queries]
    ids = [m.id for m in messages]
    assert len(set(ids)) >= count - 20 and ids != sorted(ids)
    assert all(m.edns == 0 and m.payload == dnswire.PAYLOAD and m.flags & dns.flags.RD for m in messages)
    ports = {port for port, _ in relay.queries}
    assert dnssocket.POOL_SIZE < len(ports) <= count // retire_after + 2 * dnssocket.POOL_SIZE


def test_client_works_in_one_event_loop_after_another(nsd_server: NsdServer) -> None:
    client = make_resolver(lab_policy(nsd_server))
    qname = dns.name.from_text("healthy.lab.test.")
    for _ in range(2):
        assert asyncio.run(client.query(qname, "MX")).result == "answer"
    assert dnsquery.open_sockets(client) <= dnssocket.POOL_SIZE
    client.close()
    assert dnsquery.open_sockets(client) == 0


def test_make_resolver_keeps_the_system_nameservers_and_policy() -> None:
    system = dns.resolver.Resolver()  # reads /etc/resolv.conf; no question is sent
    client = make_resolver(ResolvePolicy(timeout=7.0, max_queries_per_second=100))
    assert list(client.servers) == [parse_nameserver(str(ns)) for ns in system.nameservers]
    assert (client.lifetime, client.timeout, client.payload) == (7.0, 2.0, 1232)
    assert make_resolver(ResolvePolicy(timeout=0.5)).timeout == 0.5


# --- The parser never fails but as MalformedResponse, whatever the bytes.

_SAMPLES: list[bytes] = []


def sample_answers(nsd: NsdServer) -> list[bytes]:
    if not _SAMPLES:
        for name, rdtype in [
            ("healthy.lab.test.", "MX"),
            ("alias.cname.lab.test.", "A"),
            ("alias.dangling.lab.test.", "AAAA"),
            ("noaddr.lab.test.", "A"),
            ("hugemx.lab.test.", "MX"),
        ]:
            _SAMPLES.append(udp_answer(nsd, name, rdtype))
    return _SAMPLES


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pick=st.integers(0, 4),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 2000)),
)
def test_mutated_answers_parse_or_raise_malformed(
    nsd_server: NsdServer, pick: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    wire = bytearray(sample_answers(nsd_server)[pick])
    for position, value in flips:
        if wire:
            wire[position % len(wire)] = value
    data = bytes(wire if cut is None else wire[:cut])
    try:
        message = dnswire.parse_message(data)
    except dnswire.MalformedResponse:
        return
    for rdtype in (1, 15, 28):
        try:
            reply = dnswire.classify(message, dns.name.from_text("healthy.lab.test."), rdtype)
        except dnswire.BadAnswer:
            continue
        assert reply.result in ("answer", "nodata", "nxdomain")


def encoded_response(qname: str, rdtype: str, rcode: int = 0, answer: str = "", authority: str = "") -> bytes:
    """A response built and encoded by dnspython (records as zone-file lines, relative to lab.test.)."""
    query = dns.message.make_query(qname, rdtype)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    for section, text in ((response.answer, answer), (response.authority, authority)):
        for line in filter(None, text.split("\n")):
            rrset = dns.rrset.from_text(*line.split(None, 4))
            section.append(rrset)
    wire = response.to_wire()
    assert isinstance(wire, bytes)
    return wire


@pytest.mark.parametrize(
    ("soa", "expected"),
    [
        ("3600 IN SOA ns.lab.test. h.lab.test. 1 3600 600 86400 60", 60),  # the minimum bounds it
        ("30 IN SOA ns.lab.test. h.lab.test. 1 3600 600 86400 60", 30),  # the SOA's own TTL bounds it
    ],
)
def test_negative_answer_is_kept_for_the_lower_of_soa_ttl_and_minimum(soa: str, expected: int) -> None:
    for rcode, result in ((0, "nodata"), (3, "nxdomain")):
        wire = encoded_response("x.lab.test.", "A", rcode, authority=f"lab.test. {soa}")
        reply = dnswire.classify(dnswire.parse_message(wire), dns.name.from_text("x.lab.test."), 1)
        assert (reply.result, reply.cache_ttl) == (result, expected)


def test_cname_chain_bounds_the_reuse_ttl_and_too_long_a_chain_is_refused() -> None:
    answer = "x.lab.test. 50 IN CNAME y.lab.test.\ny.lab.test. 900 IN A 192.0.2.1"
    reply = dnswire.classify(
        dnswire.parse_message(encoded_response("x.lab.test.", "A", answer=answer)),
        dns.name.from_text("x.lab.test."),
        1,
    )
    assert (reply.addresses, reply.ttl, reply.cache_ttl, str(reply.canonical)) == (
        ("192.0.2.1",),
        900,
        50,
        "y.lab.test.",
    )
    chain = "\n".join(f"c{i}.lab.test. 60 IN CNAME c{i + 1}.lab.test." for i in range(16))
    message = dnswire.parse_message(encoded_response("c0.lab.test.", "A", answer=chain))
    with pytest.raises(dnswire.BadAnswer, match="CNAME chain"):
        dnswire.classify(message, dns.name.from_text("c0.lab.test."), 1)
    under_nxdomain = dnswire.parse_message(
        encoded_response("x.lab.test.", "A", 3, answer="x.lab.test. 60 IN A 192.0.2.1")
    )
    with pytest.raises(dnswire.BadAnswer, match="NXDOMAIN"):
        dnswire.classify(under_nxdomain, dns.name.from_text("x.lab.test."), 1)


def test_duplicate_records_count_once_and_mx_names_compare_without_case() -> None:
    answer = "x.lab.test. 60 IN MX 10 MX.lab.test.\nx.lab.test. 30 IN MX 10 mx.lab.test.\nx.lab.test. 60 IN MX 20 b.lab.test."
    wire = encoded_response("x.lab.test.", "MX", answer=answer)
    reply = dnswire.classify(dnswire.parse_message(wire), dns.name.from_text("x.lab.test."), 15)
    assert [(mx.preference, str(mx.exchange)) for mx in reply.mx] == [
        (10, "MX.lab.test."),
        (20, "b.lab.test."),
    ]
    assert reply.ttl == 30  # an RRset's TTL is its records' lowest (as dnspython merges them)


HEADER_1_ANSWER = bytes.fromhex("1234 8180 0000 0001 0000 0000")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x00" * 11, "shorter than a DNS header"),
        (
            HEADER_1_ANSWER + b"\xc0\x0c" + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01",
            "pointer",
        ),
        (
            HEADER_1_ANSWER + b"\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x05\x7f\x00\x00\x01\x00",
            "A record of 5",
        ),
        (HEADER_1_ANSWER + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00", "OPT"),
        (HEADER_1_ANSWER + b"\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01\xff", "trailing"),
        (HEADER_1_ANSWER + b"\x40" + b"a" * 64 + b"\x00", "label type"),
        (HEADER_1_ANSWER + (b"\x3f" + b"a" * 63) * 4 + b"\x00", "255 octets"),
        (HEADER_1_ANSWER + b"\x01a", "past the end"),
    ],
)
def test_malformed_answers_are_refused(wire: bytes, reason: str) -> None:
    with pytest.raises(dnswire.MalformedResponse, match=reason):
        dnswire.parse_message(wire)
