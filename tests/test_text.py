"""The shared text helpers (mx_exporter/text.py): one rendering for every surface."""

from __future__ import annotations

import pytest

from mx_exporter.text import count, duration, milliseconds, sanitize, utc_timestamp


@pytest.mark.parametrize(
    ("text", "limit", "clean"),
    [("ok", 10, "ok"), ("abcdef", 5, "ab..."), ("a\r\nb", 10, "a??b"), ("\x00", 5, "?"), ("abc", 3, "abc")],
)
def test_sanitize(text: str, limit: int, clean: str) -> None:
    assert sanitize(text, limit) == clean


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.003, "3 ms"), (0.5, "500 ms"), (2.5, "2.5 s"), (4.0, "4 s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0.0, "0.0 ms"), (0.01234, "12.3 ms"), (2.5, "2500.0 ms")]
)
def test_milliseconds(seconds: float | None, text: str) -> None:
    assert milliseconds(seconds) == text


@pytest.mark.parametrize(
    ("number", "noun", "text"),
    [(1, "tier", "1 tier"), (0, "tier", "0 tiers"), (2, "MX record", "2 MX records"),
     (1, "address", "1 address"), (3, "address", "3 addresses"), (2, "box", "2 boxes")],
)  # fmt: skip
def test_count(number: int, noun: str, text: str) -> None:
    assert count(number, noun) == text


def test_utc_timestamp() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00Z"
    assert utc_timestamp(1796278365.9) == "2026-12-03T06:12:45Z"
