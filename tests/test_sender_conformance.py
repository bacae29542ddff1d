"""Real Postfix and Exim against the conformance scenarios (tests/lab/conformance.py), run once per module.

The lab needs root, namespaces, NSD, Postfix and an unpacked Exim; where any is missing the runner exits 77
with the reason and every test here skips with it. Two kinds of assertion: what the MTAs were observed to
do (issue 8's table), and that the exporter's profile for each MTA (mx_exporter/senders.py, from `check --output
json` run in the same namespace against the same DNS and peers) says what that MTA did — outcome and address.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conformance_netns import UNAVAILABLE
from tests.lab.conformance_scenarios import scenarios

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 300  # seconds; a full run takes well under a minute
MTAS = ("postfix", "exim")
HELO = {"postfix": "postfix.sender.test", "exim": "exim.sender.test"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("conformance") / "conformance.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.lab.conformance", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
        check=False,
    )
    if done.returncode == UNAVAILABLE:
        pytest.skip(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "lab unavailable")
    assert done.returncode == 0, f"conformance runner failed ({done.returncode}):\n{done.stderr[-6000:]}"
    if (REPO / "test-output").is_dir():
        shutil.copy(out, REPO / "test-output" / "sender-conformance.json")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def by_number(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {s["number"]: s for s in report["scenarios"]}


def test_every_scenario_ran_with_a_definite_outcome(report: dict[str, Any]) -> None:
    ran = by_number(report)
    assert sorted(ran) == [s.n for s in scenarios()]
    undecided = [
        f"{s['name']} {mta}: {s[mta]['key_line']}"
        for s in report["scenarios"]
        for mta in MTAS
        if s[mta]["outcome"] not in ("delivered", "deferred", "bounced")
    ]
    assert not undecided, "\n".join(undecided)


def test_a_delivery_in_the_log_is_a_message_at_that_peer(report: dict[str, Any]) -> None:
    """The log parsing agrees with the peers: the logged address received a message with that MTA's HELO."""
    for s in report["scenarios"]:
        for mta in MTAS:
            address = s[mta]["delivered_to"]
            if s[mta]["outcome"] != "delivered":
                assert address is None, (s["name"], mta)
                continue
            helos = [m["helo"] for m in s["peer_log"].get(address, {}).get("messages", [])]
            assert HELO[mta] in helos, (s["name"], mta, address, s["peer_log"])


def test_the_exporter_answered_every_scenario(report: dict[str, Any]) -> None:
    missing = [s["name"] for s in report["scenarios"] if not isinstance(s["exporter"], dict)]
    assert not missing, [(name, by_number(report)[int(name[1:])]["exporter_run"]) for name in missing]


def test_the_run_stays_fast(report: dict[str, Any]) -> None:
    assert report["timings"]["total_seconds"] < 180


def net(n: int, host: int) -> str:
    return f"198.18.{n}.{host}"


# Observed before this lab existed (issue 8) and again by it: (scenario, MTA) -> (outcome, delivered to).
OBSERVED: dict[tuple[int, str], tuple[str, str | None]] = {
    (8, "postfix"): ("bounced", None),
    (8, "exim"): ("delivered", net(8, 20)),
    (23, "postfix"): ("bounced", None),
    (23, "exim"): ("delivered", net(23, 10)),
    **{(n, mta): ("delivered", net(n, 20)) for n in (2, 3, 4, 5, 7, 11) for mta in MTAS},
    **{(14, mta): ("deferred", None) for mta in MTAS},
    **{(n, mta): ("bounced", None) for n in (15, 17, 19, 22) for mta in MTAS},
    **{(21, mta): ("delivered", net(21, 10)) for mta in MTAS},
    **{(13, mta): ("delivered", net(13, 11)) for mta in MTAS},
}


@pytest.mark.parametrize(("n", "mta"), sorted(OBSERVED), ids=[f"s{n:02d}-{m}" for n, m in sorted(OBSERVED)])
def test_observed_mta_behaviour(report: dict[str, Any], n: int, mta: str) -> None:
    result = by_number(report)[n][mta]
    assert (result["outcome"], result["delivered_to"]) == OBSERVED[(n, mta)], result["log"]


# What a polite probe never sees: it stops after EHLO/HELO and never sends MAIL or RCPT, so a peer that only
# refuses recipients looks like any accepting peer to it. These scenarios show the MTAs' behaviour; the profiles
# do not claim to predict it.
BEYOND_THE_PROBE = frozenset({"rcpt_451", "rcpt_550"})
EXPORTER_WORD = {"delivered": "delivered", "deferred": "queued", "bounced": "bounced"}


def _comparable(scenario: dict[str, Any]) -> bool:
    return not BEYOND_THE_PROBE & set(scenario["peers"].values())


def test_most_scenarios_are_within_what_the_probe_sees(report: dict[str, Any]) -> None:
    comparable = [s for s in report["scenarios"] if _comparable(s)]
    assert len(comparable) >= 25, len(comparable)


@pytest.mark.parametrize("mta", MTAS)
def test_the_exporter_profile_says_what_the_mta_did(report: dict[str, Any], mta: str) -> None:
    """Every comparable scenario: the exporter's `mta` profile and the real MTA agree on the outcome and, when
    delivered, on the address. A disagreement lists the scenario, the MTA's log line and the exporter's verdict."""
    disagreements = []
    for s in filter(_comparable, report["scenarios"]):
        real = s[mta]
        (domain,) = s["exporter"]["domains"]
        profile = domain["verdict"]["deliveries"][mta]
        want = (EXPORTER_WORD[real["outcome"]], real["delivered_to"] or "")
        if (profile["outcome"], profile["address"]) != want:
            disagreements.append(
                f"{s['name']} ({s['description']}):\n"
                f"  {mta}: {real['outcome']} {real['delivered_to'] or ''} — {real['key_line']}\n"
                f"  exporter {mta} profile: {profile['outcome']} {profile['address']} — {profile['reason']}"
            )
    assert not disagreements, "\n".join(disagreements)
