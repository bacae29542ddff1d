"""The three measurements: one in-process refresh, the exporter process's scrapes and RSS, /probe throughput."""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from mx_exporter.engine import CycleCache, Prober, smtp_policy
from mx_exporter.model import Family, ResolvedAddress, SmtpOutcome
from mx_exporter.settings import load_settings
from mx_exporter.smtp import probe_address

REPO = Path(__file__).resolve().parent.parent
EHLO_NAME = "probe.bench.test"
HTTP_TIMEOUT = 30.0  # one HTTP request to the exporter
QUERY_MARK = "ms  ? "  # dnsask.py logs every DNS question as "<elapsed> ms  ? <name> <type>"


@dataclass(frozen=True)
class Lab:
    """Where the bench zone and its peers run, and the overall bound on each phase."""

    nameserver: str
    smtp_port: int
    timeout: float


def settings_overrides(lab: Lab) -> dict[str, Any]:
    """The settings both the in-process refresh and the exporter process use: loopback only, sane timeouts."""
    return {
        "ehlo_name": EHLO_NAME,
        "resolver": {"nameservers": [lab.nameserver], "timeout": 5},
        "smtp": {
            "port": lab.smtp_port,
            "connect_timeout": 2,
            "greeting_timeout": 5,
            "ehlo_timeout": 5,
            "session_timeout": 10,
        },
        "allow_networks": ["127.0.0.0/8"],
        # The MX pipeline only, as blackbox_exporter and the earlier figures measure it: MTA-STS adds two TXT
        # questions per domain (and TLS-RPT's), which the query-count bounds and the side-by-side ratios exclude.
        "mta_sts": {"enabled": False},
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: honest for small samples (p95 of 20 values is the 19th)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# --- (1) one refresh in process


async def _refresh(lab: Lab, domains: Sequence[str]) -> dict[str, float]:
    sessions = 0

    def counted() -> None:
        nonlocal sessions
        sessions += 1

    prober = Prober(load_settings(None, settings_overrides(lab)), on_session=counted)
    cache = CycleCache()
    started = time.monotonic()
    async with asyncio.timeout(lab.timeout):
        reports = await asyncio.gather(*(prober.probe(d, cache) for d in domains))
    elapsed = time.monotonic() - started
    undeliverable = [r.domain for r in reports if not r.verdict.deliverable]
    if undeliverable:
        raise RuntimeError(f"{len(undeliverable)} bench domains undeliverable, e.g. {undeliverable[:3]}")
    queries = sum(1 for r in reports for line in r.resolution.log if QUERY_MARK in line)
    return {
        "refresh_seconds": elapsed,
        "refresh_domains_per_second": len(domains) / elapsed,
        "refresh_smtp_sessions": sessions,
        "refresh_smtp_sessions_per_second": sessions / elapsed,
        "refresh_dns_queries": queries,
        "refresh_dns_queries_per_second": queries / elapsed,
    }


def measure_refresh(lab: Lab, domains: Sequence[str]) -> dict[str, float]:
    """One full refresh of every domain through the real Prober with one shared CycleCache."""
    return asyncio.run(_refresh(lab, domains))


async def _smtp_burst(lab: Lab, addresses: Sequence[str], sessions: int) -> dict[str, float]:
    settings = load_settings(None, settings_overrides(lab))
    policy = smtp_policy(settings)
    limit = asyncio.Semaphore(settings.smtp.max_concurrent_sessions)
    locks = {
        address: asyncio.Lock() for address in addresses
    }  # one session per address at a time, as the engine

    async def one(index: int) -> SmtpOutcome:
        address = addresses[index % len(addresses)]
        async with locks[address], limit:
            result = await probe_address(ResolvedAddress(address, Family.IPV4, allowed=True), policy)
        return result.outcome

    started = time.monotonic()
    async with asyncio.timeout(lab.timeout):
        outcomes = await asyncio.gather(*(one(i) for i in range(sessions)))
    elapsed = time.monotonic() - started
    failed = [o for o in outcomes if o is not SmtpOutcome.ACCEPTED]
    if failed:
        raise RuntimeError(f"{len(failed)} of {sessions} SMTP sessions not accepted, e.g. {failed[0].value}")
    return {"smtp_burst_sessions_per_second": sessions / elapsed}


def measure_smtp_burst(lab: Lab, addresses: Sequence[str], sessions: int) -> dict[str, float]:
    """The SMTP stage alone: ``sessions`` polite sessions round-robin over the pool, under the engine's limits."""
    return asyncio.run(_smtp_burst(lab, addresses, sessions))


# --- (2) and (3): the exporter process


class ExporterProcess:
    """``python -m mx_exporter --config.file cfg`` from this tree, listening on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        lab: Lab,
        domains: Sequence[str],
        port: int,
        overrides: dict[str, Any] | None = None,
        http_timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.http_timeout = http_timeout
        config: dict[str, Any] = {
            **settings_overrides(lab),
            "listen_address": f"127.0.0.1:{port}",
            "refresh_interval": 3600,  # one refresh only: scrapes measure rendering, not a refresh in progress
            "log_level": "warning",
            "domains": list(domains),
        }
        for key, value in (overrides or {}).items():  # one level deep: {"smtp": {...}} merges into smtp
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config = config
        self.started = time.monotonic()
        path = workdir / "bench-exporter.yml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "bench-exporter.log"
        self._log = self.log_path.open("wb")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO), os.environ.get("MX_BENCH_EXTRA_PYTHONPATH", "")])
            ),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mx_exporter", "--config.file", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def log_tail(self) -> str:
        return self.log_text()[-3000:]

    def log_text(self) -> str:
        """Everything the exporter wrote (stdout and stderr) so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float, interval: float = 0.05) -> float:
        """Seconds from now until /-/ready answers 200 (the first refresh is done); RuntimeError past timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/-/ready")[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(interval)
        raise RuntimeError(f"exporter not ready within {timeout:g} s:\n{self.log_tail()}")

    def rss_mib(self) -> float:
        """Resident set size from /proc/PID/status (VmRSS, in kB) in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


@contextmanager
def exporter(
    workdir: Path,
    lab: Lab,
    domains: Sequence[str],
    port: int,
    overrides: dict[str, Any] | None = None,
    http_timeout: float = HTTP_TIMEOUT,
) -> Iterator[ExporterProcess]:
    process = ExporterProcess(workdir, lab, domains, port, overrides, http_timeout)
    try:
        yield process
    finally:
        process.stop()


def _timed_scrapes(proc: ExporterProcess, scrapes: int, headers: dict[str, str]) -> tuple[list[float], bytes]:
    durations: list[float] = []
    body = b""
    for _ in range(scrapes):
        started = time.monotonic()
        status, body = proc.get("/metrics", headers)
        durations.append(time.monotonic() - started)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}: {body[:300]!r}")
    return durations, body


def measure_scrapes(proc: ExporterProcess, domains: int, scrapes: int) -> dict[str, float]:
    """Time ``scrapes`` GETs of /metrics plain and gzipped (as Prometheus asks); the body covers every domain."""
    durations, body = _timed_scrapes(proc, scrapes, {})
    gzip_durations, gzipped = _timed_scrapes(proc, scrapes, {"Accept-Encoding": "gzip"})
    marker = b"\nmx_domain_deliverable{"  # self-metrics change between scrapes; the domains' series do not
    if gzip.decompress(gzipped).count(marker) != body.count(marker):
        raise RuntimeError("gzipped /metrics does not hold the same domains as the plain one")
    samples = [s for fam in text_string_to_metric_families(body.decode()) for s in fam.samples]
    up = [s for s in samples if s.name == "mx_domain_deliverable" and s.value == 1]
    if len(up) != domains:
        raise RuntimeError(f"/metrics shows {len(up)} deliverable domains, expected {domains}")
    first_refresh = [s.value for s in samples if s.name == "mx_exporter_refresh_duration_seconds_sum"]
    return {
        "exporter_first_refresh_seconds": first_refresh[0] if first_refresh else float("nan"),
        "scrape_seconds_median": statistics.median(durations),
        "scrape_seconds_p95": percentile(durations, 95),
        "exposition_bytes": len(body),
        "exposition_series": len(samples),
        "scrape_gzip_seconds_median": statistics.median(gzip_durations),
        "scrape_gzip_seconds_p95": percentile(gzip_durations, 95),
        "exposition_gzip_bytes": len(gzipped),
    }


def measure_probes(proc: ExporterProcess, zone: str, requests: int, workers: int) -> dict[str, float]:
    """``requests`` /probe calls for names that do not exist under the zone, from ``workers`` threads."""

    def one(index: int) -> float:
        target = f"nx{index}.{zone}"
        started = time.monotonic()
        status, body = proc.get(f"/probe?target={target}")
        elapsed = time.monotonic() - started
        expected = f'mx_dns_status{{domain="{target}",status="nxdomain"}} 1.0'
        if status != 200 or expected not in body.decode():
            raise RuntimeError(f"/probe?target={target} answered {status}: {body[:300]!r}")
        return elapsed

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        durations = list(pool.map(one, range(requests)))
    elapsed = time.monotonic() - started
    return {
        "probe_requests_per_second": requests / elapsed,
        "probe_seconds_median": statistics.median(durations),
        "probe_seconds_p95": percentile(durations, 95),
    }
