"""What happens to a message sent now, per sending MTA: delivered (where), queued or bounced.

Part of the assessment stage: plain data in (the resolution and the tiers with each address's outcome), plain data
out. Each MTA is a ``Profile`` — a table of how it treats each kind of failure plus its limits — and one walk,
``deliver``, reads any profile; no branch per MTA. The tables follow the MTAs' source and documentation (README,
"What senders do", with the file and function of each rule) and are proven against real Postfix and Exim in
tests/test_sender_conformance.py.

The walk is the first attempt of a fresh message: no retry database (Exim's host retry records, qmail's tcpto) and
no queue history. Within one preference every MTA picks the order at random, so the walk takes the least lucky
order (failures that stop the search first, accepting addresses last): a domain where *some* messages bounce is
reported as bouncing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

from mx_exporter.model import (
    Delivery,
    DeliveryOutcome,
    DnsStatus,
    Family,
    Misconfiguration,
    Resolution,
    Sender,
    SmtpOutcome,
    Tier,
)


class Failure(Enum):
    """How one address failed, in the terms the MTAs decide on."""

    CONNECT = "could not connect"  # refused, timed out, or not probed (not allowed here)
    GREETING_TIMEOUT = "no greeting"
    GREETING_4XX = "4xx greeting"
    GREETING_5XX = "5xx greeting"
    EHLO_421 = "421 to EHLO"
    HELO_4XX = "EHLO and HELO refused with 4xx"
    HELO_5XX = "EHLO and HELO refused with 5xx"
    DROPPED = "connection dropped or garbage"


class Action(Enum):
    NEXT = "try the next address"
    QUEUE = "queue the message"
    BOUNCE = "bounce the message"


@dataclass(frozen=True)
class Step:
    """What a profile does after one failure; ``permanent`` decides the end when no address is left."""

    action: Action
    permanent: bool = False


NEXT, NEXT_5XX = Step(Action.NEXT), Step(Action.NEXT, permanent=True)
QUEUE, BOUNCE = Step(Action.QUEUE), Step(Action.BOUNCE, permanent=True)


@dataclass(frozen=True)
class Profile:
    """One sending MTA's rules, as data (README "What senders do" gives the source of each)."""

    sender: Sender
    steps: Mapping[Failure, Step]
    null_mx_mixed_bounces: bool  # "0 ." among real MX records: True = the whole set is a null MX
    ip_literal_usable: bool  # an MX target written as an IP address is used as that address
    families: frozenset[Family]
    max_addresses: int | None  # addresses tried per message and attempt; None = no limit
    one_per_preference_past_limit: bool = False  # past the limit, still one address of each higher preference


PROFILES: dict[Sender, Profile] = {
    Sender.POSTFIX: Profile(
        Sender.POSTFIX,
        steps={
            Failure.CONNECT: NEXT,
            Failure.GREETING_TIMEOUT: NEXT,
            Failure.GREETING_4XX: NEXT,
            Failure.GREETING_5XX: NEXT,  # smtp_skip_5xx_greeting = yes rewrites it to 4.x.x
            Failure.EHLO_421: NEXT,
            Failure.HELO_4XX: NEXT,
            Failure.HELO_5XX: BOUNCE,  # smtp_bulk_fail bounces any 5xx: "refused to talk to me"
            Failure.DROPPED: NEXT,
        },
        null_mx_mixed_bounces=True,  # dns_get_answer: one empty exchange discards the whole MX answer
        ip_literal_usable=True,  # smtp_addr_one: "Interpret a numerical name as an address"
        families=frozenset({Family.IPV4, Family.IPV6}),
        max_addresses=5,  # smtp_mx_address_limit (smtp_mx_session_limit counts only finished handshakes)
    ),
    Sender.EXIM: Profile(
        Sender.EXIM,
        steps={
            Failure.CONNECT: NEXT,
            Failure.GREETING_TIMEOUT: NEXT,
            Failure.GREETING_4XX: NEXT,
            Failure.GREETING_5XX: NEXT_5XX,  # smtp_setup_conn: host->next ? DEFER : code == '5' ? FAIL
            Failure.EHLO_421: NEXT,
            Failure.HELO_4XX: NEXT,
            Failure.HELO_5XX: NEXT_5XX,
            Failure.DROPPED: NEXT,
        },
        null_mx_mixed_bounces=False,  # "." gets no address and is skipped
        ip_literal_usable=False,  # allow_mx_to_ip = false
        families=frozenset({Family.IPV4, Family.IPV6}),
        max_addresses=5,  # hosts_max_try
        one_per_preference_past_limit=True,  # "a higher MX host exists and will be tried"
    ),
    Sender.QMAIL: Profile(
        Sender.QMAIL,
        steps={
            Failure.CONNECT: NEXT,  # the only failure qmail-remote moves on after
            Failure.GREETING_TIMEOUT: QUEUE,
            Failure.GREETING_4XX: QUEUE,
            Failure.GREETING_5XX: QUEUE,  # any non-220: "greeting failed" (Z, temporary)
            Failure.EHLO_421: QUEUE,
            Failure.HELO_4XX: QUEUE,
            Failure.HELO_5XX: QUEUE,  # "my name was rejected" (Z)
            Failure.DROPPED: QUEUE,
        },
        null_mx_mixed_bounces=False,
        ip_literal_usable=True,  # dns_ipplus: ip_scan of the exchange name
        families=frozenset({Family.IPV4}),  # qmail-remote asks T_A only, AF_INET sockets
        max_addresses=None,
    ),
}

_HARD_LOOKUPS = frozenset({DnsStatus.NXDOMAIN, DnsStatus.NODATA})


def failure(outcome: SmtpOutcome, ehlo_code: int, helo_code: int) -> Failure | None:
    """The failure an MTA would meet at this address; None when it would deliver there.

    A refused EHLO is followed by HELO (Postfix smtp_helo, Exim smtp_reap_ehlo; qmail only ever sends HELO), so
    an address that answers HELO with 2xx takes the message whatever it said to EHLO.
    """
    if outcome is SmtpOutcome.ACCEPTED:
        return None
    if outcome is SmtpOutcome.EHLO_FAILED:
        if ehlo_code == 421:
            return Failure.EHLO_421
        if 200 <= helo_code < 300:
            return None
        if 400 <= helo_code < 500:
            return Failure.HELO_4XX
        if 500 <= helo_code < 600:
            return Failure.HELO_5XX
        return Failure.DROPPED  # no reply to EHLO or HELO in time, or the connection closed
    return {
        SmtpOutcome.CONNECTION_REFUSED: Failure.CONNECT,
        SmtpOutcome.CONNECT_TIMEOUT: Failure.CONNECT,
        SmtpOutcome.SKIPPED: Failure.CONNECT,
        SmtpOutcome.GREETING_TIMEOUT: Failure.GREETING_TIMEOUT,
        SmtpOutcome.GREETING_4XX: Failure.GREETING_4XX,
        SmtpOutcome.GREETING_5XX: Failure.GREETING_5XX,
    }.get(outcome, Failure.DROPPED)


@dataclass(frozen=True)
class _Candidate:
    preference: int
    exchange: str
    address: str
    failure: Failure | None


def _severity(profile: Profile, candidate: _Candidate) -> int:
    """Sort key inside one preference: the least lucky order tries what stops the search first."""
    if candidate.failure is None:
        return 3
    step = profile.steps[candidate.failure]
    return 0 if step.action is not Action.NEXT else (1 if step.permanent else 2)


def _candidates(tiers: tuple[Tier, ...], profile: Profile) -> Iterator[_Candidate]:
    for tier in tiers:
        found = [
            _Candidate(
                tier.preference, exchange.name, a.address, failure(a.outcome, a.ehlo_code, a.helo_code)
            )
            for exchange in tier.exchanges
            if profile.ip_literal_usable or Misconfiguration.IP_LITERAL_TARGET not in exchange.problems
            for a in exchange.addresses
            if a.family in profile.families
        ]
        yield from sorted(found, key=lambda c: _severity(profile, c))


def _no_addresses(tiers: tuple[Tier, ...], profile: Profile) -> Delivery:
    exchanges = [e for t in tiers for e in t.exchanges]
    if any(e.lookup not in _HARD_LOOKUPS and e.lookup is not DnsStatus.OK for e in exchanges):
        return Delivery(DeliveryOutcome.QUEUED, reason="an exchange's address lookup failed temporarily")
    if exchanges and all(Misconfiguration.IP_LITERAL_TARGET in e.problems for e in exchanges):
        return Delivery(DeliveryOutcome.BOUNCED, reason="every MX target is an IP address written as a name")
    families = "/".join(sorted(f.value for f in profile.families))
    return Delivery(DeliveryOutcome.BOUNCED, reason=f"no MX host has an address ({families})")


def _dns_outcome(resolution: Resolution, profile: Profile) -> Delivery | None:
    """The outcome DNS alone decides, before any address is tried; None when there are hosts to try."""
    status = resolution.status
    if status is DnsStatus.NXDOMAIN:
        return Delivery(DeliveryOutcome.BOUNCED, reason="the domain does not exist (NXDOMAIN)")
    if status in (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT, DnsStatus.ERROR):
        return Delivery(
            DeliveryOutcome.QUEUED, reason=f"the MX lookup failed ({status.value}): retried later"
        )
    if status is DnsStatus.NODATA and not resolution.fallback_to_a:
        return Delivery(DeliveryOutcome.BOUNCED, reason="no MX records and no A/AAAA")
    if resolution.null_mx:
        return Delivery(DeliveryOutcome.BOUNCED, reason="null MX: the domain accepts no mail")
    mixed = Misconfiguration.NULL_MX_MIXED in resolution.misconfigurations
    if mixed and profile.null_mx_mixed_bounces:
        return Delivery(
            DeliveryOutcome.BOUNCED, reason="a null MX (0 .) among the MX records: taken as null MX"
        )
    return None


def deliver(resolution: Resolution, tiers: tuple[Tier, ...], profile: Profile) -> Delivery:
    """Walk the hosts like ``profile``'s MTA on a message's first attempt; ``tiers`` ascending by preference."""
    decided = _dns_outcome(resolution, profile)
    if decided is not None:
        return decided
    tried, skipped, last_preference = 0, 0, -1
    last: Step | None = None
    last_failure: Failure | None = None
    for candidate in _candidates(tiers, profile):
        limit = profile.max_addresses
        # Past the limit only Exim goes on, and only to one address of each higher preference.
        higher = profile.one_per_preference_past_limit and candidate.preference > last_preference
        if limit is not None and tried >= limit and not higher:
            skipped += 1
            continue
        tried, last_preference = tried + 1, candidate.preference
        if candidate.failure is None:
            where = f"pref {candidate.preference} ({candidate.exchange}, {candidate.address})"
            return Delivery(
                DeliveryOutcome.DELIVERED, candidate.preference, candidate.exchange, candidate.address, where
            )
        last, last_failure = profile.steps[candidate.failure], candidate.failure
        at = f"{candidate.failure.value} at {candidate.exchange} ({candidate.address})"
        if last.action is Action.BOUNCE:
            return Delivery(DeliveryOutcome.BOUNCED, reason=at)
        if last.action is Action.QUEUE:
            return Delivery(DeliveryOutcome.QUEUED, reason=f"{at}: retried later, no other MX tried")
    if last is None or last_failure is None:
        return _no_addresses(tiers, profile)
    if skipped:
        return Delivery(
            DeliveryOutcome.QUEUED, reason=f"address limit ({tried} tried, {skipped} left): retried later"
        )
    if last.permanent:
        return Delivery(DeliveryOutcome.BOUNCED, reason=f"{last_failure.value} at the last host")
    return Delivery(DeliveryOutcome.QUEUED, reason=f"every host failed, the last with {last_failure.value}")


def deliveries(resolution: Resolution, tiers: tuple[Tier, ...]) -> dict[Sender, Delivery]:
    """Every profile's outcome, in ``Sender`` order."""
    return {sender: deliver(resolution, tiers, PROFILES[sender]) for sender in Sender}
