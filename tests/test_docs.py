"""The docs cannot drift: README metric table = catalogue; CI runs exactly the README test command."""

from __future__ import annotations

import re
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


def test_architecture_doc_names_every_module() -> None:
    """docs/architecture.md's pipeline table has a row for each module, so a newcomer finds every stage there."""
    doc = (ROOT / "docs/architecture.md").read_text()
    table = doc.split("## Pipeline", 1)[1].split("\n## ", 1)[0]
    modules = sorted(
        p.name for p in (ROOT / "mx_exporter").glob("*.py") if p.name not in {"__init__.py", "__main__.py"}
    )
    missing = [name for name in modules if f"`{name}`" not in table]
    assert not missing, f"docs/architecture.md, Pipeline: no row for {missing}"


def test_no_reference_leads_outside_the_repository() -> None:
    """Code, tests and docs cite docs/architecture.md, never a design file this repository does not hold."""
    cited = [
        str(path.relative_to(ROOT))
        for pattern in (
            "mx_exporter/*.py",
            "tests/**/*.py",
            "bench/*.py",
            "scripts/*.py",
            "docs/*.md",
            "*.md",
        )
        for path in ROOT.glob(pattern)
        if "DESIGN" + ".md"
        in path.read_text(encoding="utf-8")  # spelled apart, so this file does not cite it
    ]
    assert cited == []


def test_every_cited_section_of_the_architecture_doc_exists() -> None:
    doc = (ROOT / "docs/architecture.md").read_text()
    sections = set(re.findall(r"^## (.+)$", doc, flags=re.MULTILINE))
    cited = {
        (str(path.relative_to(ROOT)), section)
        for pattern in ("mx_exporter/*.py", "tests/**/*.py", "bench/*.py", "scripts/*.py", "README.md")
        for path in ROOT.glob(pattern)
        if path != Path(__file__).resolve()  # this file's patterns are no citations
        for section in re.findall(r'architecture\.md[,:]? *"([^"]+)"', path.read_text(encoding="utf-8"))
    }
    assert cited, "nothing cites docs/architecture.md any more: this test has lost its subject"
    assert [c for c in sorted(cited) if c[1] not in sections] == []
