"""The lab's SMTP peers (tests/lab/plan.py), all on one free high port, served from a background thread.

aiosmtpd serves the accepting peers, raw asyncio servers the misbehaving ones, Postfix's smtp-sink runs as
a subprocess. Every Python peer records what it sends and receives per connection, so tests can check
politeness (greeting read before EHLO, one command per reply, a QUIT) and count connections for the engine's
dedupe tests.
"""

from __future__ import annotations

import asyncio
import collections
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP

from tests.lab import plan

SMTP_SINK = "/usr/sbin/smtp-sink"
TLS_NAME = "mx1.healthy.lab.test"  # ACCEPT_1's certificate name
ACCEPTING = (
    plan.ACCEPT_1,
    plan.ACCEPT_2,
    plan.FAILOVER_PRIMARY,
    plan.FAILOVER_BACKUP,
    *plan.MANY,
    plan.IPV6_ACCEPT,
)
MAX_CONVERSATIONS = 200  # per peer, most recent kept
MAX_CONVERSATION_LINES = 200  # per connection
CONNECTION_LIFETIME = 60.0  # a raw peer never holds a connection longer than this
LINE_LIMIT = 4096
CLOCK_MARGIN = 0.05  # seconds

Behaviour = Callable[["_Conn"], Awaitable[None]]


class _Peer:
    """Counters and per-connection conversations of one address; written in the lab thread, read anywhere."""

    def __init__(self, address: str, lock: threading.Lock) -> None:
        self.address = address
        self.lock = lock
        self.connections = 0
        self.max_concurrent = 0
        self.open: set[asyncio.BaseTransport] = set()
        self.conversations: collections.deque[list[str]] = collections.deque(maxlen=MAX_CONVERSATIONS)
        self.server: asyncio.Server | None = None
        self.placeholder: socket.socket | None = None  # bound, not listening: connection refused

    def opened(self, transport: asyncio.BaseTransport) -> list[str]:
        with self.lock:
            self.connections += 1
            self.open.add(transport)
            self.max_concurrent = max(self.max_concurrent, len(self.open))
            conversation: list[str] = []
            self.conversations.append(conversation)
            return conversation

    def closed(self, transport: asyncio.BaseTransport) -> None:
        with self.lock:
            self.open.discard(transport)

    def record(self, conversation: list[str], line: str) -> None:
        with self.lock:
            if len(conversation) < MAX_CONVERSATION_LINES:
                conversation.append(line)


class _LabSMTP(AiosmtpdSMTP):
    """aiosmtpd's SMTP server, recording every line in and out for the politeness checks."""

    def __init__(self, peer: _Peer, **kwargs: Any) -> None:
        super().__init__(_NoHooks(), **kwargs)
        self._peer = peer
        self._conversation: list[str] | None = None
        self._first_transport: asyncio.BaseTransport | None = None
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._first_transport is None:  # called again with the TLS transport after STARTTLS
            self._first_transport = transport
            self._conversation = self._peer.opened(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._first_transport is not None:
            self._peer.closed(self._first_transport)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self._record("C: " + line.rstrip(b"\r").decode("utf-8", "replace"))
        self._pending = self._pending[-LINE_LIMIT:]
        super().data_received(data)

    async def push(self, status: str | bytes) -> None:
        self._record("S: " + (status if isinstance(status, str) else status.decode("utf-8", "replace")))
        await super().push(status)

    def _record(self, line: str) -> None:
        if self._conversation is not None:
            self._peer.record(self._conversation, line)


class _NoHooks:
    """aiosmtpd handler with no hooks: the default replies are what the lab wants."""


class _Conn:
    """One raw connection: send/receive whole lines, recorded."""

    def __init__(self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.peer = peer
        self.conversation = peer.opened(writer.transport)

    async def send(self, line: str) -> None:
        self.peer.record(self.conversation, "S: " + line)
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()

    async def recv(self) -> str | None:
        """The next client line, or None at end of stream (or an over-long line)."""
        try:
            raw = await self.reader.readline()
        except (ValueError, ConnectionError):
            return None
        if not raw:
            return None
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        self.peer.record(self.conversation, "C: " + line)
        return line

    async def listen(self, seconds: float) -> bool:
        """Record whatever the client sends for ``seconds`` (it should send nothing); False once it left."""
        try:
            async with asyncio.timeout(seconds):
                while await self.recv() is not None:
                    pass
                return False
        except TimeoutError:
            return True

    async def until_eof(self) -> None:
        while await self.recv() is not None:
            pass

    async def commands(self, ehlo: list[str], *, greeted: bool = True) -> None:
        """Answer EHLO/HELO/QUIT like a small MTA; ungreeted, only QUIT is accepted (RFC 5321 §3.1)."""
        while (line := await self.recv()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "QUIT":
                await self.send("221 2.0.0 bye")
                return
            if not greeted:
                await self.send("503 5.5.1 bad sequence of commands")
            elif verb == "EHLO":
                for reply in ehlo:
                    await self.send(reply)
            elif verb == "HELO":
                await self.send("250 lab.test")
            else:
                await self.send("502 5.5.2 command not implemented")


# --- raw behaviours (plan.py)


async def _multiline(conn: _Conn) -> None:
    await conn.send("220-multiline.lab.test first")
    # The client's clock starts a moment after ours (its loop notices the finished handshake later):
    # a small margin keeps the pause at least MULTILINE_PAUSE as the client measures it.
    if await conn.listen(plan.MULTILINE_PAUSE + CLOCK_MARGIN):
        await conn.send("220-second")
        await conn.send("220 last")
        await conn.commands(["250-multiline.lab.test", "250 8BITMIME"])


async def _greet_421(conn: _Conn) -> None:
    await conn.send("421 4.3.2 too busy")


async def _greet_554(conn: _Conn) -> None:
    await conn.send("554 5.3.2 no service")
    await conn.commands([], greeted=False)


async def _silent(conn: _Conn) -> None:
    await conn.until_eof()


async def _slow_greeting(conn: _Conn) -> None:
    if await conn.listen(plan.SLOW_GREETING_DELAY):
        await conn.send("220 slow.lab.test")
        await conn.commands(["250 slow.lab.test"])


async def _ehlo_reject(conn: _Conn) -> None:
    await conn.send("220 ehloreject.lab.test")
    await conn.commands(["502 5.5.1 no EHLO"])


async def _garbage(conn: _Conn) -> None:
    for line in ("HTTP/1.1 400 Bad Request", "Content-Type: text/html", "", "<html>not smtp</html>"):
        await conn.send(line)
    await conn.until_eof()


async def _dribble(conn: _Conn) -> None:
    """'220-' continuation lines, one byte every DRIBBLE_INTERVAL, until the client leaves."""
    eof = asyncio.ensure_future(conn.until_eof())
    try:
        while not eof.done():
            for byte in b"220-dribble\r\n":
                conn.writer.write(bytes([byte]))
                await asyncio.wait({eof}, timeout=plan.DRIBBLE_INTERVAL)
                if eof.done():
                    return
            conn.peer.record(conn.conversation, "S: 220-dribble")
    finally:
        eof.cancel()


RAW: dict[str, Behaviour] = {
    plan.MULTILINE: _multiline,
    plan.GREET_421: _greet_421,
    plan.GREET_554: _greet_554,
    plan.SILENT: _silent,
    plan.SLOW_GREETING: _slow_greeting,
    plan.EHLO_REJECT: _ehlo_reject,
    plan.GARBAGE: _garbage,
    plan.DRIBBLE: _dribble,
}


class SmtpLab:
    """Every SMTP peer of the plan on one port P, in one background event loop (plus smtp-sink on SINK:P)."""

    def __init__(self) -> None:
        self.port = 0
        self.ca = trustme.CA()
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(TLS_NAME).configure_cert(self._tls)
        self._lock = threading.Lock()
        self._peers = {a: _Peer(a, self._lock) for a in (*ACCEPTING, *RAW, plan.CLOSED, plan.SINK)}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-lab", daemon=True)
        self._sink: subprocess.Popen[bytes] | None = None
        self._sink_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    # --- lifecycle

    def start(self) -> None:
        """Bind every peer on one port free on all lab addresses; retry with another port on any clash."""
        if shutil.which(SMTP_SINK) is None:
            raise RuntimeError("postfix (smtp-sink) not installed: run the README test command")
        self._thread.start()
        errors: list[str] = []
        for _ in range(20):
            port = _free_port(plan.ACCEPT_1)
            try:
                self._call(self._bind_all(port))
                self.port = port
                self._start_sink()
                return
            except OSError as exc:
                errors.append(f"port {port}: {exc}")
                self._call(self._unbind_all())
                self._stop_sink()
        self.close()
        raise RuntimeError("no port free on every lab address: " + "; ".join(errors[-3:]))

    def close(self) -> None:
        self._stop_sink()
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()
        self._sink_log.close()

    def stop_peer(self, address: str) -> None:
        """Close the listener and every open connection: the address now refuses connections."""
        if address == plan.SINK:
            return self._stop_sink()
        self._call(self._stop(self._peers[address], reserve=True))

    def start_peer(self, address: str) -> None:
        if address == plan.SINK:
            return self._start_sink()
        self._call(self._serve(self._peers[address], self.port))

    # --- what peers saw

    def connections(self, address: str) -> int:
        """TCP connections accepted so far (not counted for smtp-sink)."""
        with self._lock:
            return self._peers[address].connections

    def max_concurrent(self, address: str) -> int:
        with self._lock:
            return self._peers[address].max_concurrent

    def reset_counts(self, address: str) -> None:
        """Start counting afresh (a test that needs concurrency on an address cleans up after itself)."""
        with self._lock:
            peer = self._peers[address]
            peer.connections, peer.max_concurrent = 0, len(peer.open)

    def open_connections(self, address: str) -> int:
        with self._lock:
            return len(self._peers[address].open)

    def conversations(self, address: str) -> list[tuple[str, ...]]:
        """Per connection, oldest first: 'S: ...' lines the peer sent and 'C: ...' lines it received."""
        with self._lock:
            return [tuple(c) for c in self._peers[address].conversations]

    def wait_idle(self, address: str, timeout: float = 5.0) -> None:
        """Wait until the peer has seen every connection to it close."""
        deadline = time.monotonic() + timeout
        while self.open_connections(address):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} still has {self.open_connections(address)} open connection(s)")
            time.sleep(0.01)

    # --- inside the lab thread

    def _call(self, coro: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout=30)

    async def _bind_all(self, port: int) -> None:
        for peer in self._peers.values():
            if peer.address == plan.CLOSED:
                peer.placeholder = _bound_socket(peer.address, port, reuse=False)
            elif peer.address == plan.SINK:
                _bound_socket(peer.address, port, reuse=False).close()  # free now; smtp-sink binds it next
            else:
                await self._serve(peer, port)

    async def _serve(self, peer: _Peer, port: int) -> None:
        if peer.placeholder is not None:
            peer.placeholder.close()
            peer.placeholder = None
        if peer.server is not None:
            return
        if peer.address in RAW:
            behaviour = RAW[peer.address]

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await _run_raw(peer, behaviour, reader, writer)

            peer.server = await asyncio.start_server(handle, peer.address, port, limit=LINE_LIMIT)
        else:
            peer.server = await self._loop.create_server(lambda: self._smtpd(peer), peer.address, port)

    def _smtpd(self, peer: _Peer) -> _LabSMTP:
        tls = self._tls if peer.address == plan.ACCEPT_1 else None
        name = TLS_NAME if tls else f"peer{peer.address.replace(':', '').replace('.', '-')}.lab.test"
        return _LabSMTP(
            peer, hostname=name, ident="lab", tls_context=tls, timeout=CONNECTION_LIFETIME, loop=self._loop
        )

    async def _stop(self, peer: _Peer, *, reserve: bool) -> None:
        if peer.server is not None:
            peer.server.close()
            peer.server = None
        with self._lock:
            transports = list(peer.open)
        for transport in transports:
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
        await asyncio.sleep(0)  # let connection_lost run
        if reserve and peer.placeholder is None:
            peer.placeholder = _bound_socket(peer.address, self.port, reuse=True)

    async def _unbind_all(self) -> None:
        for peer in self._peers.values():
            await self._stop(peer, reserve=False)
            if peer.placeholder is not None:
                peer.placeholder.close()
                peer.placeholder = None

    async def _shutdown(self) -> None:
        await self._unbind_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- smtp-sink

    def _start_sink(self) -> None:
        if self._sink is not None:
            return
        # As root, smtp-sink insists on dropping privileges after binding (-u); Debian's postfix user exists.
        user = ["-u", "postfix" if "postfix" in {p.pw_name for p in pwd.getpwall()} else "nobody"]
        user = user if os.geteuid() == 0 else []
        argv = [SMTP_SINK, *user, "-h", "sink.lab.test", f"{plan.SINK}:{self.port}", "64"]
        self._sink = subprocess.Popen(
            argv, stdout=self._sink_log, stderr=self._sink_log, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not listening(plan.SINK, self.port):
            if self._sink.poll() is not None or time.monotonic() > deadline:
                self._sink_log.seek(0)
                log = self._sink_log.read()[-500:].decode("utf-8", "replace")
                self._stop_sink()
                raise OSError(f"smtp-sink did not listen on {plan.SINK}:{self.port}: {log}")
            time.sleep(0.02)

    def _stop_sink(self) -> None:
        if self._sink is None:
            return
        self._sink.terminate()
        try:
            self._sink.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._sink.kill()
            self._sink.wait(timeout=5)
        self._sink = None


async def _run_raw(
    peer: _Peer, behaviour: Behaviour, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = _Conn(peer, reader, writer)
    try:
        async with asyncio.timeout(CONNECTION_LIFETIME):
            await behaviour(conn)
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.transport.abort()
        peer.closed(writer.transport)


def _free_port(address: str) -> int:
    with _bound_socket(address, 0, reuse=False) as sock:
        port: int = sock.getsockname()[1]
        return port


def _bound_socket(address: str, port: int, *, reuse: bool) -> socket.socket:
    """A socket bound to address:port but never listening: it holds the port, and connecting is refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def listening(address: str, port: int) -> bool:
    """Something accepts TCP connections at address:port (used to wait for smtp-sink)."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def smtp_lab() -> Iterator[SmtpLab]:
    """The running SMTP lab for the whole test session (a missing smtp-sink fails, never skips)."""
    lab = SmtpLab()
    try:
        lab.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield lab
    lab.close()
