"""The shipped Prometheus rules and Grafana dashboard, read as tests need them, and promtool to run on them.

Shared by tests/test_rules.py, tests/test_dashboard.py and tests/test_prometheus_live.py, so that no test module
imports another. promtool comes from the Debian ``prometheus`` package; when it is missing the tests that run
it fail and say how to get it, they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mx_exporter import metrics

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "mx-exporter.rules.yml"
DASHBOARD = ROOT / "grafana" / "mx-exporter.json"
PROMQL_TIMEOUT = 60

# Series Prometheus itself creates for every target.
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail(
            "promtool not found: it comes with the Debian 'prometheus' package. "
            "Run the README test command (scripts/test.sh), which installs it."
        )
    return path


def run_promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=PROMQL_TIMEOUT, check=False
    )


def exposed_metric_names() -> set[str]:
    """Every series name the exporter can expose: counters with _total, histograms with their parts."""
    names: set[str] = set()
    for spec in metrics.CATALOGUE + metrics.PROBE_CATALOGUE:
        base = metrics.exposed_name(spec)
        names.add(base)
        if spec.type == "histogram":
            names.update(base + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, label names or Grafana variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = re.findall(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def first_label(name: str) -> str | None:
    """The level of an exposed series name by its first catalogue label: "domain", or "exchange" for exchange and
    session series; None for the exporter's own series and for names outside the catalogue."""
    spec = metrics.BY_NAME.get(re.sub(r"(?:_total|_bucket|_sum|_count)$", "", name))
    return spec.labels[0] if spec is not None and spec.labels else None


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data
