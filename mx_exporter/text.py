"""Small text helpers every stage and surface shares: peer text made safe, durations, counts, timestamps.

One rendering each, so `check`, the status page, the logs and the transcripts say a thing the same way.
Imports nothing from the pipeline.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

MAX_PEER_TEXT = 120
_UNPRINTABLE = re.compile(r"[^ -~]")
MISSING = "-"  # what a table cell shows for a value that is not there


def sanitize(text: str, limit: int = MAX_PEER_TEXT) -> str:
    """Peer text made safe for logs: printable ASCII only (others become '?'), at most ``limit`` chars.

    One regex pass (every transcript line goes through here: a per-character loop was 7 % of a session's CPU).
    """
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return _UNPRINTABLE.sub("?", text)


def duration(seconds: float) -> str:
    """Short human duration: '3 ms', '2.5 s'."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.3g} s"


def milliseconds(seconds: float | None) -> str:
    """A latency cell: '12.3 ms', or MISSING when there is none."""
    return MISSING if seconds is None else f"{seconds * 1000:.1f} ms"


def count(number: int, noun: str) -> str:
    """'1 tier', '2 tiers', '3 addresses'."""
    if number == 1:
        return f"{number} {noun}"
    return f"{number} {noun}{'es' if noun.endswith(('s', 'x')) else 's'}"


def utc_timestamp(seconds: float) -> str:
    """Unix seconds as RFC 3339 UTC to the second: '2026-12-03T06:12:45Z'."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reply_code(code: int) -> str:
    """An SMTP reply code cell: '220', or MISSING when there was none (0)."""
    return str(code) if code else MISSING
