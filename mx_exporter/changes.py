"""MX change tracking: the domain's record set, a short stable digest of it, and when this process saw it change.

Part of the assessment stage and pure: ``track`` takes the previous ``RecordSet`` (the engine keeps the last one
per watched domain) and a new resolution and returns the next. An MX change nobody announced is behind many
outages, so the set covers what a sender acts on: each MX record (preference and exchange) and each exchange's
addresses, or the null MX, the implicit MX's addresses, NXDOMAIN / NODATA. A temporary DNS failure says nothing
about the set: the previous one is kept.
"""

from __future__ import annotations

import hashlib

from mx_exporter.model import DnsStatus, RecordSet, Resolution

DIGEST_LENGTH = 12  # hex characters of SHA-256: one series per domain, collisions irrelevant at this scale
_TEMPORARY = frozenset({DnsStatus.SERVFAIL, DnsStatus.TIMEOUT, DnsStatus.ERROR})


def members(resolution: Resolution) -> tuple[str, ...] | None:
    """The record set a sender acts on, sorted; None after a temporary DNS failure (nothing is known)."""
    if resolution.status in _TEMPORARY:
        return None
    if resolution.status is DnsStatus.NXDOMAIN:
        return ("nxdomain",)
    if resolution.null_mx:
        return ("0 .",)
    found: set[str] = set()
    for exchange in resolution.exchanges:
        if not resolution.fallback_to_a:
            found.add(f"{exchange.preference} {exchange.name}")
        found.update(f"{exchange.name} {a.address}" for a in exchange.addresses)
    if resolution.status is DnsStatus.NODATA and not found:
        return ("nodata",)
    return tuple(sorted(found))


def digest(items: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:DIGEST_LENGTH]


def track(previous: RecordSet | None, resolution: Resolution, now: float) -> RecordSet | None:
    """The record set after this resolution: unchanged (same object) when nothing changed or DNS failed."""
    current = members(resolution)
    if current is None:
        return previous
    if previous is None:
        return RecordSet(current, digest(current), now)
    if current == previous.members:
        return previous
    old, new = set(previous.members), set(current)
    return RecordSet(current, digest(current), now, tuple(sorted(new - old)), tuple(sorted(old - new)))
