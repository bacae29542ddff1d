"""One polite SMTP session against one IP address; returns an ``AddressResult``.

See docs/architecture.md, "Polite probing".

The session: TCP connect to the already-validated IP (never a name), read the final greeting line, EHLO
with a real FQDN, QUIT and a short wait for 221, close. One command at a time, never pipelined. Per-phase
timeouts sit under one overall deadline, so a peer that dribbles bytes forever still ends. A misbehaving peer
never raises: every way a session ends is one ``SmtpOutcome``; only cancellation propagates (after cleanup).

Each phase returns the ``Decision`` that ends the session, or None to go on; the STARTTLS step is
``starttls.starttls``, and the wire under all of them (``ProbeProtocol``, ``Transcript``, ``SmtpPolicy``) is
``smtp_wire``.

aiosmtplib is used at the protocol level (``SMTPProtocol``: reply framing, multi-line replies, bounded
buffers, the command-injection guard, ``start_tls``) rather than through ``SMTP.connect()``,
because ``connect()`` closes the socket on any non-220 greeting (so no QUIT after a 554, which RFC 5321 §3.1
asks for) and cannot carry our own line limit or timed transcript.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from dataclasses import dataclass, field

from aiosmtplib.errors import SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.esmtp import parse_esmtp_extensions
from aiosmtplib.response import SMTPResponse

from mx_exporter.model import AddressResult, Family, ResolvedAddress, SmtpOutcome, TlsFacts
from mx_exporter.smtp_wire import (
    ProbeProtocol,
    SmtpPolicy,
    Transcript,
    classify_ehlo,
    classify_greeting,
    reply_summary,
)
from mx_exporter.starttls import starttls
from mx_exporter.text import duration, sanitize

Decision = tuple[SmtpOutcome, str]  # how the session ends: the outcome and one human line


@dataclass
class _Session:
    """State of one session; each phase returns the ``Decision`` that ends it, or None to go on."""

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

    def decide(self, decision: Decision) -> None:
        self.outcome, self.detail = decision

    async def run(self) -> None:
        decision = await self._connect() or await self._greeting() or await self._ehlo()
        if decision is not None:
            self.decide(decision)
        else:  # EHLO 250: the address takes mail; STARTTLS facts and QUIT never change that
            self.decide((SmtpOutcome.ACCEPTED, self._accepted_detail()))
            self.phase = "tls"
            await self._starttls()
        await self._quit()

    async def _connect(self) -> Decision | None:
        sock_family = socket.AF_INET6 if self.family is Family.IPV6 else socket.AF_INET
        self.sock = socket.socket(sock_family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.transcript.add(f"connect {self.ip} port {self.policy.port}")
        started = self.loop.time()
        try:
            async with asyncio.timeout(self.policy.connect_timeout):
                await self.loop.sock_connect(self.sock, (self.ip, self.policy.port))
        except TimeoutError:
            limit = duration(self.policy.connect_timeout)
            return SmtpOutcome.CONNECT_TIMEOUT, f"no TCP connection within {limit}"
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
            self.no_route_here = exc.errno == errno.ENETUNREACH
            return SmtpOutcome.CONNECTION_REFUSED, f"connect failed: {reason}"
        self.connected_at = self.loop.time()
        self.connect_seconds = self.connected_at - started
        self.transcript.add("connected")
        self.transport, self.protocol = await self.loop.create_connection(
            lambda: ProbeProtocol(self.loop, self.transcript, self.policy.max_line_length), sock=self.sock
        )
        return None

    async def _greeting(self) -> Decision | None:
        self.phase = "greeting"
        reply = await self._reply(
            "greeting",
            None,
            self.policy.greeting_timeout,
            SmtpOutcome.GREETING_TIMEOUT,
            SmtpOutcome.PROTOCOL_ERROR,
        )
        if not isinstance(reply, SMTPResponse):
            return reply
        self.greeting_seconds = self.loop.time() - self.connected_at
        self.greeting_code = reply.code
        outcome = classify_greeting(reply.code)
        if outcome is None:
            return None
        self.in_sync = outcome is not SmtpOutcome.PROTOCOL_ERROR
        kind = "greeting" if self.in_sync else "not an SMTP greeting:"
        return outcome, f"{kind} {_summary(reply)} after {duration(self.greeting_seconds)}"

    async def _ehlo(self) -> Decision | None:
        self.phase = "ehlo"
        command = b"EHLO " + self.policy.ehlo_name.encode("ascii")
        reply = await self._reply(
            "EHLO reply", command, self.policy.ehlo_timeout, SmtpOutcome.EHLO_FAILED, SmtpOutcome.EHLO_FAILED
        )
        if not isinstance(reply, SMTPResponse):
            return reply
        self.ehlo_code = reply.code
        outcome = classify_ehlo(reply.code)
        if outcome is None:
            extensions, _ = parse_esmtp_extensions(reply.message)
            self.starttls_advertised = "starttls" in extensions
            return None
        self.in_sync = outcome is not SmtpOutcome.PROTOCOL_ERROR
        said = f"greeting {self.greeting_code}, EHLO answered {_summary(reply)}"
        if outcome is SmtpOutcome.EHLO_FAILED and reply.code != 421:
            said += await self._helo()
        return outcome, said

    def _accepted_detail(self) -> str:
        assert self.greeting_seconds is not None
        tls_note = "STARTTLS advertised" if self.starttls_advertised else "no STARTTLS"
        return f"greeting {self.greeting_code} after {duration(self.greeting_seconds)}, EHLO 250, {tls_note}"

    async def _helo(self) -> str:
        """HELO after a refused EHLO, as sending MTAs fall back (RFC 5321 §4.1.1.1; Postfix smtp_helo, Exim
        smtp_reap_ehlo): its code tells the sender profiles whether this address would take mail. It never
        changes the outcome (the address did not accept EHLO); a failed HELO is only noted in the detail."""
        self.phase = "helo"
        command = b"HELO " + self.policy.ehlo_name.encode("ascii")
        reply = await self._reply(
            "HELO reply", command, self.policy.ehlo_timeout, SmtpOutcome.EHLO_FAILED, SmtpOutcome.EHLO_FAILED
        )
        if not isinstance(reply, SMTPResponse):
            return f"; HELO fallback failed: {reply[1]}"
        self.helo_code = reply.code
        self.in_sync = 200 <= reply.code <= 599
        return f"; HELO answered {_summary(reply)}"

    async def _reply(
        self, what: str, command: bytes | None, limit: float, on_timeout: SmtpOutcome, on_close: SmtpOutcome
    ) -> SMTPResponse | Decision:
        """Send ``command`` (if any) and read one whole reply, or say how the session ends instead."""
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
                return (
                    SmtpOutcome.PROTOCOL_ERROR,
                    f"{what} line longer than {self.policy.max_line_length} bytes",
                )
            if isinstance(exc, SMTPReadTimeoutError):
                return on_timeout, f"no complete {what} within {duration(limit)} ({got} bytes received)"
            if isinstance(exc, SMTPServerDisconnected):
                if got == 0:
                    return on_close, f"connection closed before the {what}"
                return SmtpOutcome.PROTOCOL_ERROR, f"connection closed mid-{what}"
            text = str(exc.args[-1]).removeprefix("Malformed SMTP response line:").strip()
            return SmtpOutcome.PROTOCOL_ERROR, f"malformed {what}: {sanitize(text)}"
        self.in_sync = True
        return reply

    async def _starttls(self) -> None:
        """STARTTLS when advertised (and wanted), then EHLO again. The facts are in ``self.tls`` before the step
        starts, so a session deadline hit during it still reports that STARTTLS did not finish."""
        if not (self.starttls_advertised and self.policy.starttls):
            return
        assert self.protocol is not None
        self.tls = TlsFacts(handshake_ok=False, detail="STARTTLS not finished before the session deadline")
        self.in_sync = False
        self.tls = await starttls(self.protocol, self.policy, self.transcript)
        if self.tls.handshake_ok:
            await self._ehlo_after_tls()
            return
        # Refused with a whole reply other than 220 (and not closing, 421): the stream is still in step.
        code = self.protocol.last_code
        self.in_sync = code is not None and code not in (220, 421) and 200 <= code <= 599

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

    def on_deadline(self) -> None:
        """The overall deadline fired: the phase it interrupted decides the outcome (STARTTLS and QUIT never do)."""
        deadline = duration(self.policy.session_timeout)
        self.transcript.add(f"session deadline {deadline} hit during {self.phase}")
        decision = {
            "connect": (SmtpOutcome.CONNECT_TIMEOUT, f"session deadline {deadline} hit while connecting"),
            "greeting": (
                SmtpOutcome.GREETING_TIMEOUT,
                f"session deadline {deadline} hit before the final greeting line",
            ),
            "ehlo": (SmtpOutcome.EHLO_FAILED, f"session deadline {deadline} hit before the EHLO reply"),
            "helo": (
                SmtpOutcome.EHLO_FAILED,
                f"EHLO {self.ehlo_code}; deadline {deadline} hit before HELO reply",
            ),
        }.get(self.phase)
        if decision is not None:
            self.decide(decision)

    def on_error(self, exc: Exception) -> None:
        """Anything unexpected is a protocol error, unless the outcome is already decided (TLS facts, QUIT)."""
        self.transcript.add(f"unexpected {type(exc).__name__}: {exc}")
        if self.outcome is None or self.phase not in ("tls", "quit"):
            self.decide((SmtpOutcome.PROTOCOL_ERROR, f"unexpected {type(exc).__name__} during {self.phase}"))

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


def _summary(reply: SMTPResponse) -> str:
    return reply_summary(reply.code, reply.message)


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
