"""Settings: each invalid file maps to its exact message; precedence flag > env > file > default."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from mx_exporter import settings as settings_module
from mx_exporter.cli import main
from mx_exporter.model import Family
from mx_exporter.settings import ConfigError, leaf_keys, load_settings

DATA = Path(__file__).parent / "testdata" / "settings"


@pytest.fixture(autouse=True)
def _host_has_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default EHLO name is the host's FQDN; pin it so results do not depend on this machine."""
    monkeypatch.setattr(settings_module, "host_fqdn", lambda: "probe.example.net")


INVALID = {
    "invalid-unknown-key.yml": "refresh_intervall: unknown key",
    "invalid-unknown-nested-key.yml": "smtp.conect_timeout: unknown key",
    "invalid-domain-override.yml": "domains.0.smtp.greting_timeout: unknown key",
    "invalid-port.yml": "smtp.port: Input should be less than or equal to 65535",
    "invalid-timeout.yml": "smtp.connect_timeout: Input should be greater than 0",
    "invalid-interval-type.yml": "refresh_interval: Input should be a valid number, unable to parse string as a number",
    "invalid-family.yml": "smtp.address_families.0: Input should be 'ipv4' or 'ipv6'",
    "invalid-ehlo-localhost.yml": "ehlo_name: 'localhost' is not a fully qualified domain name (and localhost is refused)",
    "invalid-ehlo-not-fqdn.yml": "ehlo_name: 'mailprobe' is not a fully qualified domain name (and localhost is refused)",
    "invalid-duplicate-domain.yml": "domains: domain a.example is listed twice",
    "invalid-shard.yml": "shard: index 2 must be below count 2",
    "invalid-listen.yml": "listen_address: '9706' is not host:port (a port is required)",
    "invalid-network.yml": "allow_networks: '10.0.0.0/33' is not a network in CIDR form: '10.0.0.0/33' does not appear to be an "
    "IPv4 or IPv6 network",
    "invalid-domain-url.yml": "domains.0.name: 'http://a.example/' looks like a URL or mail address; give a bare domain name",
    "invalid-nameserver.yml": "resolver.nameservers: nameserver 'dns.example': 'dns.example' is not an IP address",
    "invalid-not-mapping.yml": "the settings file must be a mapping of keys, not list",
    "invalid-dnssec.yml": "resolver.dnssec: Input should be 'ignore' or 'require'",
    "invalid-mta-sts-ca-file.yml": "mta_sts.ca_file: '/nonexistent/ca.pem' is not a readable file",
    "invalid-mta-sts-size.yml": "mta_sts.max_policy_bytes: Input should be greater than or equal to 512",
    "invalid-domain-dane.yml": "domains.0.dane: Input should be a valid boolean, unable to interpret input",
    # What the policy dataclasses once checked again is checked here, at the edge, and only here.
    "invalid-resolver-timeout.yml": "resolver.timeout: Input should be greater than 0",
    "invalid-rate-limit.yml": "resolver.max_queries_per_second: Input should be greater than 0",
    "invalid-no-family.yml": "smtp.address_families: List should have at least 1 item after validation, not 0",
    "invalid-max-addresses.yml": "smtp.max_addresses_per_exchange: Input should be greater than or equal to 1",
    "invalid-port-zero.yml": "smtp.port: Input should be greater than or equal to 1",
    "invalid-session-timeout.yml": "smtp.session_timeout: Input should be greater than 0",
    "invalid-smtp-ca-file.yml": "smtp.tls_ca_file: '/nonexistent/roots.pem' is not a readable file",
    "invalid-smtp-ca-file-empty.yml": "smtp.tls_ca_file: '' is not a readable file",
    "invalid-ehlo-empty-label.yml": "ehlo_name: domain 'probe..lab.test' has an empty label ('..' or a leading dot)",
    "invalid-ehlo-injection.yml": "ehlo_name: domain 'probe.lab.test\\r\\nquit' contains whitespace",
    "invalid-expect-min-records.yml": "domains.0.expect.min_records: Input should be greater than or equal to 0",
    "invalid-expect-exchanges-string.yml": "domains.0.expect.exchanges: Input should be a valid list",
    "invalid-expect-exchanges-empty.yml": "domains.0.expect.exchanges: domain ' . ' contains whitespace",
    "invalid-expect-nolisting.yml": "domains.0.expect.nolisting: Input should be True",
    "invalid-expect-greeting.yml": "domains.0.expect.max_greeting_seconds: Input should be greater than 0",
    "invalid-yaml.yml": "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_file_gives_its_exact_message(name: str) -> None:
    path = str(DATA / name)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == f"{path}: {INVALID[name]}"


def test_every_invalid_file_is_in_the_table() -> None:
    assert {p.name for p in DATA.glob("invalid-*.yml")} == set(INVALID)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read settings file: No such file"):
        load_settings(path)


def test_defaults_and_example_file() -> None:
    s = load_settings(
        str(Path(__file__).parents[1] / "examples" / "mx-exporter.yml"), {"ehlo_name": "probe.example.net"}
    )
    assert s.listen_address == "0.0.0.0:9706"
    assert s.refresh_interval == 60
    assert s.smtp.port == 25
    assert s.smtp.max_addresses_per_exchange == 5
    assert s.smtp.address_families == [Family.IPV4, Family.IPV6]
    assert s.allow_networks == []
    assert [d.name for d in s.domains] == ["example.org", "example.net"]
    assert s.domains[1].expect.min_tiers == 2


def test_precedence_flag_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yml"
    path.write_text(
        "ehlo_name: probe.example.net\nrefresh_interval: 10\nsmtp:\n  port: 2500\n  connect_timeout: 3\n"
    )
    assert load_settings(str(path)).smtp.port == 2500
    monkeypatch.setenv("MX_EXPORTER_SMTP__PORT", "2600")
    monkeypatch.setenv("MX_EXPORTER_REFRESH_INTERVAL", "20")
    s = load_settings(str(path))
    assert (s.smtp.port, s.refresh_interval, s.smtp.connect_timeout) == (2600, 20, 3)
    s = load_settings(str(path), {"smtp": {"port": 2700}})
    assert (s.smtp.port, s.refresh_interval, s.smtp.connect_timeout) == (2700, 20, 3)


def test_unknown_environment_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MX_EXPORTER_REFRESH_INTERVALL", "5")
    with pytest.raises(ConfigError, match=r"^environment MX_EXPORTER_REFRESH_INTERVALL: unknown key$"):
        load_settings(None, {"ehlo_name": "probe.example.net"})


def test_bad_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MX_EXPORTER_SMTP__PORT", "0")
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"ehlo_name": "probe.example.net"})
    assert (
        str(err.value)
        == "environment MX_EXPORTER_SMTP__PORT: smtp.port: Input should be greater than or equal to 1"
    )


def test_bad_flag_value_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"ehlo_name": "probe.example.net", "smtp": {"port": "x"}})
    assert str(err.value) == (
        "flag --smtp.port: smtp.port: Input should be a valid integer, unable to parse string as an integer"
    )


def test_domain_forms_and_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    path.write_text(
        "ehlo_name: Probe.Example.NET.\ndomains:\n  - Example.ORG.\n  - name: bücher.example\n"
        "    smtp: {greeting_timeout: 30}\n    expect: {exchanges: [mx.example.org]}\n"
    )
    s = load_settings(str(path), extra_domains=("extra.example", "example.org"))
    assert s.ehlo_name == "probe.example.net"
    assert [d.name for d in s.domains] == ["example.org", "xn--bcher-kva.example", "extra.example"]
    assert s.domains[1].smtp.greeting_timeout == 30
    assert s.domains[1].expect.exchanges == ["mx.example.org"]


def test_allow_networks_parse() -> None:
    s = load_settings(None, {"ehlo_name": "probe.example.net", "allow_networks": ["127.0.0.0/8", "::1/128"]})
    assert s.allow_networks == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def test_ehlo_default_is_the_host_fqdn_or_an_honest_invalid_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "host_fqdn", lambda: "Mon1.Example.NET")
    assert load_settings(None).ehlo_name == "mon1.example.net"
    for no_fqdn in ("mon1", "localhost", "localhost.localdomain", ""):
        monkeypatch.setattr(settings_module, "host_fqdn", lambda name=no_fqdn: name)
        assert load_settings(None).ehlo_name == "mx-exporter.invalid"


def test_every_leaf_key_is_a_flag() -> None:
    keys = leaf_keys()
    assert {
        "listen_address",
        "smtp.port",
        "smtp.session_timeout",
        "resolver.nameservers",
        "shard.index",
        "web.config_file",
        "domains",
        "allow_networks",
        "probe.timeout_offset",
    } <= set(keys)
    s = load_settings(None, {"ehlo_name": "probe.example.net"})
    assert set(keys) >= {k for k in s.model_dump() if not isinstance(s.model_dump()[k], dict)}


def test_config_check_cli(capsys: pytest.CaptureFixture[str]) -> None:
    bad = str(DATA / "invalid-unknown-nested-key.yml")
    assert main(["--config.file", bad, "--config.check"]) == 1
    assert f"{bad}: smtp.conect_timeout: unknown key" in capsys.readouterr().err
    good = str(Path(__file__).parents[1] / "examples" / "mx-exporter.yml")
    assert main(["--config.file", good, "--config.check", "--ehlo_name", "probe.example.net"]) == 0
    assert "configuration OK: 2 domains" in capsys.readouterr().out


def test_console_script_config_check() -> None:
    bad = str(DATA / "invalid-port.yml")
    done = subprocess.run(
        [sys.executable, "-m", "mx_exporter", "--config.file", bad, "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{bad}: smtp.port: Input should be less than or equal to 65535" in done.stderr


def test_resolver_rate_limit_defaults_to_unlimited_and_is_read_from_every_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(None).resolver.max_queries_per_second is None
    assert "resolver.max_queries_per_second" in leaf_keys()
    path = tmp_path / "s.yml"
    path.write_text("resolver:\n  max_queries_per_second: 250\n")
    assert load_settings(str(path)).resolver.max_queries_per_second == 250
    path.write_text("resolver:\n  max_queries_per_second: null\n")
    assert load_settings(str(path)).resolver.max_queries_per_second is None
    monkeypatch.setenv("MX_EXPORTER_RESOLVER__MAX_QUERIES_PER_SECOND", "12.5")
    assert load_settings(str(path)).resolver.max_queries_per_second == 12.5
    assert (
        load_settings(None, {"resolver": {"max_queries_per_second": 40}}).resolver.max_queries_per_second
        == 40
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "Input should be greater than 0"),
        (-5, "Input should be greater than 0"),
        ("fast", "Input should be a valid number, unable to parse string as a number"),
    ],
)
def test_resolver_rate_limit_must_be_above_zero(value: object, reason: str, tmp_path: Path) -> None:
    key = "resolver.max_queries_per_second"
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"resolver": {"max_queries_per_second": value}})
    assert str(err.value) == f"flag --{key}: {key}: {reason}"
    path = tmp_path / "s.yml"
    path.write_text(f"resolver:\n  max_queries_per_second: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(str(path))
    assert str(err.value) == f"{path}: {key}: {reason}"


def test_intended_setup_expectations() -> None:
    domain = {"name": "example.org", "expect": {"nolisting": True, "max_greeting_seconds": 20}}
    s = load_settings(None, {"ehlo_name": "probe.example.net", "domains": [domain]})
    assert (s.domains[0].expect.nolisting, s.domains[0].expect.max_greeting_seconds) == (True, 20)
    with pytest.raises(ConfigError) as err:
        load_settings(
            None,
            {
                "ehlo_name": "probe.example.net",
                "domains": [{"name": "a.example", "expect": {"greylisting": False}}],
            },
        )
    assert (
        str(err.value)
        == "flag --domains.0.expect.greylisting: domains.0.expect.greylisting: Input should be True"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(
            None,
            {
                "ehlo_name": "probe.example.net",
                "domains": [{"name": "a.example", "expect": {"max_greeting_seconds": 0}}],
            },
        )
    assert (
        str(err.value)
        == "flag --domains.0.expect.max_greeting_seconds: domains.0.expect.max_greeting_seconds: Input should be greater than 0"
    )


def test_egress_canaries_are_checked_at_the_edge() -> None:
    s = load_settings(None, {"ehlo_name": "probe.example.net", "egress": {"canaries": ["mx.example.net:25"]}})
    assert s.egress.canaries == ["mx.example.net:25"]
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"ehlo_name": "probe.example.net", "egress": {"canaries": ["mx.example.net"]}})
    assert str(err.value) == (
        "flag --egress.canaries: egress.canaries: 'mx.example.net' is not host:port (a port is required)"
    )
