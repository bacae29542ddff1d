"""The hosted mix: the real exporter process watching 1,000 / 10,000 / 50,000 domains shaped like real mail hosting.

    python bench/hosted.py [--domains 1000 10000 50000] [--json PATH]

60 % of the domains on one provider's 5 shared exchanges, 25 % on per-tenant exchange names over a hoster's
16-address pool, 15 % self-hosted (bench/zone.py ``hosted_zone``). For each size a fresh lab (NSD, one smtp-sink
for every address) in a private network namespace, and ``python -m mx_exporter --config.file ...`` watching
every domain, scraped like Prometheus (gzip, every 15 s) during its first refresh. Reports the first refresh,
the DNS questions and SMTP sessions it took, the /metrics size and scrape times after it, RSS and the status
page's render time. Prints a table (one column per size); writes JSON with --json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script from anywhere: the package, tests.lab and bench from this tree.
sys.path.insert(0, str(REPO))

from bench import lab, measure, zone  # noqa: E402
from bench.run import machine  # noqa: E402
from tests.lab.exporter import free_port  # noqa: E402
from tests.lab.nsd import NsdServer  # noqa: E402

DEFAULT_SIZES = (1000, 10_000, 50_000)
NSD_STARTUP = 120.0  # seconds for NSD to load the largest zone
GZIP = {"Accept-Encoding": "gzip"}
SELF_METRICS = (
    "mx_exporter_refresh_duration_seconds_sum",
    "mx_exporter_dns_queries_total",
    "mx_exporter_smtp_sessions_total",
)

FIGURES = (  # (key, unit, what) in table order
    ("first_refresh_seconds", "s", "first refresh (mx_exporter_refresh_duration_seconds_sum)"),
    ("ready_seconds", "s", "process start to /-/ready = 200"),
    ("refresh_domains_per_second", "/s", "domains / first refresh"),
    ("dns_queries", "", "sum of mx_exporter_dns_queries_total (-1: not exposed)"),
    ("smtp_sessions", "", "mx_exporter_smtp_sessions_total (one per distinct address)"),
    ("undeliverable_domains", "", "domains not mx_domain_deliverable 1 (all are: > 0 means timeouts)"),
    ("refresh_scrapes", "", "gzip scrapes of /metrics during the first refresh"),
    ("refresh_scrape_gzip_median_seconds", "s", "their median (-1: none)"),
    ("refresh_scrape_gzip_max_seconds", "s", "their slowest (-1: none)"),
    ("metrics_bytes", "B", "plain /metrics body after the refresh"),
    ("metrics_bytes_per_domain", "B", "that / domains"),
    ("metrics_series", "", "samples in /metrics"),
    ("metrics_series_per_domain", "", "that / domains"),
    ("metrics_gzip_bytes", "B", "gzipped /metrics body"),
    ("scrape_median_seconds", "s", "GET /metrics plain, median, after the refresh"),
    ("scrape_gzip_median_seconds", "s", "GET /metrics gzip, median, after the refresh"),
    ("status_page_median_seconds", "s", "GET / (status page), median"),
    ("status_page_bytes", "B", "status page size"),
    ("rss_mib", "MiB", "exporter VmRSS right after the first refresh"),
    ("rss_after_mib", "MiB", "VmRSS after the scrapes and status pages"),
    ("rss_peak_mib", "MiB", "VmHWM (peak RSS) at the end"),
    ("exporter_cpu_percent", "%", "exporter CPU during the first refresh (100 = one core)"),
    ("nsd_cpu_percent", "%", "NSD CPU during the first refresh"),
    ("sink_cpu_percent", "%", "smtp-sink CPU during the first refresh"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--domains",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="sizes, one lab each (1000 10000 50000)",
    )
    parser.add_argument(
        "--scrape-every", type=float, default=15.0, help="seconds between scrapes in the refresh"
    )
    parser.add_argument("--scrapes", type=int, default=10, help="timed GET /metrics after it, each way (10)")
    parser.add_argument("--status-gets", type=int, default=5, help="timed GET / (5)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound on the refresh and each request")
    parser.add_argument("--seed", type=int, default=5321, help="zone generator seed")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.domains) < 1:
        parser.error("--domains must be at least 1")
    for name in ("scrapes", "status_gets"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.scrape_every <= 0 or args.timeout <= 0:
        parser.error("--scrape-every and --timeout must be positive")
    return args


class RefreshScrapes(threading.Thread):
    """Prometheus-like: GET /metrics (gzip) as soon as the exporter answers, then every ``every`` seconds."""

    def __init__(self, proc: measure.ExporterProcess, every: float, timeout: float) -> None:
        super().__init__(name="scrapes during the refresh", daemon=True)
        self.proc, self.every, self.deadline = proc, every, time.monotonic() + timeout
        self.done = threading.Event()
        self.scrapes: list[tuple[float, float]] = []  # (started, seconds)
        self.error = ""

    def run(self) -> None:
        while not self.done.is_set() and time.monotonic() < self.deadline:
            started = time.monotonic()
            try:
                status, _ = self.proc.get("/metrics", GZIP)
            except OSError:  # not listening yet (or a timeout: the figure would be the timeout)
                self.done.wait(0.1)
                continue
            if status != 200:
                self.error = f"/metrics answered {status} during the refresh"
                return
            self.scrapes.append((started, time.monotonic() - started))
            self.done.wait(max(0.0, self.every - (time.monotonic() - started)))

    def during(self, ready_at: float) -> list[float]:
        """Durations of the scrapes that started before the exporter was seen ready."""
        return [seconds for started, seconds in self.scrapes if started < ready_at]


def timed(
    proc: measure.ExporterProcess, path: str, count: int, headers: dict[str, str]
) -> tuple[float, bytes]:
    """Median seconds of ``count`` GETs one after the other, and the last body (each must be 200)."""
    durations, body = [], b""
    for _ in range(count):
        started = time.monotonic()
        status, body = proc.get(path, headers)
        durations.append(time.monotonic() - started)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
    return statistics.median(durations), body


def run_size(domains: int, args: argparse.Namespace) -> dict[str, Any]:
    """One lab of ``domains`` domains: NSD, smtp-sink and the exporter, all stopped on the way out."""
    mix = zone.hosted_zone(domains, args.seed)
    figures: dict[str, float] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mx-exporter-hosted-")))
        (workdir / f"{mix.name}.zone").write_text(mix.text)
        lab.step(f"{domains} domains: NSD and smtp-sink ({len(mix.addresses)} addresses)")
        nsd = stack.enter_context(NsdServer(zones_dir=workdir, zone=mix.name, startup_timeout=NSD_STARTUP))
        sink = stack.enter_context(lab.SharedSink((mix.addresses[0], mix.addresses[-1]), concurrency=32))
        where = measure.Lab(nameserver=nsd.nameserver, smtp_port=sink.port, timeout=args.timeout)
        nsd_pids = lab.descendants_named("nsd")
        lab.step(f"{domains} domains: exporter's first refresh")
        proc = stack.enter_context(
            measure.exporter(workdir, where, mix.domains, free_port(), http_timeout=args.timeout)
        )
        meter = lab.CpuMeter({"exporter": [proc.proc.pid], "nsd": nsd_pids, "sink": [sink.pid]})
        scrapes = RefreshScrapes(proc, args.scrape_every, args.timeout)
        scrapes.start()
        try:
            proc.wait_ready(args.timeout, interval=0.2)
        finally:
            ready_at = time.monotonic()
            scrapes.done.set()
            scrapes.join(timeout=args.timeout)
        figures["ready_seconds"] = ready_at - proc.started
        cpu = meter.stop()
        figures["rss_mib"] = lab.rss_mib(proc.proc.pid)
        if scrapes.error:
            raise RuntimeError(scrapes.error)
        during = scrapes.during(ready_at)
        figures["refresh_scrapes"] = len(during)
        figures["refresh_scrape_gzip_median_seconds"] = lab.median_or_absent(during)
        figures["refresh_scrape_gzip_max_seconds"] = max(during, default=lab.ABSENT)

        lab.step(f"{domains} domains: scrapes and status page")
        figures["scrape_median_seconds"], body = timed(proc, "/metrics", args.scrapes, {})
        figures["scrape_gzip_median_seconds"], gzipped = timed(proc, "/metrics", args.scrapes, GZIP)
        text = body.decode()
        values = lab.metric_values(text, (*SELF_METRICS, "mx_domain_deliverable"))
        figures["undeliverable_domains"] = lab.undeliverable(text, domains)
        if gzip.decompress(gzipped).count(b"\nmx_domain_deliverable{") != text.count(
            "\nmx_domain_deliverable{"
        ):
            raise RuntimeError("gzipped /metrics does not hold the same domains as the plain one")
        first_refresh = values["mx_exporter_refresh_duration_seconds_sum"]
        figures["first_refresh_seconds"] = first_refresh[0] if first_refresh else figures["ready_seconds"]
        figures["refresh_domains_per_second"] = domains / figures["first_refresh_seconds"]
        figures["dns_queries"] = lab.total(values["mx_exporter_dns_queries_total"])
        figures["smtp_sessions"] = lab.total(values["mx_exporter_smtp_sessions_total"])
        series = lab.sample_count(text)
        figures.update(
            metrics_bytes=len(body),
            metrics_bytes_per_domain=len(body) / domains,
            metrics_series=series,
            metrics_series_per_domain=series / domains,
            metrics_gzip_bytes=len(gzipped),
        )
        figures["status_page_median_seconds"], page = timed(proc, "/", args.status_gets, {})
        figures["status_page_bytes"] = len(page)
        figures["rss_after_mib"] = lab.rss_mib(proc.proc.pid)
        figures["rss_peak_mib"] = lab.rss_mib(proc.proc.pid, "VmHWM")
        figures["exporter_cpu_percent"] = cpu["exporter"]
        figures["nsd_cpu_percent"] = cpu["nsd"]
        figures["sink_cpu_percent"] = cpu["sink"]
    return {
        "parameters": {
            "domains": domains,
            "kinds": mix.kinds,
            "addresses": len(mix.addresses),
            "exchanges": mix.exchanges,
            "exchange_refs": mix.exchange_refs,
            "dns_queries_min": mix.dns_queries_min,
            "dns_queries_max": mix.dns_queries_max,
            "scrape_every": args.scrape_every,
            "scrapes": args.scrapes,
            "status_gets": args.status_gets,
            "seed": args.seed,
        },
        "figures": {key: float(figures[key]) for key, _, _ in FIGURES},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    lab.check_nsd_rate_limit_off()
    return {
        "bench": "hosted",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": "exporter defaults (32 SMTP sessions, 64 DNS queries, A and AAAA), resolver = lab NSD",
        "runs": [run_size(size, args) for size in args.domains],
    }


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    heading = [
        f"mx-exporter {m['mx_exporter']} hosted mix, {results['date']}, {m['nproc']} CPU, Python {m['python']}",
        *(
            f"{r['parameters']['domains']} domains: {r['parameters']['kinds']}, "
            f"{r['parameters']['addresses']} addresses, {r['parameters']['exchanges']} exchange names"
            for r in results["runs"]
        ),
    ]
    columns = [(f"{r['parameters']['domains']:,}", r["figures"]) for r in results["runs"]]
    return lab.table(heading, FIGURES, columns)


def main(argv: list[str] | None = None) -> int:
    return lab.bench_main(Path(__file__), sys.argv[1:] if argv is None else argv, parse_args, run, table)


if __name__ == "__main__":
    sys.exit(main())
