"""An HTTPS MTA-STS policy host on loopback (RFC 8461 §3.3) for the fetch tests and the exporter lab.

One aiohttp server with a trustme CA and one certificate naming ``mta-sts.<domain>`` for every domain it
serves (``wrong_name=True``: a certificate for another name instead). What it answers depends on the host the
client asked for, so one server (one address and port) serves many domains, each with its own behaviour:

    enforce        a valid enforce policy (CRLF lines): mx1.<domain>, *.mx.<domain>, max_age 604800
    testing        a valid testing policy (LF lines): mx1.<domain>, max_age 86400
    mismatch       a valid enforce policy whose only mx is mx.elsewhere.test
    malformed      mode: strict
    oversized      200 text/plain streaming ``oversize_bytes`` (far past any sane limit) in 16 KiB chunks
    redirect       302 to https://policy.elsewhere.test/.well-known/mta-sts.txt
    content_type   the enforce policy as text/html
    not_found      404
    slow           the enforce policy after ``slow_seconds`` (or when the server stops)

or a ``Reply`` for anything else. Use it as ``async with PolicyServer(...)`` in pytest-asyncio tests, or with
``policy_server_thread(...)`` (its own event loop in a daemon thread) for tests that run the exporter as a
subprocess. ``requests`` lists what was asked for, ``streamed`` how far each oversized stream got
(``stream_ended`` is set after each).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from aiohttp import web

KINDS = (
    "enforce",
    "testing",
    "mismatch",
    "malformed",
    "oversized",
    "redirect",
    "content_type",
    "not_found",
    "slow",
)
WRONG_NAME = "www.elsewhere.test"
REDIRECT_TO = "https://policy.elsewhere.test/.well-known/mta-sts.txt"
CHUNK = (b"# " + b"x" * 1021 + b"\n") * 16  # 16 KiB of comment-looking lines


@dataclass(frozen=True)
class Reply:
    """A literal answer. (aiohttp always sends a Content-Type with a body: application/octet-stream by default.)"""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


def enforce_policy(domain: str) -> str:
    return f"version: STSv1\r\nmode: enforce\r\nmx: mx1.{domain}\r\nmx: *.mx.{domain}\r\nmax_age: 604800\r\n"


def testing_policy(domain: str) -> str:
    return f"version: STSv1\nmode: testing\nmx: mx1.{domain}\nmax_age: 86400\n"


def _canned(kind: str, domain: str) -> Reply:
    text = {
        "enforce": enforce_policy(domain),
        "testing": testing_policy(domain),
        "mismatch": "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 604800\r\n",
        "malformed": f"version: STSv1\r\nmode: strict\r\nmx: mx1.{domain}\r\nmax_age: 604800\r\n",
    }
    if kind in text:
        return Reply(body=text[kind].encode())
    if kind == "redirect":
        return Reply(302, b"moved", headers=(("Location", REDIRECT_TO),))
    if kind == "content_type":
        return Reply(body=enforce_policy(domain).encode(), content_type="text/html; charset=utf-8")
    if kind == "not_found":
        return Reply(404, b"no policy here")
    raise ValueError(f"unknown policy server behaviour {kind!r}; known: {', '.join(KINDS)}")


class PolicyServer:
    """The policy host; ``address``, ``port`` and ``ca_file`` are set once started."""

    def __init__(
        self,
        policies: Mapping[str, str | Reply],
        *,
        ca: trustme.CA | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        wrong_name: bool = False,
        oversize_bytes: int = 8 * 1024 * 1024,
        slow_seconds: float = 30.0,
    ) -> None:
        for behaviour in policies.values():
            if isinstance(behaviour, str) and behaviour not in KINDS:
                raise ValueError(f"unknown policy server behaviour {behaviour!r}; known: {', '.join(KINDS)}")
        self.policies = {d.lower().rstrip("."): b for d, b in policies.items()}
        self.ca = ca if ca is not None else trustme.CA()
        self.address = host
        self.port = port
        self.wrong_name = wrong_name
        self.oversize_bytes = oversize_bytes
        self.slow_seconds = slow_seconds
        self.requests: list[tuple[str, str]] = []  # (host asked for, path)
        self.streamed: list[tuple[str, int, bool]] = []  # (domain, bytes written, stream finished)
        self._dir = tempfile.TemporaryDirectory(prefix="policy-server-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.stream_ended = asyncio.Event()  # set when an oversized stream ends (on the server's own loop)

    def _context(self) -> ssl.SSLContext:
        names = [WRONG_NAME] if self.wrong_name else [f"mta-sts.{d}" for d in self.policies]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        return context

    async def start(self) -> PolicyServer:
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=self._context())
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._dir.cleanup()

    async def __aenter__(self) -> PolicyServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.url.host or "").lower().rstrip(".")
        self.requests.append((host, request.path))
        domain = host.removeprefix("mta-sts.")
        behaviour = self.policies.get(domain) if host.startswith("mta-sts.") else None
        if behaviour is None or request.path != "/.well-known/mta-sts.txt":
            return web.Response(status=404, text="not a policy URL of this server")
        if behaviour == "oversized":
            return await self._stream(request, domain)
        if behaviour == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
            behaviour = "enforce"
        reply = behaviour if isinstance(behaviour, Reply) else _canned(behaviour, domain)
        headers = {"Content-Type": reply.content_type, **dict(reply.headers)}
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    async def _stream(self, request: web.Request, domain: str) -> web.StreamResponse:
        """Write ``oversize_bytes`` unless the client hangs up first (it should, after its size limit)."""
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent, finished = 0, False
        try:
            while sent < self.oversize_bytes:
                await response.write(CHUNK)
                sent += len(CHUNK)
            await response.write_eof()
            finished = True
        except (ConnectionError, RuntimeError):
            pass  # the client closed the connection: what a bounded reader does
        finally:
            self.streamed.append((domain, sent, finished))
            self.stream_ended.set()
        return response


@contextlib.contextmanager
def policy_server_thread(policies: Mapping[str, str | Reply], **kwargs: Any) -> Iterator[PolicyServer]:
    """The same server on an event loop of its own in a daemon thread (for an exporter subprocess).

    The loop is ``asyncio.run``'s, so on exit the server stops and every connection is closed before the loop
    is (stopping a bare ``run_forever`` loop can leave a just-closed transport's socket open).
    """
    server = PolicyServer(policies, **kwargs)
    started = threading.Event()
    failed: list[BaseException] = []
    handles: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        finish = asyncio.Event()
        handles.append((asyncio.get_running_loop(), finish))
        try:
            await server.start()
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            started.set()
        try:
            await finish.wait()
        finally:
            await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="policy-server", daemon=True)
    thread.start()
    if not started.wait(timeout=10) or failed:
        raise RuntimeError(f"policy server did not start: {failed[0] if failed else 'timed out'}")
    try:
        yield server
    finally:
        loop, finish = handles[0]
        loop.call_soon_threadsafe(finish.set)
        thread.join(timeout=10)
