"""The sender-conformance scenarios as plain data, and the zone files NSD serves for them.

Each scenario is one domain, ``sNN.conf.test``, with its own addresses so every scenario can run at the same
time as every other: ``{net}`` is 198.18.NN (assigned inside the lab namespace, on ``lo``) and ``{hole}`` is
198.19.NN (routed into a device that drops every packet: a connect there times out). Records are zone-file lines
relative to the scenario's domain (``@`` is the domain itself). ``peers`` maps an address to a behaviour of
tests/lab/conformance_peers.py; ``refuse`` means the address is assigned but nothing listens (RST at once),
``blackhole`` means it lies in ``{hole}``. ``broken_zones`` are zones NSD is told to serve but has no file for:
NSD answers SERVFAIL for every name in them (a temporary DNS failure, as a sender sees it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAB_ZONE = "conf.test"
NET = "198.18"  # peers: 198.18.NN.x on lo
HOLE = "198.19"  # blackhole: 198.19.NN.x routed into a packet-dropping device
LAB_NETWORKS = ("198.18.0.0/15",)
NSD_ADDRESS = "127.0.0.1"  # port 53: what /etc/resolv.conf inside the namespace points at
SENDER_DOMAIN = "sender.test"  # the MTAs' own domain: bounces to it are discarded
RECIPIENT = "user"

SCENARIOS: list[dict[str, Any]] = [
    {"n": 1, "description": "primary accepts (MX 10 only)",
     "records": ["@ MX 10 mx1", "mx1 A {net}.10"], "peers": {"{net}.10": "accept"}},
    {"n": 2, "description": "primary refused, backup (MX 20) accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "refuse", "{net}.20": "accept"}},
    {"n": 3, "description": "primary blackhole (connect timeout), backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {hole}.10", "mx2 A {net}.20"],
     "peers": {"{hole}.10": "blackhole", "{net}.20": "accept"}},
    {"n": 4, "description": "primary silent (greeting timeout), backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "silent", "{net}.20": "accept"}},
    {"n": 5, "description": "primary greets 421 and stays open, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "greet_421", "{net}.20": "accept"}},
    {"n": 6, "description": "primary greets 421 and closes, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "greet_421_close", "{net}.20": "accept"}},
    {"n": 7, "description": "primary greets 554, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "greet_554", "{net}.20": "accept"}},
    {"n": 8, "description": "primary answers 550 to EHLO and to HELO, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "ehlo_550_helo_550", "{net}.20": "accept"}},
    {"n": 9, "description": "primary answers 550 to EHLO, 250 to HELO (then accepts), backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "ehlo_550_helo_250", "{net}.20": "accept"}},
    {"n": 10, "description": "primary answers 451 to EHLO and to HELO, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "ehlo_451_helo_451", "{net}.20": "accept"}},
    {"n": 11, "description": "primary greets 220 then drops the connection, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "drop_after_greeting", "{net}.20": "accept"}},
    {"n": 12, "description": "two exchanges at MX 10 (one refused, one accepts), no backup",
     "records": ["@ MX 10 mx1", "@ MX 10 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "refuse", "{net}.20": "accept"}},
    {"n": 13, "description": "one exchange with two A records: first refused, second accepts",
     "records": ["@ MX 10 mx1", "mx1 A {net}.10", "mx1 A {net}.11"],
     "peers": {"{net}.10": "refuse", "{net}.11": "accept"}},
    {"n": 14, "description": "every address greets 421 (primary and backup): the message should queue",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "greet_421", "{net}.20": "greet_421"}},
    {"n": 15, "description": "NXDOMAIN: the domain does not exist", "records": [], "peers": {}},
    {"n": 16, "description": "NODATA for MX, but the domain has an A record with an accepting peer",
     "records": ["@ A {net}.10"], "peers": {"{net}.10": "accept"}},
    {"n": 17, "description": "NODATA for MX and no A/AAAA (the name exists: TXT only)",
     "records": ['@ TXT "no mail here"'], "peers": {}},
    {"n": 18, "description": "MX lookup fails temporarily (SERVFAIL: the domain's zone does not load)",
     "records": [], "peers": {}, "broken_zones": ["@"]},
    {"n": 19, "description": "the only MX target has no address records (NXDOMAIN for the target)",
     "records": ["@ MX 10 nohost"], "peers": {}},
    {"n": 20, "description": "primary target unresolvable (NXDOMAIN), backup accepts",
     "records": ["@ MX 10 nohost", "@ MX 20 mx2", "mx2 A {net}.20"], "peers": {"{net}.20": "accept"}},
    {"n": 21, "description": "the MX points at a CNAME that leads to an accepting host",
     "records": ["@ MX 10 alias", "alias CNAME mx1", "mx1 A {net}.10"], "peers": {"{net}.10": "accept"}},
    {"n": 22, "description": "null MX alone (MX 0 .)", "records": ["@ MX 0 ."], "peers": {}},
    {"n": 23, "description": "null MX mixed: MX 0 . plus MX 10 mx1, which accepts",
     "records": ["@ MX 0 .", "@ MX 10 mx1", "mx1 A {net}.10"], "peers": {"{net}.10": "accept"}},
    {"n": 24, "description": "IP-literal exchange (MX 10 198.18.24.50. written as a name), accepting peer there",
     "records": ["@ MX 10 {net}.50."], "peers": {"{net}.50": "accept"}},
    {"n": 25, "description": "six exchanges at 10..60, the first five refused, the sixth accepts",
     "records": [*(f"@ MX {10 * i} mx{i}" for i in range(1, 7)), *(f"mx{i} A {{net}}.{10 * i}" for i in range(1, 7))],
     "peers": {**{f"{{net}}.{10 * i}": "refuse" for i in range(1, 6)}, "{net}.60": "accept"}},
    {"n": 26, "description": "three exchanges at 10, 20, 30: the first two greet 421, the third accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "@ MX 30 mx3", "mx1 A {net}.10", "mx2 A {net}.20", "mx3 A {net}.30"],
     "peers": {"{net}.10": "greet_421", "{net}.20": "greet_421", "{net}.30": "accept"}},
    {"n": 27, "description": "primary answers 451 to RCPT, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "rcpt_451", "{net}.20": "accept"}},
    {"n": 28, "description": "primary answers 550 to RCPT, backup accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A {net}.10", "mx2 A {net}.20"],
     "peers": {"{net}.10": "rcpt_550", "{net}.20": "accept"}},
    {"n": 29, "description": "the only exchange greets 554 (no backup)",
     "records": ["@ MX 10 mx1", "mx1 A {net}.10"], "peers": {"{net}.10": "greet_554"}},
    {"n": 30, "description": "the only exchange answers 550 to RCPT (no backup)",
     "records": ["@ MX 10 mx1", "mx1 A {net}.10"], "peers": {"{net}.10": "rcpt_550"}},
    {"n": 31, "description": "the only exchange is a blackhole (connect timeout, no backup)",
     "records": ["@ MX 10 mx1", "mx1 A {hole}.10"], "peers": {"{hole}.10": "blackhole"}},
    {"n": 32, "description": "primary target's address lookup SERVFAILs (its zone does not load), backup accepts",
     "records": ["@ MX 10 mx1.dead", "@ MX 20 mx2", "mx2 A {net}.20"], "peers": {"{net}.20": "accept"},
     "broken_zones": ["dead"]},
    {"n": 33, "description": "three exchanges at 10, 20, 30: the first two answer 451 to RCPT (full sessions), the third accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", "@ MX 30 mx3", "mx1 A {net}.10", "mx2 A {net}.20", "mx3 A {net}.30"],
     "peers": {"{net}.10": "rcpt_451", "{net}.20": "rcpt_451", "{net}.30": "accept"}},
    {"n": 34, "description": "primary exchange with six addresses, all refused; backup (MX 20) accepts",
     "records": ["@ MX 10 mx1", "@ MX 20 mx2", *(f"mx1 A {{net}}.{10 + i}" for i in range(6)), "mx2 A {net}.20"],
     "peers": {**{f"{{net}}.{10 + i}": "refuse" for i in range(6)}, "{net}.20": "accept"}},
]  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """One scenario with its placeholders filled in."""

    n: int
    description: str
    records: tuple[str, ...]
    peers: dict[str, str]  # address -> behaviour
    broken_zones: tuple[str, ...]  # absolute zone names NSD answers SERVFAIL for

    @property
    def name(self) -> str:
        return f"s{self.n:02d}"

    @property
    def domain(self) -> str:
        return f"{self.name}.{LAB_ZONE}"

    @property
    def recipient(self) -> str:
        return f"{RECIPIENT}@{self.domain}"


def _fill(text: str, n: int) -> str:
    return text.replace("{net}", f"{NET}.{n}").replace("{hole}", f"{HOLE}.{n}")


def scenarios(selected: list[int] | None = None) -> list[Scenario]:
    """The table with placeholders filled; only the numbers in ``selected`` when given."""
    found = []
    for row in SCENARIOS:
        n = row["n"]
        if selected and n not in selected:
            continue
        domain = f"s{n:02d}.{LAB_ZONE}"
        broken = tuple(domain if z == "@" else f"{z}.{domain}" for z in row.get("broken_zones", ()))
        peers = {_fill(addr, n): behaviour for addr, behaviour in row["peers"].items()}
        for address, behaviour in peers.items():
            if (behaviour == "blackhole") != address.startswith(f"{HOLE}."):
                raise ValueError(f"s{n:02d}: {address} {behaviour}: blackholes live in {HOLE}/16, others not")
        found.append(
            Scenario(n, row["description"], tuple(_fill(r, n) for r in row["records"]), peers, broken)
        )
    return found


SOA = "@ 300 IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300"


def lab_zone(chosen: list[Scenario]) -> str:
    """The conf.test zone: every scenario's records under its own ``$ORIGIN``."""
    lines = [
        f"$ORIGIN {LAB_ZONE}.",
        "$TTL 300",
        SOA.format(zone=LAB_ZONE),
        f"@ IN NS ns.{LAB_ZONE}.",
        f"ns IN A {NSD_ADDRESS}",
    ]
    for scenario in chosen:
        lines.append(f"$ORIGIN {scenario.domain}.")
        lines.extend(scenario.records)
    return "\n".join(lines) + "\n"


def root_zone() -> str:
    """A root zone, so names outside conf.test (e.g. ``198.18.24.50.``) get NXDOMAIN as on the internet,
    not REFUSED from an authoritative-only server."""
    return (
        "\n".join(["$ORIGIN .", "$TTL 300", SOA.format(zone="root-servers.test"), "@ IN NS ns.conf.test."])
        + "\n"
    )


def addresses(chosen: list[Scenario]) -> tuple[list[str], list[str]]:
    """(addresses to assign in the namespace, blackhole addresses)."""
    local, hole = [], []
    for scenario in chosen:
        for address, behaviour in scenario.peers.items():
            (hole if behaviour == "blackhole" else local).append(address)
    return local, hole
