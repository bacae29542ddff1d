"""The generated bench zone: N domains with one or two MX tiers over M shared loopback addresses.

Hosted mail is the case that matters at scale: thousands of domains whose exchanges land on a few addresses.
Each domain gets its own exchange names (``mx1.dNNNNN.bench.test``, as vanity MX hosts do), so the resolver does
the full work per domain, while the addresses behind them come from a small pool, so the engine's per-cycle SMTP
dedupe does the rest. Deterministic for a given seed, so two runs measure the same zone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ZONE = "bench.test"
ADDRESS_PREFIX = "127.0.1."  # the pool: 127.0.1.1 .. 127.0.1.254, all loopback on Linux
MAX_ADDRESSES = 254
BACKUP_SHARE = 0.5  # fraction of domains with a second (backup) tier


@dataclass(frozen=True)
class BenchZone:
    """What the zone holds: the zone name, its domains, the address pool and the zone file text."""

    name: str
    domains: tuple[str, ...]
    addresses: tuple[str, ...]
    exchanges: int
    text: str


def address_pool(count: int) -> tuple[str, ...]:
    """The first ``count`` addresses of the bench pool; ValueError outside 1..254."""
    if not 1 <= count <= MAX_ADDRESSES:
        raise ValueError(f"addresses must be between 1 and {MAX_ADDRESSES}, got {count}")
    return tuple(f"{ADDRESS_PREFIX}{n}" for n in range(1, count + 1))


def domain_name(index: int) -> str:
    return f"d{index:06d}.{ZONE}"


def build_zone(domains: int, addresses: int, seed: int = 5321) -> BenchZone:
    """The zone file for ``domains`` domains over ``addresses`` addresses.

    Domain i's primary lands on pool[i % M], so every address is used once N >= M; the backup tier (on about
    half of the domains) lands on a random pool address.
    """
    if domains < 1:
        raise ValueError(f"domains must be at least 1, got {domains}")
    pool = address_pool(addresses)
    rng = random.Random(seed)
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 300",
        f"@ SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 300",
        f"@ NS ns.{ZONE}.",
        "ns A 127.0.0.1",
    ]
    names: list[str] = []
    exchanges = 0
    for i in range(domains):
        label = domain_name(i).removesuffix(f".{ZONE}")
        names.append(domain_name(i))
        targets = [pool[i % len(pool)]]
        if rng.random() < BACKUP_SHARE:
            targets.append(rng.choice(pool))
        for tier, address in enumerate(targets, start=1):
            lines.append(f"{label} MX {tier * 10} mx{tier}.{label}.{ZONE}.")
            lines.append(f"mx{tier}.{label} A {address}")
            exchanges += 1
    return BenchZone(
        name=ZONE,
        domains=tuple(names),
        addresses=pool,
        exchanges=exchanges,
        text="\n".join(lines) + "\n",
    )
