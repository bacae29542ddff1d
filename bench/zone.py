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


# --- the issue-7 mixes: thousands of distinct addresses, served in a private network namespace (bench/lab.py)


PER_OCTET = 254  # last octet 1..254: never .0 or .255


def loopback_address(index: int) -> str:
    """The index-th generated peer address: 127.1.0.1, 127.1.0.2, ... 127.1.0.254, 127.1.1.1, ..."""
    if index < 0:
        raise ValueError("address index must be non-negative")
    last, rest = index % PER_OCTET + 1, index // PER_OCTET
    third, second = rest % 256, 1 + rest // 256
    if second > 254:
        raise ValueError(f"address index {index} is beyond the generated range")
    return f"127.{second}.{third}.{last}"


@dataclass(frozen=True)
class MixZone:
    """A generated zone and what a refresh of it must do.

    ``addresses`` are the distinct A addresses behind every domain's exchanges: the exporter opens exactly one
    SMTP session per address per refresh. A refresh asks one MX question per domain and A and AAAA for each
    exchange of each domain, so between ``dns_queries_min`` (if exchanges shared between domains were resolved
    once) and ``dns_queries_max`` (each resolved once per domain, as the exporter does today).
    """

    name: str
    domains: tuple[str, ...]
    kinds: dict[str, int]  # domains per kind of hosting
    addresses: tuple[str, ...]
    exchange_refs: int  # MX records over all domains
    exchanges: int  # distinct exchange names
    text: str
    behaviours: dict[str, str]  # address -> peer behaviour (the soak's hostile and accepting peers)

    @property
    def dns_queries_min(self) -> int:
        return len(self.domains) + 2 * self.exchanges

    @property
    def dns_queries_max(self) -> int:
        return len(self.domains) + 2 * self.exchange_refs


class _ZoneText:
    """Collects a zone's records, its exchange names and addresses as they are added."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.lines = [
            f"$ORIGIN {zone}.",
            "$TTL 300",
            f"@ SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300",
            f"@ NS ns.{zone}.",
            "ns A 127.0.0.1",
        ]
        self.addresses: dict[str, None] = {}  # ordered set
        self.exchanges: set[str] = set()
        self.refs = 0
        self._next_address = 0

    def new_address(self) -> str:
        address = loopback_address(self._next_address)
        self._next_address += 1
        return address

    def host(self, label: str, addresses: list[str]) -> None:
        """A records for a name relative to the zone."""
        for address in addresses:
            self.lines.append(f"{label} A {address}")
            self.addresses[address] = None
        self.exchanges.add(label)

    def mx(self, label: str, preference: int, exchange: str) -> None:
        self.lines.append(f"{label} MX {preference} {exchange}.{self.zone}.")
        self.refs += 1

    def result(self, domains: list[str], kinds: dict[str, int], behaviours: dict[str, str]) -> MixZone:
        return MixZone(
            name=self.zone,
            domains=tuple(f"{d}.{self.zone}" for d in domains),
            kinds=kinds,
            addresses=tuple(self.addresses),
            exchange_refs=self.refs,
            exchanges=len(self.exchanges),
            text="\n".join(self.lines) + "\n",
            behaviours=behaviours,
        )


def _shares(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``total`` by the shares (rounded, the last kind takes the remainder)."""
    counts, left = {}, total
    names = list(shares)
    for name in names[:-1]:
        counts[name] = min(left, round(total * shares[name]))
        left -= counts[name]
    counts[names[-1]] = left
    return counts


HOSTED_SHARES = {"provider": 0.60, "hoster": 0.25, "self": 0.15}
PROVIDER_MX = (  # (preference, exchange under the provider's zone), like Google's aspmx.l.google.com set
    (1, "aspmx.l.provider"),
    (5, "alt1.aspmx.l.provider"),
    (5, "alt2.aspmx.l.provider"),
    (10, "alt3.aspmx.l.provider"),
    (10, "alt4.aspmx.l.provider"),
)
HOSTER_POOL = 16  # the hoster's shared addresses; each tenant exchange name has 2 of them


def hosted_zone(domains: int, seed: int = 5321) -> MixZone:
    """The hosted mix: 60 % on one provider's 5 shared exchanges, 25 % on per-tenant names over a 16-address
    pool, 15 % self-hosted (mx1, and mx2 for every second one, each on an address of its own). IPv4 only.
    """
    if domains < 1:
        raise ValueError(f"domains must be at least 1, got {domains}")
    z = _ZoneText(ZONE)
    rng = random.Random(seed)
    for _, exchange in PROVIDER_MX:
        z.host(exchange, [z.new_address()])
    pool = [z.new_address() for _ in range(HOSTER_POOL)]
    counts = _shares(domains, HOSTED_SHARES)
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    labels, self_hosted = [], 0
    for i, kind in enumerate(kinds):
        label = domain_name(i).removesuffix(f".{ZONE}")
        labels.append(label)
        if kind == "provider":
            for preference, exchange in PROVIDER_MX:
                z.mx(label, preference, exchange)
        elif kind == "hoster":
            exchange = f"t{i:06d}.mail.hoster"
            z.mx(label, 10, exchange)
            z.host(exchange, rng.sample(pool, 2))
        else:
            z.mx(label, 10, f"mx1.{label}")
            z.host(f"mx1.{label}", [z.new_address()])
            if self_hosted % 2 == 1:
                z.mx(label, 20, f"mx2.{label}")
                z.host(f"mx2.{label}", [z.new_address()])
            self_hosted += 1
    return z.result(labels, counts, {})


WORSTCASE_MX = ((10, "mx1"), (10, "mx2"), (20, "mx3"), (20, "mx4"))


def worstcase_zone(domains: int) -> MixZone:
    """The worst case: every domain has 4 exchanges (MX 10, 10, 20, 20), every exchange its own address."""
    if domains < 1:
        raise ValueError(f"domains must be at least 1, got {domains}")
    z = _ZoneText(ZONE)
    labels = []
    for i in range(domains):
        label = domain_name(i).removesuffix(f".{ZONE}")
        labels.append(label)
        for preference, host in WORSTCASE_MX:
            z.mx(label, preference, f"{host}.{label}")
            z.host(f"{host}.{label}", [z.new_address()])
    return z.result(labels, {"worstcase": domains}, {})


# The lab's misbehaving peers (tests/lab/smtp_peers.py).
HOSTILE = ("dribble", "silent", "garbage", "greet421")
ACCEPTING = "accept"


def soak_zone(domains: int, hostile_share: float = 0.30, hostile_pool: int = 16, seed: int = 5321) -> MixZone:
    """The soak mix: ``hostile_share`` of the domains on hostile peers (split evenly over HOSTILE), the rest on
    accepting ones. Every domain has one exchange ``mx1.<domain>``; an accepting one has an address of its own,
    the hostile ones of each behaviour share a pool of ``hostile_pool`` addresses (a bad hoster), so a refresh
    stays well inside a short refresh interval. ``behaviours`` maps every address to its peer's behaviour.
    """
    if domains < 1 or hostile_pool < 1:
        raise ValueError(f"domains and hostile_pool must be at least 1, got {domains} and {hostile_pool}")
    z = _ZoneText(ZONE)
    hostile = round(domains * hostile_share)
    counts = _shares(hostile, {kind: 1 / len(HOSTILE) for kind in HOSTILE}) if hostile else {}
    counts[ACCEPTING] = domains - hostile
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    random.Random(seed).shuffle(kinds)
    pools: dict[str, list[str]] = {kind: [] for kind in HOSTILE}
    used: dict[str, int] = dict.fromkeys(HOSTILE, 0)
    labels, behaviours = [], {}
    for i, kind in enumerate(kinds):
        label = domain_name(i).removesuffix(f".{ZONE}")
        labels.append(label)
        if kind == ACCEPTING:
            address = z.new_address()
        else:
            pool = pools[kind]
            if len(pool) < hostile_pool:
                pool.append(z.new_address())
            address = pool[used[kind] % len(pool)]
            used[kind] += 1
        behaviours[address] = kind
        z.mx(label, 10, f"mx1.{label}")
        z.host(f"mx1.{label}", [address])
    return z.result(labels, counts, behaviours)
