"""/metrics rendering of the watched domains: off the event loop, cached until the reports change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families

from mx_exporter.assess import build_report
from mx_exporter.web import DomainExposition
from tests.test_assess import TWO_UP


@dataclass
class FakeWatcher:
    reports: dict[str, Any] = field(default_factory=dict)
    version: int = 0


async def test_rendered_once_per_change_of_the_reports() -> None:
    watcher = FakeWatcher()
    exposition = DomainExposition(cast(Any, watcher))
    empty = await exposition.render()
    assert b"mx_domain_deliverable{" not in empty
    watcher.reports["healthy.lab.test"] = build_report(*TWO_UP, 1.0, 1000.0)
    assert await exposition.render() is empty  # version unchanged: the cached bytes, no re-render
    watcher.version += 1
    body = await exposition.render()
    assert body is not empty
    assert await exposition.render() is body
    samples = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    assert any(
        s.name == "mx_domain_deliverable" and s.labels == {"domain": "healthy.lab.test"} for s in samples
    )
