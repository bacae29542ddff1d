"""Pure verdicts: turn a resolution and per-address SMTP results into a ``DomainReport``.

No I/O and no clock: the engine passes in the probe's wall time and finish time, so every function here is
plain data in, plain data out, and tests exercise it with literal values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from itertools import groupby

from mx_exporter.assess_transport import (
    domain_dane,
    exchange_dane,
    sts_verdict,
    tls_rpt_verdict,
    tlsa_of,
    usable_records,
)
from mx_exporter.changes import track
from mx_exporter.model import (
    AddressResult,
    Delivery,
    DeliveryOutcome,
    DomainReport,
    Exchange,
    Family,
    Misconfiguration,
    RecordSet,
    Resolution,
    ResolvedExchange,
    Sender,
    SmtpOutcome,
    Tier,
    TlsaLookup,
    Verdict,
)
from mx_exporter.names import normalize_name
from mx_exporter.senders import deliveries
from mx_exporter.tls import cert_valid_for
from mx_exporter.transport import TransportLookup

TCP_REFUSED = frozenset({SmtpOutcome.CONNECTION_REFUSED, SmtpOutcome.CONNECT_TIMEOUT})
NOT_PROBED = "not probed"
NOT_ALLOWED = "not probed: address is not global unicast and not in allow_networks"


@dataclass(frozen=True)
class Expectations:
    """What the operator expects of one domain; ``None`` = not configured (no series is emitted for it).

    Plain data: the settings model (``ExpectSettings``) validated every value.
    """

    min_records: int | None = None
    min_tiers: int | None = None
    exchanges: tuple[str, ...] | None = None  # the exact set of exchange names (order-free, case-free)
    starttls: bool | None = None  # every accepting address advertises STARTTLS (and at least one accepts)
    null_mx: bool | None = None  # the domain must (True) / must not (False) be a null MX
    fallback_to_a: bool | None = None
    deliverable: bool | None = None
    primary_up: bool | None = None
    # Intended setups (issue 9): only ``True`` or unset.
    nolisting: bool | None = None  # the most preferred tier refuses at TCP level on purpose, a backup accepts
    greylisting: bool | None = (
        None  # the primary may answer 4xx to first contact; Postfix and Exim still deliver
    )
    max_greeting_seconds: float | None = None  # every greeting arrives within this (a tarpit is degraded)

    @property
    def intended_primary_outage(self) -> bool:
        """The primary is meant not to accept (nolisting, greylisting): its outage is not an alert."""
        return bool(self.nolisting or self.greylisting)

    def configured(self) -> dict[str, object]:
        """Name -> expected value for every expectation that is set, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _exchange(
    resolved: ResolvedExchange, results: Mapping[str, AddressResult], tlsa: TlsaLookup | None, now: float
) -> Exchange:
    """Attach each address's shared result; an address the probe never reached counts as skipped."""
    addresses: list[AddressResult] = []
    seen: set[str] = set()
    for ra in resolved.addresses:
        if ra.address in seen:  # defensive: one series per address, even if DNS repeated it
            continue
        seen.add(ra.address)
        result = results.get(ra.address)
        if result is None:
            detail = NOT_PROBED if ra.allowed else NOT_ALLOWED
            result = AddressResult(ra.address, ra.family, SmtpOutcome.SKIPPED, detail=detail)
        elif result.tls is not None:
            # One session serves every name pointing at the address; the certificate is judged per name.
            tls = replace(result.tls, cert_valid=cert_valid_for(resolved.name, result.tls))
            result = replace(result, tls=tls)
        addresses.append(result)
    problems = resolved.problems
    if ipv6_broken(addresses):
        problems = problems | {Misconfiguration.IPV6_BROKEN}
    return Exchange(
        name=resolved.name,
        preference=resolved.preference,
        addresses=tuple(addresses),
        cname_target=resolved.cname_target,
        problems=problems,
        lookup=resolved.lookup,
        tlsa=tlsa,
        dane=exchange_dane(tlsa, tuple(addresses), resolved.name, now),
        tlsa_usable=usable_records(tlsa),
    )


def ipv6_broken(addresses: list[AddressResult]) -> bool:
    """The exchange publishes AAAA, none of them accepts, while one of its A addresses does: IPv6-capable senders
    (Exim tries IPv6 first, Postfix picks either by default) are delayed or fail. Addresses never tried (not
    allowed, not probed) or unreachable only because this host has no IPv6 route prove nothing."""
    v6 = [a for a in addresses if a.family is Family.IPV6]
    tried = [a for a in v6 if a.outcome is not SmtpOutcome.SKIPPED and not a.no_route_here]
    v4_up = any(a.up for a in addresses if a.family is Family.IPV4)
    return bool(tried) and len(tried) == len(v6) and not any(a.up for a in v6) and v4_up


def build_tiers(
    resolution: Resolution,
    results: Mapping[str, AddressResult],
    tlsa: Mapping[str, TlsaLookup] | None = None,
    now: float = 0.0,
) -> tuple[Tier, ...]:
    """Group the exchanges by preference, ascending; exchanges keep name order inside a tier.

    ``tlsa``: each exchange's TLSA lookup (transport.py), matched per address at ``now`` (unix seconds).

    The implicit MX (fallback to A/AAAA) arrives as one exchange at preference 0 and is treated like any
    other. Null MX, NXDOMAIN and the other statuses without exchanges give no tiers.
    """
    if resolution.null_mx:
        return ()
    ordered = sorted(resolution.exchanges, key=lambda e: (e.preference, e.name))
    tiers: list[Tier] = []
    for preference, group in groupby(ordered, key=lambda e: e.preference):
        exchanges: list[Exchange] = []
        names: set[str] = set()
        for resolved in group:
            if resolved.name in names:  # defensive: the resolver lists each name once
                continue
            names.add(resolved.name)
            exchanges.append(_exchange(resolved, results, (tlsa or {}).get(resolved.name), now))
        tiers.append(Tier(preference=preference, exchanges=tuple(exchanges)))
    return tuple(tiers)


def _addresses(tier: Tier) -> list[AddressResult]:
    return [a for e in tier.exchanges for a in e.addresses]


def _preference_gap(tiers: tuple[Tier, ...]) -> int:
    prefs = sorted({t.preference for t in tiers})
    return prefs[1] - prefs[0] if len(prefs) >= 2 else 0


def _starttls_met(tiers: tuple[Tier, ...]) -> bool:
    accepting = [a for t in tiers for a in _addresses(t) if a.up]
    return bool(accepting) and all(a.starttls_advertised for a in accepting)


def nolisting_holds(tiers: tuple[Tier, ...]) -> bool:
    """Nolisting as intended: every address of the most preferred tier refuses or drops the TCP connection (a
    sender moves on at once), and a less preferred tier accepts."""
    if len(tiers) < 2:
        return False
    primary = _addresses(tiers[0])
    return bool(primary) and all(a.outcome in TCP_REFUSED for a in primary) and any(t.up for t in tiers[1:])


def _greetings_within(tiers: tuple[Tier, ...], limit: float) -> bool:
    """Every address that greeted did so within ``limit`` seconds (one that never greeted is another alert)."""
    return all(
        a.greeting_seconds <= limit for t in tiers for a in _addresses(t) if a.greeting_seconds is not None
    )


def _expectations_met(
    resolution: Resolution,
    tiers: tuple[Tier, ...],
    expectations: Expectations,
    deliverable: bool,
    primary_up: bool,
    sent: Mapping[Sender, Delivery],
) -> dict[str, bool]:
    """Each configured expectation -> whether it holds."""
    e = expectations
    actual_names = {normalize_name(x.name) for x in resolution.exchanges}
    holds: dict[str, bool] = {
        "min_records": e.min_records is not None and resolution.mx_records >= e.min_records,
        "min_tiers": e.min_tiers is not None and len(tiers) >= e.min_tiers,
        "exchanges": e.exchanges is not None and {normalize_name(n) for n in e.exchanges} == actual_names,
        "starttls": _starttls_met(tiers) == e.starttls,
        "null_mx": resolution.null_mx == e.null_mx,
        "fallback_to_a": resolution.fallback_to_a == e.fallback_to_a,
        "deliverable": deliverable == e.deliverable,
        "primary_up": primary_up == e.primary_up,
        "nolisting": nolisting_holds(tiers),
        # Greylisting is no outage while the senders that move on after a 4xx (Postfix, Exim) still deliver.
        "greylisting": all(
            sent[s].outcome is DeliveryOutcome.DELIVERED for s in (Sender.POSTFIX, Sender.EXIM) if s in sent
        ),
        "max_greeting_seconds": e.max_greeting_seconds is not None
        and _greetings_within(tiers, e.max_greeting_seconds),
    }
    return {name: holds[name] for name in e.configured()}


def assess(
    resolution: Resolution,
    tiers: tuple[Tier, ...],
    expectations: Expectations | None = None,
    transport: TransportLookup | None = None,
) -> Verdict:
    """The domain's verdict; ``tiers`` must be ascending by preference, as build_tiers returns them."""
    up_tiers = [t for t in tiers if t.up]
    deliverable = bool(up_tiers)
    primary_up = bool(tiers) and tiers[0].up
    sent = deliveries(resolution, tiers)
    met = (
        _expectations_met(resolution, tiers, expectations, deliverable, primary_up, sent)
        if expectations is not None
        else {}
    )
    return Verdict(
        deliverable=deliverable,
        primary_up=primary_up,
        active_preference=up_tiers[0].preference if up_tiers else -1,
        preference_gap=_preference_gap(tiers),
        deliveries=sent,
        misconfigurations=resolution.misconfigurations.union(
            *(e.problems for t in tiers for e in t.exchanges)
        ),
        expectations=met,
        intended_setup=next((name for name in ("nolisting", "greylisting") if met.get(name)), ""),
        ipv6_deliverable=any(a.up and a.family is Family.IPV6 for t in tiers for a in _addresses(t)),
        dane=domain_dane(tiers),
        mta_sts=(
            sts_verdict(transport.sts, tiers, deliverable)
            if transport is not None and transport.sts is not None
            else None
        ),
        tls_rpt=tls_rpt_verdict(transport) if transport is not None else None,
    )


def build_report(
    resolution: Resolution,
    results: Mapping[str, AddressResult],
    probe_seconds: float,
    finished_at: float,
    expectations: Expectations | None = None,
    previous_records: RecordSet | None = None,
    transport: TransportLookup | None = None,
) -> DomainReport:
    """Resolution + shared per-address results (+ the transport lookups) -> the finished report the collector
    and status page read."""
    tiers = build_tiers(resolution, results, tlsa_of(transport), finished_at)
    return DomainReport(
        resolution=resolution,
        tiers=tiers,
        verdict=assess(resolution, tiers, expectations, transport),
        probe_seconds=probe_seconds,
        finished_at=finished_at,
        records=track(previous_records, resolution, finished_at),
    )
