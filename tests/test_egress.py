"""Egress self-check against real parts: canaries on the lab's loopback peers, and a network namespace whose
outbound SMTP port is dropped by nftables (the way a cloud blocks port 25), never mocked sockets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mx_exporter.egress import BLOCKED_TEXT, EgressState, judge, suspected
from mx_exporter.model import AddressResult, Family, SmtpOutcome
from mx_exporter.names import Canary, parse_canary
from tests.lab import plan
from tests.lab.exporter import exporter_command, lab_config, series, value

Out = SmtpOutcome


def _result(outcome: SmtpOutcome, ip: str = "192.0.2.1") -> AddressResult:
    return AddressResult(ip, Family.IPV4, outcome, detail=outcome.value)


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ((Out.ACCEPTED,), EgressState.UP),
        (
            (Out.CONNECT_TIMEOUT, Out.GREETING_4XX),
            EgressState.UP,
        ),  # connected: egress works, whatever it said
        ((Out.CONNECT_TIMEOUT, Out.CONNECT_TIMEOUT), EgressState.CONNECT_TIMEOUT),
        ((Out.CONNECT_TIMEOUT, Out.CONNECTION_REFUSED), EgressState.CONNECTION_REFUSED),
        ((), EgressState.UNRESOLVED),
    ],
)
def test_judge(outcomes: tuple[SmtpOutcome, ...], state: EgressState) -> None:
    canary = Canary("mx.example.net", 25)
    assert judge([(canary, [_result(o) for o in outcomes])]).state is state


def test_suspected_needs_nearly_every_address_timing_out() -> None:
    assert suspected([_result(Out.CONNECT_TIMEOUT, f"192.0.2.{i}") for i in range(10)])
    assert not suspected([_result(Out.CONNECT_TIMEOUT, f"192.0.2.{i}") for i in range(9)])  # too few to say
    mixed = [_result(Out.CONNECT_TIMEOUT, f"192.0.2.{i}") for i in range(8)] + [_result(Out.ACCEPTED)] * 2
    assert not suspected(mixed)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("mx.example.net:25", Canary("mx.example.net", 25)),
        ("192.0.2.1:2525", Canary("192.0.2.1", 2525)),
        ("[2001:db8::1]:25", Canary("2001:db8::1", 25)),
    ],
)
def test_parse_canary(text: str, want: Canary) -> None:
    assert parse_canary(text) == want


@pytest.mark.parametrize("bad", ["mx.example.net", "mx.example.net:0", "2001:db8::1:25", ":25", "mx:port"])
def test_bad_canaries_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_canary(bad)


def test_canaries_on_the_lab_peers(nsd_server: Any, smtp_lab: Any, start_exporter: Any) -> None:
    """A canary that accepts: egress up. One nobody listens on: refused, the verdicts flagged on the page."""
    up = start_exporter(
        lab_config(
            nsd_server.nameserver,
            smtp_lab.port,
            ["healthy.lab.test"],
            egress={"canaries": [f"{plan.ACCEPT_1}:{smtp_lab.port}"]},
        )
    ).scrape()
    assert value(up, "mx_exporter_egress_up") == 1
    assert value(up, "mx_exporter_egress_state", state="up") == 1
    blocked = start_exporter(
        lab_config(
            nsd_server.nameserver,
            smtp_lab.port,
            ["healthy.lab.test"],
            egress={"canaries": [f"{plan.CLOSED}:{smtp_lab.port}"]},
        )
    )
    s = blocked.scrape()
    assert value(s, "mx_exporter_egress_up") == 0
    assert value(s, "mx_exporter_egress_state", state="connection_refused") == 1
    assert sum(x.value for x in series(s, "mx_exporter_egress_state")) == 1
    page = blocked.get("/")[1]
    assert BLOCKED_TEXT in page and 'class="egress blocked"' in page
    plain = start_exporter(lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"])).scrape()
    assert series(plain, "mx_exporter_egress_up") == []  # no canaries: no claim either way
    assert value(plain, "mx_exporter_egress_suspected") == 0


def _netns_tools() -> str | None:
    for tool in ("unshare", "ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (the README test command installs iproute2 and nftables)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=10)
    return None if probe.returncode == 0 else f"cannot create a network namespace: {probe.stderr.strip()}"


def test_check_in_a_namespace_whose_port_25_is_dropped(tmp_path: Path) -> None:
    """`check` inside a fresh network namespace with nftables dropping outbound TCP to port 25: the canary on
    loopback times out, so no domain is judged and the exit code is 3."""
    missing = _netns_tools()
    if missing:
        pytest.skip(missing)
    config = tmp_path / "check.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ehlo_name": plan.EHLO_NAME,
                "resolver": {"nameservers": ["127.0.0.1:53"], "timeout": 1},
                "smtp": {"connect_timeout": 1, "session_timeout": 3},
                "egress": {"canaries": ["127.0.0.1:25"]},
            }
        )
    )
    setup = (
        "ip link set lo up && nft add table inet lab && "
        "nft add chain inet lab out '{ type filter hook output priority 0; }' && "
        'nft add rule inet lab out tcp dport 25 drop && exec "$@"'
    )
    command = [
        "unshare",
        "--net",
        "sh",
        "-c",
        setup,
        "sh",
        *exporter_command(),
        "check",
        "--config.file",
        str(config),
        "example.org",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith(f"{BLOCKED_TEXT} (connect_timeout: 127.0.0.1:25"), done.stdout
    assert "Not judged: example.org." in done.stdout
