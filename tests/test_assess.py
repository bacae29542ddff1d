"""Table tests for the pure assessment stage: literal resolutions and SMTP results in, verdicts out.

The shared scenarios (TWO_UP, PRIMARY_DOWN, ...) and their builders live in tests/builders.py.
"""

from __future__ import annotations

import pytest

from mx_exporter.assess import (
    NOT_ALLOWED,
    NOT_PROBED,
    Expectations,
    assess,
    build_report,
    build_tiers,
)
from mx_exporter.engine import expectations_of
from mx_exporter.model import (
    AddressResult,
    DnsStatus,
    Family,
    Misconfiguration,
    Resolution,
    ResolvedAddress,
    ResolvedExchange,
    Verdict,
)
from mx_exporter.settings import load_settings
from tests.builders import (
    ALL_DOWN,
    EQUAL,
    FALLBACK,
    NULL_MX,
    ONE_TIER,
    PRIMARY_DOWN,
    TWO_UP,
    UP,
    Out,
    Scenario,
    domain,
    res,
    two_tiers,
)


def deliveries(v: Verdict) -> dict[str, tuple[str, int]]:
    """Each sender profile's (outcome, preference); tests/test_senders.py covers the profiles row by row."""
    return {s.value: (d.outcome.value, d.preference) for s, d in v.deliveries.items()}


def every_sender(outcome: str, preference: int = -1) -> dict[str, tuple[str, int]]:
    return {s: (outcome, preference) for s in ("postfix", "exim", "qmail")}


def verdict_of(d: Scenario, expectations: Expectations | None = None) -> Verdict:
    return build_report(d[0], d[1], 1.0, 1000.0, expectations).verdict


def test_two_tiers_all_up() -> None:
    resolution, results = TWO_UP
    tiers = build_tiers(resolution, results)
    assert [t.preference for t in tiers] == [10, 20]
    assert [e.name for e in tiers[0].exchanges] == ["mx1.healthy.lab.test"]
    assert [a.address for a in tiers[0].exchanges[0].addresses] == ["127.0.0.10", "::1"]
    v = assess(resolution, tiers)
    assert (v.deliverable, v.primary_up, v.active_preference, v.preference_gap) == (True, True, 10, 10)
    assert deliveries(v) == every_sender("delivered", 10)
    assert v.expectations == {}


def test_primary_down_backup_up() -> None:
    v = verdict_of(PRIMARY_DOWN)
    assert (v.deliverable, v.primary_up, v.active_preference) == (True, False, 20)
    assert deliveries(v) == every_sender("delivered", 20)


def test_everything_down() -> None:
    v = verdict_of(ALL_DOWN)
    assert (v.deliverable, v.primary_up, v.active_preference, v.preference_gap) == (False, False, -1, 10)
    assert deliveries(v) == every_sender("queued")


def test_equal_preferences_form_one_tier_up_when_one_accepts() -> None:
    tiers = build_tiers(*EQUAL)
    assert len(tiers) == 1
    assert [(e.name, e.up) for e in tiers[0].exchanges] == [
        ("a.equal.lab.test", True),
        ("b.equal.lab.test", False),
    ]
    v = assess(EQUAL[0], tiers)
    assert (v.deliverable, v.primary_up, v.active_preference, v.preference_gap) == (True, True, 10, 0)
    # qmail picks one of the equal hosts at random and queues if it is the silent one: the least lucky order.
    assert deliveries(v) == {**every_sender("delivered", 10), "qmail": ("queued", -1)}


def test_one_tier_domain() -> None:
    v = verdict_of(ONE_TIER)
    assert (v.deliverable, v.primary_up, v.active_preference, v.preference_gap) == (True, True, 10, 0)


def test_implicit_mx_is_one_tier_at_preference_zero() -> None:
    tiers = build_tiers(*FALLBACK)
    assert [(t.preference, [e.name for e in t.exchanges]) for t in tiers] == [(0, ["fallback.lab.test"])]
    v = assess(FALLBACK[0], tiers)
    assert (v.deliverable, v.primary_up, v.active_preference) == (True, True, 0)
    assert deliveries(v) == every_sender("delivered", 0)


def test_null_mx_has_no_tiers_and_no_delivery() -> None:
    report = build_report(*NULL_MX, probe_seconds=0.5, finished_at=1.0)
    assert report.tiers == ()
    v = report.verdict
    assert (v.deliverable, v.primary_up, v.active_preference, v.preference_gap) == (False, False, -1, 0)
    assert deliveries(v) == every_sender("bounced")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (DnsStatus.NXDOMAIN, "bounced"),
        (DnsStatus.SERVFAIL, "queued"),
        (DnsStatus.TIMEOUT, "queued"),
        (DnsStatus.NODATA, "bounced"),
    ],
)
def test_statuses_without_mail_hosts_have_no_tiers(status: DnsStatus, outcome: str) -> None:
    resolution = Resolution("x.lab.test", status)
    report = build_report(resolution, {}, 0.1, 2.0)
    assert report.tiers == ()
    v = report.verdict
    assert (v.deliverable, v.primary_up, v.active_preference, v.preference_gap) == (False, False, -1, 0)
    assert deliveries(v) == every_sender(outcome)


def test_missing_result_becomes_skipped_with_the_resolved_family() -> None:
    resolution = Resolution(
        "cut.lab.test",
        DnsStatus.OK,
        mx_records=1,
        exchanges=(
            ResolvedExchange(
                "mx.cut.lab.test",
                10,
                (
                    ResolvedAddress("127.0.0.10", Family.IPV4, True),
                    ResolvedAddress("::1", Family.IPV6, True),
                    ResolvedAddress("10.255.255.1", Family.IPV4, False),
                ),
            ),
        ),
    )
    report = build_report(resolution, {"127.0.0.10": res("127.0.0.10")}, 3.0, 4.0)
    got = [(a.address, a.family, a.outcome, a.detail) for a in report.tiers[0].exchanges[0].addresses]
    assert got == [
        ("127.0.0.10", Family.IPV4, UP, ""),
        ("::1", Family.IPV6, Out.SKIPPED, NOT_PROBED),
        ("10.255.255.1", Family.IPV4, Out.SKIPPED, NOT_ALLOWED),
    ]
    assert (report.probe_seconds, report.finished_at) == (3.0, 4.0)


def test_shared_address_result_used_by_every_exchange() -> None:
    shared = res("127.0.0.10")
    d = domain("dup.lab.test", (10, "a.lab.test", (shared,)), (20, "b.lab.test", (shared,)))
    tiers = build_tiers(*d)
    assert tiers[0].exchanges[0].addresses[0] is shared
    assert tiers[1].exchanges[0].addresses[0] is shared


def test_unsorted_exchanges_are_grouped_ascending() -> None:
    d = domain(
        "order.lab.test",
        (30, "c.lab.test", (res("127.0.0.12"),)),
        (10, "b.lab.test", (res("127.0.0.11"),)),
        (10, "a.lab.test", (res("127.0.0.10"),)),
    )
    tiers = build_tiers(*d)
    assert [(t.preference, [e.name for e in t.exchanges]) for t in tiers] == [
        (10, ["a.lab.test", "b.lab.test"]),
        (30, ["c.lab.test"]),
    ]


@pytest.mark.parametrize(
    ("prefs", "gap"), [((10,), 0), ((10, 20), 10), ((5, 10, 50), 5), ((0, 0, 100), 100), ((), 0)]
)
def test_preference_gap(prefs: tuple[int, ...], gap: int) -> None:
    mx = [
        (p, f"mx{i}.lab.test", (res(f"127.0.0.{i + 1}", Out.CONNECTION_REFUSED),))
        for i, p in enumerate(prefs)
    ]
    v = verdict_of(domain("gap.lab.test", *mx))
    assert v.preference_gap == gap


STARTTLS_ALL = domain(
    "tls.lab.test",
    (10, "mx1.tls.lab.test", (res("127.0.0.10", starttls_advertised=True),)),
    (
        20,
        "mx2.tls.lab.test",
        (res("127.0.0.11", starttls_advertised=True), res("127.0.0.23", Out.CONNECTION_REFUSED)),
    ),
)
GREYLISTED = two_tiers("greylist.lab.test", res("127.0.0.20", Out.GREETING_4XX), res("127.0.0.11"))
GREYLISTED_BACKUP_DOWN = two_tiers(
    "greylist.lab.test", res("127.0.0.20", Out.GREETING_4XX), res("127.0.0.23", Out.CONNECTION_REFUSED)
)
SLOW_GREETING = domain(
    "tarpit.lab.test", (10, "mx.tarpit.lab.test", (res("127.0.0.40", greeting_seconds=4.5),))
)
HEALTHY_NAMES = ("MX1.healthy.lab.test.", "mx2.healthy.lab.test")


@pytest.mark.parametrize(
    ("scenario", "expectations", "met"),
    [
        (TWO_UP, Expectations(min_records=2), True),
        (TWO_UP, Expectations(min_records=3), False),
        (NULL_MX, Expectations(min_records=1), True),
        (TWO_UP, Expectations(min_tiers=2), True),
        (EQUAL, Expectations(min_tiers=2), False),
        (TWO_UP, Expectations(exchanges=HEALTHY_NAMES), True),
        (TWO_UP, Expectations(exchanges=("mx1.healthy.lab.test",)), False),
        (TWO_UP, Expectations(exchanges=(*HEALTHY_NAMES, "mx3.healthy.lab.test")), False),
        (STARTTLS_ALL, Expectations(starttls=True), True),
        (TWO_UP, Expectations(starttls=True), False),  # ::1 and mx2 accept without STARTTLS
        (ALL_DOWN, Expectations(starttls=True), False),  # nothing accepts: nothing proves STARTTLS
        (TWO_UP, Expectations(starttls=False), True),
        (NULL_MX, Expectations(null_mx=True), True),
        (TWO_UP, Expectations(null_mx=True), False),
        (TWO_UP, Expectations(null_mx=False), True),
        (NULL_MX, Expectations(null_mx=False), False),
        (FALLBACK, Expectations(fallback_to_a=True), True),
        (TWO_UP, Expectations(fallback_to_a=True), False),
        (TWO_UP, Expectations(fallback_to_a=False), True),
        (FALLBACK, Expectations(fallback_to_a=False), False),
        (PRIMARY_DOWN, Expectations(deliverable=True), True),
        (ALL_DOWN, Expectations(deliverable=True), False),
        (NULL_MX, Expectations(deliverable=False), True),
        (TWO_UP, Expectations(primary_up=True), True),
        (PRIMARY_DOWN, Expectations(primary_up=True), False),
        # nolisting: the primary refuses at TCP level, a backup accepts.
        (PRIMARY_DOWN, Expectations(nolisting=True), True),
        (TWO_UP, Expectations(nolisting=True), False),  # the primary accepts: the trick broke
        (ALL_DOWN, Expectations(nolisting=True), False),  # nothing accepts
        (GREYLISTED, Expectations(nolisting=True), False),  # a 421 is not a TCP refusal
        (ONE_TIER, Expectations(nolisting=True), False),  # no backup to move on to
        # greylisting: Postfix and Exim still deliver (they move on after a 4xx).
        (GREYLISTED, Expectations(greylisting=True), True),
        (TWO_UP, Expectations(greylisting=True), True),
        (GREYLISTED_BACKUP_DOWN, Expectations(greylisting=True), False),
        # max_greeting_seconds: every greeting within the bound (res() greets in 0 s unless told otherwise).
        (TWO_UP, Expectations(max_greeting_seconds=2.0), True),
        (SLOW_GREETING, Expectations(max_greeting_seconds=2.0), False),
        (SLOW_GREETING, Expectations(max_greeting_seconds=10.0), True),
    ],
)
def test_each_expectation_met_and_not_met(scenario: Scenario, expectations: Expectations, met: bool) -> None:
    (name,) = expectations.configured()
    assert verdict_of(scenario, expectations).expectations == {name: met}


def test_only_configured_expectations_are_reported() -> None:
    e = Expectations(min_records=1, deliverable=True, primary_up=False)
    assert e.configured() == {"min_records": 1, "deliverable": True, "primary_up": False}
    assert verdict_of(PRIMARY_DOWN, e).expectations == {
        "min_records": True,
        "deliverable": True,
        "primary_up": True,
    }
    assert Expectations().configured() == {}
    assert verdict_of(PRIMARY_DOWN, Expectations()).expectations == {}


def test_expected_exchanges_from_settings_are_a_tuple_of_normalized_names() -> None:
    """The settings edge normalizes the list (case, trailing dot, IDNA); the engine hands assess a tuple."""
    settings = load_settings(
        None,
        {
            "ehlo_name": "probe.lab.test",
            "domains": [
                {
                    "name": "healthy.lab.test",
                    "expect": {"exchanges": ["MX1.healthy.lab.test.", "mx2.healthy.lab.test"]},
                }
            ],
        },
    )
    e = expectations_of(settings.domains[0])
    assert e is not None and e.exchanges == ("mx1.healthy.lab.test", "mx2.healthy.lab.test")
    assert verdict_of(TWO_UP, e).expectations == {"exchanges": True}


def test_an_intended_setup_that_holds_is_no_primary_outage() -> None:
    """The verdict names the setup, so check and the status page call the domain ok, not degraded."""
    assert verdict_of(PRIMARY_DOWN, Expectations(nolisting=True)).intended_setup == "nolisting"
    assert verdict_of(GREYLISTED, Expectations(greylisting=True)).intended_setup == "greylisting"
    assert verdict_of(TWO_UP, Expectations(nolisting=True)).intended_setup == ""
    assert verdict_of(GREYLISTED_BACKUP_DOWN, Expectations(greylisting=True)).intended_setup == ""
    assert verdict_of(PRIMARY_DOWN).intended_setup == ""


@pytest.mark.parametrize(
    ("addresses", "broken"),
    [
        ((res("127.0.0.10"), res("::1", Out.CONNECTION_REFUSED)), True),
        ((res("127.0.0.10"), res("::1", Out.GREETING_TIMEOUT)), True),
        ((res("127.0.0.10"), res("::1")), False),  # both families accept
        ((res("127.0.0.10"), res("::1", Out.CONNECTION_REFUSED), res("::2")), False),  # one AAAA accepts
        ((res("127.0.0.10"),), False),  # no AAAA published
        ((res("127.0.0.23", Out.CONNECTION_REFUSED), res("::1", Out.CONNECTION_REFUSED)), False),  # all down
        ((res("127.0.0.10"), res("::1", Out.SKIPPED)), False),  # never tried: proves nothing
        # This host has no IPv6 route: says nothing about the peer.
        ((res("127.0.0.10"), res("::1", Out.CONNECTION_REFUSED, no_route_here=True)), False),
    ],
)
def test_ipv6_broken_per_exchange(addresses: tuple[AddressResult, ...], broken: bool) -> None:
    report = build_report(*domain("v6.lab.test", (10, "mx.v6.lab.test", addresses)), 1.0, 2.0)
    assert (M_IPV6 in report.tiers[0].exchanges[0].problems) is broken
    assert (M_IPV6 in report.verdict.misconfigurations) is broken
    assert report.verdict.ipv6_deliverable is any(a.up and a.family is Family.IPV6 for a in addresses)


M_IPV6 = Misconfiguration.IPV6_BROKEN
