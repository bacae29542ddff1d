"""Rewrite the README metric table from the metric catalogue (tests/test_docs.py checks they agree)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mx_exporter.metrics import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- metric-table:start -->\n).*?(<!-- metric-table:end -->)", re.S)


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + markdown_table() + "\n" + m.group(2), text)


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
