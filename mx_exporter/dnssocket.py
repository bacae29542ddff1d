"""The sockets of the stub DNS client (``dnsquery``): a pool of UDP sockets per nameserver, one TCP connection
per retry, and the pacing of every query put on the wire.

- **Sockets.** Per nameserver a pool of at most ``POOL_SIZE`` connected UDP sockets, each on a random ephemeral
  port, read straight from the event loop (``add_reader``). A socket takes new questions for at most
  ``RETIRE_AFTER_SECONDS`` or ``RETIRE_AFTER_QUERIES``; then it is retired and closed as soon as its last pending
  question is done, so ports keep changing. TCP only after a truncated UDP answer: one connection per retry.
  An ICMP error (port unreachable ...) fails every question pending on that socket at once: they all went to
  that peer. ``aclose()``/``close()`` closes everything; a client used from another event loop starts fresh
  sockets there; an abandoned client's sockets close by themselves after ``RETIRE_AFTER_SECONDS``.
- **Matching.** A random 16-bit id (from ``os.urandom``, unique among the socket's pending questions); an answer
  must come from the nameserver's address and port (the socket is connected, and the source is checked again),
  carry that id, QR set, opcode QUERY and the same question (name case-insensitively, type, class; an empty
  question only for FORMERR/SERVFAIL/NOTIMP/REFUSED, as dnspython allows). Anything else is dropped and the
  question keeps waiting, as dnspython's ``ignore_unexpected``/``ignore_errors`` do.
- **Bounds.** Answers of at most ``MAX_MESSAGE`` octets; at most ``MAX_IN_FLIGHT`` questions on the wire per
  client; optional pacing of every query put on the wire (a token bucket; a query that would wait past the
  lifetime is a timeout without being sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

from mx_exporter.dnswire import encode_query

POOL_SIZE = 4  # UDP sockets per nameserver taking new questions
RETIRE_AFTER_QUERIES = 512  # a socket takes no more new questions after this many ...
RETIRE_AFTER_SECONDS = 5.0  # ... or after this long
MAX_IN_FLIGHT = 4096  # questions on the wire at once, per client
MAX_MESSAGE = 65535  # largest answer read (the DNS maximum; UDP answers beyond it are cut by the kernel)
_READS_PER_WAKEUP = 64  # datagrams read per readiness callback, so one busy socket cannot starve the loop
# Answers with these rcodes may come without a question section (as dnspython's is_response allows).
_QUESTIONLESS_RCODES = frozenset({1, 2, 4, 5})


class _Entropy:
    """Random 16-bit values from the OS CSPRNG (os.urandom), read 4 KiB at a time: one syscall per 2048 ids."""

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def u16(self) -> int:
        if self._next + 2 > len(self._pool):
            self._pool, self._next = os.urandom(4096), 0
        value = (self._pool[self._next] << 8) | self._pool[self._next + 1]
        self._next += 2
        return value


_ENTROPY = _Entropy()


def _matches(data: bytes, name: bytes, typeclass: bytes) -> bool:
    """Is this datagram (id already matched) an answer to the question: QR, opcode QUERY, same question."""
    if data[2] & 0xF8 != 0x80:
        return False
    qdcount = (data[4] << 8) | data[5]
    if qdcount == 0:
        return data[3] & 0x0F in _QUESTIONLESS_RCODES
    end = 12 + len(name)
    return qdcount == 1 and data[12:end].lower() == name and data[end : end + 4] == typeclass


class _Waiter:
    __slots__ = ("future", "name", "typeclass")

    def __init__(self, future: asyncio.Future[bytes | None], question: bytes) -> None:
        self.future = future
        self.name = question[:-4].lower()
        self.typeclass = question[-4:]


class _UdpSocket:
    """One connected UDP socket to one nameserver, its pending questions keyed by id."""

    def __init__(self, state: LoopState, pool: list[_UdpSocket], peer: tuple[str, int]) -> None:
        self.loop = state.loop
        self.sock = socket.socket(socket.AF_INET6 if ":" in peer[0] else socket.AF_INET, socket.SOCK_DGRAM)
        self.pending: dict[int, _Waiter] = {}
        self.sent = 0
        self.retired = False
        self.closed = False
        self._pool = pool
        self._open = state.sockets
        try:
            self.sock.setblocking(False)
            self.sock.connect(peer)  # a random ephemeral port; the kernel delivers only the peer's datagrams
            self.peer = self.sock.getpeername()[:2]
            self.loop.add_reader(self.sock.fileno(), self._readable)
        except BaseException:
            self.sock.close()
            raise
        self._timer = self.loop.call_later(RETIRE_AFTER_SECONDS, self.retire)
        pool.append(self)
        self._open.add(self)

    def send(self, qid: int, waiter: _Waiter, wire: bytes) -> None:
        """Register the waiter under qid and send; OSError when the datagram cannot be sent."""
        self.pending[qid] = waiter
        self.sent += 1
        if self.sent >= RETIRE_AFTER_QUERIES:
            self.retire()
        try:
            self.sock.send(wire)
        except BlockingIOError:
            self.forget(qid, waiter)
            raise
        except OSError as exc:
            # A pending ICMP error (on loopback it even arrives within an earlier send) belongs to the socket:
            # every question on it went to this peer, so they all fail now, not at their timeouts.
            self.forget(qid, waiter)
            self._fail(exc)
            raise
        except BaseException:
            self.forget(qid, waiter)
            raise

    def forget(self, qid: int, waiter: _Waiter) -> None:
        if self.pending.get(qid) is waiter:
            del self.pending[qid]
        if self.retired and not self.pending:
            self.close()

    def _readable(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, source = self.sock.recvfrom(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error from this peer: every question pending on it failed
                self._fail(exc)
                break
            if len(data) < 12 or source[0] != self.peer[0] or source[1] != self.peer[1]:
                continue
            qid = (data[0] << 8) | data[1]
            waiter = self.pending.get(qid)
            if waiter is None or not _matches(data, waiter.name, waiter.typeclass):
                continue  # late, spoofed or foreign: dropped, the question keeps waiting
            del self.pending[qid]
            if not waiter.future.done():
                waiter.future.set_result(data)
        if self.retired and not self.pending:
            self.close()

    def _fail(self, exc: OSError) -> None:
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            if not waiter.future.done():
                with contextlib.suppress(RuntimeError):  # the future's loop is already closed
                    waiter.future.set_exception(exc)

    def retire(self) -> None:
        """Take no new questions; close once the pending ones are done."""
        self._leave_pool()
        if not self.pending:
            self.close()

    def _leave_pool(self) -> None:
        if not self.retired:
            self.retired = True
            with contextlib.suppress(ValueError):
                self._pool.remove(self)

    def close(self) -> None:
        if self.closed:
            return
        self._leave_pool()
        self.closed = True
        self._open.discard(self)
        self._timer.cancel()
        if not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self._fail(ConnectionAbortedError(errno.ECONNABORTED, "the DNS client was closed"))


class LoopState:
    """Everything bound to one event loop: the sockets per server, the in-flight bound."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pools: dict[tuple[str, int], list[_UdpSocket]] = {}
        self.sockets: set[_UdpSocket] = set()  # every open one, retired or not
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    def socket_for(self, server: tuple[str, int]) -> _UdpSocket:
        pool = self.pools.get(server)
        if pool is None:
            pool = self.pools[server] = []
        if len(pool) < POOL_SIZE:
            return _UdpSocket(self, pool, server)
        return pool[_ENTROPY.u16() % POOL_SIZE]  # POOL_SIZE divides 65536: uniform

    def close(self) -> None:
        for sock in list(self.sockets):
            sock.close()
        self.pools.clear()


def close_states(states: list[LoopState]) -> None:
    for state in states:
        state.close()
    states.clear()


class Pacer:
    """A token bucket (as GCRA): at most ``rate`` sends a second, a burst of 10 ms worth (at least one)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.tau = (max(1.0, rate / 100) - 1) * self.interval
        self.tat = float("-inf")

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Seconds to wait for a send slot (reserved), or None when that is longer than max_wait."""
        send_at = max(now, self.tat - self.tau)
        if send_at - now > max_wait:
            return None
        self.tat = max(self.tat, send_at) + self.interval
        return send_at - now


TIMED_OUT = object()  # what ask_udp and ask_tcp return when no answer came in time


async def ask_udp(
    state: LoopState, server: tuple[str, int], question: bytes, wait: float, cd: bool
) -> bytes | Exception | object:
    """One attempt over UDP: the matching answer, the OSError that ended it, or TIMED_OUT; never raises OSError."""
    try:
        sock = state.socket_for(server)
    except OSError as exc:
        return exc
    future: asyncio.Future[bytes | None] = state.loop.create_future()
    waiter = _Waiter(future, question)
    qid = _ENTROPY.u16()
    while qid in sock.pending:
        qid = _ENTROPY.u16()
    try:
        sock.send(qid, waiter, encode_query(qid, question, cd))
    except OSError as exc:
        return exc
    timer = state.loop.call_later(wait, _expire, future)
    try:
        data = await future
    except OSError as exc:
        return exc
    finally:
        timer.cancel()
        sock.forget(qid, waiter)
    return TIMED_OUT if data is None else data


async def ask_tcp(
    server: tuple[str, int], question: bytes, wait: float, cd: bool
) -> bytes | Exception | object:
    """One attempt over a new TCP connection (after a truncated UDP answer): the answer, an OSError, Unexpected
    when it answers another question, or TIMED_OUT."""
    qid = _ENTROPY.u16()
    wire = encode_query(qid, question, cd)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(server[0], server[1], limit=MAX_MESSAGE + 2)
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            data = await reader.readexactly(size)
    except TimeoutError:
        return TIMED_OUT
    except (OSError, EOFError) as exc:
        return exc if isinstance(exc, OSError) else ConnectionResetError(f"TCP connection closed: {exc}")
    finally:
        if writer is not None:
            writer.close()
    if len(data) < 12 or (data[0] << 8 | data[1]) != qid or not _matches(data, *_split(question)):
        return Unexpected("a TCP answer to another question")
    return data


class Unexpected(Exception):
    """An answer that is not for our question (dnspython's BadResponse: the server stays in the mix)."""


def _expire(future: asyncio.Future[bytes | None]) -> None:
    if not future.done():
        future.set_result(None)


def _split(question: bytes) -> tuple[bytes, bytes]:
    return question[:-4].lower(), question[-4:]


__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_MESSAGE",
    "POOL_SIZE",
    "RETIRE_AFTER_QUERIES",
    "RETIRE_AFTER_SECONDS",
    "TIMED_OUT",
    "LoopState",
    "Pacer",
    "Unexpected",
    "ask_tcp",
    "ask_udp",
    "close_states",
]
