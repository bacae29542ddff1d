"""MTA-STS and TLS-RPT parsing and MX pattern matching (mtasts.py) and the policy cache (policy_fetch.py); pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx_exporter import model
from mx_exporter.mtasts import (
    Policy,
    PolicyError,
    PolicyMode,
    PolicyState,
    StsRecord,
    TlsRptRecord,
    mx_matches,
    parse_policy,
    parse_sts_record,
    parse_tlsrpt_record,
    uncovered,
)
from mx_exporter.policy_fetch import CachedPolicy, FetchResult, PolicyCache

NONE, INVALID, VALID = PolicyState.NONE, PolicyState.RECORD_INVALID, PolicyState.VALID


def test_enums_are_the_models() -> None:
    # One enum per closed set: they live in model; mtasts re-exports them.
    assert PolicyMode is model.PolicyMode and PolicyState is model.PolicyState
    assert [s.value for s in PolicyState] == [
        "none",
        "record_invalid",
        "unreachable",
        "certificate_invalid",
        "http_error",
        "malformed",
        "valid",
    ]
    assert [m.value for m in PolicyMode] == ["none", "testing", "enforce"]


# --- _mta-sts TXT (RFC 8461 §3.1)

STS_CASES = [
    ([], NONE, "", "no v=STSv1 TXT record"),
    (["v=spf1 -all", "google-site-verification=abc"], NONE, "", "no v=STSv1 TXT record"),
    (
        ["v=STSv1; id=2024-01-01"],
        INVALID,
        "",
        "v=STSv1 record: id '2024-01-01' is not 1-32 letters or digits",
    ),
    (["v=STSv1; id=20240101T000000"], VALID, "20240101T000000", "record id 20240101T000000"),
    (["v=STSv1; id=20240101"], VALID, "20240101", "record id 20240101"),
    (["v=STSv1;id=abc"], VALID, "abc", "record id abc"),
    (["v=STSv1; id=abc;"], VALID, "abc", "record id abc"),
    (["v=STSv1 ;\tid=abc ; "], VALID, "abc", "record id abc"),
    (["v=spf1 -all", "v=STSv1; id=abc"], VALID, "abc", "record id abc"),
    (["v=STSv1; id=abc; ext-1.x=value!"], VALID, "abc", "record id abc"),
    (["v=STSv1; ext=1; id=A1b2"], VALID, "A1b2", "record id A1b2"),
    (["v=STSv1; id=" + "a" * 32], VALID, "a" * 32, "record id " + "a" * 32),
    (["v=STSv1; id=1", "v=STSv1; id=2"], INVALID, "", "2 v=STSv1 TXT records (one allowed)"),
    (["v=STSv1"], INVALID, "", "v=STSv1 record: no fields"),
    (["v=STSv1;"], INVALID, "", "v=STSv1 record: no fields"),
    (["v=STSv1 id=1"], INVALID, "", "v=STSv1 record: no ';' after v=STSv1"),
    (["v=STSv10; id=1"], INVALID, "", "v=STSv1 record: no ';' after v=STSv1"),
    (["v=STSv1; id=1;; x=y"], INVALID, "", "v=STSv1 record: field '' is not name=value"),
    (["v=STSv1; id=1; junk"], INVALID, "", "v=STSv1 record: field 'junk' is not name=value"),
    (["v=STSv1; id=1; -x=y"], INVALID, "", "v=STSv1 record: field '-x=y' is not name=value"),
    (["v=STSv1; id=1; x=a=b"], INVALID, "", "v=STSv1 record: field 'x' has a bad value"),
    (["v=STSv1; id=1; x="], INVALID, "", "v=STSv1 record: field 'x' has a bad value"),
    (["v=STSv1; ID=1"], INVALID, "", "v=STSv1 record: no id field"),
    (["v=STSv1; id=1; id=2"], INVALID, "", "v=STSv1 record: more than one id field"),
    (["v=STSv1; id="], INVALID, "", "v=STSv1 record: id '' is not 1-32 letters or digits"),
    (["v=STSv1; id=a-b"], INVALID, "", "v=STSv1 record: id 'a-b' is not 1-32 letters or digits"),
    (
        ["v=STSv1; id=" + "a" * 33],
        INVALID,
        "",
        f"v=STSv1 record: id '{'a' * 33}' is not 1-32 letters or digits",
    ),
]


@pytest.mark.parametrize(("txts", "state", "record_id", "reason"), STS_CASES)
def test_parse_sts_record(txts: list[str], state: PolicyState, record_id: str, reason: str) -> None:
    assert parse_sts_record(txts) == StsRecord(state, record_id, reason)


# --- _smtp._tls TXT (RFC 8460 §3)

TLSRPT_CASES = [
    ([], False, (), "no TLS-RPT record"),
    (["v=STSv1; id=1"], False, (), "no TLS-RPT record"),
    (
        ["v=TLSRPTv1; rua=mailto:tls@example.com"],
        True,
        ("mailto:tls@example.com",),
        "reports to mailto:tls@example.com",
    ),
    (
        ["v=TLSRPTv1;rua=mailto:a@example.com , https://reports.example.net/tlsrpt;"],
        True,
        ("mailto:a@example.com", "https://reports.example.net/tlsrpt"),
        "reports to mailto:a@example.com, https://reports.example.net/tlsrpt",
    ),
    (
        ["v=TLSRPTv1; x-ext=1; rua=MAILTO:t@example.com"],
        True,
        ("MAILTO:t@example.com",),
        "reports to MAILTO:t@example.com",
    ),
    (
        ["v=TLSRPTv1; rua=mailto:a@x.example", "v=TLSRPTv1; rua=mailto:b@x.example"],
        False,
        (),
        "2 v=TLSRPTv1 TXT records (one allowed)",
    ),
    (["v=TLSRPTv1"], False, (), "v=TLSRPTv1 record: no fields"),
    (["v=TLSRPTv1 rua=mailto:a@x.example"], False, (), "v=TLSRPTv1 record: no ';' after v=TLSRPTv1"),
    (["v=TLSRPTv1; ruf=mailto:a@x.example"], False, (), "v=TLSRPTv1 record: no rua field"),
    (
        ["v=TLSRPTv1; rua=mailto:a@x.example; rua=mailto:b@x.example"],
        False,
        (),
        "v=TLSRPTv1 record: more than one rua field",
    ),
    (
        ["v=TLSRPTv1; rua=http://reports.example"],
        False,
        (),
        "v=TLSRPTv1 record: rua 'http://reports.example' is not a mailto: or https: URI",
    ),
    (
        ["v=TLSRPTv1; rua=mailto:nobody"],
        False,
        (),
        "v=TLSRPTv1 record: rua 'mailto:nobody' is not a mailto: or https: URI",
    ),
    (
        ["v=TLSRPTv1; rua=https:/no-host"],
        False,
        (),
        "v=TLSRPTv1 record: rua 'https:/no-host' is not a mailto: or https: URI",
    ),
    (
        ["v=TLSRPTv1; rua=mailto:a@x.example,"],
        False,
        (),
        "v=TLSRPTv1 record: rua '' is not a mailto: or https: URI",
    ),
    (["v=TLSRPTv1; rua="], False, (), "v=TLSRPTv1 record: rua '' is not a mailto: or https: URI"),
    (
        ["v=TLSRPTv1; rua=mailto:a@x.example; bad"],
        False,
        (),
        "v=TLSRPTv1 record: field 'bad' is not name=value",
    ),
]


@pytest.mark.parametrize(("txts", "valid", "rua", "reason"), TLSRPT_CASES)
def test_parse_tlsrpt_record(txts: list[str], valid: bool, rua: tuple[str, ...], reason: str) -> None:
    assert parse_tlsrpt_record(txts) == TlsRptRecord(valid, rua, reason)


# --- the policy body (RFC 8461 §3.2)

ENFORCE = (
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.mx.example.com\r\nmax_age: 604800\r\n"
)

POLICY_CASES = [
    (ENFORCE, Policy(PolicyMode.ENFORCE, ("mx1.example.com", "*.mx.example.com"), 604800)),
    (
        "version: STSv1\nmode: testing\nmx: MX.Example.COM.\nmax_age: 86400",
        Policy(PolicyMode.TESTING, ("mx.example.com.",), 86400),
    ),
    ("mode: none\nmax_age: 0\nversion: STSv1\n", Policy(PolicyMode.NONE, (), 0)),
    (
        "version:STSv1\nmode:\t enforce \t\nmx: a.example\nmax_age: 31557600\n",
        Policy(PolicyMode.ENFORCE, ("a.example",), 31557600),
    ),
    (
        "version: STSv1\nmode: enforce\nmx: a.example\nmx: a.example\nmax_age: 1\n",
        Policy(PolicyMode.ENFORCE, ("a.example",), 1),
    ),
    (
        "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 0000000001\n",
        Policy(PolicyMode.ENFORCE, ("localhost",), 1),
    ),
    (
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nx_note: ünïcode ok, inner  spaces\nMode: ignored\n",
        Policy(PolicyMode.ENFORCE, ("a.example",), 1),
    ),
]


@pytest.mark.parametrize(("text", "policy"), POLICY_CASES)
def test_parse_policy(text: str, policy: Policy) -> None:
    assert parse_policy(text) == policy


POLICY_ERRORS = [
    ("", "policy is empty"),
    ("\n", "line 1 is empty"),
    ("version: STSv1\n\nmode: none\nmax_age: 1\n", "line 2 is empty"),
    ("version: STSv1\nmode: none\nmax_age: 1\n\n", "line 4 is empty"),
    ("version: STSv1\r\nmode: none\r\n\r\nmax_age: 1\r\n", "line 3 is empty"),
    ("version: STSv1\nmode none\nmax_age: 1\n", "line 2 is not 'key: value'"),
    ("version : STSv1\nmode: none\nmax_age: 1\n", "line 1 is not 'key: value'"),
    (" version: STSv1\nmode: none\nmax_age: 1\n", "line 1 is not 'key: value'"),
    ("version: STSv1\rmode: none\nmax_age: 1\n", "line 1: 'version' has an empty or unprintable value"),
    ("version: STSv1\nmode: none\nmax_age:\n", "line 3: 'max_age' has an empty or unprintable value"),
    (
        "version: STSv1\nmode: none\nmax_age: 1\nnote: a\x00b\n",
        "line 4: 'note' has an empty or unprintable value",
    ),
    ("mode: none\nmax_age: 1\n", "no version field"),
    ("version: STSv1\nmax_age: 1\n", "no mode field"),
    ("version: STSv1\nmode: none\n", "no max_age field"),
    ("version: STSv2\nmode: none\nmax_age: 1\n", "version must be STSv1, got 'STSv2'"),
    ("version: stsv1\nmode: none\nmax_age: 1\n", "version must be STSv1, got 'stsv1'"),
    ("version: STSv1\nversion: STSv1\nmode: none\nmax_age: 1\n", "'version' appears more than once"),
    ("version: STSv1\nmode: none\nmode: enforce\nmax_age: 1\n", "'mode' appears more than once"),
    ("version: STSv1\nmode: none\nmax_age: 1\nmax_age: 2\n", "'max_age' appears more than once"),
    ("version: STSv1\nmode: Enforce\nmax_age: 1\n", "mode must be none, testing or enforce, got 'Enforce'"),
    ("version: STSv1\nmode: report\nmax_age: 1\n", "mode must be none, testing or enforce, got 'report'"),
    ("version: STSv1\nmode: none\nmax_age: -1\n", "max_age must be 1-10 digits, got '-1'"),
    ("version: STSv1\nmode: none\nmax_age: 1.5\n", "max_age must be 1-10 digits, got '1.5'"),
    ("version: STSv1\nmode: none\nmax_age: 12345678901\n", "max_age must be 1-10 digits, got '12345678901'"),
    ("version: STSv1\nmode: none\nmax_age: ١٢\n", "max_age must be 1-10 digits, got '??'"),
    ("version: STSv1\nmode: none\nmax_age: 31557601\n", "max_age 31557601 is above the limit 31557600"),
    ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx field (required when mode is enforce)"),
    ("version: STSv1\nmode: testing\nmax_age: 1\n", "no mx field (required when mode is testing)"),
    (
        "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 1\n",
        "mx pattern 'mx*.example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 1\n",
        "mx pattern '*.*.example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 1\n",
        "mx pattern 'mx.*.example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
        "mx pattern '*' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: *example.com\nmax_age: 1\n",
        "mx pattern '*example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: mx_1.example.com\nmax_age: 1\n",
        "mx pattern 'mx_1.example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: -mx.example.com\nmax_age: 1\n",
        "mx pattern '-mx.example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: mx..example.com\nmax_age: 1\n",
        "mx pattern 'mx..example.com' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: mx.example.com:25\nmax_age: 1\n",
        "mx pattern 'mx.example.com:25' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: mx.bücher.example\nmax_age: 1\n",
        "mx pattern 'mx.b?cher.example' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: enforce\nmx: " + "a" * 64 + ".example\nmax_age: 1\n",
        f"mx pattern '{'a' * 57}...' is not a host name or *.host name",
    ),
    (
        "version: STSv1\nmode: none\nmx: bad_name\nmax_age: 1\n",
        "mx pattern 'bad_name' is not a host name or *.host name",
    ),
]


@pytest.mark.parametrize(("text", "reason"), POLICY_ERRORS)
def test_parse_policy_errors(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert caught.value.reason == reason
    assert str(caught.value) == reason


def test_long_host_names() -> None:
    label = "a" * 63
    longest = ".".join([label, label, label, "a" * 61])  # 253 characters
    assert parse_policy(f"version: STSv1\nmode: enforce\nmx: {longest}\nmax_age: 1\n").mx == (longest,)
    assert parse_policy(f"version: STSv1\nmode: enforce\nmx: {longest}.\nmax_age: 1\n").mx == (longest + ".",)
    with pytest.raises(PolicyError):
        parse_policy(f"version: STSv1\nmode: enforce\nmx: a{longest}\nmax_age: 1\n")


# --- MX patterns (RFC 8461 §4.1)

MATCH_CASES = [
    ("mx.example.com", "mx.example.com", True),
    ("mx.example.com", "MX.Example.COM", True),
    ("MX.EXAMPLE.COM.", "mx.example.com", True),
    ("mx.example.com", "mx.example.com.", True),
    ("mx.example.com", "mx2.example.com", False),
    ("mx.example.com", "example.com", False),
    ("mx.example.com", "a.mx.example.com", False),
    ("*.example.com", "mx.example.com", True),
    ("*.example.com", "MX.EXAMPLE.COM.", True),
    ("*.Example.Com.", "mx.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),
    ("*.example.com", "mx.example.net", False),
    ("*.example.com", "*.example.com", False),
    ("mx*.example.com", "mx1.example.com", False),
    ("*mx.example.com", "amx.example.com", False),
    ("mx.*.example.com", "mx.a.example.com", False),
    ("*.*.example.com", "a.b.example.com", False),
    ("*.", "mx", False),
    ("*", "mx", False),
    ("", "", False),
    ("mx.example.com", "", False),
    ("mx..example.com", "mx..example.com", False),
    # IDNA: U-labels compare in their A-label form, on either side
    ("mx.xn--bcher-kva.example", "mx.bücher.example", True),
    ("mx.bücher.example", "MX.XN--BCHER-KVA.EXAMPLE", True),
    ("*.xn--bcher-kva.example", "mx.bücher.example", True),
    ("*.bücher.example", "mx.xn--bcher-kva.example", True),
    ("*.bücher.example", "a.b.xn--bcher-kva.example", False),
    ("mx.bücher.example", "mx.bucher.example", False),
]


@pytest.mark.parametrize(("pattern", "exchange", "expected"), MATCH_CASES)
def test_mx_matches(pattern: str, exchange: str, expected: bool) -> None:
    assert mx_matches(pattern, exchange) is expected


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)


def _recase(name: str, flips: list[bool]) -> str:
    return "".join(
        ch.upper() if flip else ch for ch, flip in zip(name, flips + [False] * len(name), strict=False)
    )


@given(_host, _host, st.lists(st.booleans(), max_size=40), st.booleans())
def test_plain_pattern_matches_only_itself(pattern: str, other: str, flips: list[bool], dot: bool) -> None:
    """A pattern without '*' matches exactly the same name, in any case, with or without the trailing dot."""
    same = _recase(pattern, flips) + ("." if dot else "")
    assert mx_matches(pattern, same)
    assert mx_matches(same, pattern)
    assert mx_matches(pattern, other) is (pattern == other)
    assert mx_matches(pattern, "x." + pattern) is False


@given(_host, _label, st.lists(_label, min_size=2, max_size=3))
def test_wildcard_covers_one_label(base: str, one: str, more: list[str]) -> None:
    assert mx_matches(f"*.{base}", f"{one}.{base}")
    assert not mx_matches(f"*.{base}", base)
    assert not mx_matches(f"*.{base}", ".".join([*more, base]))


def test_uncovered() -> None:
    policy = Policy(PolicyMode.ENFORCE, ("mx1.example.com", "*.mx.example.com"), 86400)
    exchanges = [
        "MX1.example.com.",
        "a.mx.example.com",
        "mx.example.com",
        "b.a.mx.example.com",
        "mx.example.com",
    ]
    assert uncovered(policy, exchanges) == ("mx.example.com", "b.a.mx.example.com")
    assert uncovered(policy, []) == ()
    assert uncovered(Policy(PolicyMode.NONE, (), 0), ["mx.example.com"]) == ("mx.example.com",)


# --- the cache (RFC 8461 §5.1)

P1 = Policy(PolicyMode.ENFORCE, ("mx.example.com",), 3600)
P2 = Policy(PolicyMode.TESTING, ("mx.example.com",), 100_000)


def ok(policy: Policy) -> FetchResult:
    return FetchResult(PolicyState.VALID, policy, "fine", 0.1)


FAILED = FetchResult(
    PolicyState.UNREACHABLE, None, "mta-sts.example.com: cannot connect: connection refused", 0.1
)


def test_cache_due_when_empty_and_not_after_a_fetch() -> None:
    cache = PolicyCache()
    assert cache.due("example.com", "1", 0.0)
    assert cache.get("example.com") is None
    cache.store("example.com", "1", ok(P1), 1000.0)
    assert cache.get("example.com") == CachedPolicy(ok(P1), "1", 1000.0, P1, "1", 1000.0)
    assert not cache.due("example.com", "1", 1000.0)
    assert not cache.due("example.com", "1", 1000.0 + 3599)
    assert cache.due("example.com", "1", 1000.0 + 3600)  # max_age reached
    assert cache.due("example.com", "2", 1001.0)  # a new id: fetch at once
    assert cache.due("other.example", "1", 1001.0)


def test_cache_refetch_ceiling() -> None:
    cache = PolicyCache(refetch_seconds=86_400)
    cache.store("example.com", "1", ok(P2), 0.0)  # max_age 100000 > ceiling
    assert not cache.due("example.com", "1", 86_399)
    assert cache.due("example.com", "1", 86_400)
    assert PolicyCache().refetch_seconds == 86_400


def test_cache_max_age_zero_is_always_due() -> None:
    cache = PolicyCache()
    cache.store("example.com", "1", ok(Policy(PolicyMode.NONE, (), 0)), 5.0)
    assert cache.due("example.com", "1", 5.0)


def test_failed_fetch_keeps_the_cached_policy_until_it_expires() -> None:
    cache = PolicyCache()
    cache.store("example.com", "1", ok(P1), 0.0)
    cache.store("example.com", "2", FAILED, 100.0)  # new id, but the host is down
    entry = cache.get("example.com")
    assert entry == CachedPolicy(FAILED, "2", 100.0, P1, "1", 0.0)
    assert cache.due("example.com", "2", 101.0)  # the failure is retried on the next refresh
    assert cache.due("example.com", "1", 101.0)
    # with the clock: in force until its max_age, then no policy is in force
    assert cache.get("example.com", now=3599.0) == entry
    expired = cache.get("example.com", now=3600.0)
    assert expired == CachedPolicy(FAILED, "2", 100.0, None, "", 0.0)
    # a failure after expiry drops it from the entry too
    cache.store("example.com", "2", FAILED, 3700.0)
    assert cache.get("example.com") == CachedPolicy(FAILED, "2", 3700.0, None, "", 0.0)
    # a later success replaces everything
    cache.store("example.com", "2", ok(P2), 3800.0)
    assert cache.get("example.com") == CachedPolicy(ok(P2), "2", 3800.0, P2, "2", 3800.0)
    assert not cache.due("example.com", "2", 3801.0)


def test_failed_first_fetch_caches_no_policy() -> None:
    cache = PolicyCache()
    malformed = FetchResult(PolicyState.MALFORMED, None, "no mode field", 0.0)
    cache.store("example.com", "1", malformed, 0.0)
    assert cache.get("example.com") == CachedPolicy(malformed, "1", 0.0, None, "", 0.0)
    assert cache.get("example.com", now=1.0) == CachedPolicy(malformed, "1", 0.0, None, "", 0.0)
    assert cache.due("example.com", "1", 1.0)


def test_cache_retain_bounds_it() -> None:
    cache = PolicyCache()
    for number in range(5):
        cache.store(f"d{number}.example", "1", ok(P1), 0.0)
    assert len(cache) == 5
    cache.retain(["d1.example", "d3.example", "never-stored.example"])
    assert len(cache) == 2
    assert cache.get("d0.example") is None
    assert cache.get("d1.example") is not None
    assert cache.due("d0.example", "1", 1.0)
    assert not cache.due("d3.example", "1", 1.0)
    cache.retain([])
    assert len(cache) == 0
