"""One polite SMTP session against one IP address; returns an ``AddressResult``.

See docs/architecture.md, "Polite probing".

The session: TCP connect to the already-validated IP (never a name), read the final greeting line, EHLO
with a real FQDN, QUIT and a short wait for 221, close. One command at a time, never pipelined. Per-phase
timeouts sit under one overall deadline, so a peer that dribbles bytes forever still ends. A misbehaving peer
never raises: every way a session ends is one ``SmtpOutcome``; only cancellation propagates (after cleanup).

aiosmtplib is used at the protocol level (``SMTPProtocol``: reply framing, multi-line replies, bounded
buffers, the command-injection guard, and later ``start_tls``) rather than through ``SMTP.connect()``,
because ``connect()`` closes the socket on any non-220 greeting (so no QUIT after a 554, which RFC 5321 §3.1
asks for) and cannot carry our own line limit or timed transcript.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass, field

from aiosmtplib.errors import (
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.esmtp import parse_esmtp_extensions
from aiosmtplib.response import SMTPResponse
from cryptography.x509.verification import Store

from mx_exporter import tls as tls_stage
from mx_exporter.model import AddressResult, Family, ResolvedAddress, SmtpOutcome, TlsFacts
from mx_exporter.smtp_wire import (
    ProbeProtocol,
    Transcript,
    classify_ehlo,
    classify_greeting,
    duration,
    reply_summary,
    sanitize,
)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FQDN_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+")


@dataclass(frozen=True)
class SmtpPolicy:
    """How one session is run: the EHLO name, the port and every time and size bound."""

    ehlo_name: str
    port: int = 25
    connect_timeout: float = 5.0
    greeting_timeout: float = 15.0
    ehlo_timeout: float = 10.0
    session_timeout: float = 30.0  # overall deadline for the whole session, on top of the phases
    quit_timeout: float = 2.0  # short wait for 221; QUIT is courtesy, never changes the outcome
    max_line_length: int = 2048  # bound on one reply line; longer -> protocol_error
    starttls: bool = True  # try STARTTLS when advertised, for TLS and certificate facts (never the outcome)
    tls_ca_file: str | None = None  # PEM bundle of trusted roots; None: the system store

    def __post_init__(self) -> None:
        if not _FQDN_RE.fullmatch(self.ehlo_name):
            raise ValueError(f"ehlo_name must be a fully qualified host name, got {self.ehlo_name!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        for name in (
            "connect_timeout",
            "greeting_timeout",
            "ehlo_timeout",
            "session_timeout",
            "quit_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_line_length < 512:  # RFC 5321 §4.5.3.1.5: a reply line may be 512 octets
            raise ValueError(f"max_line_length must be >= 512, got {self.max_line_length}")
        if self.tls_ca_file is not None and not self.tls_ca_file.strip():
            raise ValueError("tls_ca_file must be a file path or None, got an empty string")


@dataclass
class _Session:
    """State of one session; each phase method returns False when the outcome is decided."""

    ip: str
    family: Family
    policy: SmtpPolicy
    loop: asyncio.AbstractEventLoop
    transcript: Transcript
    phase: str = "connect"
    outcome: SmtpOutcome | None = None
    detail: str = ""
    greeting_code: int = 0
    ehlo_code: int = 0
    helo_code: int = 0
    no_route_here: bool = False
    connected_at: float = 0.0  # loop time the TCP handshake finished: greeting_seconds counts from here
    connect_seconds: float | None = None
    greeting_seconds: float | None = None
    starttls_advertised: bool = False
    tls: TlsFacts | None = None
    in_sync: bool = False  # the last reply was read whole and well-formed: a further command is polite
    sock: socket.socket | None = None
    transport: asyncio.Transport | None = field(default=None, repr=False)
    protocol: ProbeProtocol | None = field(default=None, repr=False)

    def decide(self, outcome: SmtpOutcome, detail: str) -> bool:
        self.outcome, self.detail = outcome, detail
        return False

    async def run(self) -> None:
        if await self._connect() and await self._greeting() and await self._ehlo():
            # Seam: the TLS stage slots in here, after a 250 EHLO and before QUIT (STARTTLS, handshake facts,
            # then a fresh EHLO as RFC 3207 §4.2 asks). It must never change the outcome decided above.
            self.phase = "tls"
            self.tls = await self._starttls_facts()
        await self._quit()

    async def _connect(self) -> bool:
        sock_family = socket.AF_INET6 if self.family is Family.IPV6 else socket.AF_INET
        self.sock = socket.socket(sock_family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.transcript.add(f"connect {self.ip} port {self.policy.port}")
        started = self.loop.time()
        try:
            async with asyncio.timeout(self.policy.connect_timeout):
                await self.loop.sock_connect(self.sock, (self.ip, self.policy.port))
        except TimeoutError:
            return self.decide(
                SmtpOutcome.CONNECT_TIMEOUT,
                f"no TCP connection within {duration(self.policy.connect_timeout)}",
            )
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
            self.no_route_here = exc.errno == errno.ENETUNREACH
            return self.decide(SmtpOutcome.CONNECTION_REFUSED, f"connect failed: {reason}")
        self.connected_at = self.loop.time()
        self.connect_seconds = self.connected_at - started
        self.transcript.add("connected")
        self.transport, self.protocol = await self.loop.create_connection(
            lambda: ProbeProtocol(self.loop, self.transcript, self.policy.max_line_length), sock=self.sock
        )
        return True

    async def _greeting(self) -> bool:
        assert self.protocol is not None
        self.phase = "greeting"
        reply = await self._reply(
            "greeting",
            None,
            self.policy.greeting_timeout,
            SmtpOutcome.GREETING_TIMEOUT,
            SmtpOutcome.PROTOCOL_ERROR,
        )
        if reply is None:
            return False
        self.greeting_seconds = self.loop.time() - self.connected_at
        self.greeting_code = reply.code
        outcome = classify_greeting(reply.code)
        if outcome is None:
            return True
        self.in_sync = outcome is not SmtpOutcome.PROTOCOL_ERROR
        kind = "greeting" if self.in_sync else "not an SMTP greeting:"
        return self.decide(outcome, f"{kind} {self._summary(reply)} after {duration(self.greeting_seconds)}")

    async def _ehlo(self) -> bool:
        self.phase = "ehlo"
        command = b"EHLO " + self.policy.ehlo_name.encode("ascii")
        reply = await self._reply(
            "EHLO reply", command, self.policy.ehlo_timeout, SmtpOutcome.EHLO_FAILED, SmtpOutcome.EHLO_FAILED
        )
        if reply is None:
            return False
        self.ehlo_code = reply.code
        outcome = classify_ehlo(reply.code)
        if outcome is not None:
            self.in_sync = outcome is not SmtpOutcome.PROTOCOL_ERROR
            said = f"greeting {self.greeting_code}, EHLO answered {self._summary(reply)}"
            if outcome is SmtpOutcome.EHLO_FAILED and reply.code != 421:
                said += await self._helo()
            return self.decide(outcome, said)
        extensions, _ = parse_esmtp_extensions(reply.message)
        self.starttls_advertised = "starttls" in extensions
        tls_note = "STARTTLS advertised" if self.starttls_advertised else "no STARTTLS"
        assert self.greeting_seconds is not None
        self.decide(
            SmtpOutcome.ACCEPTED,
            f"greeting {self.greeting_code} after {duration(self.greeting_seconds)}, EHLO 250, {tls_note}",
        )
        return True

    async def _helo(self) -> str:
        """HELO after a refused EHLO, as sending MTAs fall back (RFC 5321 §4.1.1.1; Postfix smtp_helo, Exim
        smtp_reap_ehlo): its code tells the sender profiles whether this address would take mail. It never
        changes the outcome (the address did not accept EHLO); a failed HELO is only noted in the detail."""
        self.phase = "helo"
        before = self.outcome, self.detail
        command = b"HELO " + self.policy.ehlo_name.encode("ascii")
        reply = await self._reply(
            "HELO reply", command, self.policy.ehlo_timeout, SmtpOutcome.EHLO_FAILED, SmtpOutcome.EHLO_FAILED
        )
        if reply is None:
            why = self.detail
            self.outcome, self.detail = before
            return f"; HELO fallback failed: {why}"
        self.helo_code = reply.code
        self.in_sync = 200 <= reply.code <= 599
        return f"; HELO answered {self._summary(reply)}"

    async def _reply(
        self, what: str, command: bytes | None, limit: float, on_timeout: SmtpOutcome, on_close: SmtpOutcome
    ) -> SMTPResponse | None:
        """Send ``command`` (if any), read one whole reply; on failure decide the outcome, return None."""
        assert self.protocol is not None
        before = self.protocol.bytes_received
        self.in_sync = False
        try:
            if command is None:
                reply = await self.protocol.read_response(timeout=limit)
            else:
                self.transcript.add("C: " + command.decode("ascii"))
                reply = await self.protocol.execute_command(*command.split(b" ", 1), timeout=limit)
        except (SMTPReadTimeoutError, SMTPServerDisconnected, SMTPResponseException) as exc:
            got = self.protocol.bytes_received - before
            self.protocol.note_partial()
            if self.protocol.overlong:
                self.decide(
                    SmtpOutcome.PROTOCOL_ERROR, f"{what} line longer than {self.policy.max_line_length} bytes"
                )
            elif isinstance(exc, SMTPReadTimeoutError):
                self.decide(on_timeout, f"no complete {what} within {duration(limit)} ({got} bytes received)")
            elif isinstance(exc, SMTPServerDisconnected):
                closed = (on_close, f"connection closed before the {what}")
                self.decide(
                    *closed if got == 0 else (SmtpOutcome.PROTOCOL_ERROR, f"connection closed mid-{what}")
                )
            else:
                text = str(exc.args[-1]).removeprefix("Malformed SMTP response line:").strip()
                self.decide(SmtpOutcome.PROTOCOL_ERROR, f"malformed {what}: {sanitize(text)}")
            return None
        self.in_sync = True
        return reply

    async def _starttls_facts(self) -> TlsFacts | None:
        """STARTTLS when advertised (and wanted): handshake accepting any certificate, facts, EHLO again.

        Never changes the outcome and never raises for peer behaviour: trouble becomes ``TlsFacts``. The
        facts are kept in ``self.tls`` as they grow, so a session deadline hit here still reports what it got.
        """
        if not (self.starttls_advertised and self.policy.starttls):
            return None
        assert self.protocol is not None
        self.tls = TlsFacts(handshake_ok=False, detail="STARTTLS not finished before the session deadline")
        failure = await self._starttls_upgrade()
        if failure is not None:
            self.transcript.add(failure)
            self.tls = TlsFacts(handshake_ok=False, detail=failure)
            return self.tls
        ssl_object = self.protocol.transport.get_extra_info("ssl_object") if self.protocol.transport else None
        version = ssl_object.version() if ssl_object is not None else None
        chain = tls_stage.peer_chain(ssl_object) if ssl_object is not None else []
        try:
            store: Store | str = await asyncio.to_thread(tls_stage.load_trust_store, self.policy.tls_ca_file)
        except ValueError as exc:
            store = f"trust store unavailable: {exc}"
        # The chain itself is kept for DANE (dane.py matches TLSA records per exchange name, after the session).
        facts = tls_stage.certificate_facts(version, chain, store, time.time())
        self.tls = dataclasses.replace(facts, chain=tuple(chain))
        self.transcript.add(
            f"TLS handshake done: {version}, {len(chain)} certificate(s), {self.tls.detail or 'no detail'}"
        )
        await self._ehlo_after_tls()
        return self.tls

    async def _starttls_upgrade(self) -> str | None:
        """Send STARTTLS, read 220, do the handshake (ehlo_timeout each); None when done, else why not."""
        assert self.protocol is not None
        limit = self.policy.ehlo_timeout
        self.transcript.add("C: STARTTLS")
        self.in_sync = False
        try:
            await self.protocol.start_tls(tls_stage.handshake_context(), timeout=limit)
        except SMTPResponseException as exc:
            if 200 <= exc.code <= 599:
                self.in_sync = exc.code != 421  # a whole reply, not 220: QUIT is polite unless it is closing
                return f"STARTTLS refused: {reply_summary(exc.code, exc.message)}"
            text = str(exc.message).removeprefix("Malformed SMTP response line:").strip()
            return f"malformed STARTTLS reply: {sanitize(text)}"
        except SMTPReadTimeoutError:
            self.protocol.note_partial()
            return f"no complete STARTTLS reply within {duration(limit)}"
        except SMTPTimeoutError:
            return f"TLS handshake not done within {duration(limit)}"
        except SMTPServerDisconnected:
            return "connection closed during STARTTLS"
        except ssl.SSLError as exc:
            return f"TLS handshake failed: {sanitize(exc.reason or str(exc))}"
        except Exception as exc:  # anything else a peer provokes is a fact too, never a crash
            return f"TLS handshake failed: {type(exc).__name__}"
        self.protocol._partial.clear()  # plaintext after the 220 was dropped (RFC 3207 §4.2): so is any partial
        return None

    async def _ehlo_after_tls(self) -> None:
        """EHLO again inside TLS (RFC 3207 §4.2: the server forgets what it knew); decides nothing."""
        assert self.protocol is not None
        self.transcript.add(f"C: EHLO {self.policy.ehlo_name}")
        self.in_sync = False
        try:
            reply = await self.protocol.execute_command(
                b"EHLO", self.policy.ehlo_name.encode("ascii"), timeout=self.policy.ehlo_timeout
            )
        except (SMTPReadTimeoutError, SMTPServerDisconnected, SMTPResponseException) as exc:
            self.protocol.note_partial()
            self.transcript.add(f"EHLO after TLS not answered: {type(exc).__name__}")
            return
        self.in_sync = 200 <= reply.code <= 599

    async def _quit(self) -> None:
        """Courtesy QUIT with a short wait for 221, only after a well-formed reply (never before a greeting,
        never after garbage or a timeout) and not after a 421 (the peer is closing, RFC 5321 §3.8)."""
        if (
            self.protocol is None
            or not self.protocol.is_connected
            or not self.in_sync
            or 421 in (self.greeting_code, self.ehlo_code, self.helo_code)
        ):
            return
        self.phase = "quit"
        self.transcript.add("C: QUIT")
        try:
            await self.protocol.execute_command(b"QUIT", timeout=self.policy.quit_timeout)
        except (SMTPServerDisconnected, SMTPResponseException, SMTPReadTimeoutError) as exc:
            self.transcript.add(f"QUIT not answered: {type(exc).__name__}")

    @staticmethod
    def _summary(reply: SMTPResponse) -> str:
        return reply_summary(reply.code, reply.message)

    def on_deadline(self) -> None:
        """The overall deadline fired: the phase it interrupted decides the outcome (QUIT never does)."""
        deadline = duration(self.policy.session_timeout)
        self.transcript.add(f"session deadline {deadline} hit during {self.phase}")
        if self.phase == "connect":
            self.decide(SmtpOutcome.CONNECT_TIMEOUT, f"session deadline {deadline} hit while connecting")
        elif self.phase == "greeting":
            self.decide(
                SmtpOutcome.GREETING_TIMEOUT,
                f"session deadline {deadline} hit before the final greeting line",
            )
        elif self.phase == "ehlo":
            self.decide(SmtpOutcome.EHLO_FAILED, f"session deadline {deadline} hit before the EHLO reply")
        elif self.phase == "helo":
            self.decide(
                SmtpOutcome.EHLO_FAILED, f"EHLO {self.ehlo_code}; deadline {deadline} hit before HELO reply"
            )

    def on_error(self, exc: Exception) -> None:
        """Anything unexpected is a protocol error, unless the outcome is already decided (TLS facts, QUIT)."""
        self.transcript.add(f"unexpected {type(exc).__name__}: {exc}")
        if self.outcome is None or self.phase not in ("tls", "quit"):
            self.decide(SmtpOutcome.PROTOCOL_ERROR, f"unexpected {type(exc).__name__} during {self.phase}")

    def close(self) -> None:
        """Close the socket on every path, now: abort drops unsent bytes and never waits on the peer."""
        if self.protocol is not None and isinstance(self.protocol.transport, asyncio.WriteTransport):
            self.protocol.transport.abort()  # after STARTTLS this is the TLS transport
        if self.transport is not None:
            self.transport.abort()
        if self.sock is not None:
            self.sock.close()  # idempotent; the transport's own close finds it already closed

    def result(self, address: ResolvedAddress) -> AddressResult:
        assert self.outcome is not None
        return AddressResult(
            address=address.address,
            family=address.family,
            outcome=self.outcome,
            greeting_code=self.greeting_code,
            ehlo_code=self.ehlo_code,
            helo_code=self.helo_code,
            connect_seconds=self.connect_seconds,
            greeting_seconds=self.greeting_seconds,
            session_seconds=self.transcript.elapsed(),
            starttls_advertised=self.starttls_advertised,
            tls=self.tls,
            detail=self.detail,
            transcript=tuple(self.transcript.lines),
            no_route_here=self.no_route_here,
        )


def _checked_ip(address: ResolvedAddress) -> str:
    """The address as a literal IP of the stated family; anything else is a caller bug (never resolved)."""
    try:
        ip = ipaddress.ip_address(address.address)
    except ValueError:
        raise ValueError(f"not an IP address: {address.address!r}") from None
    if (ip.version == 6) != (address.family is Family.IPV6):
        raise ValueError(f"address {address.address} is not {address.family.value}")
    return str(ip)


async def probe_address(address: ResolvedAddress, policy: SmtpPolicy) -> AddressResult:
    """Run one polite session against one IP. Never raises for peer behaviour; cancellation propagates."""
    if not address.allowed:
        return AddressResult(
            address=address.address,
            family=address.family,
            outcome=SmtpOutcome.SKIPPED,
            detail="not probed: address is not global unicast and not in allow_networks",
        )
    loop = asyncio.get_running_loop()
    session = _Session(_checked_ip(address), address.family, policy, loop, Transcript(loop))
    try:
        async with asyncio.timeout(policy.session_timeout):
            await session.run()
    except TimeoutError:
        session.on_deadline()
    except Exception as exc:  # a misbehaving peer must never crash the exporter
        session.on_error(exc)
    finally:
        session.close()
    return session.result(address)
