"""The worst case, side by side: the exporter, Prometheus' blackbox exporter and a bare aiosmtplib loop.

    python bench/worstcase.py [--domains 2000 10000] [--concurrency 32] [--json PATH]

N domains with 4 exchanges each (MX 10, 10, 20, 20), every exchange on an address of its own, so nothing is
shared and a refresh opens 4 N SMTP sessions (bench/zone.py ``worstcase_zone``). In one run, on one lab (NSD and
one smtp-sink for every address, in a private network namespace), one after the other:

1. the real exporter process's first refresh of all N domains: domains/s and SMTP sessions/s;
2. Debian's prometheus-blackbox-exporter doing the equivalent work, driven by wrk: per domain one DNS MX probe
   against the lab NSD and one TCP probe per address (expect ^220, EHLO, expect the final 250 line, QUIT):
   domains/s = successful probes / 5 / wall time;
3. the raw ceiling: aiosmtplib.SMTP connect, EHLO, QUIT over every address, one process, on the same kind of
   event loop as the exporter (uvloop when installed).

The exporter's smtp.max_concurrent_sessions, wrk's connections and the raw loop's concurrency are the same
(--concurrency). Prints a table and both ratios; writes JSON with --json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiosmtplib
import yaml

REPO = Path(__file__).resolve().parent.parent
# Run as a script from anywhere: the package, tests.lab and bench from this tree.
sys.path.insert(0, str(REPO))

from bench import lab, measure, zone  # noqa: E402
from bench.run import machine  # noqa: E402
from mx_exporter.loop import loop_name, run_event_loop  # noqa: E402
from tests.lab.exporter import free_port  # noqa: E402
from tests.lab.nsd import NsdServer  # noqa: E402

DEFAULT_SIZES = (2000, 10_000)
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
WRK = "/usr/bin/wrk"
LUA = Path(__file__).with_name("blackbox.lua")
NSD_STARTUP = 120.0
PROBES_PER_DOMAIN = 1 + len(zone.WORSTCASE_MX)  # one DNS MX probe, one TCP probe per address
PROBE_TIMEOUT = 10.0  # seconds: blackbox module timeout, wrk's request timeout, the raw loop's per command
BLACKBOX_FAILURE_LIMIT = 0.01  # more failed probes than this share means the lab, not blackbox, is broken
SELF_METRICS = (
    "mx_exporter_refresh_duration_seconds_sum",
    "mx_exporter_dns_queries_total",
    "mx_exporter_smtp_sessions_total",
)

FIGURES = (  # (key, unit, what) in table order
    ("exporter_refresh_seconds", "s", "(1) exporter: first refresh (refresh_duration_seconds_sum)"),
    ("exporter_domains_per_second", "/s", "(1) domains / refresh"),
    ("exporter_smtp_sessions", "", "(1) mx_exporter_smtp_sessions_total (= 4 N addresses)"),
    ("exporter_sessions_per_second", "/s", "(1) SMTP sessions / refresh"),
    ("exporter_dns_queries", "", "(1) sum of mx_exporter_dns_queries_total (-1: not exposed)"),
    ("exporter_undeliverable_domains", "", "(1) domains not deliverable (all are: > 0 means timeouts)"),
    ("exporter_rss_mib", "MiB", "(1) exporter VmRSS after the refresh"),
    ("exporter_cpu_percent", "%", "(1) exporter CPU (100 = one core)"),
    ("exporter_nsd_cpu_percent", "%", "(1) NSD CPU meanwhile"),
    ("exporter_sink_cpu_percent", "%", "(1) smtp-sink CPU meanwhile"),
    ("blackbox_seconds", "s", "(2) blackbox: wrk's wall time"),
    ("blackbox_probes", "", "(2) probes answered with probe_success 1"),
    ("blackbox_failed_probes", "", "(2) other answers and wrk errors"),
    ("blackbox_probes_per_second", "/s", "(2) successful probes / wall time"),
    ("blackbox_domains_per_second", "/s", "(2) that / 5 probes per domain"),
    ("blackbox_cpu_percent", "%", "(2) blackbox exporter CPU"),
    ("wrk_cpu_percent", "%", "(2) wrk CPU"),
    ("blackbox_nsd_cpu_percent", "%", "(2) NSD CPU meanwhile"),
    ("blackbox_sink_cpu_percent", "%", "(2) smtp-sink CPU meanwhile"),
    ("raw_sessions", "", "(3) raw aiosmtplib loop: sessions (= 4 N addresses)"),
    ("raw_seconds", "s", "(3) its wall time"),
    ("raw_sessions_per_second", "/s", "(3) sessions / wall time"),
    ("raw_cpu_percent", "%", "(3) the loop's process CPU"),
    ("raw_sink_cpu_percent", "%", "(3) smtp-sink CPU meanwhile"),
    ("ratio_domains_exporter_to_blackbox", "", "exporter domains/s / blackbox domains/s"),
    ("ratio_sessions_exporter_to_raw", "", "exporter sessions/s / raw sessions/s"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--domains", type=int, nargs="+", default=list(DEFAULT_SIZES), help="sizes, one lab each (2000 10000)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="exporter smtp.max_concurrent_sessions = wrk connections = raw loop sessions at once (32)",
    )
    parser.add_argument("--blackbox-seconds", type=int, default=30, help="wrk's run time, whole seconds (30)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1; at most --concurrency)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound on each phase, seconds")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.domains) < 1:
        parser.error("--domains must be at least 1")
    if not 1 <= args.concurrency <= 10_000:
        parser.error("--concurrency must be between 1 and 10000")
    if args.blackbox_seconds < 1 or not 1 <= args.wrk_threads <= args.concurrency:
        parser.error("--blackbox-seconds must be at least 1 and --wrk-threads between 1 and --concurrency")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


# --- (1) the exporter


def exporter_phase(
    workdir: Path, mix: zone.MixZone, where: measure.Lab, sink: lab.SharedSink, args: argparse.Namespace
) -> dict[str, float]:
    overrides = {"smtp": {"max_concurrent_sessions": args.concurrency}}
    nsd_pids = lab.descendants_named("nsd")
    with measure.exporter(
        workdir, where, mix.domains, free_port(), overrides, http_timeout=args.timeout
    ) as proc:
        meter = lab.CpuMeter({"exporter": [proc.proc.pid], "nsd": nsd_pids, "sink": [sink.pid]})
        proc.wait_ready(args.timeout, interval=0.2)
        cpu = meter.stop()
        rss = lab.rss_mib(proc.proc.pid)
        status, body = proc.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
    text = body.decode()
    values = lab.metric_values(text, SELF_METRICS)
    undeliverable = lab.undeliverable(text, len(mix.domains))
    refresh = values["mx_exporter_refresh_duration_seconds_sum"]
    seconds = refresh[0] if refresh else meter.wall
    sessions = lab.total(values["mx_exporter_smtp_sessions_total"])
    return {
        "exporter_refresh_seconds": seconds,
        "exporter_domains_per_second": len(mix.domains) / seconds,
        "exporter_smtp_sessions": sessions,
        "exporter_sessions_per_second": sessions / seconds,
        "exporter_dns_queries": lab.total(values["mx_exporter_dns_queries_total"]),
        "exporter_undeliverable_domains": undeliverable,
        "exporter_rss_mib": rss,
        "exporter_cpu_percent": cpu["exporter"],
        "exporter_nsd_cpu_percent": cpu["nsd"],
        "exporter_sink_cpu_percent": cpu["sink"],
    }


# --- (2) blackbox exporter driven by wrk


def blackbox_config(mix: zone.MixZone) -> dict[str, Any]:
    """One DNS module per domain (blackbox takes the query name only from a module) and one SMTP TCP module."""
    modules: dict[str, Any] = {
        "smtp_ehlo": {
            "prober": "tcp",
            "timeout": f"{PROBE_TIMEOUT:g}s",
            "tcp": {
                "preferred_ip_protocol": "ip4",
                "ip_protocol_fallback": False,
                "query_response": [  # blackbox ends each send with "\n": the "\r" makes it CRLF
                    {"expect": "^220"},
                    {"send": f"EHLO {measure.EHLO_NAME}\r"},
                    {"expect": "^250 "},  # the last line of the EHLO reply, as the exporter reads it whole
                    {"send": "QUIT\r"},
                ],
            },
        }
    }
    for domain in mix.domains:
        modules[dns_module(domain)] = {
            "prober": "dns",
            "timeout": f"{PROBE_TIMEOUT:g}s",
            "dns": {
                "query_name": domain,
                "query_type": "MX",
                "transport_protocol": "udp",
                "preferred_ip_protocol": "ip4",
                "ip_protocol_fallback": False,
            },
        }
    return {"modules": modules}


def dns_module(domain: str) -> str:
    return "dns_" + domain.split(".", 1)[0]


def probe_paths(mix: zone.MixZone, nameserver: str, smtp_port: int) -> list[str]:
    """Per domain: its DNS probe, then a TCP probe of each of its 4 addresses (zone order: 4 per domain)."""
    per_domain = len(zone.WORSTCASE_MX)
    paths = []
    for i, domain in enumerate(mix.domains):
        paths.append(f"/probe?module={dns_module(domain)}&target={nameserver}")
        for address in mix.addresses[i * per_domain : (i + 1) * per_domain]:
            paths.append(f"/probe?module=smtp_ehlo&target={address}:{smtp_port}")
    return paths


def http_get(url: str, timeout: float = PROBE_TIMEOUT + 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def start_blackbox(stack: ExitStack, workdir: Path, mix: zone.MixZone) -> tuple[subprocess.Popen[bytes], str]:
    """blackbox on 127.0.0.1 with the bench's modules; its base URL once /-/healthy answers."""
    if shutil.which(BLACKBOX) is None:
        raise RuntimeError(f"{BLACKBOX} not found: install Debian's prometheus-blackbox-exporter")
    config = workdir / "blackbox.yml"
    config.write_text(yaml.safe_dump(blackbox_config(mix)))
    port = free_port()
    log = stack.enter_context((workdir / "blackbox.log").open("wb"))
    argv = [BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    stack.callback(lab.stop_process, process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"blackbox exited {process.returncode}: {(workdir / 'blackbox.log').read_text()}"
            )
        try:
            if http_get(url + "/-/healthy", timeout=2)[0] == 200:
                return process, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("blackbox did not answer /-/healthy within 60 s")
        time.sleep(0.1)


def blackbox_phase(
    workdir: Path, mix: zone.MixZone, where: measure.Lab, sink: lab.SharedSink, args: argparse.Namespace
) -> dict[str, float]:
    if shutil.which(WRK) is None:
        raise RuntimeError(f"{WRK} not found: install Debian's wrk")
    paths = probe_paths(mix, where.nameserver, where.smtp_port)
    (workdir / "paths.txt").write_text("\n".join(paths) + "\n")
    nsd_pids = lab.descendants_named("nsd")
    with ExitStack() as stack:
        process, url = start_blackbox(stack, workdir, mix)
        for path in paths[:2]:  # one DNS and one TCP probe must succeed, or the comparison means nothing
            status, text = http_get(url + path)
            if status != 200 or "\nprobe_success 1\n" not in text:
                raise RuntimeError(
                    f"blackbox {path} failed ({status}): {http_get(url + path + '&debug=true')[1]}"
                )
        argv = [
            WRK,
            "-t",
            str(args.wrk_threads),
            "-c",
            str(args.concurrency),
            "-d",
            f"{args.blackbox_seconds}s",
        ]
        argv += ["--timeout", f"{PROBE_TIMEOUT:g}s", "-s", str(LUA), url, "--", str(workdir / "paths.txt")]
        argv.append(str(args.wrk_threads))
        meter = lab.CpuMeter({"blackbox": [process.pid], "nsd": nsd_pids, "sink": [sink.pid]})
        children_before = lab.children_cpu_seconds()  # wrk is the only child reaped in this window
        wrk = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stack.callback(lab.stop_process, wrk)
        try:
            out, err = wrk.communicate(timeout=args.blackbox_seconds + PROBE_TIMEOUT + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("wrk did not finish in time") from None
        cpu = meter.stop()
        cpu["wrk"] = 100 * (lab.children_cpu_seconds() - children_before) / meter.wall
    lines = [line for line in out.decode().splitlines() if line.startswith("WRK_RESULT ")]
    if wrk.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {out.decode()[-500:]} {err.decode()[-500:]}")
    result = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    seconds = result["duration_us"] / 1e6
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    failed = result["failed"] + errors
    if result["ok"] == 0 or failed > BLACKBOX_FAILURE_LIMIT * max(1, result["requests"]):
        raise RuntimeError(f"blackbox probes failed: {result}")
    return {
        "blackbox_seconds": seconds,
        "blackbox_probes": result["ok"],
        "blackbox_failed_probes": failed,
        "blackbox_probes_per_second": result["ok"] / seconds,
        "blackbox_domains_per_second": result["ok"] / PROBES_PER_DOMAIN / seconds,
        "blackbox_cpu_percent": cpu["blackbox"],
        "wrk_cpu_percent": cpu["wrk"],
        "blackbox_nsd_cpu_percent": cpu["nsd"],
        "blackbox_sink_cpu_percent": cpu["sink"],
    }


# --- (3) the raw ceiling


async def raw_loop(
    addresses: tuple[str, ...], port: int, concurrency: int, bound: float
) -> tuple[int, list[str]]:
    """connect (greeting), EHLO, QUIT to every address once, ``concurrency`` at a time, on this event loop."""
    pending = iter(addresses)
    done, failed = 0, []

    async def worker() -> None:
        nonlocal done
        for address in pending:  # shared: each address taken by exactly one worker
            client = aiosmtplib.SMTP(
                hostname=address,
                port=port,
                local_hostname=measure.EHLO_NAME,
                timeout=PROBE_TIMEOUT,
                start_tls=False,
            )
            try:
                await client.connect()
                await client.ehlo()
                await client.quit()
                done += 1
            except (aiosmtplib.SMTPException, OSError) as err:
                failed.append(f"{address}: {type(err).__name__}: {err}")
                client.close()

    async with asyncio.timeout(bound):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, failed


def raw_phase(mix: zone.MixZone, sink: lab.SharedSink, args: argparse.Namespace) -> dict[str, float]:
    meter = lab.CpuMeter({"sink": [sink.pid]})
    cpu_before, started = lab.self_cpu_seconds(), time.monotonic()
    done, failed = run_event_loop(raw_loop(mix.addresses, sink.port, args.concurrency, args.timeout))
    seconds = time.monotonic() - started
    own_cpu = 100 * (lab.self_cpu_seconds() - cpu_before) / seconds
    cpu = meter.stop()
    if failed:
        raise RuntimeError(f"{len(failed)} raw SMTP sessions failed, e.g. {failed[:3]}")
    return {
        "raw_sessions": done,
        "raw_seconds": seconds,
        "raw_sessions_per_second": done / seconds,
        "raw_cpu_percent": own_cpu,
        "raw_sink_cpu_percent": cpu["sink"],
    }


def run_size(domains: int, args: argparse.Namespace) -> dict[str, Any]:
    mix = zone.worstcase_zone(domains)
    figures: dict[str, float] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mx-exporter-worstcase-")))
        (workdir / f"{mix.name}.zone").write_text(mix.text)
        lab.step(f"{domains} domains: NSD and smtp-sink ({len(mix.addresses)} addresses)")
        nsd = stack.enter_context(NsdServer(zones_dir=workdir, zone=mix.name, startup_timeout=NSD_STARTUP))
        sink = stack.enter_context(lab.SharedSink((mix.addresses[0], mix.addresses[-1]), args.concurrency))
        where = measure.Lab(nameserver=nsd.nameserver, smtp_port=sink.port, timeout=args.timeout)
        lab.step(f"{domains} domains: (1) exporter refresh")
        figures.update(exporter_phase(workdir, mix, where, sink, args))
        lab.step(f"{domains} domains: (2) blackbox exporter + wrk, {args.blackbox_seconds} s")
        figures.update(blackbox_phase(workdir, mix, where, sink, args))
        lab.step(f"{domains} domains: (3) raw aiosmtplib loop")
        figures.update(raw_phase(mix, sink, args))
    figures["ratio_domains_exporter_to_blackbox"] = (
        figures["exporter_domains_per_second"] / figures["blackbox_domains_per_second"]
    )
    figures["ratio_sessions_exporter_to_raw"] = (
        figures["exporter_sessions_per_second"] / figures["raw_sessions_per_second"]
    )
    return {
        "parameters": {
            "domains": domains,
            "addresses": len(mix.addresses),
            "exchanges": mix.exchanges,
            "dns_queries_min": mix.dns_queries_min,
            "dns_queries_max": mix.dns_queries_max,
            "concurrency": args.concurrency,
            "blackbox_seconds": args.blackbox_seconds,
            "wrk_threads": args.wrk_threads,
            "blackbox_paths": len(mix.domains) * PROBES_PER_DOMAIN,
        },
        "figures": {key: float(figures[key]) for key, _, _ in FIGURES},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    lab.check_nsd_rate_limit_off()
    return {
        "bench": "worstcase",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": (
            f"exporter defaults but smtp.max_concurrent_sessions = {args.concurrency}; "
            f"event loop {loop_name()} (the raw loop too)"
        ),
        "runs": [run_size(size, args) for size in args.domains],
    }


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    heading = [
        f"mx-exporter {m['mx_exporter']} worst case, {results['date']}, {m['nproc']} CPU, Python {m['python']}",
        *(
            f"{r['parameters']['domains']} domains x 4 exchanges, {r['parameters']['addresses']} addresses, "
            f"concurrency {r['parameters']['concurrency']}"
            for r in results["runs"]
        ),
    ]
    columns = [(f"{r['parameters']['domains']:,}", r["figures"]) for r in results["runs"]]
    ratios = [
        f"{r['parameters']['domains']} domains: exporter/blackbox domains/s = "
        f"{r['figures']['ratio_domains_exporter_to_blackbox']:.3g}, exporter/raw sessions/s = "
        f"{r['figures']['ratio_sessions_exporter_to_raw']:.3g}"
        for r in results["runs"]
    ]
    return lab.table(heading, FIGURES, columns) + "\n\n" + "\n".join(ratios)


def main(argv: list[str] | None = None) -> int:
    return lab.bench_main(Path(__file__), sys.argv[1:] if argv is None else argv, parse_args, run, table)


if __name__ == "__main__":
    sys.exit(main())
