"""Write the Helm chart's copy of the alert rules from deploy/prometheus/mx-exporter.rules.yml.

Helm's ``.Files.Get`` reads only files inside the chart, so the chart carries a byte copy; this script makes it
(tests/test_helm_chart.py checks the two agree and names this script when they do not).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "deploy" / "prometheus" / "mx-exporter.rules.yml"
COPY = ROOT / "helm" / "mx-exporter" / "files" / "mx-exporter.rules.yml"


if __name__ == "__main__":
    COPY.write_bytes(SOURCE.read_bytes())
