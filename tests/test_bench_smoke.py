"""Smoke-run the benchmarks at tiny size: each must work end to end and report every figure (no timing thresholds).

Performance is measured in bench/, not asserted here; this only proves the benches still run against the real
package, NSD, smtp-sink, blackbox exporter and wrk, that their JSON stays complete and finite, and that the
structural counts (SMTP sessions = distinct addresses, DNS questions within the zone's bounds) hold.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import hosted, soak, worstcase, zone  # noqa: E402
from bench.run import FIGURES  # noqa: E402

TIMEOUT = 240  # seconds for the whole tiny run
DOMAINS, ADDRESSES = 20, 3
ABSENT = -1.0  # a figure whose metric the exporter does not expose (yet), or that had nothing to measure


def run_bench(
    script: str, args: list[str], tmp_path: Path, timeout: float = TIMEOUT
) -> tuple[dict[str, Any], str]:
    """Run bench/<script> with ``args`` and --json; its results and stdout (it must exit 0)."""
    out = tmp_path / f"{script}.json"
    argv = [sys.executable, str(REPO / "bench" / script), *args, "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert done.returncode == 0, f"{script} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text()), done.stdout


def assert_complete(figures: dict[str, float], spec: tuple[tuple[str, str, str], ...], stdout: str) -> None:
    """Exactly the documented figures, each a finite number, each in the printed table."""
    assert set(figures) == {key for key, _, _ in spec}
    for key, value in figures.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    for key, _, _ in spec:
        assert key in stdout, f"table lacks {key}"


def assert_dns_queries(value: float, parameters: dict[str, Any]) -> None:
    """One MX question per domain, then A and AAAA per exchange: once per name, or once per domain's use."""
    if value != ABSENT:
        assert parameters["dns_queries_min"] <= value <= parameters["dns_queries_max"], (value, parameters)


def test_bench_runs_at_tiny_size_and_reports_every_figure(tmp_path: Path) -> None:
    args = ["--domains", str(DOMAINS), "--addresses", str(ADDRESSES), "--scrapes", "3"]
    results, stdout = run_bench(
        "run.py", [*args, "--probe-requests", "20", "--smtp-sessions", "30"], tmp_path
    )
    figures = results["figures"]
    assert_complete(figures, FIGURES, stdout)
    for key, value in figures.items():
        assert value > 0, (key, value)
    # Every pool address is some domain's primary, and the cycle cache probes each exactly once.
    assert figures["refresh_smtp_sessions"] == ADDRESSES
    # One MX question per domain, then A and AAAA per exchange (the zone has no CNAMEs, no fallbacks).
    assert figures["refresh_dns_queries"] == DOMAINS + 2 * results["parameters"]["exchanges"]
    assert results["parameters"]["domains"] == DOMAINS
    assert results["parameters"]["addresses"] == ADDRESSES
    assert results["machine"]["nproc"] >= 1


HOSTED_DOMAINS = 30


def test_hosted_mix_runs_at_tiny_size_and_reports_every_figure(tmp_path: Path) -> None:
    args = ["--domains", str(HOSTED_DOMAINS), "--scrapes", "3", "--status-gets", "2", "--scrape-every", "1"]
    results, stdout = run_bench("hosted.py", args, tmp_path)
    assert results["bench"] == "hosted" and len(results["runs"]) == 1
    run = results["runs"][0]
    figures, parameters = run["figures"], run["parameters"]
    assert_complete(figures, hosted.FIGURES, stdout)
    mix = zone.hosted_zone(HOSTED_DOMAINS)
    assert parameters["domains"] == HOSTED_DOMAINS
    assert parameters["kinds"] == {"provider": 18, "hoster": 8, "self": 4}
    assert parameters["addresses"] == len(mix.addresses)
    # Every distinct address is probed exactly once per refresh, however many domains share it.
    assert figures["smtp_sessions"] == len(mix.addresses)
    assert_dns_queries(figures["dns_queries"], parameters)
    assert figures["undeliverable_domains"] == 0
    assert figures["refresh_scrapes"] >= 0
    if figures["refresh_scrapes"] == 0:
        assert figures["refresh_scrape_gzip_median_seconds"] == ABSENT
    optional = {
        "dns_queries",
        "undeliverable_domains",
        "refresh_scrapes",
        "refresh_scrape_gzip_median_seconds",
    }
    optional |= {
        "refresh_scrape_gzip_max_seconds",
        "exporter_cpu_percent",
        "nsd_cpu_percent",
        "sink_cpu_percent",
    }
    for key, value in figures.items():
        assert value >= 0 if key.endswith("_cpu_percent") else (key in optional or value > 0), (key, value)
    assert math.isclose(figures["metrics_bytes_per_domain"] * HOSTED_DOMAINS, figures["metrics_bytes"])
    assert figures["metrics_gzip_bytes"] < figures["metrics_bytes"]


WORSTCASE_DOMAINS = 10


def test_worstcase_runs_at_tiny_size_and_reports_every_figure(tmp_path: Path) -> None:
    args = ["--domains", str(WORSTCASE_DOMAINS), "--blackbox-seconds", "2"]
    results, stdout = run_bench("worstcase.py", args, tmp_path)
    assert results["bench"] == "worstcase" and len(results["runs"]) == 1
    run = results["runs"][0]
    figures, parameters = run["figures"], run["parameters"]
    assert_complete(figures, worstcase.FIGURES, stdout)
    addresses = 4 * WORSTCASE_DOMAINS  # 4 exchanges per domain, each on an address of its own
    assert parameters["addresses"] == addresses
    assert parameters["concurrency"] == 32
    assert figures["exporter_smtp_sessions"] == addresses
    assert figures["raw_sessions"] == addresses
    assert_dns_queries(figures["exporter_dns_queries"], parameters)
    assert figures["exporter_undeliverable_domains"] == 0
    assert figures["blackbox_probes"] > 0
    assert figures["blackbox_failed_probes"] >= 0
    for key, value in figures.items():
        zero_allowed = ("exporter_dns_queries", "exporter_undeliverable_domains", "blackbox_failed_probes")
        if key.endswith("_cpu_percent") or key in zero_allowed:
            continue
        assert value > 0, (key, value)
    assert "exporter/blackbox domains/s" in stdout and "exporter/raw sessions/s" in stdout


def test_soak_runs_a_minute_without_leaks_or_exceptions(tmp_path: Path) -> None:
    results, stdout = run_bench("soak.py", ["--seconds", "60", "--sample-every", "10"], tmp_path)
    assert results["verdict"] == "ok", results
    figures = results["figures"]
    assert_complete(figures, soak.FIGURES, stdout)
    assert figures["exceptions"] == 0
    assert figures["refreshes"] >= 2
    # Every finished refresh opened one session per distinct address (the first one, before the soak, too).
    assert figures["smtp_sessions"] >= figures["refreshes"] * results["parameters"]["addresses"]
    assert len(results["samples"]) == 6
    for sample in results["samples"]:
        assert set(sample) == {key for key, _ in soak.SAMPLE_COLUMNS}
        assert all(math.isfinite(v) for v in sample.values()), sample
        assert sample["rss_mib"] > 0 and sample["fds"] > 0
    assert results["parameters"]["kinds"] == {
        "dribble": 75,
        "silent": 75,
        "garbage": 75,
        "greet421": 75,
        "accept": 700,
    }
