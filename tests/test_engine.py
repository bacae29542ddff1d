"""Engine pieces without sockets (sharding, per-domain policy) and sharding across real processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from mx_exporter.engine import expectations_of, shard_of, smtp_policy, watched_domains
from mx_exporter.settings import load_settings
from tests.lab import plan
from tests.lab.exporter import Exporter, free_port, lab_config, series

BASE = {"ehlo_name": "probe.example.net"}


def test_shard_of_is_stable_across_runs_and_versions() -> None:
    # Pinned literals: a change here would move domains between replicas on upgrade.
    assert shard_of("example.org", 1) == 0
    assert (shard_of("example.org", 4), shard_of("example.net", 4), shard_of("a.test", 4)) == (2, 3, 2)
    assert shard_of("example.org", 1000) == 862


def test_every_domain_is_watched_exactly_once_across_shards() -> None:
    domains = [f"d{i}.example" for i in range(1000)]
    seen: Counter[str] = Counter()
    sizes = []
    for index in range(5):
        s = load_settings(None, {**BASE, "domains": domains, "shard": {"index": index, "count": 5}})
        names = [d.name for d in watched_domains(s)]
        sizes.append(len(names))
        seen.update(names)
    assert set(seen) == set(domains) and set(seen.values()) == {1}
    assert min(sizes) > 150, sizes  # roughly balanced: 200 expected per shard


def test_per_domain_timeouts_override_only_what_they_set() -> None:
    s = load_settings(
        None,
        {
            **BASE,
            "smtp": {"port": 2525, "connect_timeout": 3},
            "domains": [{"name": "a.example", "smtp": {"greeting_timeout": 40}}, "b.example"],
        },
    )
    a, b = smtp_policy(s, s.domains[0]), smtp_policy(s, s.domains[1])
    assert (a.port, a.connect_timeout, a.greeting_timeout, a.session_timeout) == (2525, 3, 40, 30)
    assert (b.greeting_timeout, b.ehlo_name) == (15, "probe.example.net")
    assert expectations_of(s.domains[1]) is None


def test_expectations_from_settings() -> None:
    s = load_settings(
        None,
        {
            **BASE,
            "domains": [{"name": "a.example", "expect": {"min_tiers": 2, "exchanges": ["mx.a.example"]}}],
        },
    )
    exp = expectations_of(s.domains[0])
    assert exp is not None and exp.configured() == {"min_tiers": 2, "exchanges": ("mx.a.example",)}


def test_shards_split_domains_between_real_processes(
    nsd_server: Any, smtp_lab: Any, start_exporter: Callable[..., Exporter]
) -> None:
    domains = sorted(
        d
        for d in plan.DOMAINS
        if d
        not in (
            "slow.lab.test",
            "dribble.lab.test",
            "silent.lab.test",
            "undeliverable.lab.test",
            "equal.lab.test",
        )
    )
    config = lab_config(nsd_server.nameserver, smtp_lab.port, domains)
    watched: Counter[str] = Counter()
    for index in range(3):
        exporter = start_exporter(
            {**config, "listen_address": f"127.0.0.1:{free_port()}"},
            "--shard.index",
            str(index),
            "--shard.count",
            "3",
        )
        watched.update({s.labels["domain"] for s in series(exporter.scrape(), "mx_domain_deliverable")})
    assert set(watched) == set(domains)
    assert set(watched.values()) == {1}
