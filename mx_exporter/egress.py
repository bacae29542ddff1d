"""Can this exporter reach port 25 at all? Canaries the operator trusts, and a heuristic when there are none.

Clouds and Kubernetes clusters often block outbound port 25: then every domain "goes down" at once and the
monitor pages about its own network. Each refresh first probes the configured canaries (``egress.canaries``,
host:port) politely — connect, greeting, QUIT, the same session as for any address — and while none of them can
even be connected to, verdicts are inconclusive: the status page and ``check`` say so, and the shipped alerts stay
quiet except ``MxExporterEgressBlocked``. ``judge`` and ``suspected`` are pure.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import dns.name

from mx_exporter.dnsquery import DnsClient
from mx_exporter.model import AddressResult, Family, ResolvedAddress, SmtpOutcome
from mx_exporter.names import Canary
from mx_exporter.smtp import probe_address
from mx_exporter.smtp_wire import SmtpPolicy

SUSPECT_SHARE = 0.9  # without canaries: this share of distinct addresses failing with connect timeouts…
SUSPECT_MIN_ADDRESSES = 10  # …out of at least this many, in one refresh
BLOCKED_TEXT = "cannot judge: outbound port 25 blocked from this exporter"


class EgressState(StrEnum):
    """How the last canary check ended (``mx_exporter_egress_state`` is one 0/1 series per member)."""

    UP = "up"  # some canary address got past the TCP connect
    CONNECT_TIMEOUT = "connect_timeout"  # every canary address timed out connecting: typically dropped
    CONNECTION_REFUSED = "connection_refused"  # refused or unreachable: a firewall that rejects, or no route
    UNRESOLVED = "unresolved"  # no canary name had an address


@dataclass(frozen=True)
class Egress:
    state: EgressState
    detail: str  # one human line: which canary answered, or what every one did

    @property
    def up(self) -> bool:
        return self.state is EgressState.UP


# Outcomes where a TCP connection was made: egress works, whatever the peer then said.
_CONNECTED = frozenset(
    {
        SmtpOutcome.ACCEPTED,
        SmtpOutcome.GREETING_TIMEOUT,
        SmtpOutcome.GREETING_4XX,
        SmtpOutcome.GREETING_5XX,
        SmtpOutcome.EHLO_FAILED,
        SmtpOutcome.PROTOCOL_ERROR,
    }
)


def judge(results: Sequence[tuple[Canary, Sequence[AddressResult]]]) -> Egress:
    """Up when any canary address was connected to; otherwise the most telling failure."""
    tried = [(c, r) for c, rs in results for r in rs]
    for canary, result in tried:
        if result.outcome in _CONNECTED:
            return Egress(EgressState.UP, f"{canary.host}:{canary.port} ({result.address}): {result.detail}")
    if not tried:
        names = ", ".join(f"{c.host}:{c.port}" for c, _ in results)
        return Egress(EgressState.UNRESOLVED, f"no canary has an address: {names}")
    said = "; ".join(f"{c.host}:{c.port} ({r.address}): {r.detail}" for c, r in tried[:4])
    if all(r.outcome is SmtpOutcome.CONNECT_TIMEOUT for _, r in tried):
        return Egress(EgressState.CONNECT_TIMEOUT, said)
    return Egress(EgressState.CONNECTION_REFUSED, said)


def suspected(results: Iterable[AddressResult]) -> bool:
    """Without canaries: nearly every distinct address of a refresh timed out connecting (no verdict changes)."""
    outcomes = [r.outcome for r in results if r.outcome is not SmtpOutcome.SKIPPED]
    if len(outcomes) < SUSPECT_MIN_ADDRESSES:
        return False
    timeouts = sum(1 for o in outcomes if o is SmtpOutcome.CONNECT_TIMEOUT)
    return timeouts >= SUSPECT_SHARE * len(outcomes)


async def _addresses(canary: Canary, resolver: DnsClient, lifetime: float) -> list[ResolvedAddress]:
    try:
        ip = ipaddress.ip_address(canary.host)
    except ValueError:
        name = dns.name.from_text(canary.host + ".")
        replies = await asyncio.gather(*(resolver.query(name, t, lifetime) for t in ("A", "AAAA")))
        found = [(Family.IPV4, a) for a in replies[0].addresses] + [
            (Family.IPV6, a) for a in replies[1].addresses
        ]
        return [ResolvedAddress(a, f, True) for f, a in found[:4]]
    return [ResolvedAddress(str(ip), Family.IPV4 if ip.version == 4 else Family.IPV6, True)]


async def check_egress(
    canaries: Sequence[Canary], resolver: DnsClient, dns_timeout: float, policy: SmtpPolicy
) -> Egress:
    """Probe every canary address (the operator trusts them: no SSRF guard), all at once, bounded by the policy."""

    async def one(canary: Canary) -> tuple[Canary, list[AddressResult]]:
        addresses = await _addresses(canary, resolver, dns_timeout)
        each = replace(policy, port=canary.port, starttls=False)
        return canary, list(await asyncio.gather(*(probe_address(a, each) for a in addresses)))

    return judge(await asyncio.gather(*(one(c) for c in canaries)))
