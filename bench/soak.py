"""The soak: the real exporter refreshing 1,000 domains, 30 % of them on hostile peers, for ten minutes.

    python bench/soak.py [--seconds 600] [--domains 1000] [--sample-every 60] [--json PATH]

Hostile peers are the lab's own behaviours (tests/lab/smtp_peers.py: dribblers, silent, garbage, 421), served
with polite ones by one listener in a private network namespace (bench/soak_peers.py); NSD serves the zone
(bench/zone.py ``soak_zone``). The exporter refreshes every --refresh-interval seconds (10), so many refreshes
happen. Every --scrape-every seconds /metrics is scraped (gzip, as Prometheus asks), every second the exporter's
RSS and open fds are read; each --sample-every seconds a sample summarises that window: the lowest and highest
RSS, fds and asyncio tasks, and the scrape p99.

Verdict: after warm-up (the first sample taken after 20 % of the run), the last sample's RSS peak and fd and
task floors (which in-flight sessions do not blur) must each be less than 10 % above the baseline sample's, and
the exporter's log must hold no "Traceback", "Task exception was never retrieved", "Unhandled exception" or
ERROR line. Exit 1 on a leak or an exception (or when the lab fails); the table and JSON are printed either way.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script from anywhere: the package, tests.lab and bench from this tree.
sys.path.insert(0, str(REPO))

from bench import lab, measure, zone  # noqa: E402
from bench.run import machine  # noqa: E402
from tests.lab.exporter import free_port  # noqa: E402
from tests.lab.nsd import NsdServer  # noqa: E402
from tests.lab.smtp_peers import listening  # noqa: E402

PEERS = Path(__file__).with_name("soak_peers.py")
GZIP = {"Accept-Encoding": "gzip"}
TICK = 1.0  # seconds between RSS / fd readings
GROWTH_LIMIT = 0.10
WARMUP_SHARE = 0.20
PROBLEM_PATTERNS = (
    re.compile(r"Traceback"),
    re.compile(r"Task exception was never retrieved"),
    re.compile(r"Unhandled exception"),
    re.compile(r"\b(ERROR|CRITICAL)\b"),
)
TASKS = "mx_exporter_asyncio_tasks"
REFRESHES = "mx_exporter_refresh_duration_seconds_count"
REFRESH_SUM = "mx_exporter_refresh_duration_seconds_sum"
SOAK_SMTP = {  # short timeouts: a hostile peer holds a session slot for seconds, not the defaults' tens
    "connect_timeout": 1,
    "greeting_timeout": 2,
    "ehlo_timeout": 2,
    "session_timeout": 3,
}

SAMPLE_COLUMNS = (  # (key, title) of the per-sample table
    ("t", "t s"),
    ("rss_mib", "rss MiB"),
    ("rss_max_mib", "rss max"),
    ("fds", "fds"),
    ("fds_max", "fds max"),
    ("tasks", "tasks"),
    ("tasks_max", "tasks max"),
    ("scrapes", "scrapes"),
    ("scrape_p99_seconds", "p99 s"),
    ("refreshes", "refreshes"),
)
FIGURES = (
    ("refreshes", "", "refreshes finished (refresh_duration_seconds_count) at the end"),
    ("refresh_seconds_mean", "s", "mean refresh time (refresh_duration_seconds sum / count)"),
    ("smtp_sessions", "", "mx_exporter_smtp_sessions_total at the end"),
    ("rss_growth_percent", "%", "last sample's RSS peak vs the baseline sample's (after warm-up)"),
    ("fds_growth_percent", "%", "same for the open fds floor"),
    ("tasks_growth_percent", "%", "same for the asyncio tasks floor (-1: gauge not exposed)"),
    ("rss_final_mib", "MiB", "last sample's RSS peak"),
    ("fds_final", "", "last sample's fd floor"),
    ("tasks_final", "", "last sample's task floor (-1: not exposed)"),
    ("scrape_p99_seconds", "s", "GET /metrics gzip, p99 over the whole soak"),
    ("scrapes", "", "scrapes in the soak"),
    ("exceptions", "", "log lines with Traceback / never retrieved / Unhandled / ERROR"),
    ("exporter_cpu_percent", "%", "exporter CPU over the soak (100 = one core)"),
    ("peers_cpu_percent", "%", "SMTP peers' CPU"),
    ("nsd_cpu_percent", "%", "NSD CPU"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=600.0, help="soak length after the first refresh (600)"
    )
    parser.add_argument("--domains", type=int, default=1000, help="domains (1000)")
    parser.add_argument("--hostile-share", type=float, default=0.30, help="share on hostile peers (0.30)")
    parser.add_argument(
        "--hostile-pool",
        type=int,
        default=16,
        help="addresses shared by the domains of each hostile kind (16)",
    )
    parser.add_argument("--refresh-interval", type=float, default=10.0, help="exporter refresh_interval (10)")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds per sample (60)")
    parser.add_argument("--scrape-every", type=float, default=2.0, help="seconds between scrapes (2)")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="bound on the first refresh")
    parser.add_argument("--seed", type=int, default=5321, help="zone generator seed")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.domains < 1 or args.hostile_pool < 1 or not 0 <= args.hostile_share <= 1:
        parser.error("--domains and --hostile-pool must be at least 1, --hostile-share between 0 and 1")
    if (
        min(args.seconds, args.refresh_interval, args.sample_every, args.scrape_every, args.startup_timeout)
        <= 0
    ):
        parser.error("times must be positive")
    if args.refresh_interval < 1:
        parser.error("--refresh-interval must be at least 1 (the exporter's minimum)")
    return args


@dataclass
class Window:
    """Readings of one sample window."""

    rss: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    tasks: list[float] = field(default_factory=list)
    scrapes: list[float] = field(default_factory=list)
    refreshes: float = lab.ABSENT

    def summary(self, t: float) -> dict[str, float]:
        return {
            "t": round(t, 1),
            "rss_mib": min(self.rss),
            "rss_max_mib": max(self.rss),
            "fds": min(self.fds),
            "fds_max": max(self.fds),
            "tasks": min(self.tasks, default=lab.ABSENT),
            "tasks_max": max(self.tasks, default=lab.ABSENT),
            "scrapes": len(self.scrapes),
            "scrape_p99_seconds": measure.percentile(self.scrapes, 99) if self.scrapes else lab.ABSENT,
            "refreshes": self.refreshes,
        }


def gauge(body: str, name: str) -> float | None:
    """The value of an unlabelled sample, or None when the exposition has none."""
    for prefix in ("\n" + name + " ", "\n" + name + "{} "):
        at = body.find(prefix)
        if at != -1:
            end = body.find("\n", at + 1)
            return float(body[at + 1 : end if end != -1 else None].rsplit(" ", 1)[1])
    return None


def start_peers(stack: ExitStack, workdir: Path, mix: zone.MixZone) -> tuple[subprocess.Popen[bytes], int]:
    (workdir / "peers.json").write_text(json.dumps(mix.behaviours))
    port = lab.free_port_any()
    log = stack.enter_context((workdir / "peers.log").open("wb"))
    peers = subprocess.Popen(
        [sys.executable, str(PEERS), str(workdir / "peers.json"), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    stack.callback(lab.stop_process, peers)
    deadline = time.monotonic() + 30
    while not listening("127.0.0.1", port):  # 127.0.0.1 is no peer: the listener closes at once
        if peers.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"soak peers did not listen: {(workdir / 'peers.log').read_text()[-500:]}")
        time.sleep(0.05)
    return peers, port


def problems_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(p.search(line) for p in PROBLEM_PATTERNS)]


def growth(samples: list[dict[str, float]], key: str, base: int) -> float:
    """Percent growth of the last sample over the baseline sample; -1 when not measured."""
    first, last = samples[base][key], samples[-1][key]
    if first == lab.ABSENT or last == lab.ABSENT:
        return lab.ABSENT
    return 100 * (last - first) / first if first else (0.0 if last == first else float("inf"))


def soak(args: argparse.Namespace) -> dict[str, Any]:
    mix = zone.soak_zone(args.domains, args.hostile_share, args.hostile_pool, args.seed)
    samples: list[dict[str, float]] = []
    all_scrapes: list[float] = []
    figures: dict[str, float] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mx-exporter-soak-")))
        (workdir / f"{mix.name}.zone").write_text(mix.text)
        lab.step(f"soak lab: NSD and peers ({mix.kinds})")
        nsd = stack.enter_context(NsdServer(zones_dir=workdir, zone=mix.name, startup_timeout=60))
        peers, port = start_peers(stack, workdir, mix)
        where = measure.Lab(nameserver=nsd.nameserver, smtp_port=port, timeout=args.startup_timeout)
        overrides = {
            "refresh_interval": args.refresh_interval,
            "resolver": {"timeout": 2},
            "smtp": SOAK_SMTP,
        }
        nsd_pids = lab.descendants_named("nsd")
        proc = stack.enter_context(measure.exporter(workdir, where, mix.domains, free_port(), overrides))
        lab.step("soak: first refresh")
        proc.wait_ready(args.startup_timeout, interval=0.2)
        meter = lab.CpuMeter({"exporter": [proc.proc.pid], "peers": [peers.pid], "nsd": nsd_pids})
        lab.step(f"soak: {args.seconds:g} s, a sample every {args.sample_every:g} s")
        started = time.monotonic()
        deadline = started + args.seconds
        next_scrape, window_end = started, started + args.sample_every
        window = Window()
        body = ""
        while True:
            now = time.monotonic()
            if proc.proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {proc.proc.returncode}:\n{proc.log_tail()}")
            window.rss.append(lab.rss_mib(proc.proc.pid))
            window.fds.append(lab.open_fds(proc.proc.pid))
            if now >= next_scrape:
                status, raw = proc.get("/metrics", GZIP)
                elapsed = time.monotonic() - now
                if status != 200:
                    raise RuntimeError(f"/metrics answered {status}")
                body = gzip.decompress(raw).decode()
                window.scrapes.append(elapsed)
                all_scrapes.append(elapsed)
                if (tasks := gauge(body, TASKS)) is not None:
                    window.tasks.append(tasks)
                window.refreshes = gauge(body, REFRESHES) or lab.ABSENT
                next_scrape += args.scrape_every
            if now >= window_end or now >= deadline:
                samples.append(window.summary(now - started))
                print(sample_row(samples[-1]), file=sys.stderr, flush=True)
                window, window_end = Window(), window_end + args.sample_every
            if now >= deadline:
                break
            time.sleep(max(0.0, min(now + TICK, next_scrape, window_end, deadline) - time.monotonic()))
        cpu = meter.stop()
        values = lab.metric_values(body, ("mx_exporter_smtp_sessions_total", REFRESH_SUM, REFRESHES))
        figures["smtp_sessions"] = lab.total(values["mx_exporter_smtp_sessions_total"])
        figures["refreshes"] = lab.total(values[REFRESHES])
        refresh_time = lab.total(values[REFRESH_SUM])
        figures["refresh_seconds_mean"] = (
            refresh_time / figures["refreshes"] if figures["refreshes"] > 0 else -1
        )
        lab.stop_process(proc.proc)  # a clean stop is part of the soak: its log must stay clean too
        problems = problems_in(proc.log_text())
    base = next((i for i, s in enumerate(samples) if s["t"] >= WARMUP_SHARE * args.seconds), 0)
    figures.update(
        rss_growth_percent=growth(samples, "rss_max_mib", base),
        fds_growth_percent=growth(samples, "fds", base),
        tasks_growth_percent=growth(samples, "tasks", base),
        rss_final_mib=samples[-1]["rss_max_mib"],
        fds_final=samples[-1]["fds"],
        tasks_final=samples[-1]["tasks"],
        scrape_p99_seconds=measure.percentile(all_scrapes, 99),
        scrapes=len(all_scrapes),
        exceptions=len(problems),
        exporter_cpu_percent=cpu["exporter"],
        peers_cpu_percent=cpu["peers"],
        nsd_cpu_percent=cpu["nsd"],
    )
    leaks = [
        key.removesuffix("_growth_percent")
        for key in ("rss_growth_percent", "fds_growth_percent", "tasks_growth_percent")
        if figures[key] != lab.ABSENT and figures[key] >= 100 * GROWTH_LIMIT
    ]
    verdict = "ok" if not leaks and not problems else "fail"
    return {
        "bench": "soak",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "seconds": args.seconds,
            "domains": args.domains,
            "kinds": mix.kinds,
            "addresses": len(mix.addresses),
            "hostile_pool": args.hostile_pool,
            "refresh_interval": args.refresh_interval,
            "sample_every": args.sample_every,
            "scrape_every": args.scrape_every,
            "smtp": SOAK_SMTP,
            "baseline_sample": base,
            "seed": args.seed,
        },
        "samples": samples,
        "figures": {key: float(figures[key]) for key, _, _ in FIGURES},
        "verdict": verdict,
        "leaks": leaks,
        "exceptions": problems[:50],
    }


def sample_row(sample: dict[str, float]) -> str:
    return " ".join(f"{lab.shown(sample[key]):>10}" for key, _ in SAMPLE_COLUMNS)


def table(results: dict[str, Any]) -> str:
    m, p = results["machine"], results["parameters"]
    heading = [
        f"mx-exporter {m['mx_exporter']} soak, {results['date']}, {m['nproc']} CPU, Python {m['python']}",
        f"{p['domains']} domains {p['kinds']}, {p['seconds']:g} s, refresh_interval {p['refresh_interval']:g} s",
    ]
    rows = [" ".join(f"{title:>10}" for _, title in SAMPLE_COLUMNS)]
    rows += [sample_row(s) for s in results["samples"]]
    figures = lab.table(heading, FIGURES, [("value", results["figures"])])
    verdict = f"verdict: {results['verdict']}"
    if results["leaks"]:
        verdict += (
            f" (growth of 10 % or more since sample {p['baseline_sample']}: {', '.join(results['leaks'])})"
        )
    if results["exceptions"]:
        verdict += "\n" + "\n".join("  " + line for line in results["exceptions"][:10])
    return "\n".join(rows) + "\n\n" + figures + "\n\n" + verdict


def _checked_soak(args: argparse.Namespace) -> dict[str, Any]:
    lab.check_nsd_rate_limit_off()
    return soak(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return lab.bench_main(
        Path(__file__), argv, parse_args, _checked_soak, table, lambda r: 0 if r["verdict"] == "ok" else 1
    )


if __name__ == "__main__":
    sys.exit(main())
