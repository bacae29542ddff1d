"""Table tests for `mx-exporter check` output: exit codes, verdict lines, the text table and the JSON schema.

Reports come from tests/builders.py, one builder per lab-like situation, each assessed by mx_exporter.assess (no
DNS, no SMTP); the status page tests read the same builders.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mx_exporter.model import (
    AddressResult,
    DeliveryOutcome,
    DnsStatus,
    DomainReport,
    Family,
    Misconfiguration,
    Sender,
    SmtpOutcome,
    TlsFacts,
)
from mx_exporter.report_text import json_document, problems, render_run, render_text, run_summary, to_json
from mx_exporter.verdicts import (
    by_attention,
    clean,
    exit_code,
    starttls_cell,
    state,
    verdict_line,
    worst_exit_code,
)
from tests.builders import (
    FINISHED,
    HOSTILE_CNAME,
    HOSTILE_DETAIL,
    HOSTILE_NAME,
    addr,
    bouncing,
    dns_only,
    ex,
    fallback,
    healthy,
    hostile,
    null_mx,
    primary_down,
    renamed,
    report,
    undeliverable,
    unresolvable_only,
)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "check-json-schema.json"


CASES: list[tuple[Callable[[], DomainReport], int, str]] = [
    (healthy, 0, "DELIVERABLE, primary up (pref 10)"),
    (primary_down, 1, "DEGRADED: primary tier down, delivering to backup pref 20"),
    (undeliverable, 2, "UNDELIVERABLE: no tier accepts"),
    (null_mx, 0, "NULL MX: accepts no mail by design"),
    (fallback, 0, "DELIVERABLE, primary up (pref 0), implicit MX from the domain's A/AAAA"),
    (dns_only(DnsStatus.NXDOMAIN), 2, "UNDELIVERABLE: the domain does not exist (nxdomain)"),
    (dns_only(DnsStatus.NODATA), 2, "UNDELIVERABLE: no MX and no A/AAAA (nodata)"),
    (dns_only(DnsStatus.SERVFAIL, "all nameservers failed"), 3, "DNS FAILURE: servfail (temporary)"),
    (dns_only(DnsStatus.TIMEOUT), 3, "DNS FAILURE: timeout (temporary)"),
    (dns_only(DnsStatus.ERROR, "malformed answer"), 3, "DNS FAILURE: error"),
    (unresolvable_only, 2, "UNDELIVERABLE: no exchange has an address"),
    (hostile, 1, "DEGRADED: primary tier down, delivering to backup pref 20"),
]
IDS = [c[0]().domain for c in CASES]
ANSI_SGR = re.compile(r"\x1b\[\d+m")


@pytest.mark.parametrize(("build", "code", "line"), CASES, ids=IDS)
def test_exit_code_and_verdict_line(build: Callable[[], DomainReport], code: int, line: str) -> None:
    r = build()
    assert exit_code(r) == code
    assert verdict_line(r) == line


def test_status_ok_without_mail_hosts_is_undeliverable() -> None:
    r = report("empty.lab.test", mx_records=0)
    assert (exit_code(r), verdict_line(r)) == (2, "UNDELIVERABLE: no usable mail hosts")


@pytest.mark.parametrize(
    ("codes", "worst"), [([0, 1, 3, 2], 3), ([1, 1], 1), ([0], 0), ([2, 0, 1], 2), ([], 0)]
)
def test_worst_exit_code(codes: list[int], worst: int) -> None:
    assert worst_exit_code(codes) == worst
    assert worst_exit_code(iter(codes)) == worst


STATE_OF = {
    "healthy.lab.test": "ok",
    "primary-down.lab.test": "degraded",
    "undeliverable.lab.test": "undeliverable",
    "nullmx.lab.test": "null-mx",
    "fallback.lab.test": "ok",
    "nxdomain.lab.test": "undeliverable",
    "nodata.lab.test": "undeliverable",
    "servfail.lab.test": "dns-failure",
    "timeout.lab.test": "dns-failure",
    "error.lab.test": "dns-failure",
    "unresolvable.lab.test": "undeliverable",
    "evil.test": "degraded",
}


@pytest.mark.parametrize(("build", "code", "line"), CASES, ids=IDS)
def test_state_word_follows_the_exit_code(build: Callable[[], DomainReport], code: int, line: str) -> None:
    r = build()
    assert state(r) == STATE_OF[r.domain]
    assert {"ok": 0, "null-mx": 0, "degraded": 1, "undeliverable": 2, "dns-failure": 3}[state(r)] == code


def test_by_attention_puts_problems_first_and_keeps_the_given_order_within_a_state() -> None:
    given = [
        healthy(),
        renamed(primary_down(), "b-down.lab.test"),
        null_mx(),
        dns_only(DnsStatus.TIMEOUT)(),
        undeliverable(),
        primary_down(),
        renamed(undeliverable(), "a-dead.lab.test"),
        fallback(),
    ]
    assert [r.domain for r in by_attention(given)] == [
        "undeliverable.lab.test",
        "a-dead.lab.test",
        "timeout.lab.test",
        "b-down.lab.test",
        "primary-down.lab.test",
        "nullmx.lab.test",
        "healthy.lab.test",
        "fallback.lab.test",
    ]
    assert given[0].domain == "healthy.lab.test"  # a new list; the input is left alone


def test_run_summary_counts_each_state_calmest_first() -> None:
    ten = [healthy()] * 7 + [primary_down()] + [undeliverable()] * 2
    assert run_summary(ten, color=False) == "10 domains: 7 ok, 1 primary down, 2 undeliverable"
    every = [build() for build, _, _ in CASES]
    assert (
        run_summary(every, color=False)
        == "12 domains: 2 ok, 1 null MX, 2 primary down, 3 DNS failure, 4 undeliverable"
    )
    coloured = run_summary(ten, color=True)
    assert ANSI_SGR.sub("", coloured) == "10 domains: 7 ok, 1 primary down, 2 undeliverable"
    assert "\x1b[32m7 ok\x1b[0m" in coloured and "\x1b[31m2 undeliverable\x1b[0m" in coloured


def test_render_run_prints_problems_first_and_a_summary_for_several() -> None:
    assert render_run([healthy()], color=False) == render_text(
        healthy(), color=False
    )  # one domain: no summary
    text = render_run(
        [healthy(), dns_only(DnsStatus.SERVFAIL)(), primary_down(), undeliverable()], color=False
    )
    blocks = text.split("\n\n")
    assert [b.split(" - ")[0] for b in blocks[:-1]] == [
        "undeliverable.lab.test",
        "servfail.lab.test",
        "primary-down.lab.test",
        "healthy.lab.test",
    ]
    assert blocks[0] == render_text(undeliverable(), color=False)
    assert blocks[-1] == "4 domains: 1 ok, 1 primary down, 1 DNS failure, 1 undeliverable"
    assert text.splitlines()[-1] == blocks[-1]


def test_text_table_columns_line_up() -> None:
    text = render_text(healthy(), color=False)
    lines = text.splitlines()
    header = next(line for line in lines if "ADDRESS" in line)
    rows = [line for line in lines if "127.0.0." in line or "::1" in line]
    assert len(rows) == 3
    for column, values in (("ADDRESS", ["127.0.0.10", "::1", "127.0.0.11"]), ("OUTCOME", ["accepted"] * 3)):
        start = header.index(column)
        assert [row[start : start + len(v)] for row, v in zip(rows, values, strict=True)] == values
    assert (
        "mx1.healthy.lab.test" in rows[0] and "mx1.healthy.lab.test" not in rows[1]
    )  # name once per exchange
    assert "1.2 ms" in rows[0] and "34.5 ms" in rows[0]
    assert rows[0].endswith("  yes TLSv1.3, cert ok")
    assert rows[1].endswith("  no")  # accepts without offering STARTTLS
    assert lines[-1] == "  Verdict: DELIVERABLE, primary up (pref 10)"
    assert lines[0] == (
        "healthy.lab.test - DNS ok, 2 MX records, 2 tiers, TTL 300 s, probed in 0.42 s at 2026-01-01T00:00:00Z"
    )


def test_colour_only_when_asked_and_alignment_kept() -> None:
    for build, _, _ in CASES:
        r = build()
        plain, coloured = render_text(r, color=False), render_text(r, color=True)
        assert "\x1b" not in plain
        assert "\x1b[" in coloured
        assert ANSI_SGR.sub("", coloured) == plain
    assert "\x1b[32maccepted\x1b[0m" in render_text(healthy(), color=True)
    assert "\x1b[33mDEGRADED" in render_text(primary_down(), color=True)


def test_peer_text_cannot_inject_terminal_escapes() -> None:
    r = hostile()
    for color in (False, True):
        text = render_text(r, color=color)
        # The only escape sequences left are our own colour codes; the bell and the OSC title are gone.
        assert "\x1b" not in ANSI_SGR.sub("", text)
        assert "\x07" not in text and "\u202e" not in text
    text = render_text(r, color=False)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in text
    assert "\\u202egnp.exe" in text


def test_problems_list_everything_worth_attention() -> None:
    found = problems(primary_down())
    assert found == [
        "127.0.0.23 (mx1.primary-down.lab.test): connection_refused: [Errno 111] Connection refused"
    ]
    found = problems(hostile())
    assert found[0].startswith("DNS: \\x1b]0;pwned")
    assert "cname_target: an MX target is a CNAME (RFC 2181 §10.3): some senders refuse it" in found
    assert any(p.startswith(f"{HOSTILE_NAME}: cname_target (CNAME to {HOSTILE_CNAME})") for p in found)
    assert "expectation starttls not met" in found
    assert "expectation min_tiers not met" not in found
    assert "senders disagree: postfix -> pref 20, exim -> pref 20, qmail -> queued" in found
    assert problems(healthy()) == []


def test_starttls_handshake_failure_is_a_problem() -> None:
    bad_tls = addr("127.0.0.10", starttls_advertised=True, tls=TlsFacts(False))
    r = report("tls.lab.test", ex("mx.tls.lab.test", 10, bad_tls))
    assert problems(r) == ["127.0.0.10 (mx.tls.lab.test): STARTTLS handshake failed"]
    assert "yes, handshake failed" in render_text(r, color=False)


VALID_FOR_MX = TlsFacts(True, "TLSv1.3", chain_valid=True, names=("mx.tls.lab.test",))


@pytest.mark.parametrize(
    ("result", "cell"),
    [
        (addr("127.0.0.23", SmtpOutcome.CONNECTION_REFUSED), "-"),  # nothing to say
        (addr("127.0.0.10"), "no"),
        (addr("127.0.0.10", starttls_advertised=True), "yes"),
        (addr("127.0.0.10", starttls_advertised=True, tls=TlsFacts(False)), "yes, handshake failed"),
        (addr("127.0.0.10", starttls_advertised=True, tls=VALID_FOR_MX), "yes TLSv1.3, cert ok"),
        (
            addr(
                "127.0.0.10", starttls_advertised=True, tls=replace(VALID_FOR_MX, names=("other.lab.test",))
            ),
            "yes TLSv1.3, cert invalid",
        ),
        (
            addr("127.0.0.10", starttls_advertised=True, tls=TlsFacts(True, "\x1b[2J" * 10)),
            "yes \\x1b[2J\\x1b[2J\\x1b[2…, cert invalid",  # the peer's version cleaned and bounded
        ),
    ],
)
def test_one_starttls_cell_with_the_certificate_judged_by_assessment(
    result: AddressResult, cell: str
) -> None:
    r = report("tls.lab.test", ex("mx.tls.lab.test", 10, result))
    assert starttls_cell(r.tiers[0].exchanges[0].addresses[0]) == cell
    row = next(line for line in render_text(r, color=False).splitlines() if "127.0.0." in line)
    assert row.endswith("  " + cell)


def test_starttls_cell_before_a_certificate_is_judged() -> None:
    """A session's own facts (no exchange name yet): the version alone, no certificate word."""
    assert starttls_cell(addr("127.0.0.10", starttls_advertised=True, tls=TlsFacts(True, "TLSv1.3"))) == (
        "yes TLSv1.3"
    )
    assert starttls_cell(addr("127.0.0.10", starttls_advertised=True, tls=TlsFacts(True))) == "yes"


def test_missing_code_and_latencies_are_a_dash() -> None:
    lines = render_text(primary_down(), color=False).splitlines()
    assert lines[1:4] == [
        "  PREF  EXCHANGE                   ADDRESS     FAMILY  OUTCOME             CODE  CONNECT  GREETING  STARTTLS",
        "  10    mx1.primary-down.lab.test  127.0.0.23  ipv4    connection_refused  -     -        -         -",
        "  20    mx2.primary-down.lab.test  127.0.0.11  ipv4    accepted            220   1.2 ms   34.5 ms   no",
    ]


def test_clean_escapes_and_bounds() -> None:
    assert clean("mx1.example.org") == "mx1.example.org"
    assert clean("a\tb\nc\x00\x7f\x9b") == "a\\x09b\\x0ac\\x00\\x7f\\x9b"
    assert clean("x\u2028y") == "x\\u2028y"
    assert clean("é ok") == "é ok"
    long = clean("a" * 500)
    assert long == "a" * 200 + "…"
    assert clean("b" * 200) == "b" * 200


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


def test_json_document_matches_schema(schema: dict[str, Any]) -> None:
    reports = [build() for build, _, _ in CASES]
    doc = json_document(reports)
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(doc)))
    assert doc["exit_code"] == 3
    assert [d["exit_code"] for d in doc["domains"]] == [code for _, code, _ in CASES]
    assert [d["verdict_line"] for d in doc["domains"]] == [line for _, _, line in CASES]


def test_json_fields(schema: dict[str, Any]) -> None:
    doc = to_json(healthy())
    first = doc["tiers"][0]["exchanges"][0]["addresses"][0]
    assert first == {
        "address": "127.0.0.10",
        "family": "ipv4",
        "outcome": "accepted",
        "up": True,
        "greeting_code": 220,
        "ehlo_code": 0,
        "helo_code": 0,
        "connect_seconds": 0.0012,
        "greeting_seconds": 0.0345,
        "session_seconds": None,
        "starttls_advertised": True,
        "tls": {
            "handshake_ok": True,
            "version": "TLSv1.3",
            "cert_not_after": FINISHED + 86400 * 30,
            "cert_valid": True,
        },
        "detail": "",
    }
    assert doc["verdict"] == {
        "deliverable": True,
        "primary_up": True,
        "active_preference": 10,
        "preference_gap": 10,
        "deliveries": {
            s: {
                "outcome": "delivered",
                "preference": 10,
                "exchange": "mx1.healthy.lab.test",
                "address": "127.0.0.10",
                "reason": "pref 10 (mx1.healthy.lab.test, 127.0.0.10)",
            }
            for s in ("postfix", "exim", "qmail")
        },
        "expectations": {},
    }
    assert doc["dns"] == {
        "status": "ok",
        "mx_records": 2,
        "null_mx": False,
        "fallback_to_a": False,
        "ttl": 300,
        "detail": "",
    }
    assert [t["preference"] for t in doc["tiers"]] == [10, 20]
    hostile_doc = to_json(hostile())
    assert hostile_doc["tiers"][0]["exchanges"][0]["problems"] == ["cname_target"]
    assert (
        hostile_doc["tiers"][0]["exchanges"][0]["addresses"][0]["detail"] == HOSTILE_DETAIL
    )  # raw: JSON escapes


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("exit_code",), 4),
        (("domains", 0, "dns", "status"), "weird"),
        (("domains", 0, "tiers", 0, "exchanges", 0, "addresses", 0, "outcome"), "bogus"),
        (("domains", 0, "verdict", "active_preference"), -2),
        (("domains", 0, "misconfigurations"), ["not_a_kind"]),
        (("domains", 0, "extra"), 1),
    ],
)
def test_schema_rejects_bad_documents(schema: dict[str, Any], path: tuple[Any, ...], bad: Any) -> None:
    doc = copy.deepcopy(json_document([healthy()]))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(doc)


def test_schema_enums_follow_the_model(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    assert defs["address"]["properties"]["outcome"]["enum"] == [o.value for o in SmtpOutcome]
    assert defs["domain"]["properties"]["dns"]["properties"]["status"]["enum"] == [s.value for s in DnsStatus]
    assert defs["misconfiguration"]["enum"] == [m.value for m in Misconfiguration]
    assert defs["address"]["properties"]["family"]["enum"] == [f.value for f in Family]
    deliveries_schema = defs["domain"]["properties"]["verdict"]["properties"]["deliveries"]
    assert sorted(deliveries_schema["properties"]) == sorted(s.value for s in Sender)
    assert defs["delivery"]["properties"]["outcome"]["enum"] == [o.value for o in DeliveryOutcome]


def test_a_plain_healthy_answer_lists_no_problems() -> None:
    from mx_exporter.report_text import problems

    plain = healthy()
    plain = replace(
        plain, resolution=replace(plain.resolution, detail="2 MX records, 2 exchanges in 2 tiers")
    )
    assert problems(plain) == []
    odd = replace(plain, resolution=replace(plain.resolution, status=DnsStatus.NODATA, fallback_to_a=True))
    assert problems(odd) == ["DNS: 2 MX records, 2 exchanges in 2 tiers"]


def test_a_bouncing_profile_is_exit_2_with_each_profile_said() -> None:
    r = bouncing()
    assert exit_code(r) == 2
    assert verdict_line(r) == "BOUNCING: postfix would bounce mail although an address accepts"
    text = render_text(r, color=False)
    assert "  Senders:\n" in text
    assert "    postfix  bounced: EHLO and HELO refused with 5xx at mx1.bounce.lab.test (127.0.0.25)" in text
    assert "    exim     delivered to pref 20 (mx2.bounce.lab.test)" in text
    assert "    qmail    queued (retrying): EHLO and HELO refused with 5xx at mx1.bounce.lab.test" in text
    assert to_json(r)["verdict"]["deliveries"]["postfix"]["outcome"] == "bounced"


def test_null_mx_bounces_by_design_and_stays_exit_0() -> None:
    r = null_mx()
    assert all(d.outcome is DeliveryOutcome.BOUNCED for d in r.verdict.deliveries.values())
    assert exit_code(r) == 0 and verdict_line(r).startswith("NULL MX")
