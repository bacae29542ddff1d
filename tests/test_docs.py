"""The docs cannot drift: README metric table = catalogue; CI runs exactly the README test command."""

from __future__ import annotations

from pathlib import Path

from scripts.update_readme_table import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_metric_table_is_generated_from_the_catalogue() -> None:
    text = (ROOT / "README.md").read_text()
    assert render(text) == text, "README metric table is stale: run python scripts/update_readme_table.py"
    assert "| `mx_primary_up` | gauge | domain |" in text


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "\n./scripts/test.sh\n" in readme
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "exec ./scripts/test.sh"


def test_readme_run_command_uses_an_existing_example() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install . && mx-exporter --config.file examples/mx-exporter.yml" in readme
    assert (ROOT / "examples/mx-exporter.yml").is_file()
