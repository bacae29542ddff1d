"""A stub DNS client for the resolver: asks one question, classifies the answer as dnspython's resolver would.

Why not ``dns.asyncresolver.Resolver.resolve``: it spends most of a refresh's CPU building and parsing messages
with the general-purpose codec and opening a datagram socket per question (``bench/dns_cost.py`` measures it
against this client and the other candidates). This client keeps dnspython for names and for reading
``/etc/resolv.conf``, and does the wire work itself, for the types the exporter asks (MX, A, AAAA; TXT and TLSA
for the transport-security checks): the messages in ``dnswire``, the sockets, matching and pacing in
``dnssocket``, and here the retries, the TCP fallback and the public entry point, ``DnsClient.query``.

- **Retries, as dnspython's ``_Resolution``.** Servers in order (shuffled with ``options rotate``); each attempt
  waits at most ``min(2 s, lifetime)``; a round of timeouts is followed by a backoff (0.1 s, doubling, at most
  2 s) and another round, all within the lifetime. A server that answers SERVFAIL, REFUSED, FORMERR, NOTIMP or
  any other rcode, sends a malformed answer or fails with an OS error is dropped for this question; when none is
  left the result is ``servfail``. A truncated UDP answer is asked again over TCP of the same server.
- **DNSSEC, as a stub.** Every query sets AD (RFC 6840 §5.7 asks a validating resolver to say whether the answer
  validated, without DO); ``Reply.secure`` is the answer's AD bit. The client validates nothing itself: trusting
  AD is the operator's choice (``resolver.dnssec``), as Postfix and Exim trust their local validating resolver.
  ``query(..., checking_disabled=True)`` sets CD, so a SERVFAIL that then answers is told apart as bogus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import weakref
from collections.abc import Sequence

import dns.name
import dns.nameserver
import dns.resolver

from mx_exporter.dnssocket import TIMED_OUT, LoopState, Pacer, Unexpected, ask_tcp, ask_udp, close_states
from mx_exporter.dnswire import (
    PAYLOAD,
    TYPES,
    BadAnswer,
    MalformedResponse,
    Message,
    Reply,
    classify,
    encode_question,
    parse_message,
)
from mx_exporter.text import count

MAX_ATTEMPT_TIMEOUT = 2.0  # seconds one attempt waits for its answer (as dnspython's Resolver.timeout)
_RCODES = {
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    16: "BADVERS",
}
_CSPRNG = random.SystemRandom()  # server order (options rotate)


def system_nameservers() -> tuple[list[str | dns.nameserver.Nameserver], bool]:
    """The nameservers in /etc/resolv.conf (as dnspython lists them) and its ``options rotate``."""
    resolver = dns.resolver.Resolver()  # reads the file; sends nothing
    return list(resolver.nameservers), resolver.rotate


class _Asking:
    """One question's way through the servers, as dnspython's ``_Resolution``: who is left, what each said."""

    def __init__(
        self,
        qname: dns.name.Name,
        rdcode: int,
        checking_disabled: bool,
        servers: list[tuple[str, int]],
        lifetime: float,
        deadline: float,
    ) -> None:
        self.qname = qname
        self.rdcode = rdcode
        self.question = encode_question(qname, rdcode)
        self.checking_disabled = checking_disabled
        self.servers = servers  # still in the mix: a server that failed badly is dropped for this question
        self.current = list(servers)  # this round's servers not asked yet
        self.server = servers[0]  # the one asked last (asked again over TCP after a truncated answer)
        self.lifetime = lifetime
        self.deadline = deadline
        self.errors: list[str] = []  # what servers said, or why they were dropped
        self.silent = 0  # attempts that got no answer in time
        self.backoff = 0.1
        self.tcp_retry = False  # a truncated UDP answer was asked again over TCP
        self.use_tcp = False  # the next attempt asks the same server over TCP

    def timed_out(self) -> Reply:
        return Reply("timeout", detail=_summary(self.errors, self.silent), tcp_retry=self.tcp_retry)

    async def next_server(self, loop: asyncio.AbstractEventLoop) -> Reply | None:
        """Move on to the next server (not after a truncated answer), backing off after each round; a Reply when
        no server is left or the backoff would outlast the lifetime."""
        if self.use_tcp:
            return None
        if not self.current:
            if not self.servers:
                return Reply("servfail", detail=_summary(self.errors, self.silent), tcp_retry=self.tcp_retry)
            self.current = list(self.servers)
            if loop.time() + self.backoff >= self.deadline:
                return self.timed_out()
            await asyncio.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, 2.0)
        self.server = self.current.pop(0)
        return None

    def judge(self, got: bytes | Exception | object, was_tcp: bool) -> Reply | None:
        """What one attempt's outcome means: the Reply that ends the question, or None to ask on."""
        label = _label(self.server)
        if got is TIMED_OUT:
            self.silent += 1
            return None
        if isinstance(got, Exception):
            self.errors.append(f"{label}: {_short(got)}")
            if not isinstance(got, Unexpected):
                self.servers.remove(self.server)  # dnspython drops a server for OS and format errors
            return None
        assert isinstance(got, bytes)
        try:
            message = parse_message(got)
        except MalformedResponse as exc:
            self._drop(f"{label}: malformed answer ({exc})")
            return None
        if message.truncated and not was_tcp:
            self.use_tcp = self.tcp_retry = True
            return None
        return self._answered(message, label)

    def _answered(self, message: Message, label: str) -> Reply | None:
        """A parsed answer: NOERROR/NXDOMAIN classified, YXDOMAIN ends the question, other rcodes drop the server."""
        if message.rcode in (0, 3):
            try:
                reply = classify(message, self.qname, self.rdcode)
            except BadAnswer as exc:
                self._drop(f"{label}: {exc}")
                return None
            if self.tcp_retry or message.authentic:
                reply = dataclasses.replace(reply, tcp_retry=self.tcp_retry, secure=message.authentic)
            return reply
        rcode = _RCODES.get(message.rcode, f"rcode {message.rcode}")
        if message.rcode == 6:  # YXDOMAIN ends the question (dnspython raises it)
            return Reply("error", detail=f"{label} answered {rcode}", tcp_retry=self.tcp_retry)
        self._drop(f"{label} answered {rcode}")
        return None

    def _drop(self, reason: str) -> None:
        """Drop the server for this question, saying why."""
        self.errors.append(reason)
        self.servers.remove(self.server)


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
        self.cache = None  # never caches on its own: one refresh cycle's answers live in dnsask.NameCache
        # As dnspython's Resolver.nameservers would list them (Do53Nameserver, or the text of resolv.conf).
        self.nameservers = list(nameservers) or [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        self._pacer = None if max_queries_per_second is None else Pacer(max_queries_per_second)
        self._states: list[LoopState] = []
        self._finalizer = weakref.finalize(self, close_states, self._states)

    # -- lifecycle

    def close(self) -> None:
        """Close every socket now; questions still pending end as servfail. Using the client again reopens."""
        close_states(self._states)

    async def aclose(self) -> None:
        """As close(), for ``await`` in shutdown code."""
        self.close()

    async def __aenter__(self) -> DnsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        states = self._states
        if states and states[0].loop is loop:
            return states[0]
        close_states(states)  # another loop's sockets cannot be read here
        states.append(LoopState(loop))
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
        lifetime = self.lifetime if lifetime is None else lifetime
        deadline = state.loop.time() + lifetime
        servers = list(self.servers)
        if self.rotate:
            _CSPRNG.shuffle(servers)
        asking = _Asking(qname, TYPES[rdtype], checking_disabled, servers, lifetime, deadline)
        while True:
            ended = await asking.next_server(state.loop)
            if ended is None:
                ended = await self._attempt(state, asking)
            if ended is not None:
                return ended

    async def _attempt(self, state: LoopState, asking: _Asking) -> Reply | None:
        """One attempt at the current server, within the lifetime and the pacing; a Reply when it ends the question."""
        loop = state.loop
        remaining = asking.deadline - loop.time()
        if remaining <= 0:
            return asking.timed_out()
        if self._pacer is not None:
            wait = self._pacer.reserve(loop.time(), remaining)
            if wait is None:
                detail = f"the rate limit left no send slot within {asking.lifetime:g} s"
                return Reply("timeout", detail=detail, tcp_retry=asking.tcp_retry)
            if wait > 0:
                await asyncio.sleep(wait)
            remaining = asking.deadline - loop.time()
        timeout = min(self.timeout, remaining)
        async with state.in_flight:
            if asking.use_tcp:
                got = await ask_tcp(asking.server, asking.question, timeout, asking.checking_disabled)
            else:
                got = await ask_udp(state, asking.server, asking.question, timeout, asking.checking_disabled)
        was_tcp, asking.use_tcp = asking.use_tcp, False
        return asking.judge(got, was_tcp)


def _summary(errors: list[str], silent: int) -> str:
    """What the servers did: "127.0.0.1:53 answered REFUSED; 2 attempts got no answer in time"."""
    lost = [f"{count(silent, 'attempt')} got no answer in time"] if silent else []
    return "; ".join(errors + lost)


def _label(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError | Unexpected) else f"{type(exc).__name__}: {text}"


def open_sockets(client: DnsClient) -> int:
    """UDP sockets the client holds open right now, retired ones included (for tests and the benchmark)."""
    return sum(len(state.sockets) for state in client._states)


__all__ = [
    "MAX_ATTEMPT_TIMEOUT",
    "DnsClient",
    "open_sockets",
    "system_nameservers",
]
