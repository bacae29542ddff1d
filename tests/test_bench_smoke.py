"""Smoke-run the benchmark at tiny size: it must work end to end and report every figure (no timing thresholds).

Performance is measured in bench/, not asserted here; this only proves the bench still runs against the real
package, NSD and smtp-sink, and that its JSON stays complete.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import FIGURES  # noqa: E402

TIMEOUT = 240  # seconds for the whole tiny run
DOMAINS, ADDRESSES = 20, 3


def test_bench_runs_at_tiny_size_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(REPO / "bench" / "run.py"), "--domains", str(DOMAINS)]
    argv += [
        "--addresses",
        str(ADDRESSES),
        "--scrapes",
        "3",
        "--probe-requests",
        "20",
        "--smtp-sessions",
        "30",
    ]
    done = subprocess.run(
        [*argv, "--json", str(out)], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path
    )
    assert done.returncode == 0, f"bench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    results = json.loads(out.read_text())
    figures = results["figures"]
    assert set(figures) == {key for key, _, _ in FIGURES}
    for key, value in figures.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    # Every pool address is some domain's primary, and the cycle cache probes each exactly once.
    assert figures["refresh_smtp_sessions"] == ADDRESSES
    # One MX question per domain, then A and AAAA per exchange (the zone has no CNAMEs, no fallbacks).
    assert figures["refresh_dns_queries"] == DOMAINS + 2 * results["parameters"]["exchanges"]
    assert results["parameters"]["domains"] == DOMAINS
    assert results["parameters"]["addresses"] == ADDRESSES
    assert results["machine"]["nproc"] >= 1
    for key, _, _ in FIGURES:
        assert key in done.stdout, f"table lacks {key}"
