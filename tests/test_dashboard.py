"""Structure of the Grafana dashboard: importable, variables wired, every panel documented and on the catalogue.

These are static checks; tests/test_prometheus_live.py proves every panel query returns data from a real
Prometheus scraping the real exporter.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from mx_exporter import metrics
from tests.prometheus_files import (
    PROMETHEUS_SERIES,
    alerts,
    exposed_metric_names,
    first_label,
    load_dashboard,
    load_rules,
    promql_metric_names,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MIN_SCHEMA_VERSION = 39
GRID_WIDTH = 24
# Every STARTTLS / certificate series: the TLS row shows each of them.
TLS_METRICS = {
    "mx_smtp_starttls_advertised", "mx_smtp_tls_handshake_success", "mx_smtp_tls_version_info",
    "mx_smtp_tls_cert_not_after_timestamp_seconds", "mx_smtp_tls_cert_valid",
}  # fmt: skip
EXPIRY = "mx_smtp_tls_cert_not_after_timestamp_seconds"
# The one series that ties exchange and session series to domains (issue 7): the only way to filter them to $domain.
MEMBERSHIP = "mx_exchange_preference"
MEMBERSHIP_JOIN = "on (job, instance, exchange)"
# The exporter's DNS resolver and event loop: the DNS resolver row shows each of them.
RESOLVER_METRICS = {
    "mx_exporter_dns_queries_total", "mx_exporter_dns_tcp_retries_total", "mx_exporter_dns_cache_hits_total",
    "mx_exporter_last_refresh_dns_queries", "mx_exporter_last_refresh_smtp_sessions", "mx_exporter_asyncio_tasks",
}  # fmt: skip


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels plus panels nested in collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def data_panels() -> list[dict[str, Any]]:
    return [p for p in all_panels(load_dashboard()) if p["type"] != "row"]


def targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    return [(p["title"], t) for p in data_panels() for t in p["targets"]]


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in load_dashboard()["templating"]["list"]}


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matcher text) for every selector; a bare metric name gets an empty matcher text."""
    # Blank string contents (same length, so positions still match ``expr``): braces in strings are text.
    text = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: '"' + "x" * (len(m.group()) - 2) + '"', expr)
    found = []
    for match in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(\s*\{[^}]*\})?", text):
        name = match.group(1)
        if name in promql_metric_names(expr):
            start, end = match.span(2) if match.group(2) else (0, 0)
            found.append((name, expr[start:end] if match.group(2) else ""))
    return found


def test_identity() -> None:
    d = load_dashboard()
    assert d["uid"] == "mx-exporter"
    assert d["id"] is None, "an exported dashboard has no database id, so it imports anywhere"
    assert d["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert d["title"]
    assert "mx-exporter" in d["tags"]
    assert d["editable"] is True


def test_variables() -> None:
    v = variables()
    assert list(v) == ["datasource", "job", "domain"]
    assert v["datasource"]["type"] == "datasource"
    assert v["datasource"]["query"] == "prometheus"
    for name in ("job", "domain"):
        assert v[name]["type"] == "query"
        assert v[name]["datasource"] == DATASOURCE
        assert v[name]["query"]["query"] == v[name]["definition"]
    assert v["job"]["definition"] == "label_values(mx_domain_deliverable, job)"
    assert v["domain"]["definition"] == 'label_values(mx_domain_deliverable{job=~"$job"}, domain)'
    assert v["domain"]["multi"] is True
    assert v["domain"]["includeAll"] is True


def test_every_panel_has_unit_description_and_targets() -> None:
    panels = data_panels()
    assert len(panels) >= 20
    for panel in panels:
        title = panel["title"]
        assert panel["description"].strip(), title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert panel["targets"], title
        assert panel["datasource"] == DATASOURCE, title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title


def test_panel_ids_unique_and_grid_sane() -> None:
    panels = all_panels(load_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= GRID_WIDTH, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_required_panels_present() -> None:
    used = {name for _, t in targets() for name in promql_metric_names(t["expr"])}
    required = {
        "mx_domain_deliverable", "mx_primary_up", "mx_exchange_up", MEMBERSHIP, "mx_smtp_up",
        "mx_smtp_greeting_duration_seconds", "mx_smtp_outcome", "mx_dns_status", "mx_misconfiguration",
        "mx_active_preference", "mx_records", "mx_fallback_to_a", "mx_null_mx",
        "mx_exporter_refresh_duration_seconds_bucket", "mx_exporter_domains",
        "mx_exporter_config_last_reload_successful", *TLS_METRICS, *RESOLVER_METRICS,
    }  # fmt: skip
    assert required <= used, required - used


def row_panels(title: str) -> list[dict[str, Any]]:
    """The panels of an expanded top-level row: those after it up to the next row."""
    panels = load_dashboard()["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == title)
    found = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        found.append(panel)
    return found


def row_metrics(title: str) -> set[str]:
    return {name for p in row_panels(title) for t in p["targets"] for name in promql_metric_names(t["expr"])}


def test_tls_row_shows_every_tls_metric() -> None:
    """Every TLS series, and nothing else but the membership join that filters them to $domain."""
    assert row_metrics("TLS") == TLS_METRICS | {MEMBERSHIP}


def test_dns_resolver_row_shows_every_resolver_metric() -> None:
    assert row_metrics("DNS resolver") == RESOLVER_METRICS


def test_exchange_and_session_series_are_filtered_to_domain_through_membership() -> None:
    """They carry no domain label: a panel reaches $domain only by joining mx_exchange_preference on exchange."""
    joined = 0
    for title, target in targets():
        used = promql_metric_names(target["expr"])
        if any(first_label(name) == "exchange" for name in used):
            assert MEMBERSHIP in used, f"{title}: exchange or session series not joined to $domain"
            assert MEMBERSHIP_JOIN in target["expr"], f"{title}: join membership {MEMBERSHIP_JOIN}"
            joined += 1
    assert joined >= len(TLS_METRICS)


def test_tiers_are_counted_inline_without_recording_rules() -> None:
    """The dashboard works without the rules file: per-tier counts come from count_values over membership."""
    records = {r["record"] for r in load_rules() if "record" in r}
    assert records
    for title, target in targets():
        assert not promql_metric_names(target["expr"]) & records, f"{title} needs a recording rule"
    tiers = [t["expr"] for p in data_panels() if p["title"] == "Tiers" for t in p["targets"]]
    assert tiers and all(
        f'count_values by (job, instance, domain) ("preference", {MEMBERSHIP}' in e
        or f'count_values without () ("preference", {MEMBERSHIP}' in e
        for e in tiers
    )


def test_certificate_expiry_is_seconds_from_now_with_the_alert_thresholds() -> None:
    """Time left, not a timestamp: `... - time()` in seconds, coloured at the expiry alerts' thresholds."""
    panels = [p for p in data_panels() if any(EXPIRY in promql_metric_names(t["expr"]) for t in p["targets"])]
    assert panels
    days = {
        int(m)
        for a in alerts()
        if EXPIRY in a["expr"]
        for m in re.findall(r"time\(\) \+ (\d+) \* 86400", a["expr"])
    }
    assert days, "no expiry alert with a `time() + N * 86400` threshold"
    for panel in panels:
        assert all(t["expr"].rstrip().endswith("- time()") for t in panel["targets"]), panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s", panel["title"]
        steps = {s["value"] for s in defaults["thresholds"]["steps"]} - {None}
        assert steps == {d * 86400 for d in days}, panel["title"]


@pytest.mark.parametrize(("title", "target"), targets(), ids=lambda x: x if isinstance(x, str) else "")
def test_target_uses_catalogue_metrics_and_variables(title: str, target: dict[str, Any]) -> None:
    expr = target["expr"]
    assert target["datasource"] == DATASOURCE
    unknown = promql_metric_names(expr) - exposed_metric_names() - PROMETHEUS_SERIES
    assert not unknown, f"{title}: not in the catalogue: {unknown}"
    found = selectors(expr)
    assert found, f"{title}: no metric selected"
    for name, matchers in found:
        assert 'job=~"$job"' in matchers, f"{title}: {name} must filter on $job"
        spec = metrics.BY_NAME.get(name.removesuffix("_total").removesuffix("_bucket"))
        if spec is not None and spec.labels[:1] == ("domain",):
            assert 'domain=~"$domain"' in matchers, f"{title}: {name} must filter on $domain"


def test_selectors_helper() -> None:
    expr = 'sum(a{job=~"$job"}) + on (x) rate(b_total[5m]) * c{job="{}"}'
    assert selectors(expr) == [("a", '{job=~"$job"}'), ("b_total", ""), ("c", '{job="{}"}')]
