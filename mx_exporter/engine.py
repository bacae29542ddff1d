"""Runs domains through resolve -> probe -> assess, and keeps watched domains fresh.

Hosted mail means thousands of domains share a few exchanges, so SMTP sessions are deduplicated twice: within one
refresh cycle every distinct (address, port) is probed once and its result shared by every domain that uses it,
and at any moment at most one session per (address, port) is in flight (a /probe request joins the session a
refresh already has open). Global semaphores bound DNS queries and SMTP sessions. One domain's failure never
touches another, and the refresh loop never dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mx_exporter.assess import Expectations, build_report
from mx_exporter.dnsask import Asker, NameCache, ResolvePolicy, make_resolver
from mx_exporter.egress import Egress, check_egress, suspected
from mx_exporter.model import (
    AddressResult,
    DnsStatus,
    DomainReport,
    Family,
    RecordSet,
    Resolution,
    ResolvedAddress,
)
from mx_exporter.names import parse_canary
from mx_exporter.policy_fetch import PolicyCache
from mx_exporter.resolve import resolve_domain
from mx_exporter.selfmetrics import ExporterMetrics, RefreshTally
from mx_exporter.settings import DomainSettings, Settings
from mx_exporter.smtp import probe_address
from mx_exporter.smtp_wire import SmtpPolicy
from mx_exporter.transport import TransportLookup, TransportPolicy, lookup_transport

log = logging.getLogger(__name__)

AddressKey = tuple[str, int]
T = TypeVar("T")
# Domains in progress at once during a refresh: a bounded number of coroutines instead of one task per domain
# (50,000 domains must not mean 50,000 tasks). Most of them only wait on DNS or shared SMTP sessions, which the
# resolver and session limits bound, so this only needs to be large enough to keep those limits busy.
DOMAIN_WORKERS = 512


def shard_of(domain: str, count: int) -> int:
    """Stable shard of a domain: the same on every replica, every restart and every Python version."""
    digest = hashlib.sha256(domain.encode("ascii", "ignore")).digest()
    return int.from_bytes(digest[:8], "big") % count


def watched_domains(settings: Settings) -> list[DomainSettings]:
    """The configured domains this replica watches (all of them unless sharded)."""
    count, index = settings.shard.count, settings.shard.index
    return [d for d in settings.domains if shard_of(d.name, count) == index]


def smtp_policy(settings: Settings, domain: DomainSettings | None = None) -> SmtpPolicy:
    s = settings.smtp
    o = domain.smtp if domain is not None else None
    return SmtpPolicy(
        ehlo_name=settings.ehlo_name,
        port=s.port,
        connect_timeout=(o and o.connect_timeout) or s.connect_timeout,
        greeting_timeout=(o and o.greeting_timeout) or s.greeting_timeout,
        ehlo_timeout=(o and o.ehlo_timeout) or s.ehlo_timeout,
        session_timeout=(o and o.session_timeout) or s.session_timeout,
        starttls=s.starttls,
        tls_ca_file=s.tls_ca_file,
    )


def resolve_policy(settings: Settings) -> ResolvePolicy:
    return ResolvePolicy(
        nameservers=tuple(settings.resolver.nameservers),
        timeout=settings.resolver.timeout,
        families=tuple(settings.smtp.address_families),
        max_addresses_per_exchange=settings.smtp.max_addresses_per_exchange,
        allow_networks=tuple(settings.allow_networks),
        max_queries_per_second=settings.resolver.max_queries_per_second,
    )


def transport_policy(settings: Settings, domain: DomainSettings | None = None) -> TransportPolicy:
    """Which transport checks run for the domain: its own switches, else the global ones; DANE only when the
    resolver's AD bit is trusted (resolver.dnssec: require)."""
    dane = domain.dane if domain is not None and domain.dane is not None else settings.dane.enabled
    sts = domain.mta_sts if domain is not None and domain.mta_sts is not None else settings.mta_sts.enabled
    return TransportPolicy(
        dane=dane and settings.resolver.dnssec == "require",
        mta_sts=sts,
        ca_file=settings.mta_sts.ca_file,
        fetch_timeout=settings.mta_sts.timeout,
        max_policy_bytes=settings.mta_sts.max_policy_bytes,
    )


def expectations_of(domain: DomainSettings | None) -> Expectations | None:
    if domain is None:
        return None
    e = domain.expect
    exp = Expectations(
        min_records=e.min_records,
        min_tiers=e.min_tiers,
        exchanges=tuple(e.exchanges) if e.exchanges is not None else None,
        starttls=e.starttls,
        null_mx=e.null_mx,
        fallback_to_a=e.fallback_to_a,
        deliverable=e.deliverable,
        primary_up=e.primary_up,
        nolisting=e.nolisting,
        greylisting=e.greylisting,
        max_greeting_seconds=e.max_greeting_seconds,
    )
    return exp if exp.configured() else None


def _no_metrics() -> RefreshTally:
    return RefreshTally(None)


@dataclass
class CycleCache:
    """One refresh cycle (or one /probe request): each DNS question asked and each (address, port) probed once.

    ``tally`` counts what the cycle put on the wire (DNS questions, SMTP sessions) for the self-metrics.
    """

    results: dict[AddressKey, asyncio.Future[AddressResult]] = field(default_factory=dict)
    names: NameCache = field(default_factory=NameCache)
    tally: RefreshTally = field(default_factory=_no_metrics)


class Prober:
    """Owns the resolver, the limits and the in-flight session table; probes one domain at a time per call."""

    def __init__(
        self,
        settings: Settings,
        on_session: Callable[[], None] | None = None,
        in_flight: dict[AddressKey, asyncio.Task[AddressResult]] | None = None,
        metrics: ExporterMetrics | None = None,
        policies: PolicyCache | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.policy = resolve_policy(settings)
        self.resolver = make_resolver(self.policy)
        self.dns_limit = asyncio.Semaphore(settings.resolver.max_concurrent_queries)
        self.smtp_limit = asyncio.Semaphore(settings.smtp.max_concurrent_sessions)
        # Shared across reloads, so a session still open from before a reload is joined, not doubled.
        self.in_flight = in_flight if in_flight is not None else {}
        self.on_session = on_session
        # MTA-STS policies by domain, fetched once per max_age; shared across reloads like in_flight.
        self.policies = policies if policies is not None else PolicyCache()
        self.policies.refetch_seconds = settings.mta_sts.refetch_seconds  # a reload may change it

    def new_cycle(self) -> CycleCache:
        """A cache for one refresh cycle or one /probe request, counted into the exporter's metrics."""
        return CycleCache(tally=RefreshTally(self.metrics))

    async def _session(
        self, address: ResolvedAddress, policy: SmtpPolicy, tally: RefreshTally
    ) -> AddressResult:
        if not address.allowed:
            return await probe_address(address, policy)  # returns "skipped" without a socket
        async with self.smtp_limit:
            if self.on_session is not None:
                self.on_session()
            tally.session()
            return await probe_address(address, policy)

    def _address_future(
        self, address: ResolvedAddress, policy: SmtpPolicy, cache: CycleCache
    ) -> asyncio.Future[AddressResult]:
        key = (address.address, policy.port)
        cached = cache.results.get(key)
        if cached is not None:
            return cached
        task = self.in_flight.get(key)
        if task is None:
            task = asyncio.create_task(
                self._session(address, policy, cache.tally), name=f"smtp {key[0]}:{key[1]}"
            )
            self.in_flight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        cache.results[key] = task
        return task

    def _forget(self, key: AddressKey, task: asyncio.Task[AddressResult]) -> None:
        if self.in_flight.get(key) is task:
            del self.in_flight[key]

    async def resolve(self, domain: str, cache: CycleCache) -> Resolution:
        return await resolve_domain(
            domain, self.resolver, self.policy, self.dns_limit, cache=cache.names, observer=cache.tally
        )

    async def probe(
        self,
        domain: str,
        cache: CycleCache | None = None,
        config: DomainSettings | None = None,
        deadline: float | None = None,
        previous: RecordSet | None = None,
    ) -> DomainReport:
        """Resolve and probe one domain; with a deadline (monotonic), return whatever finished by then.
        ``previous`` is the record set of the domain's last report, for MX change tracking."""
        started, wall_started = time.monotonic(), time.time()
        cache = cache if cache is not None else CycleCache()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            resolution = await asyncio.wait_for(self.resolve(domain, cache), remaining)
        except TimeoutError:
            resolution = Resolution(domain=domain, status=DnsStatus.TIMEOUT, detail="deadline hit during DNS")
        policy = smtp_policy(self.settings, config)
        futures = {
            a.address: self._address_future(a, policy, cache)
            for exchange in resolution.exchanges
            for a in exchange.addresses
        }
        transport = self._transport(resolution, cache, config)
        waiting: list[asyncio.Future[Any]] = [*futures.values(), *([transport] if transport else [])]
        if waiting:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait(waiting, timeout=remaining)
        results: dict[str, AddressResult] = {}
        for addr, fut in futures.items():
            result = _result_of(fut) if fut.done() else None
            if result is not None:
                results[addr] = result
        elapsed = time.monotonic() - started
        return build_report(
            resolution,
            results,
            elapsed,
            wall_started + elapsed,
            expectations_of(config),
            previous,
            _transport_of(transport),
        )

    def _transport(
        self, resolution: Resolution, cache: CycleCache, config: DomainSettings | None
    ) -> asyncio.Task[TransportLookup] | None:
        """The transport-security lookups, beside the sessions; None when none is switched on."""
        wanted = transport_policy(self.settings, config)
        if not (wanted.dane or wanted.mta_sts):
            return None
        asker = Asker(self.resolver, self.policy, self.dns_limit, cache=cache.names, observer=cache.tally)
        work = lookup_transport(resolution, asker, wanted, self.policies)
        return asyncio.create_task(work, name=f"transport {resolution.domain}")


def _transport_of(task: asyncio.Task[TransportLookup] | None) -> TransportLookup | None:
    """The finished lookups; unfinished ones (the deadline) are cancelled and left out of the report."""
    if task is not None and not task.done():
        task.cancel()
        return None
    return None if task is None else _result_of(task, "transport lookups raised (a bug; left out)")


def _result_of(
    fut: asyncio.Future[T], bug: str = "SMTP probe raised (a bug; address left unprobed)"
) -> T | None:
    """A finished future's result; None when it was cancelled or raised (logged: that is a bug)."""
    if fut.cancelled():
        return None
    if fut.exception() is not None:
        log.error(bug, exc_info=fut.exception())
        return None
    return fut.result()


class Watcher:
    """Keeps the latest finished report of every watched domain; scrapes read ``reports`` and never wait."""

    def __init__(self, settings: Settings, metrics: ExporterMetrics) -> None:
        self.metrics = metrics
        self.reports: dict[str, DomainReport] = {}
        self.version = 0  # bumped whenever ``reports`` changes, so renderers can cache
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self.settings = settings
        self.prober = Prober(settings, metrics=metrics)
        self.domains = watched_domains(settings)
        self.names = {d.name for d in self.domains}
        self.configured = {d.name: d for d in settings.domains}  # per-domain options, also for /probe
        self.egress: Egress | None = None  # the last canary check (None: no canaries)
        self.egress_suspected = False  # the heuristic of the last refresh
        self.ipv6_no_route = False  # the last refresh's IPv6 connects found no route from this host
        metrics.domains.set(len(self.domains))

    def apply(self, settings: Settings) -> None:
        """Take new settings (reload): drop removed domains' series at once, refresh soon."""
        self.settings = settings
        self.prober = Prober(
            settings, in_flight=self.prober.in_flight, metrics=self.metrics, policies=self.prober.policies
        )
        self.domains = watched_domains(settings)
        self.names = {d.name for d in self.domains}
        self.configured = {d.name: d for d in settings.domains}
        self.prober.policies.retain(self.names)
        for gone in set(self.reports) - self.names:
            del self.reports[gone]
            self.version += 1
        self.metrics.domains.set(len(self.domains))
        self._wake.set()

    async def check_egress(self) -> Egress | None:
        """The canaries first: while none can be connected to, this refresh's verdicts are inconclusive."""
        canaries = [parse_canary(c) for c in self.settings.egress.canaries]
        if not canaries:
            self.egress = self.metrics.egress = None
            return None
        egress = await check_egress(
            canaries, self.prober.resolver, self.settings.resolver.timeout, smtp_policy(self.settings)
        )
        if not egress.up:
            log.warning("egress check failed (%s): %s", egress.state.value, egress.detail)
        self.egress = self.metrics.egress = egress
        return egress

    async def refresh_once(self) -> None:
        started = time.monotonic()
        await self.check_egress()
        prober, pending = self.prober, iter(list(self.domains))
        cache = prober.new_cycle()

        async def worker() -> None:
            for domain in pending:  # a shared iterator: each domain is taken by exactly one worker
                await self._probe_one(prober, domain, cache)

        await asyncio.gather(*(worker() for _ in range(min(DOMAIN_WORKERS, len(self.domains)))))
        cache.tally.finish(cache.names.hits)
        finished = [
            t.result() for t in cache.results.values() if t.done() and not t.cancelled() and not t.exception()
        ]
        self.egress_suspected = suspected(finished)
        self.metrics.egress_suspected.set(1 if self.egress_suspected else 0)
        no_route = any(r.no_route_here and r.family is Family.IPV6 for r in finished)
        if no_route and not self.ipv6_no_route:
            log.warning("this host has no IPv6 route: AAAA results say nothing about the peers")
        self.ipv6_no_route = no_route
        self.metrics.ipv6_no_route.set(1 if no_route else 0)
        self.metrics.refresh_duration.observe(time.monotonic() - started)
        self.metrics.refreshes.inc()
        self.metrics.last_refresh.set(time.time())

    async def _probe_one(self, prober: Prober, domain: DomainSettings, cache: CycleCache) -> None:
        try:
            last = self.reports.get(domain.name)
            report = await prober.probe(domain.name, cache, domain, previous=last.records if last else None)
        except Exception:
            log.exception("probing %s failed unexpectedly; keeping its previous result", domain.name)
            self.metrics.probe_errors.inc()
            return
        if domain.name in self.names:
            self.reports[domain.name] = report
            self.version += 1

    async def run(self) -> None:
        """Refresh forever; a cycle longer than the interval is followed at once by the next (no overlap)."""
        while True:
            started = time.monotonic()
            try:
                await self.refresh_once()
            except Exception:
                log.exception("refresh cycle failed; trying again next interval")
                self.metrics.probe_errors.inc()
            self.ready.set()
            pause = max(0.0, self.settings.refresh_interval - (time.monotonic() - started))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
