"""Scripted SMTP peers for the sender-conformance lab: one listener per address on port 25.

Written from scratch rather than with aiosmtpd because the misbehaviours (421 and stay open, 554 then 503 to
everything but QUIT, EHLO refused but HELO taken, ...) are the point, and each must still be RFC 5321-correct
in what it does say. Every peer records its connections and the messages it accepted (with the client's
HELO name, which tells the two MTAs apart), so a run can corroborate the MTAs' own logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PORT = 25
LIFETIME = 60.0  # seconds a peer ever keeps one connection
LINE_LIMIT = 4096
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Behaviour:
    """What a peer answers: None for the greeting means say nothing at all."""

    greeting: str | None = "220 {host} ESMTP lab peer"
    close_after_greeting: bool = False
    refuse_all: str | None = None  # after a non-220 greeting: reply to everything but QUIT with this
    ehlo: str = "250"
    helo: str = "250"
    rcpt: str = "250 2.1.5 Ok"


BEHAVIOURS: dict[str, Behaviour] = {
    "accept": Behaviour(),
    "silent": Behaviour(greeting=None),
    "greet_421": Behaviour(
        greeting="421 4.3.2 {host} Service not available, try again later",
        refuse_all="421 4.3.2 {host} Service not available, try again later",
    ),
    "greet_421_close": Behaviour(
        greeting="421 4.3.2 {host} Service not available, closing transmission channel",
        close_after_greeting=True,
    ),
    "greet_554": Behaviour(
        greeting="554 5.3.2 {host} No SMTP service here", refuse_all="503 5.5.1 Bad sequence of commands"
    ),
    "ehlo_550_helo_550": Behaviour(ehlo="550 5.7.1 EHLO refused", helo="550 5.7.1 HELO refused"),
    "ehlo_550_helo_250": Behaviour(ehlo="550 5.7.1 EHLO refused"),
    "ehlo_451_helo_451": Behaviour(
        ehlo="451 4.3.0 EHLO temporarily refused", helo="451 4.3.0 HELO temporarily refused"
    ),
    "drop_after_greeting": Behaviour(close_after_greeting=True),
    "rcpt_451": Behaviour(rcpt="451 4.3.0 Recipient temporarily unavailable, try again later"),
    "rcpt_550": Behaviour(rcpt="550 5.1.1 Recipient unknown here"),
}
NO_LISTENER = ("refuse", "blackhole")  # handled by the namespace's addressing, not by a listener


@dataclass
class PeerRecord:
    """What one address saw: connections and accepted messages."""

    behaviour: str
    connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)


class _Session:
    """One SMTP conversation over a stream pair, driven by a Behaviour."""

    def __init__(
        self, behaviour: Behaviour, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.b, self.host, self.reader, self.writer = behaviour, host, reader, writer
        self.helo_name: str | None = None
        self.mail_from: str | None = None
        self.rcpts: list[str] = []

    async def send(self, *lines: str) -> None:
        """One reply: every line but the last with a hyphen after the code."""
        last = len(lines) - 1
        text = "".join(f"{line[:3]}{' ' if i == last else '-'}{line[4:]}\r\n" for i, line in enumerate(lines))
        self.writer.write(text.encode())
        await self.writer.drain()

    async def line(self) -> str | None:
        try:
            raw = await self.reader.readline()
        except (ValueError, ConnectionError):
            return None
        return raw.rstrip(b"\r\n").decode("utf-8", "replace") if raw else None

    async def run(self, record: PeerRecord) -> None:
        b = self.b
        if b.greeting is None:
            while await self.line() is not None:  # never answer; read until the client gives up
                pass
            return
        await self.send(b.greeting.format(host=self.host))
        if b.close_after_greeting:
            return
        if b.refuse_all is not None:
            while (line := await self.line()) is not None:
                if line.upper().startswith("QUIT"):
                    await self.send(f"221 2.0.0 {self.host} closing connection")
                    return
                await self.send(b.refuse_all.format(host=self.host))
            return
        while (line := await self.line()) is not None:
            verb, _, arg = line.partition(" ")
            if not await self.command(verb.upper(), arg.strip(), record):
                return

    async def command(self, verb: str, arg: str, record: PeerRecord) -> bool:
        """Answer one command; False once the session is over."""
        b = self.b
        if verb == "QUIT":
            await self.send(f"221 2.0.0 {self.host} closing connection")
            return False
        if verb in ("EHLO", "HELO"):
            code = b.ehlo if verb == "EHLO" else b.helo
            self.mail_from, self.rcpts = None, []
            if not code.startswith("250"):
                self.helo_name = None
                await self.send(code)
            elif verb == "EHLO":
                self.helo_name = arg
                await self.send(
                    f"250 {self.host} Hello {arg}",
                    "250 8BITMIME",
                    "250 ENHANCEDSTATUSCODES",
                    "250 SIZE 10485760",
                )
            else:
                self.helo_name = arg
                await self.send(f"250 {self.host} Hello {arg}")
        elif verb == "MAIL":
            if self.helo_name is None:
                await self.send("503 5.5.1 Send HELO or EHLO first")
            elif self.mail_from is not None:
                await self.send("503 5.5.1 Sender already given")
            else:
                self.mail_from = arg.removeprefix("FROM:").removeprefix("from:")
                await self.send("250 2.1.0 Ok")
        elif verb == "RCPT":
            if self.mail_from is None:
                await self.send("503 5.5.1 Need MAIL before RCPT")
            else:
                if b.rcpt.startswith("250"):
                    self.rcpts.append(arg.removeprefix("TO:").removeprefix("to:"))
                await self.send(b.rcpt)
        elif verb == "DATA":
            if not self.rcpts:
                await self.send("554 5.5.1 No valid recipients")
            else:
                await self.send("354 End data with <CR><LF>.<CR><LF>")
                size = await self.data()
                if size is None:
                    return False
                record.messages.append(
                    {
                        "helo": self.helo_name,
                        "mail_from": self.mail_from,
                        "rcpt": list(self.rcpts),
                        "size": size,
                    }
                )
                self.mail_from, self.rcpts = None, []
                await self.send(f"250 2.0.0 Ok: queued as LAB{len(record.messages)}")
        elif verb == "RSET":
            self.mail_from, self.rcpts = None, []
            await self.send("250 2.0.0 Ok")
        elif verb == "NOOP":
            await self.send("250 2.0.0 Ok")
        else:
            await self.send("500 5.5.2 Command not recognized")
        return True

    async def data(self) -> int | None:
        """Read the message up to the lone dot; its size, or None if the client went away."""
        size = 0
        while (line := await self.line()) is not None:
            if line == ".":
                return size
            size += len(line) + 2
        return None


class PeerLab:
    """Every scripted peer, served from one asyncio loop in a background thread."""

    def __init__(self, peers: Mapping[str, str]) -> None:
        unknown = {b for b in peers.values() if b not in BEHAVIOURS and b not in NO_LISTENER}
        if unknown:
            raise ValueError(f"unknown peer behaviours: {sorted(unknown)}")
        self.records = {address: PeerRecord(b) for address, b in peers.items()}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="conformance-peers", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._bind(), self._loop)
        future.result(timeout=START_TIMEOUT)

    async def _bind(self) -> None:
        for address, record in self.records.items():
            if record.behaviour in NO_LISTENER:
                continue
            server = await asyncio.start_server(
                lambda r, w, a=address: self._handle(a, r, w),
                address,
                PORT,
                limit=LINE_LIMIT,
                reuse_address=True,
            )
            self._servers.append(server)

    async def _handle(self, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = self.records[address]
        record.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = _Session(
            BEHAVIOURS[record.behaviour], f"peer-{address.replace('.', '-')}.lab", reader, writer
        )
        try:
            async with asyncio.timeout(LIFETIME):
                await session.run(record)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per address: behaviour, connections, messages (copied in the peers' own thread)."""

        async def copy() -> dict[str, dict[str, Any]]:
            return {
                a: {"behaviour": r.behaviour, "connections": r.connections, "messages": list(r.messages)}
                for a, r in self.records.items()
            }

        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(timeout=10)

    def __enter__(self) -> PeerLab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
