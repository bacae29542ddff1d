"""Benchmark mx-exporter against a generated zone served by NSD and smtp-sink peers, all on loopback.

    python bench/run.py [--domains N] [--addresses M] [--json PATH]

Measures (1) one full refresh of N domains through the real Prober, (2) the real exporter process: time to
ready, RSS, /metrics scrape time and size, (3) /probe throughput. Prints a table; writes JSON with --json.
Every process started here is stopped on the way out, whatever happens. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(
    0, str(REPO)
)  # run as a script from anywhere: the package, tests.lab and bench from this tree

from bench import measure, zone  # noqa: E402
from bench.peers import SinkPeers  # noqa: E402
from mx_exporter import __version__  # noqa: E402
from tests.lab.exporter import free_port  # noqa: E402
from tests.lab.nsd import NsdServer  # noqa: E402

FIGURES = (  # (key, unit, what) in table order
    ("refresh_seconds", "s", "one full refresh, in process"),
    ("refresh_domains_per_second", "/s", "domains refreshed per second"),
    ("refresh_smtp_sessions", "", "SMTP sessions in that refresh (distinct addresses)"),
    ("refresh_smtp_sessions_per_second", "/s", "SMTP sessions per second of refresh"),
    ("refresh_dns_queries", "", "DNS questions asked in that refresh"),
    ("refresh_dns_queries_per_second", "/s", "DNS questions per second of refresh"),
    ("smtp_burst_sessions_per_second", "/s", "SMTP stage alone: sessions/s over the pool"),
    ("exporter_ready_seconds", "s", "process start to /-/ready (startup + first refresh)"),
    ("exporter_first_refresh_seconds", "s", "first refresh inside the process (its histogram)"),
    ("exporter_rss_mib", "MiB", "exporter VmRSS after the first refresh"),
    ("exporter_rss_after_scrapes_mib", "MiB", "exporter VmRSS after scrapes and /probe"),
    ("scrape_seconds_median", "s", "GET /metrics, median"),
    ("scrape_seconds_p95", "s", "GET /metrics, p95"),
    ("exposition_bytes", "B", "/metrics body size"),
    ("exposition_series", "", "samples in /metrics"),
    ("scrape_gzip_seconds_median", "s", "GET /metrics with gzip (as Prometheus), median"),
    ("scrape_gzip_seconds_p95", "s", "GET /metrics with gzip, p95"),
    ("exposition_gzip_bytes", "B", "gzipped /metrics body size"),
    ("probe_requests_per_second", "/s", "/probe (NXDOMAIN targets) throughput"),
    ("probe_seconds_median", "s", "/probe latency, median"),
    ("probe_seconds_p95", "s", "/probe latency, p95"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", type=int, default=2000, help="bench domains (default 2000)")
    parser.add_argument(
        "--addresses", type=int, default=50, help=f"SMTP peer addresses, 1..{zone.MAX_ADDRESSES} (default 50)"
    )
    parser.add_argument("--smtp-sessions", type=int, default=1000, help="SMTP burst sessions (default 1000)")
    parser.add_argument("--scrapes", type=int, default=20, help="GET /metrics to time (default 20)")
    parser.add_argument("--probe-requests", type=int, default=300, help="/probe requests (default 300)")
    parser.add_argument("--probe-workers", type=int, default=4, help="client threads for /probe (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="bound on each phase, seconds (default 600)"
    )
    parser.add_argument("--seed", type=int, default=5321, help="zone generator seed")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("domains", "smtp_sessions", "scrapes", "probe_requests", "probe_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= args.addresses <= zone.MAX_ADDRESSES:
        parser.error(f"--addresses must be between 1 and {zone.MAX_ADDRESSES}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def machine() -> dict[str, Any]:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mx_exporter": __version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start NSD and the peers, take the three measurements, stop everything; the results document."""
    bench_zone = zone.build_zone(args.domains, args.addresses, args.seed)
    figures: dict[str, float] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mx-exporter-bench-")))
        (workdir / f"{bench_zone.name}.zone").write_text(bench_zone.text)
        nsd = stack.enter_context(NsdServer(zones_dir=workdir, zone=bench_zone.name))
        peers = stack.enter_context(SinkPeers(bench_zone.addresses))
        lab = measure.Lab(nameserver=nsd.nameserver, smtp_port=peers.port, timeout=args.timeout)
        step("refresh in process")
        figures.update(measure.measure_refresh(lab, bench_zone.domains))
        step("SMTP burst")
        figures.update(measure.measure_smtp_burst(lab, bench_zone.addresses, args.smtp_sessions))
        step("exporter process")
        proc = stack.enter_context(measure.exporter(workdir, lab, bench_zone.domains, free_port()))
        figures["exporter_ready_seconds"] = proc.wait_ready(args.timeout)
        figures["exporter_rss_mib"] = proc.rss_mib()
        step("scrapes")
        figures.update(measure.measure_scrapes(proc, len(bench_zone.domains), args.scrapes))
        step("/probe")
        figures.update(measure.measure_probes(proc, bench_zone.name, args.probe_requests, args.probe_workers))
        figures["exporter_rss_after_scrapes_mib"] = proc.rss_mib()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "domains": args.domains,
            "addresses": args.addresses,
            "exchanges": bench_zone.exchanges,
            "smtp_sessions": args.smtp_sessions,
            "scrapes": args.scrapes,
            "probe_requests": args.probe_requests,
            "probe_workers": args.probe_workers,
            "seed": args.seed,
            "smtp_peer": "postfix smtp-sink",
        },
        "figures": {key: figures[key] for key, _, _ in FIGURES},
    }


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} ...", file=sys.stderr, flush=True)


def table(results: dict[str, Any]) -> str:
    p, m = results["parameters"], results["machine"]
    lines = [
        f"mx-exporter {m['mx_exporter']} bench, {results['date']}, {m['nproc']} CPU, Python {m['python']}",
        f"{p['domains']} domains, {p['exchanges']} exchanges, {p['addresses']} addresses",
        "",
        f"{'figure':<34} {'value':>12} {'unit':<4}  meaning",
        f"{'-' * 34} {'-' * 12} {'-' * 4}  {'-' * 40}",
    ]
    for key, unit, what in FIGURES:
        value = results["figures"][key]
        shown = f"{value:.3g}" if isinstance(value, float) and value < 1000 else f"{value:,.0f}"
        lines.append(f"{key:<34} {shown:>12} {unit:<4}  {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (RuntimeError, OSError, TimeoutError) as err:
        print(f"bench failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
