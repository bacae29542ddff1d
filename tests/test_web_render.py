"""/metrics rendering of the watched domains: off the event loop, cached until the reports change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families

from mx_exporter.assess import build_report
from mx_exporter.web import DomainExposition
from tests.builders import TWO_UP


@dataclass
class FakeWatcher:
    reports: dict[str, Any] = field(default_factory=dict)
    version: int = 0


async def test_rendered_once_per_change_of_the_reports() -> None:
    watcher = FakeWatcher()
    exposition = DomainExposition(cast(Any, watcher))
    empty, _ = await exposition.render()
    assert b"mx_domain_deliverable{" not in b"".join(empty)
    watcher.reports["healthy.lab.test"] = build_report(*TWO_UP, 1.0, 1000.0)
    assert (await exposition.render())[0] is empty  # version unchanged: the cached bytes, no re-render
    watcher.version += 1
    body, no_gzip = await exposition.render()
    assert body is not empty and no_gzip is None
    assert (await exposition.render())[0] is body
    _, head = await exposition.render(gzip=True)
    assert head is not None and (await exposition.render(gzip=True))[1] is head  # compressed once too
    samples = [s for f in text_string_to_metric_families(b"".join(body).decode()) for s in f.samples]
    assert any(
        s.name == "mx_domain_deliverable" and s.labels == {"domain": "healthy.lab.test"} for s in samples
    )
