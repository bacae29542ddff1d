"""The DNS stage against real NSD (tests/lab/zones), plus table tests for its pure helpers."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dns.nameserver
import dns.resolver
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx_exporter.model import DnsStatus, Family, Misconfiguration, Resolution
from mx_exporter.resolve import (
    MAX_EXCHANGES,
    ResolvePolicy,
    address_allowed,
    make_resolver,
    normalize_domain,
    parse_nameserver,
    resolve_domain,
)
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
        ((10, "127.0.0.10", ()), (20, "mx2.literal.lab.test", (plan.ACCEPT_2,))),
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
    assert (literal.addresses, literal.problems) == ((), {M.IP_LITERAL_TARGET})
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
    ("changes", "reason"),
    [
        ({"timeout": 0}, "timeout must be above 0"),
        ({"families": ()}, "at least one address family"),
        ({"max_addresses_per_exchange": 0}, "1 or more"),
        ({"nameservers": ("dns.example",)}, "is not an IP address"),
    ],
)
def test_policy_rejects_bad_values(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ResolvePolicy(**changes)  # type: ignore[arg-type]


# --- Pure helpers: table tests.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
        ("2001:DB8::1", ("2001:db8::1", 53)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


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
