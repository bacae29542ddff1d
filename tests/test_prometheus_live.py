"""The proof: the real exporter against the lab, scraped by a real Prometheus (Debian), queried over HTTP.

Every dashboard panel query must return data, every rule must evaluate without error, the alerts must go
pending for exactly the lab domains that deserve them, and the /probe example relabeling must produce the
labels the rules and dashboard expect. Both example scrape configs pass `promtool check config`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.exporter import free_port, lab_config, wait_for
from tests.lab.transport_lab import CASES, Lab, transport_config
from tests.prometheus_files import PROM_DIR, RULES, load_dashboard, load_rules, run_promtool

JOB = "mx-exporter"
PROBE_JOB = "mx-exporter-probe"
RATE_INTERVAL = "30s"  # several refresh cycles (refresh_interval 2 s) at a 1 s scrape interval
STARTUP_TIMEOUT = 30.0
DATA_TIMEOUT = 90.0
HTTP_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0

DOMAINS: list[Any] = [
    # min_tiers holds; starttls fails (mx2 does not advertise it): one expectation met, one failed.
    {"name": "healthy.lab.test", "expect": {"min_tiers": 2, "starttls": True}},
    "primary-down.lab.test",
    "undeliverable.lab.test",
    "nullmx.lab.test",
    "nxdomain.lab.test",
    "cname.lab.test",
    "equal.lab.test",
    "fallback.lab.test",
]
# A second exporter, scraped as another instance of the same job, watches the transport-security lab (DANE,
# MTA-STS, TLS-RPT), so those panels and alerts are proven on real data too.
TRANSPORT_DOMAINS = [case.domain for case in CASES]
DOMAIN_NAMES = [d if isinstance(d, str) else d["name"] for d in DOMAINS] + TRANSPORT_DOMAINS
PROBE_TARGETS = ["healthy.lab.test", "nullmx.lab.test"]
# (alert, domain, exchange) that must be pending (their `for:` is minutes) once Prometheus has the data; nothing
# else. "" where the alert has no such label: domain alerts carry no exchange, TLS alerts (one per exchange and
# address, shared by every domain behind the exchange) carry no domain.
EXPECTED_ALERTS = {
    ("MxPrimaryDown", "primary-down.lab.test", ""),
    ("MxDomainUndeliverable", "undeliverable.lab.test", ""),
    ("MxDnsLookupFailing", "nxdomain.lab.test", ""),
    ("MxMisconfigured", "cname.lab.test", ""),
    ("MxPrimaryExchangeDown", "equal.lab.test", "b.equal.lab.test"),
    # qmail picks one of equal.lab.test's two MX 10 at random and queues if it gets the silent one; Postfix and
    # Exim move on to the other.
    ("MxSenderBehavioursDiverge", "equal.lab.test", ""),
    ("MxFallbackToA", "fallback.lab.test", ""),
    ("MxExpectationFailed", "healthy.lab.test", ""),
    # ACCEPT_1's certificate (lab CA, trusted via smtp.tls_ca_file) names only mx1.healthy.lab.test: valid for
    # healthy's mx1, invalid for the other exchange names that lead to the same address.
    ("MxTlsCertificateInvalid", "", "alias.cname.lab.test"),
    ("MxTlsCertificateInvalid", "", "a.equal.lab.test"),
    ("MxTlsCertificateInvalid", "", "fallback.lab.test"),
    # The transport lab: a rotated certificate under an old TLSA record (and a policy naming another MX), and a
    # TLSA RRset whose signature is broken.
    ("MxDaneMismatch", "rotated.signed.test", ""),
    ("MxMtaStsMxMismatch", "rotated.signed.test", ""),
    ("MxDaneBogus", "bogus.test", ""),
}
TLS_ALERT_ADDRESS = "127.0.0.10"  # ACCEPT_1, behind every exchange above
# The tier recording rules on /metrics: (domain, preference) -> (exchanges, exchanges up). Null MX and NXDOMAIN
# have no MX tiers; the implicit MX of fallback.lab.test is preference 0.
EXPECTED_TIERS = {
    ("healthy.lab.test", "10"): (1, 1),
    ("healthy.lab.test", "20"): (1, 1),
    ("primary-down.lab.test", "10"): (1, 0),
    ("primary-down.lab.test", "20"): (1, 1),
    ("undeliverable.lab.test", "10"): (1, 0),
    ("undeliverable.lab.test", "20"): (1, 0),
    ("cname.lab.test", "10"): (1, 1),
    ("equal.lab.test", "10"): (2, 1),
    ("fallback.lab.test", "0"): (1, 1),
    **{(domain, "10"): (1, 1) for domain in TRANSPORT_DOMAINS},  # one exchange each, accepting
}
TIER_RULES = ("domain_preference:mx_tier_exchanges:count", "domain_preference:mx_tier_exchanges_up:count")


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if path is None:
        pytest.fail(
            "prometheus not found: it comes with the Debian 'prometheus' package. "
            "Run the README test command (scripts/test.sh), which installs it."
        )
    return path


def http_get(url: str, timeout: float = HTTP_TIMEOUT) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Process:
    """A child process with its output in a file; stopped by the fixture that started it."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.name = Path(args[0]).name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive_and(self, check: Callable[[], bool]) -> Callable[[], bool]:
        def probe() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return check()
            except OSError:
                return False

        return probe

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._log.close()


class Prometheus:
    def __init__(self, url: str, process: Process) -> None:
        self.url = url
        self.process = process

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        payload = json.loads(body)
        assert status == 200 and payload["status"] == "success", f"{path} {params}: {status} {body[:500]}"
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result


@pytest.fixture(scope="module")
def exporter_url(nsd_server: Any, smtp_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real exporter (python -m mx_exporter) watching a handful of lab domains, refreshing every 2 s.

    It trusts the lab CA, so the certificate of mx1.healthy.lab.test verifies (mx_smtp_tls_cert_valid 1).
    """
    tmp = tmp_path_factory.mktemp("exporter")
    ca_file = tmp / "lab-ca.pem"
    smtp_lab.ca.cert_pem.write_to_path(str(ca_file))
    config = lab_config(
        nsd_server.nameserver,
        smtp_lab.port,
        DOMAINS,
        refresh_interval=2,
        smtp={"tls_ca_file": str(ca_file)},
    )
    yield from _exporter_process(config, tmp)


def _exporter_process(config: dict[str, Any], tmp: Path) -> Iterator[str]:
    """Run ``python -m mx_exporter`` with these settings until the generator is closed; yields its URL once ready."""
    path = tmp / "exporter.yml"
    path.write_text(yaml.safe_dump(config))
    url = "http://" + config["listen_address"]
    process = Process([sys.executable, "-m", "mx_exporter", "--config.file", str(path)], tmp / "exporter.log")
    try:
        ready = process.alive_and(lambda: http_get(url + "/-/ready", timeout=2.0)[0] == 200)
        wait_for(ready, STARTUP_TIMEOUT, f"the exporter {url} to be ready", process.log)
        yield url
    finally:
        process.stop()


def prometheus_config(exporter_address: str, *more: str) -> dict[str, Any]:
    """Scrape /metrics every second, and /probe through the example's own relabeling."""
    example = yaml.safe_load((PROM_DIR / "prometheus-probe.yml").read_text())
    probe_job = next(j for j in example["scrape_configs"] if j["job_name"] == PROBE_JOB)
    probe_job.update(scrape_interval="5s", scrape_timeout="4s", static_configs=[{"targets": PROBE_TARGETS}])
    address_rules = [r for r in probe_job["relabel_configs"] if r.get("target_label") == "__address__"]
    assert len(address_rules) == 1, probe_job
    address_rules[0]["replacement"] = exporter_address
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [exporter_address, *more]}],
            },
            probe_job,
        ],
    }


@pytest.fixture(scope="module")
def transport_exporter_url(transport_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second exporter on the transport-security lab (resolver.dnssec: require behind the lab's Unbound)."""
    yield from _exporter_process(
        transport_config(transport_lab), tmp_path_factory.mktemp("transport-exporter")
    )


@pytest.fixture(scope="module")
def prometheus(
    exporter_url: str, transport_exporter_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    targets = (exporter_url.removeprefix("http://"), transport_exporter_url.removeprefix("http://"))
    config.write_text(yaml.safe_dump(prometheus_config(*targets)))
    listen = f"127.0.0.1:{free_port()}"
    args = [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address={listen}",
        "--log.level=warn",
    ]
    process = Process(args, tmp / "prometheus.log")
    prom = Prometheus(f"http://{listen}", process)
    try:
        ready = process.alive_and(lambda: http_get(prom.url + "/-/ready", timeout=2.0)[0] == 200)
        wait_for(ready, STARTUP_TIMEOUT, "Prometheus to be ready", process.log)
        scraped = process.alive_and(
            lambda: (
                len(prom.query(f'mx_domain_deliverable{{job="{JOB}"}}')) == len(DOMAIN_NAMES)
                and len(prom.query(f'mx_probe_success{{job="{PROBE_JOB}"}}')) == len(PROBE_TARGETS)
            )
        )
        wait_for(scraped, DATA_TIMEOUT, "every lab domain and probe target in Prometheus", process.log)
        yield prom
    finally:
        process.stop()


def grafana_regex(values: list[str]) -> str:
    """A multi-value variable as Grafana's Prometheus data source formats it: regex-escaped, alternated."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")"


def substitute(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "2s")
        .replace("$job", JOB)
        .replace("$domain", grafana_regex(DOMAIN_NAMES))
        .replace("${datasource}", "")
    )


def panel_targets() -> list[tuple[str, str]]:
    dashboard = load_dashboard()
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])] if p["type"] != "row"]
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels for t in p["targets"]]


def finite(result: list[dict[str, Any]]) -> bool:
    values = [r["value"][1] for r in result]
    return any(math.isfinite(float(v)) for v in values)


# --------------------------------------------------------------------------- static: the example configs


@pytest.mark.parametrize("name", ["prometheus-metrics.yml", "prometheus-probe.yml"])
def test_example_scrape_config_is_valid(name: str) -> None:
    result = run_promtool("check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {name} is valid prometheus config file syntax" in result.stdout
    assert "SUCCESS: 1 rule files found" in result.stdout


# --------------------------------------------------------------------------- live


@pytest.mark.slow
def test_dashboard_variables_find_the_lab(prometheus: Prometheus) -> None:
    """label_values() of $job and $domain, as Grafana asks Prometheus for them."""
    jobs = prometheus.api("label/job/values", **{"match[]": "mx_domain_deliverable"})
    assert JOB in jobs and PROBE_JOB in jobs
    domains = prometheus.api("label/domain/values", **{"match[]": f'mx_domain_deliverable{{job=~"{JOB}"}}'})
    assert sorted(domains) == sorted(DOMAIN_NAMES)


@pytest.mark.slow
def test_every_panel_query_returns_data(prometheus: Prometheus) -> None:
    targets = panel_targets()
    assert len(targets) >= 20
    pending = dict(targets)
    results: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + DATA_TIMEOUT
    while pending and time.monotonic() < deadline:
        for name, expr in list(pending.items()):
            results[name] = prometheus.query(substitute(expr))  # fails at once on any query error
            if results[name] and finite(results[name]):
                del pending[name]
        if pending:
            time.sleep(1.0)
    empty = {name: (substitute(expr), results.get(name)) for name, expr in pending.items()}
    assert not empty, f"panels without data after {DATA_TIMEOUT}s: {empty}"


@pytest.mark.slow
def test_every_rule_evaluates_without_error(prometheus: Prometheus) -> None:
    rules = load_rules()
    for rule in rules:
        prometheus.query(rule["expr"])  # raises on a query error
    # Keyed by name and query: an alert whose severity depends on a condition is two rules of one name.
    loaded: dict[tuple[str, str], dict[str, Any]] = {}

    def all_evaluated() -> bool:
        groups = prometheus.api("rules")["groups"]
        loaded.clear()
        loaded.update({(r["name"], r["query"]): r for g in groups for r in g["rules"]})
        return len(loaded) == len(rules) and all(
            not r["lastEvaluation"].startswith("0001-") for r in loaded.values()
        )

    wait_for(all_evaluated, DATA_TIMEOUT, "every rule to be evaluated", prometheus.process.log)
    unhealthy = {name: r.get("lastError") for name, r in loaded.items() if r["health"] != "ok"}
    assert not unhealthy


@pytest.mark.slow
def test_alerts_pend_for_exactly_the_broken_lab_domains(prometheus: Prometheus) -> None:
    """The rules match the real exporter's labels: each broken domain trips its alert; null MX trips none."""
    seen: set[tuple[str, str, str]] = set()
    labels: list[dict[str, str]] = []

    def expected_pending() -> bool:
        labels[:] = [a["labels"] for a in prometheus.api("alerts")["alerts"]]
        seen.clear()
        seen.update((a["alertname"], a.get("domain", ""), a.get("exchange", "")) for a in labels)
        return seen == EXPECTED_ALERTS

    wait_for(
        expected_pending, DATA_TIMEOUT, f"exactly the alerts {sorted(EXPECTED_ALERTS)}", lambda: str(seen)
    )
    assert not {a for a in seen if a[1] == "nullmx.lab.test"}
    tls = [a for a in labels if a["alertname"].startswith(("MxTls", "MxStarttls"))]
    assert tls and all(a["address"] == TLS_ALERT_ADDRESS and a["family"] == "ipv4" for a in tls), tls


@pytest.mark.slow
def test_tier_recording_rules_count_the_lab_exchanges(prometheus: Prometheus) -> None:
    """The recording rules that replace mx_tier_exchanges{,_up}, over the real exporter's membership series."""
    got: dict[tuple[str, str], tuple[int, ...]] = {}

    def counted() -> bool:
        values: dict[tuple[str, str], list[int]] = {}
        for i, rule in enumerate(TIER_RULES):
            for r in prometheus.query(f'{rule}{{job="{JOB}"}}'):
                key = (r["metric"]["domain"], r["metric"]["preference"])
                values.setdefault(key, [-1, -1])[i] = int(float(r["value"][1]))
        got.clear()
        got.update({k: tuple(v) for k, v in values.items()})
        return got == EXPECTED_TIERS

    wait_for(counted, DATA_TIMEOUT, f"the tier counts {EXPECTED_TIERS}", lambda: str(got))


@pytest.mark.slow
def test_probe_example_relabeling(prometheus: Prometheus) -> None:
    """The /probe job of the example config: instance and domain are the target, no exported_domain."""
    for domain in PROBE_TARGETS:
        success = prometheus.query(
            f'mx_probe_success{{job="{PROBE_JOB}", instance="{domain}", domain="{domain}"}}'
        )
        assert [r["value"][1] for r in success] == ["1"], (domain, success)
    assert prometheus.query(f'{{job="{PROBE_JOB}", exported_domain!=""}}') == []
    deliverable = prometheus.query(f'mx_domain_deliverable{{job="{PROBE_JOB}"}}')
    assert {r["metric"]["domain"]: r["value"][1] for r in deliverable} == {
        "healthy.lab.test": "1",
        "nullmx.lab.test": "0",
    }
