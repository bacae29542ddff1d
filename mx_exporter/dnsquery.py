"""A stub DNS client for the resolver: asks one question, classifies the answer as dnspython's resolver would.

Why not ``dns.asyncresolver.Resolver.resolve``: it spends most of a refresh's CPU building and parsing messages
with the general-purpose codec and opening a datagram socket per question (``bench/dns_cost.py`` measures it
against this client and the other candidates). This client keeps dnspython for names and for reading
``/etc/resolv.conf``, and does the wire work itself, for the types the exporter asks (MX, A, AAAA; TXT and TLSA
for the transport-security checks):

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
- **Retries, as dnspython's ``_Resolution``.** Servers in order (shuffled with ``options rotate``); each attempt
  waits at most ``min(2 s, lifetime)``; a round of timeouts is followed by a backoff (0.1 s, doubling, at most
  2 s) and another round, all within the lifetime. A server that answers SERVFAIL, REFUSED, FORMERR, NOTIMP or
  any other rcode, sends a malformed answer or fails with an OS error is dropped for this question; when none is
  left the result is ``servfail``. A truncated UDP answer is asked again over TCP of the same server.
- **Bounds.** EDNS payload 1232; answers of at most ``MAX_MESSAGE`` octets, parsed with bounds checks (names at
  most 255 octets, compression pointers strictly backwards, no trailing bytes); at most ``MAX_IN_FLIGHT``
  questions on the wire per client; at most ``MAX_CHAIN`` CNAMEs followed; optional pacing of every query put on
  the wire (a token bucket; a query that would wait past the lifetime is a timeout without being sent).
- **DNSSEC, as a stub.** Every query sets AD (RFC 6840 §5.7 asks a validating resolver to say whether the answer
  validated, without DO); ``Reply.secure`` is the answer's AD bit. The client validates nothing itself: trusting
  AD is the operator's choice (``resolver.dnssec``), as Postfix and Exim trust their local validating resolver.
  ``query(..., checking_disabled=True)`` sets CD, so a SERVFAIL that then answers is told apart as bogus.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import random
import socket
import struct
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import dns.name
import dns.nameserver
import dns.resolver

Result = Literal["answer", "nxdomain", "nodata", "servfail", "timeout", "error"]

PAYLOAD = 1232  # EDNS UDP payload (DNS flag day 2020)
MAX_ATTEMPT_TIMEOUT = 2.0  # seconds one attempt waits for its answer (as dnspython's Resolver.timeout)
POOL_SIZE = 4  # UDP sockets per nameserver taking new questions
RETIRE_AFTER_QUERIES = 512  # a socket takes no more new questions after this many ...
RETIRE_AFTER_SECONDS = 5.0  # ... or after this long
MAX_IN_FLIGHT = 4096  # questions on the wire at once, per client
MAX_MESSAGE = 65535  # largest answer read (the DNS maximum; UDP answers beyond it are cut by the kernel)
MAX_CHAIN = 16  # as dnspython: the 16th CNAME in a chain is an error
_READS_PER_WAKEUP = 64  # datagrams read per readiness callback, so one busy socket cannot starve the loop

TYPES = {"A": 1, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}
_RAW_RDATA = frozenset({16, 52})  # TXT (its strings joined) and TLSA (as sent): kept as bytes for the caller
_FLAGS_RD_AD = 0x0120  # recursion desired, authentic data (RFC 6840 §5.7)
_FLAG_CD = 0x0010  # checking disabled: the resolver answers even when validation fails
_FLAG_AD = 0x0020
_CNAME, _SOA, _OPT = 5, 6, 41
_NAME_RDATA = frozenset({2, 5, 12, 39})  # NS, CNAME, PTR, DNAME: rdata is one name
_RCODES = {
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    16: "BADVERS",
}
# Answers with these rcodes may come without a question section (as dnspython's is_response allows).
_QUESTIONLESS_RCODES = frozenset({1, 2, 4, 5})
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_SOA_TAIL = struct.Struct("!IIIII")
# The OPT record of every query: root owner, the payload, extended rcode/version/flags 0, no options.
_OPT_RR = b"\x00" + _RR.pack(_OPT, PAYLOAD, 0, 0)
_MAX_TTL = 2**31 - 1
_CSPRNG = random.SystemRandom()  # server order (options rotate)


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


@dataclass(frozen=True, slots=True)
class Mx:
    preference: int
    exchange: dns.name.Name


@dataclass(frozen=True, slots=True)
class Reply:
    """How one question ended. Immutable: a cache may hand one reply to many askers."""

    result: Result
    addresses: tuple[str, ...] = ()  # A/AAAA answers, in answer order, duplicates removed
    mx: tuple[Mx, ...] = ()  # MX answers, in answer order, duplicates removed
    records: tuple[bytes, ...] = ()  # TXT (strings of one record joined) and TLSA (rdata as sent) answers
    secure: bool = False  # the resolver set AD: it validated the answer (or the denial) with DNSSEC
    ttl: int | None = None  # answers: the RRset's TTL
    cache_ttl: int | None = None  # how long this may be reused: the chain's lowest TTL; None = no TTL known
    canonical: dns.name.Name | None = None  # where a CNAME chain from the question led, when there was one
    detail: str = ""  # failures: what each server said
    tcp_retry: bool = False  # truncated over UDP and asked again over TCP


class MalformedResponse(ValueError):
    """An answer that matches the question but cannot be parsed (dnspython's FormError)."""


def system_nameservers() -> tuple[list[str | dns.nameserver.Nameserver], bool]:
    """The nameservers in /etc/resolv.conf (as dnspython lists them) and its ``options rotate``."""
    resolver = dns.resolver.Resolver()  # reads the file; sends nothing
    return list(resolver.nameservers), resolver.rotate


# --- The wire format: one query out, one answer in.


def encode_question(qname: dns.name.Name, rdtype: int) -> bytes:
    wire = qname.to_wire()
    assert wire is not None  # to_wire() without a file returns the bytes
    return wire + struct.pack("!HH", rdtype, 1)


def encode_query(qid: int, question: bytes, checking_disabled: bool = False) -> bytes:
    flags = _FLAGS_RD_AD | (_FLAG_CD if checking_disabled else 0)
    return _HEADER.pack(qid, flags, 1, 0, 0, 1) + question + _OPT_RR  # one question, one OPT


def _name(wire: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    """The labels (root excluded) of the name at offset, and the offset after it; MalformedResponse if bad."""
    labels: list[bytes] = []
    size = len(wire)
    after = -1
    limit = offset  # a pointer must point before the fragment that holds it: no loops
    octets = 1
    while True:
        if offset >= size:
            raise MalformedResponse("a name runs past the end")
        count = wire[offset]
        if count == 0:
            return tuple(labels), offset + 1 if after < 0 else after
        if count < 64:
            stop = offset + 1 + count
            octets += count + 1
            if stop > size or octets > 255:
                raise MalformedResponse("a name runs past the end or beyond 255 octets")
            labels.append(wire[offset + 1 : stop])
            offset = stop
        elif count >= 0xC0 and offset + 1 < size:
            pointer = ((count & 0x3F) << 8) | wire[offset + 1]
            if pointer >= limit:
                raise MalformedResponse("a compression pointer does not point backwards")
            if after < 0:
                after = offset + 2
            limit = offset = pointer
        else:
            raise MalformedResponse("unknown label type")


def _lower(labels: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in labels)


@dataclass(slots=True)
class _Record:
    owner: tuple[bytes, ...]  # lower case
    rdtype: int
    ttl: int
    data: object  # str (A/AAAA), (preference, labels) (MX), labels (CNAME...), (ttl, minimum) (SOA), None


@dataclass(slots=True)
class _Message:
    rcode: int
    truncated: bool
    answer: list[_Record]
    authority: list[_Record]
    authentic: bool = False  # AD


def parse_message(wire: bytes) -> _Message:
    """Header, question and every record, bounds-checked; records of class IN kept from answer and authority."""
    size = len(wire)
    if size < 12:
        raise MalformedResponse("shorter than a DNS header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    offset = 12
    for _ in range(qdcount):
        offset = _name(wire, offset)[1] + 4
        if offset > size:
            raise MalformedResponse("the question runs past the end")
    answer: list[_Record] = []
    authority: list[_Record] = []
    ext_rcode = 0
    seen_opt = False
    for section, count in ((answer, ancount), (authority, nscount), (None, arcount)):
        for _ in range(count):
            owner, offset = _name(wire, offset)
            if offset + 10 > size:
                raise MalformedResponse("a record runs past the end")
            rdtype, rdclass, ttl, rdlength = _RR.unpack_from(wire, offset)
            offset += 10
            end = offset + rdlength
            if end > size:
                raise MalformedResponse("record data runs past the end")
            if rdtype == _OPT:
                if section is not None or owner or seen_opt:
                    raise MalformedResponse("an OPT record outside the additional section, or two")
                seen_opt = True
                ext_rcode = ttl >> 24
            elif rdclass == 1:
                data = _rdata(wire, offset, end, rdtype, section is not None)
                if section is not None:
                    section.append(_Record(_lower(owner), rdtype, 0 if ttl > _MAX_TTL else ttl, data))
            offset = end
    if offset != size:
        raise MalformedResponse("trailing bytes after the last record")
    rcode = (ext_rcode << 4) | (flags & 0x0F)
    return _Message(rcode, bool(flags & 0x0200), answer, authority, bool(flags & _FLAG_AD))


def _rdata(wire: bytes, start: int, end: int, rdtype: int, keep: bool) -> object:
    """Check the record data of the types that matter here and decode it when kept; others are skipped."""
    length = end - start
    if rdtype == 1 or rdtype == 28:
        if length != (4 if rdtype == 1 else 16):
            raise MalformedResponse(f"an {'A' if rdtype == 1 else 'AAAA'} record of {length} octets")
        if not keep:
            return None
        return socket.inet_ntop(socket.AF_INET if rdtype == 1 else socket.AF_INET6, wire[start:end])
    if rdtype == 15:
        if length < 3:
            raise MalformedResponse("an MX record too short")
        labels, after = _name(wire, start + 2)
        if after != end:
            raise MalformedResponse("an MX record with bytes after its name")
        return (wire[start] << 8) | wire[start + 1], labels
    if rdtype in _NAME_RDATA:
        labels, after = _name(wire, start)
        if after != end:
            raise MalformedResponse("a name record with bytes after its name")
        return labels
    if rdtype in _RAW_RDATA:
        return _raw(wire, start, end, rdtype) if keep else None
    if rdtype == _SOA:
        after = _name(wire, _name(wire, start)[1])[1]
        if after + 20 != end:
            raise MalformedResponse("an SOA record of the wrong length")
        return _SOA_TAIL.unpack_from(wire, after)[4]  # minimum
    return None


def _raw(wire: bytes, start: int, end: int, rdtype: int) -> bytes:
    """TLSA rdata as sent (usage, selector, matching type, data); a TXT record's strings joined (RFC 7208 §3.3
    and RFC 8461 §3.1 read one record as its strings concatenated)."""
    if rdtype == 52:
        if end - start < 4:
            raise MalformedResponse("a TLSA record too short")
        return wire[start:end]
    parts: list[bytes] = []
    offset = start
    while offset < end:
        stop = offset + 1 + wire[offset]
        if stop > end:
            raise MalformedResponse("a TXT string runs past its record")
        parts.append(wire[offset + 1 : stop])
        offset = stop
    return b"".join(parts)


def _rrset(records: list[_Record], owner: tuple[bytes, ...], rdtype: int) -> list[_Record]:
    return [r for r in records if r.rdtype == rdtype and r.owner == owner]


class _BadAnswer(Exception):
    """The answer is well-formed but unusable (CNAME chain too long, an answer under NXDOMAIN)."""


def classify(message: _Message, qname: dns.name.Name, rdtype: int) -> Reply:
    """NOERROR/NXDOMAIN as dnspython's Answer and resolve_chaining see them; _BadAnswer when they would raise."""
    name = _lower(qname.labels[:-1])
    shown: tuple[bytes, ...] | None = None  # the chain's end as sent (case kept), for the canonical name
    min_ttl = _MAX_TTL
    chain = 0
    found: list[_Record] = []
    while True:
        found = _rrset(message.answer, name, rdtype)
        if found:
            break
        cnames = _rrset(message.answer, name, _CNAME)
        if not cnames:
            break
        min_ttl = min(min_ttl, *(r.ttl for r in cnames))
        target = cnames[0].data
        assert isinstance(target, tuple)
        shown, name = target, _lower(target)
        chain += 1
        if chain >= MAX_CHAIN:
            raise _BadAnswer(f"CNAME chain longer than {MAX_CHAIN - 1}")
    canonical = None if shown is None else dns.name.Name((*shown, b""))
    if message.rcode == 3 and found:
        raise _BadAnswer("an answer under NXDOMAIN")
    if not found:
        for cut in range(len(name) + 1):  # the SOA of the closest enclosing zone bounds a negative answer
            soas = _rrset(message.authority, name[cut:], _SOA)
            if soas:
                minimum = soas[0].data
                assert isinstance(minimum, int)
                min_ttl = min(min_ttl, soas[0].ttl, minimum)
                break
        result: Result = "nxdomain" if message.rcode == 3 else "nodata"
        return Reply(result, cache_ttl=None if min_ttl == _MAX_TTL else min_ttl, canonical=canonical)
    ttl = min(r.ttl for r in found)
    min_ttl = min(min_ttl, ttl)
    if rdtype == 15:
        unique: dict[tuple[int, tuple[bytes, ...]], Mx] = {}
        for record in found:
            preference, labels = cast(tuple[int, tuple[bytes, ...]], record.data)
            key = (preference, _lower(labels))
            if key not in unique:
                unique[key] = Mx(preference, dns.name.Name((*labels, b"")))
        return Reply("answer", mx=tuple(unique.values()), ttl=ttl, cache_ttl=min_ttl, canonical=canonical)
    if rdtype in _RAW_RDATA:
        records = tuple(dict.fromkeys(cast(bytes, r.data) for r in found))
        return Reply("answer", records=records, ttl=ttl, cache_ttl=min_ttl, canonical=canonical)
    addresses = tuple(dict.fromkeys(str(r.data) for r in found))
    return Reply("answer", addresses=addresses, ttl=ttl, cache_ttl=min_ttl, canonical=canonical)


# --- Transport.


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

    def __init__(self, state: _LoopState, pool: list[_UdpSocket], peer: tuple[str, int]) -> None:
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


class _LoopState:
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


def _close_states(states: list[_LoopState]) -> None:
    for state in states:
        state.close()
    states.clear()


class _Pacer:
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


_TIMED_OUT = object()


class DnsClient:
    """The resolver ``make_resolver`` returns: asks the configured nameservers; close with ``aclose()``."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        lifetime: float,
        attempt_timeout: float = MAX_ATTEMPT_TIMEOUT,
        max_queries_per_second: float | None = None,
        rotate: bool = False,
        nameservers: Sequence[str | dns.nameserver.Nameserver] = (),
    ) -> None:
        if not servers:
            raise ValueError("no nameservers to ask")
        self.servers = tuple(servers)
        self.lifetime = lifetime
        self.timeout = min(attempt_timeout, lifetime)
        self.rotate = rotate
        self.payload = PAYLOAD
        self.cache = None  # never caches on its own: one refresh cycle's answers live in resolve.NameCache
        # As dnspython's Resolver.nameservers would list them (Do53Nameserver, or the text of resolv.conf).
        self.nameservers = list(nameservers) or [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        self._pacer = None if max_queries_per_second is None else _Pacer(max_queries_per_second)
        self._states: list[_LoopState] = []
        self._finalizer = weakref.finalize(self, _close_states, self._states)

    # -- lifecycle

    def close(self) -> None:
        """Close every socket now; questions still pending end as servfail. Using the client again reopens."""
        _close_states(self._states)

    async def aclose(self) -> None:
        """As close(), for ``await`` in shutdown code."""
        self.close()

    async def __aenter__(self) -> DnsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        states = self._states
        if states and states[0].loop is loop:
            return states[0]
        _close_states(states)  # another loop's sockets cannot be read here
        states.append(_LoopState(loop))
        return states[0]

    # -- one question

    async def query(
        self,
        qname: dns.name.Name,
        rdtype: str,
        lifetime: float | None = None,
        checking_disabled: bool = False,
    ) -> Reply:
        """Ask for the (absolute) name's records of one of TYPES; every outcome is a Reply, none raises.

        checking_disabled sets CD: a validating resolver then answers what validation would reject (bogus)."""
        state = self._state()
        loop = state.loop
        lifetime = self.lifetime if lifetime is None else lifetime
        deadline = loop.time() + lifetime
        rdcode = TYPES[rdtype]
        question = encode_question(qname, rdcode)
        servers = list(self.servers)
        if self.rotate:
            _CSPRNG.shuffle(servers)
        current = list(servers)
        errors: list[str] = []  # what servers said, or why they were dropped
        silent = 0  # attempts that got no answer in time
        backoff = 0.1
        tcp_retry = False
        use_tcp = False
        server = current[0]
        while True:
            if not use_tcp:
                if not current:
                    if not servers:
                        return Reply("servfail", detail=_summary(errors, silent), tcp_retry=tcp_retry)
                    current = list(servers)
                    if loop.time() + backoff >= deadline:
                        break
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                server = current.pop(0)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._pacer is not None:
                wait = self._pacer.reserve(loop.time(), remaining)
                if wait is None:
                    detail = f"the rate limit left no send slot within {lifetime:g} s"
                    return Reply("timeout", detail=detail, tcp_retry=tcp_retry)
                if wait > 0:
                    await asyncio.sleep(wait)
                remaining = deadline - loop.time()
            timeout = min(self.timeout, remaining)
            label = _label(server)
            async with state.in_flight:
                if use_tcp:
                    got = await self._ask_tcp(server, question, timeout, checking_disabled)
                else:
                    got = await self._ask_udp(state, server, question, timeout, checking_disabled)
            was_tcp, use_tcp = use_tcp, False
            if got is _TIMED_OUT:
                silent += 1
                continue
            if isinstance(got, Exception):
                errors.append(f"{label}: {_short(got)}")
                if not isinstance(got, _Unexpected):
                    servers.remove(server)  # dnspython drops a server for OS and format errors
                continue
            assert isinstance(got, bytes)
            try:
                message = parse_message(got)
            except MalformedResponse as exc:
                errors.append(f"{label}: malformed answer ({exc})")
                servers.remove(server)
                continue
            if message.truncated and not was_tcp:
                use_tcp = tcp_retry = True
                continue
            if message.rcode in (0, 3):
                try:
                    reply = classify(message, qname, rdcode)
                except _BadAnswer as exc:
                    errors.append(f"{label}: {exc}")
                    servers.remove(server)
                    continue
                if tcp_retry or message.authentic:
                    reply = dataclasses.replace(reply, tcp_retry=tcp_retry, secure=message.authentic)
                return reply
            rcode = _RCODES.get(message.rcode, f"rcode {message.rcode}")
            if message.rcode == 6:  # YXDOMAIN ends the question (dnspython raises it)
                return Reply("error", detail=f"{label} answered {rcode}", tcp_retry=tcp_retry)
            errors.append(f"{label} answered {rcode}")
            servers.remove(server)
        return Reply("timeout", detail=_summary(errors, silent), tcp_retry=tcp_retry)

    async def _ask_udp(
        self, state: _LoopState, server: tuple[str, int], question: bytes, wait: float, cd: bool
    ) -> bytes | Exception | object:
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
        return _TIMED_OUT if data is None else data

    async def _ask_tcp(
        self, server: tuple[str, int], question: bytes, wait: float, cd: bool
    ) -> bytes | Exception | object:
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
            return _TIMED_OUT
        except (OSError, EOFError) as exc:
            return exc if isinstance(exc, OSError) else ConnectionResetError(f"TCP connection closed: {exc}")
        finally:
            if writer is not None:
                writer.close()
        if len(data) < 12 or (data[0] << 8 | data[1]) != qid or not _matches(data, *_split(question)):
            return _Unexpected("a TCP answer to another question")
        return data


class _Unexpected(Exception):
    """An answer that is not for our question (dnspython's BadResponse: the server stays in the mix)."""


def _expire(future: asyncio.Future[bytes | None]) -> None:
    if not future.done():
        future.set_result(None)


def _summary(errors: list[str], silent: int) -> str:
    """What the servers did: "127.0.0.1:53 answered REFUSED; 2 attempts got no answer in time"."""
    lost = [f"{silent} attempt{'s' if silent != 1 else ''} got no answer in time"] if silent else []
    return "; ".join(errors + lost)


def _split(question: bytes) -> tuple[bytes, bytes]:
    return question[:-4].lower(), question[-4:]


def _label(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError | _Unexpected) else f"{type(exc).__name__}: {text}"


def open_sockets(client: DnsClient) -> int:
    """UDP sockets the client holds open right now, retired ones included (for tests and the benchmark)."""
    return sum(len(state.sockets) for state in client._states)


__all__ = [
    "MAX_ATTEMPT_TIMEOUT",
    "PAYLOAD",
    "DnsClient",
    "MalformedResponse",
    "Mx",
    "Reply",
    "Result",
    "encode_query",
    "encode_question",
    "open_sockets",
    "parse_message",
    "system_nameservers",
]
