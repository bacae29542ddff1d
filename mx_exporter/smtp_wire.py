"""The SMTP wire under one session: how a session is bounded (``SmtpPolicy``), reply framing with a hard line
limit, a bounded timed transcript, and the pure rules that turn reply codes into outcomes. Kept apart from the
session's phases (``smtp.py``) and the STARTTLS step (``starttls.py``), which both drive ``ProbeProtocol``."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from mx_exporter.model import SmtpOutcome
from mx_exporter.text import MAX_PEER_TEXT, sanitize

MAX_TRANSCRIPT_LINES = 50
MAX_TRANSCRIPT_LINE = 200


@dataclass(frozen=True)
class SmtpPolicy:
    """How one session is run: the EHLO name, the port and every time and size bound.

    Plain data: the settings model validated every value (a fully qualified EHLO name, ports, timeouts > 0).
    """

    ehlo_name: str
    port: int = 25
    connect_timeout: float = 5.0
    greeting_timeout: float = 15.0
    ehlo_timeout: float = 10.0  # each of EHLO, HELO, STARTTLS and the TLS handshake
    session_timeout: float = 30.0  # overall deadline for the whole session, on top of the phases
    quit_timeout: float = 2.0  # short wait for 221; QUIT is courtesy, never changes the outcome
    # Bound on one reply line (RFC 5321 §4.5.3.1.5 allows 512); a longer one is a protocol_error.
    max_line_length: int = 2048
    starttls: bool = True  # try STARTTLS when advertised, for TLS and certificate facts (never the outcome)
    tls_ca_file: str | None = None  # PEM bundle of trusted roots; None: the system store


# --- pure helpers


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
        # The code of the last whole reply; None while one is awaited, or after a read that failed.
        self.last_code: int | None = None

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

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:  # noqa: ASYNC109 (aiosmtplib's signature)
        """aiosmtplib's read (every command's reply comes through here), remembering the last whole reply's code."""
        self.last_code = None
        reply = await super().read_response(timeout=timeout)
        self.last_code = reply.code
        return reply

    async def upgrade(self, context: ssl.SSLContext, limit: float) -> None:
        """STARTTLS, its 220 and the handshake (aiosmtplib's ``start_tls``); plaintext the peer sent after the
        220 is dropped (RFC 3207 §4.2), and so is any unfinished line of it."""
        await self.start_tls(context, timeout=limit)
        self._partial.clear()

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
