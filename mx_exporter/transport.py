"""The transport-security lookups of one domain: TLSA per exchange (DANE), MTA-STS record and policy, TLS-RPT.

Runs beside the SMTP sessions, after resolution, with the same DNS client, limit and cycle cache (dnsask.Asker).
Nothing here judges: it gathers what DNS and the policy host say, as plain data, and assessment decides.

- **TLSA** (RFC 7672 §2.2): asked only when the exchange's address records came back DNSSEC-validated
  (``ResolvedExchange.secure``, the resolver's AD bit); otherwise DANE does not apply ("insecure"). The base name is
  the exchange name as the MX record gives it (a CNAME-expanded base name, RFC 7672 §2.2.3, is not tried). A
  SERVFAIL asked again with CD that then answers is "bogus"; a lookup that fails either way is "bogus" too, with
  the reason: for a DANE sender both make the host unusable (RFC 7672 §2.1.1).
- **MTA-STS** (RFC 8461): the ``_mta-sts`` TXT record every refresh (cheap, cached per cycle); the policy over
  HTTPS only when ``policy_fetch.PolicyCache`` says it is due (no policy yet, a new id, or older than its max_age). A
  failed fetch keeps the cached policy in force, as senders do (RFC 8461 §5.1).
- **TLS-RPT** (RFC 8460 §3): the ``_smtp._tls`` TXT record.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mx_exporter.dane import parse_tlsa
from mx_exporter.dnsask import Asker
from mx_exporter.dnswire import Reply
from mx_exporter.model import DnsStatus, PolicyState, Resolution, ResolvedExchange, TlsaLookup, TlsaRecord
from mx_exporter.mtasts import Policy, StsRecord, TlsRptRecord, parse_sts_record, parse_tlsrpt_record
from mx_exporter.policy_fetch import FetchResult, PolicyCache, fetch_policy

MAX_TLSA_RECORDS = 32  # records kept from one RRset (real sets hold one to four)


@dataclass(frozen=True)
class TransportPolicy:
    """What to look up for one domain; validated in settings."""

    dane: bool = False  # resolver.dnssec is require and DANE is on for the domain
    mta_sts: bool = False  # MTA-STS and TLS-RPT are on for the domain
    ca_file: str | None = None  # trusted roots for the policy fetch; None: the system store
    fetch_timeout: float = 10.0
    max_policy_bytes: int = 64 * 1024


@dataclass(frozen=True)
class StsLookup:
    record: StsRecord
    fetch: FetchResult | None = None  # this refresh's fetch; None when none was due (or no record)
    policy: Policy | None = None  # the policy in force: fetched now, or cached under the same id


@dataclass(frozen=True)
class TransportLookup:
    tlsa: dict[str, TlsaLookup]  # by exchange name; empty when DANE is off
    sts: StsLookup | None = None  # None when MTA-STS is off
    tls_rpt: TlsRptRecord | None = None  # None when MTA-STS (and with it TLS-RPT) is off


async def lookup_transport(
    resolution: Resolution, asker: Asker, policy: TransportPolicy, cache: PolicyCache
) -> TransportLookup:
    """Everything the transport checks need for one domain; never raises for DNS or peer behaviour."""
    tlsa_task = asyncio.gather(*(_tlsa(e, asker) for e in resolution.exchanges)) if policy.dane else None
    sts: StsLookup | None = None
    tls_rpt: TlsRptRecord | None = None
    if policy.mta_sts and resolution.status in (DnsStatus.OK, DnsStatus.NODATA):
        sts, tls_rpt = await asyncio.gather(
            _mta_sts(resolution.domain, asker, policy, cache), _tls_rpt(resolution.domain, asker)
        )
    tlsa: dict[str, TlsaLookup] = {}
    if tlsa_task is not None:
        for exchange, found in zip(resolution.exchanges, await tlsa_task, strict=True):
            if found is not None:
                tlsa[exchange.name] = found
    return TransportLookup(tlsa=tlsa, sts=sts, tls_rpt=tls_rpt)


# --- DANE


async def _tlsa(exchange: ResolvedExchange, asker: Asker) -> TlsaLookup | None:
    """The exchange's TLSA RRset as a DANE sender sees it; None when it has no address and none is bogus."""
    if not exchange.addresses:
        if exchange.lookup is DnsStatus.SERVFAIL and await _bogus(asker, exchange.name, "A"):
            return TlsaLookup("bogus", detail="its address records fail DNSSEC validation")
        return None
    if not exchange.secure:
        return TlsaLookup("insecure", detail="address records not DNSSEC-validated: no TLSA lookup")
    name = f"_25._tcp.{exchange.name}"
    reply = await asker.ask(name, "TLSA")
    if reply.result == "answer":
        if not reply.secure:
            return TlsaLookup("insecure", detail="TLSA RRset not DNSSEC-validated")
        try:
            records = tuple(parse_tlsa(r) for r in reply.records[:MAX_TLSA_RECORDS])
        except ValueError as exc:
            return TlsaLookup("bogus", detail=f"TLSA RRset unreadable: {exc}")
        return TlsaLookup("secure", records=records, detail=_records_detail(records))
    if reply.result in ("nxdomain", "nodata"):
        if reply.secure:
            return TlsaLookup("secure", detail="secure: no TLSA records")
        return TlsaLookup("insecure", detail="no TLSA records, and the denial is not DNSSEC-validated")
    if reply.result == "servfail" and await _bogus(asker, name, "TLSA"):
        return TlsaLookup("bogus", detail="TLSA RRset fails DNSSEC validation")
    return TlsaLookup("bogus", detail=f"TLSA lookup failed ({reply.result}): {reply.detail}"[:160])


async def _bogus(asker: Asker, name: str, rdtype: str) -> bool:
    """A SERVFAIL that answers with checking disabled: the resolver rejected the answer's signatures."""
    again = await asker.ask(name, rdtype, checking_disabled=True)
    return again.result in ("answer", "nodata", "nxdomain")


def _records_detail(records: tuple[TlsaRecord, ...]) -> str:
    return f"secure: {len(records)} TLSA record{'' if len(records) == 1 else 's'}"


# --- MTA-STS and TLS-RPT


def _txt(reply: Reply) -> list[str]:
    return [r.decode("ascii", "replace") for r in reply.records]


async def _mta_sts(domain: str, asker: Asker, policy: TransportPolicy, cache: PolicyCache) -> StsLookup:
    reply = await asker.ask(f"_mta-sts.{domain}", "TXT")
    if reply.result not in ("answer", "nodata", "nxdomain"):
        reason = f"_mta-sts.{domain} TXT lookup failed ({reply.result})"
        return StsLookup(
            StsRecord(PolicyState.UNREACHABLE, "", reason), policy=_cached(cache, domain, time.time())
        )
    record = parse_sts_record(_txt(reply))
    if record.state is not PolicyState.VALID:
        return StsLookup(record)  # no record (or a broken one): senders apply no policy
    now = time.time()
    if not cache.due(domain, record.id, now):
        return StsLookup(record, policy=_cached(cache, domain, now))
    addresses = await asker.addresses(f"mta-sts.{domain}")
    fetch = await fetch_policy(
        domain,
        addresses,
        ca_file=policy.ca_file,
        timeout=policy.fetch_timeout,
        max_bytes=policy.max_policy_bytes,
    )
    cache.store(domain, record.id, fetch, now)
    return StsLookup(record, fetch=fetch, policy=_cached(cache, domain, now))


def _cached(cache: PolicyCache, domain: str, now: float) -> Policy | None:
    """The policy in force: the last valid one, unless past its max_age."""
    entry = cache.get(domain, now)
    return None if entry is None else entry.policy


async def _tls_rpt(domain: str, asker: Asker) -> TlsRptRecord:
    reply = await asker.ask(f"_smtp._tls.{domain}", "TXT")
    if reply.result not in ("answer", "nodata", "nxdomain"):
        return TlsRptRecord(False, (), f"_smtp._tls.{domain} TXT lookup failed ({reply.result})")
    return parse_tlsrpt_record(_txt(reply))
