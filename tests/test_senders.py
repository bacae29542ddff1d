"""Table tests for the sender profiles (mx_exporter/senders.py): one row per behaviour of README "What senders do".

Each row is literal data — a resolution and what each address answered — and the outcome every profile must give:
``D20`` delivered to preference 20, ``Q`` queued, ``B`` bounced. The Postfix and Exim columns are also proven
against the real MTAs in tests/test_sender_conformance.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mx_exporter.assess import build_report
from mx_exporter.model import (
    AddressResult,
    DeliveryOutcome,
    DnsStatus,
    Family,
    Misconfiguration,
    Resolution,
    ResolvedAddress,
    ResolvedExchange,
    Sender,
    SmtpOutcome,
)
from mx_exporter.senders import PROFILES, Failure, failure

Out = SmtpOutcome
M = Misconfiguration


@dataclass(frozen=True)
class Addr:
    ip: str
    outcome: SmtpOutcome = Out.ACCEPTED
    ehlo: int = 0
    helo: int = 0


@dataclass(frozen=True)
class Mx:
    preference: int
    name: str
    addresses: tuple[Addr, ...]
    problems: frozenset[Misconfiguration] = frozenset()
    lookup: DnsStatus = DnsStatus.OK
    cname: str | None = None


def up(ip: str) -> Addr:
    return Addr(ip, Out.ACCEPTED, ehlo=250)


def mx(preference: int, name: str, *addresses: Addr, **kw: object) -> Mx:
    return Mx(preference, name, addresses, **kw)  # type: ignore[arg-type]


def resolution(*exchanges: Mx, **kw: object) -> tuple[Resolution, dict[str, AddressResult]]:
    """The Resolution the resolver would build, and each address's probe result."""
    resolved = tuple(
        ResolvedExchange(
            x.name,
            x.preference,
            tuple(
                ResolvedAddress(a.ip, Family.IPV6 if ":" in a.ip else Family.IPV4, True) for a in x.addresses
            ),
            cname_target=x.cname,
            problems=x.problems,
            lookup=x.lookup,
        )
        for x in exchanges
    )
    kw.setdefault("status", DnsStatus.OK)
    kw.setdefault("mx_records", len(exchanges))
    problems = frozenset().union(*(x.problems for x in exchanges))
    kw["misconfigurations"] = problems | frozenset(kw.get("misconfigurations", frozenset()))  # type: ignore[arg-type]
    results = {
        a.ip: AddressResult(
            a.ip,
            Family.IPV6 if ":" in a.ip else Family.IPV4,
            a.outcome,
            greeting_code={Out.GREETING_4XX: 421, Out.GREETING_5XX: 554}.get(a.outcome, 220),
            ehlo_code=a.ehlo,
            helo_code=a.helo,
        )
        for x in exchanges
        for a in x.addresses
    }
    return Resolution("s.lab.test", exchanges=resolved, **kw), results  # type: ignore[arg-type]


BACKUP = mx(20, "mx2.s.lab.test", up("192.0.2.20"))


def primary(*addresses: Addr) -> tuple[Resolution, dict[str, AddressResult]]:
    return resolution(mx(10, "mx1.s.lab.test", *addresses), BACKUP)


ROWS = {
    # row id: (scenario, postfix, exim, qmail)
    "accepts": (resolution(mx(10, "mx1.s.lab.test", up("192.0.2.10"))), "D10", "D10", "D10"),
    "connect-refused": (primary(Addr("192.0.2.10", Out.CONNECTION_REFUSED)), "D20", "D20", "D20"),
    "connect-timeout": (primary(Addr("192.0.2.10", Out.CONNECT_TIMEOUT)), "D20", "D20", "D20"),
    "not-allowed-here": (primary(Addr("192.0.2.10", Out.SKIPPED)), "D20", "D20", "D20"),
    "greeting-timeout": (primary(Addr("192.0.2.10", Out.GREETING_TIMEOUT)), "D20", "D20", "Q"),
    "4xx-greeting": (primary(Addr("192.0.2.10", Out.GREETING_4XX)), "D20", "D20", "Q"),
    "5xx-greeting": (primary(Addr("192.0.2.10", Out.GREETING_5XX)), "D20", "D20", "Q"),
    # Postfix rewrites a 5xx greeting to 4.x.x (smtp_skip_5xx_greeting); Exim fails on the last host.
    "5xx-greeting-only-host": (
        resolution(mx(10, "mx1.s.lab.test", Addr("192.0.2.10", Out.GREETING_5XX))),
        "Q",
        "B",
        "Q",
    ),
    "ehlo-5xx-helo-5xx": (primary(Addr("192.0.2.10", Out.EHLO_FAILED, 550, 550)), "B", "D20", "Q"),
    "ehlo-5xx-helo-5xx-only-host": (
        resolution(mx(10, "mx1.s.lab.test", Addr("192.0.2.10", Out.EHLO_FAILED, 550, 550))),
        "B",
        "B",
        "Q",
    ),
    "ehlo-5xx-helo-250": (primary(Addr("192.0.2.10", Out.EHLO_FAILED, 550, 250)), "D10", "D10", "D10"),
    "ehlo-4xx-helo-4xx": (primary(Addr("192.0.2.10", Out.EHLO_FAILED, 451, 451)), "D20", "D20", "Q"),
    "ehlo-421": (primary(Addr("192.0.2.10", Out.EHLO_FAILED, 421)), "D20", "D20", "Q"),
    "ehlo-unanswered": (primary(Addr("192.0.2.10", Out.EHLO_FAILED)), "D20", "D20", "Q"),
    "dropped-or-garbage": (primary(Addr("192.0.2.10", Out.PROTOCOL_ERROR)), "D20", "D20", "Q"),
    "equal-preference-one-dead": (
        resolution(
            mx(10, "a.s.lab.test", Addr("192.0.2.10", Out.CONNECTION_REFUSED)),
            mx(10, "b.s.lab.test", up("192.0.2.11")),
        ),
        "D10",
        "D10",
        "D10",
    ),
    # Equal preferences are tried in random order: the least lucky one meets the 5xx HELO first.
    "equal-preference-one-helo-5xx": (
        resolution(
            mx(10, "a.s.lab.test", Addr("192.0.2.10", Out.EHLO_FAILED, 550, 550)),
            mx(10, "b.s.lab.test", up("192.0.2.11")),
        ),
        "B",
        "D10",
        "Q",
    ),
    "two-addresses-first-dead": (
        resolution(mx(10, "mx1.s.lab.test", Addr("192.0.2.10", Out.CONNECTION_REFUSED), up("192.0.2.11"))),
        "D10",
        "D10",
        "D10",
    ),
    "every-address-temporary": (
        resolution(
            mx(10, "mx1.s.lab.test", Addr("192.0.2.10", Out.GREETING_4XX)),
            mx(20, "mx2.s.lab.test", Addr("192.0.2.20", Out.GREETING_4XX)),
        ),
        "Q",
        "Q",
        "Q",
    ),
    "every-address-unreachable": (
        resolution(
            mx(10, "mx1.s.lab.test", Addr("192.0.2.10", Out.CONNECTION_REFUSED)),
            mx(20, "mx2.s.lab.test", Addr("192.0.2.20", Out.CONNECT_TIMEOUT)),
        ),
        "Q",
        "Q",
        "Q",
    ),
    "nxdomain": (resolution(status=DnsStatus.NXDOMAIN, mx_records=0), "B", "B", "B"),
    "nodata-with-address": (
        resolution(mx(0, "s.lab.test", up("192.0.2.10")), status=DnsStatus.NODATA, fallback_to_a=True),
        "D0",
        "D0",
        "D0",
    ),
    "nodata-without-address": (resolution(status=DnsStatus.NODATA, mx_records=0), "B", "B", "B"),
    "servfail": (resolution(status=DnsStatus.SERVFAIL, mx_records=0), "Q", "Q", "Q"),
    "mx-lookup-timeout": (resolution(status=DnsStatus.TIMEOUT, mx_records=0), "Q", "Q", "Q"),
    "only-exchange-nxdomain": (
        resolution(
            mx(10, "gone.s.lab.test", problems=frozenset({M.UNRESOLVABLE_TARGET}), lookup=DnsStatus.NXDOMAIN)
        ),
        "B",
        "B",
        "B",
    ),
    "only-exchange-lookup-timeout": (
        resolution(
            mx(10, "slow.s.lab.test", problems=frozenset({M.UNRESOLVABLE_TARGET}), lookup=DnsStatus.TIMEOUT)
        ),
        "Q",
        "Q",
        "Q",
    ),
    "unresolvable-primary-backup-up": (
        resolution(
            mx(10, "gone.s.lab.test", problems=frozenset({M.UNRESOLVABLE_TARGET}), lookup=DnsStatus.NXDOMAIN),
            BACKUP,
        ),
        "D20",
        "D20",
        "D20",
    ),
    "cname-exchange": (
        resolution(
            mx(
                10,
                "alias.s.lab.test",
                up("192.0.2.10"),
                problems=frozenset({M.CNAME_TARGET}),
                cname="real.lab.test",
            )
        ),
        "D10",
        "D10",
        "D10",
    ),
    "null-mx-alone": (resolution(null_mx=True, mx_records=1), "B", "B", "B"),
    "null-mx-mixed": (
        resolution(
            mx(10, "mx1.s.lab.test", up("192.0.2.10")), mx_records=2, misconfigurations={M.NULL_MX_MIXED}
        ),
        "B",
        "D10",
        "D10",
    ),
    "ip-literal-only": (
        resolution(mx(10, "192.0.2.10", up("192.0.2.10"), problems=frozenset({M.IP_LITERAL_TARGET}))),
        "D10",
        "B",
        "D10",
    ),
    "ip-literal-primary-backup-up": (
        resolution(mx(10, "192.0.2.10", up("192.0.2.10"), problems=frozenset({M.IP_LITERAL_TARGET})), BACKUP),
        "D10",
        "D20",
        "D10",
    ),
    # smtp_mx_address_limit = 5; hosts_max_try = 5 but one address of each higher preference still; qmail: none.
    "address-limit-over-six-preferences": (
        resolution(
            *(
                mx(p, f"mx{p}.s.lab.test", Addr(f"192.0.2.{p}", Out.CONNECTION_REFUSED))
                for p in (10, 20, 30, 40, 50)
            ),
            mx(60, "mx60.s.lab.test", up("192.0.2.60")),
        ),
        "Q",
        "D60",
        "D60",
    ),
    "address-limit-within-one-exchange": (
        resolution(
            mx(
                10,
                "mx1.s.lab.test",
                *(Addr(f"192.0.2.{i}", Out.CONNECTION_REFUSED) for i in range(1, 6)),
                up("192.0.2.9"),
            )
        ),
        "Q",
        "Q",
        "D10",
    ),
    # smtp_mx_session_limit = 2 counts only sessions past EHLO/HELO: two 421 greetings do not use it up.
    "session-limit-ignores-handshake-failures": (
        resolution(
            mx(10, "mx1.s.lab.test", Addr("192.0.2.10", Out.GREETING_4XX)),
            mx(20, "mx2.s.lab.test", Addr("192.0.2.20", Out.GREETING_4XX)),
            mx(30, "mx3.s.lab.test", up("192.0.2.30")),
        ),
        "D30",
        "D30",
        "Q",
    ),
    # qmail-remote asks for A records only.
    "ipv6-only-exchange": (resolution(mx(10, "mx1.s.lab.test", up("2001:db8::10"))), "D10", "D10", "B"),
}


def _short(outcome: DeliveryOutcome, preference: int) -> str:
    if outcome is DeliveryOutcome.DELIVERED:
        return f"D{preference}"
    return "Q" if outcome is DeliveryOutcome.QUEUED else "B"


@pytest.mark.parametrize("row", list(ROWS))
def test_every_profile_on_every_row(row: str) -> None:
    (res, results), *want = ROWS[row]
    report = build_report(res, results, 1.0, 2.0)
    got = [
        _short(report.verdict.deliveries[s].outcome, report.verdict.deliveries[s].preference) for s in Sender
    ]
    assert got == want, {s.value: report.verdict.deliveries[s].reason for s in Sender}
    for delivery in report.verdict.deliveries.values():
        assert delivery.reason  # every outcome says why, for check and the status page
        assert (delivery.preference >= 0) == (delivery.outcome is DeliveryOutcome.DELIVERED)
        assert bool(delivery.exchange) == (delivery.outcome is DeliveryOutcome.DELIVERED)
        assert bool(delivery.address) == (delivery.outcome is DeliveryOutcome.DELIVERED)


def test_every_profile_decides_every_failure() -> None:
    """A profile is a full table: a new kind of failure must be placed in every profile deliberately."""
    for profile in PROFILES.values():
        assert set(profile.steps) == set(Failure), profile.sender


@pytest.mark.parametrize(
    ("outcome", "ehlo", "helo", "want"),
    [
        (Out.ACCEPTED, 250, 0, None),
        (Out.EHLO_FAILED, 550, 250, None),  # HELO fallback: the sender delivers there
        (Out.EHLO_FAILED, 550, 554, Failure.HELO_5XX),
        (Out.EHLO_FAILED, 502, 451, Failure.HELO_4XX),
        (Out.EHLO_FAILED, 421, 0, Failure.EHLO_421),
        (Out.EHLO_FAILED, 0, 0, Failure.DROPPED),
        (Out.EHLO_FAILED, 550, 0, Failure.DROPPED),  # HELO not answered
        (Out.CONNECTION_REFUSED, 0, 0, Failure.CONNECT),
        (Out.CONNECT_TIMEOUT, 0, 0, Failure.CONNECT),
        (Out.SKIPPED, 0, 0, Failure.CONNECT),
        (Out.GREETING_TIMEOUT, 0, 0, Failure.GREETING_TIMEOUT),
        (Out.GREETING_4XX, 0, 0, Failure.GREETING_4XX),
        (Out.GREETING_5XX, 0, 0, Failure.GREETING_5XX),
        (Out.PROTOCOL_ERROR, 0, 0, Failure.DROPPED),
    ],
)
def test_failure_of_each_probe_result(
    outcome: SmtpOutcome, ehlo: int, helo: int, want: Failure | None
) -> None:
    assert failure(outcome, ehlo, helo) is want


def test_every_outcome_maps_to_a_failure_or_delivery() -> None:
    for outcome in SmtpOutcome:
        got = failure(outcome, 250 if outcome is Out.ACCEPTED else 0, 0)
        assert (got is None) == (outcome is Out.ACCEPTED)


def test_delivered_names_the_address_it_went_to() -> None:
    res, results = ROWS["two-addresses-first-dead"][0]
    report = build_report(res, results, 1.0, 2.0)
    assert {s: (d.exchange, d.address) for s, d in report.verdict.deliveries.items()} == {
        s: ("mx1.s.lab.test", "192.0.2.11") for s in Sender
    }
