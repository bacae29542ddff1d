"""Pure transport-security verdicts: DANE per address and per domain, MTA-STS and TLS-RPT per domain.

Assessment calls these once per report (assess.build_report); the collector, the status page and `check` only
read the results. No I/O; ``now`` comes from the caller (DANE-TA chains are verified at the probe's time).
"""

from __future__ import annotations

from collections.abc import Mapping

from mx_exporter.dane import address_state, usable
from mx_exporter.model import (
    AddressResult,
    DaneAddress,
    DaneState,
    DomainDane,
    PolicyMode,
    PolicyState,
    StsVerdict,
    Tier,
    TlsaLookup,
    TlsRptVerdict,
)
from mx_exporter.mtasts import Policy, uncovered
from mx_exporter.transport import StsLookup, TransportLookup


def exchange_dane(
    tlsa: TlsaLookup | None, addresses: tuple[AddressResult, ...], exchange: str, now: float
) -> tuple[DaneAddress, ...]:
    """Each address's DANE state for this exchange name (addresses with nothing to say are left out)."""
    if tlsa is None:
        return ()
    states = (address_state(tlsa, result, exchange, now) for result in addresses)
    return tuple(state for state in states if state is not None)


def domain_dane(tiers: tuple[Tier, ...]) -> DomainDane | None:
    """DANE applies when some exchange has a secure usable TLSA RRset; valid when every accepting address of
    those exchanges matches. None when DANE was not evaluated for any exchange."""
    exchanges = [e for t in tiers for e in t.exchanges if e.tlsa is not None]
    if not exchanges:
        return None
    applying = [e for e in exchanges if e.tlsa_usable]
    bogus = [e.name for e in exchanges if e.tlsa is not None and e.tlsa.state == "bogus"]
    failing = [
        f"{e.name} {d.address}" for e in applying for d in e.dane if d.state is DaneState.SECURE_NO_MATCH
    ]
    said = [f"no TLSA match: {', '.join(failing)}"] if failing else []
    said += [f"DNSSEC bogus: {', '.join(bogus)}"] if bogus else []
    if not said:
        said = [
            "every accepting address matches its TLSA records"
            if applying
            else "no exchange publishes secure TLSA records: DANE does not apply"
        ]
    return DomainDane(applies=bool(applying), valid=not failing, bogus=bool(bogus), detail="; ".join(said))


def usable_records(tlsa: TlsaLookup | None) -> int:
    """Records of a secure TLSA RRset usable for SMTP; 0 when insecure, bogus or not looked up."""
    if tlsa is None or tlsa.state != "secure":
        return 0
    return sum(1 for r in tlsa.records if usable(r))


def sts_verdict(sts: StsLookup, tiers: tuple[Tier, ...], deliverable: bool) -> StsVerdict:
    """The MTA-STS verdict: record and fetch state, and what a sender applying the policy in force would do."""
    fetch = sts.fetch
    state = sts.record.state
    reason = sts.record.reason
    if state is PolicyState.VALID and fetch is not None:
        state, reason = fetch.state, fetch.reason
    policy = sts.policy
    if policy is None:
        if state is PolicyState.VALID:  # a record but no policy in force cannot happen; say so plainly
            state, reason = PolicyState.UNREACHABLE, "no policy fetched yet"
        return StsVerdict(state=state, reason=reason, deliverable=deliverable)
    if state is PolicyState.VALID and fetch is None:
        reason = f"policy id {sts.record.id} cached"
    elif state is not PolicyState.VALID:
        reason = f"{reason}; the cached policy stays in force"
    outside = uncovered(policy, (e.name for t in tiers for e in t.exchanges))
    return StsVerdict(
        state=state,
        reason=reason,
        mode=policy.mode,
        max_age=policy.max_age,
        uncovered=outside,
        certificates_valid=_certificates_valid(tiers),
        deliverable=_enforced_deliverable(policy, tiers)
        if policy.mode is PolicyMode.ENFORCE
        else deliverable,
    )


def _covered(policy: Policy, exchange: str) -> bool:
    return not uncovered(policy, (exchange,))


def _certificate_ok(result: AddressResult) -> bool:
    """A certificate valid for the exchange name (RFC 8461 §4.2), as assessment judged it per exchange
    (``TlsFacts.cert_valid``). STARTTLS offered but not tried (smtp.starttls: false) is not held against the
    address: there is nothing to judge."""
    if result.tls is None:
        return result.starttls_advertised
    return result.tls.cert_valid is True


def _certificates_valid(tiers: tuple[Tier, ...]) -> bool:
    """Every accepting address presented a certificate valid for its exchange name."""
    return all(_certificate_ok(a) for t in tiers for e in t.exchanges for a in e.addresses if a.up)


def _enforced_deliverable(policy: Policy, tiers: tuple[Tier, ...]) -> bool:
    """An enforcing sender delivers only to an exchange the policy names, over TLS with a certificate valid for
    that name (RFC 8461 §4.1, §4.2, §5)."""
    return any(
        a.up and _certificate_ok(a)
        for t in tiers
        for e in t.exchanges
        if _covered(policy, e.name)
        for a in e.addresses
    )


def tls_rpt_verdict(transport: TransportLookup) -> TlsRptVerdict | None:
    record = transport.tls_rpt
    if record is None:
        return None
    return TlsRptVerdict(valid=record.valid, reason=record.reason, rua=tuple(record.rua))


def tlsa_of(transport: TransportLookup | None) -> Mapping[str, TlsaLookup]:
    return {} if transport is None else transport.tlsa
