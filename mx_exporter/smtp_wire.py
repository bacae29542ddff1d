"""The SMTP wire under one session: reply framing with a hard line limit, a bounded timed transcript, and the
pure rules that turn reply codes into outcomes. Kept apart from the session's phases in ``smtp.py``."""

from __future__ import annotations

import asyncio
import re

from aiosmtplib.protocol import SMTPProtocol

from mx_exporter.model import SmtpOutcome

MAX_TRANSCRIPT_LINES = 50
MAX_TRANSCRIPT_LINE = 200
MAX_PEER_TEXT = 120
_UNPRINTABLE = re.compile(r"[^ -~]")


# --- pure helpers


def sanitize(text: str, limit: int = MAX_PEER_TEXT) -> str:
    """Peer text made safe for logs: printable ASCII only (others become '?'), at most ``limit`` chars.

    One regex pass (every transcript line goes through here: a per-character loop was 7 % of a session's CPU).
    """
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return _UNPRINTABLE.sub("?", text)


def reply_summary(code: int, message: str, limit: int = MAX_PEER_TEXT) -> str:
    """'421 too busy': the code and the first line of a reply, sanitized and bounded."""
    first = message.split("\n", 1)[0].strip()
    return sanitize(f"{code} {first}".rstrip(), limit)


def classify_greeting(code: int) -> SmtpOutcome | None:
    """Outcome a final greeting code decides; None means the session goes on to EHLO."""
    if 200 <= code <= 299:
        return None
    if 400 <= code <= 499:
        return SmtpOutcome.GREETING_4XX
    if 500 <= code <= 599:
        return SmtpOutcome.GREETING_5XX
    return SmtpOutcome.PROTOCOL_ERROR  # 1xx, 3xx or not an SMTP code at all: not a greeting


def classify_ehlo(code: int) -> SmtpOutcome | None:
    """Outcome an EHLO reply code decides; None means EHLO was accepted (250)."""
    if code == 250:
        return None
    if 200 <= code <= 599:
        return SmtpOutcome.EHLO_FAILED
    return SmtpOutcome.PROTOCOL_ERROR


def duration(seconds: float) -> str:
    """Short human duration: '3 ms', '2.5 s'."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.3g} s"


class Transcript:
    """Timed 'C:'/'S:' lines, each bounded, at most MAX_TRANSCRIPT_LINES (then one truncation mark)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.start = loop.time()
        self.lines: list[str] = []

    def elapsed(self) -> float:
        return self._loop.time() - self.start

    def add(self, text: str) -> None:
        if len(self.lines) < MAX_TRANSCRIPT_LINES - 1:
            self.lines.append(sanitize(f"+{self.elapsed():.3f}s {text}", MAX_TRANSCRIPT_LINE))
        elif len(self.lines) == MAX_TRANSCRIPT_LINES - 1:
            self.lines.append(f"+{self.elapsed():.3f}s ... transcript truncated")


class ProbeProtocol(SMTPProtocol):
    """aiosmtplib's protocol, plus: every received line timed into the transcript, and a hard line limit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transcript: Transcript, max_line_length: int) -> None:
        super().__init__(loop=loop)
        self._transcript = transcript
        self._max_line = max_line_length
        self._partial = bytearray()
        self.bytes_received = 0
        self.overlong = False

    def data_received(self, data: bytes) -> None:
        if self.overlong:
            return
        self.bytes_received += len(data)
        *lines, rest = (bytes(self._partial) + data).split(b"\n")
        for line in lines:
            if len(line) + 1 > self._max_line:
                return self._too_long()
            self._transcript.add("S: " + line.rstrip(b"\r").decode("ascii", "replace"))
        if len(rest) > self._max_line:
            return self._too_long()
        self._partial = bytearray(rest)
        super().data_received(data)

    def note_partial(self) -> None:
        """Put an unfinished reply line (a dribbler's, say) into the transcript."""
        if self._partial:
            self._transcript.add(f"S: {self._partial.decode('ascii', 'replace')} (incomplete line)")

    def _too_long(self) -> None:
        self.overlong = True
        self._transcript.add(f"reply line longer than {self._max_line} bytes: closing")
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transcript.add("connection closed")
        super().connection_lost(exc)
