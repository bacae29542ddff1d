"""fetch_policy against a real HTTPS policy host on loopback (tests/lab/policy_server.py): aiohttp, trustme, TLS."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from mx_exporter.mtasts import Policy, PolicyMode, PolicyState, uncovered
from mx_exporter.policy_fetch import FetchResult, fetch_policy
from tests.lab.policy_server import (
    KINDS,
    REDIRECT_TO,
    PolicyServer,
    Reply,
    enforce_policy,
    policy_server_thread,
)

TIMEOUT = 5.0
LIMIT = 64 * 1024
PADDED = 1000  # the size of the "exactly" and "one more" policies

PADDING = "x_pad: "  # an unknown key: ignored by the parser, used to fill a policy to an exact size


def padded(domain: str, size: int) -> bytes:
    head = enforce_policy(domain).encode()
    filler = size - len(head) - len(PADDING) - 2
    return head + PADDING.encode() + b"p" * filler + b"\r\n"


@pytest.fixture
async def server() -> AsyncIterator[PolicyServer]:
    policies: dict[str, str | Reply] = {f"{kind.replace('_', '-')}.test": kind for kind in KINDS}
    policies["utf8-charset.test"] = Reply(
        body=enforce_policy("utf8-charset.test").encode(), content_type="text/plain; charset=utf-8"
    )
    policies["binary.test"] = Reply(body=b"version: STSv1\r\nmode: \xff\r\n")
    policies["error.test"] = Reply(500, b"oops")
    policies["exact.test"] = Reply(body=padded("exact.test", PADDED))
    policies["one-more.test"] = Reply(body=padded("one-more.test", PADDED + 1))
    async with PolicyServer(policies, slow_seconds=30.0, oversize_bytes=32 * 1024 * 1024) as running:
        yield running


async def fetch(
    server: PolicyServer, domain: str, *, ca_file: str = "", seconds: float = TIMEOUT, max_bytes: int = LIMIT
) -> FetchResult:
    """fetch_policy against ``server``, trusting its CA unless another ``ca_file`` is given."""
    return await fetch_policy(
        domain,
        [server.address],
        ca_file=ca_file or server.ca_file,
        timeout=seconds,
        port=server.port,
        max_bytes=max_bytes,
    )


def refused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


# --- valid policies


async def test_enforce(server: PolicyServer) -> None:
    result = await fetch(server, "enforce.test")
    assert result.state is PolicyState.VALID
    assert result.reason == "mode enforce, max_age 604800, 2 mx patterns"
    assert result.policy == Policy(PolicyMode.ENFORCE, ("mx1.enforce.test", "*.mx.enforce.test"), 604800)
    assert 0 < result.seconds < TIMEOUT
    # SNI and Host carry the real name although the client connected to an address it was given
    assert server.requests == [("mta-sts.enforce.test", "/.well-known/mta-sts.txt")]


async def test_testing(server: PolicyServer) -> None:
    result = await fetch(server, "testing.test")
    assert (result.state, result.reason) == (PolicyState.VALID, "mode testing, max_age 86400, 1 mx pattern")
    assert result.policy == Policy(PolicyMode.TESTING, ("mx1.testing.test",), 86400)


async def test_enforce_with_mismatching_mx(server: PolicyServer) -> None:
    result = await fetch(server, "mismatch.test")
    assert (result.state, result.reason) == (PolicyState.VALID, "mode enforce, max_age 604800, 1 mx pattern")
    assert result.policy == Policy(PolicyMode.ENFORCE, ("mx.elsewhere.test",), 604800)
    assert uncovered(result.policy, ["mx1.mismatch.test"]) == ("mx1.mismatch.test",)


async def test_content_type_parameters_are_allowed(server: PolicyServer) -> None:
    result = await fetch(server, "utf8-charset.test")
    assert (result.state, result.reason) == (PolicyState.VALID, "mode enforce, max_age 604800, 2 mx patterns")


async def test_domain_is_normalised(server: PolicyServer) -> None:
    result = await fetch(server, "Enforce.TEST.")
    assert result.state is PolicyState.VALID
    assert server.requests == [("mta-sts.enforce.test", "/.well-known/mta-sts.txt")]


async def test_every_address_is_tried(server: PolicyServer) -> None:
    # 127.0.0.2 is loopback too, but nothing listens there: refused, then the next address answers
    result = await fetch_policy(
        "enforce.test",
        ["127.0.0.2", server.address],
        ca_file=server.ca_file,
        timeout=TIMEOUT,
        port=server.port,
    )
    assert (result.state, result.reason) == (PolicyState.VALID, "mode enforce, max_age 604800, 2 mx patterns")


# --- what the body may not be


async def test_malformed(server: PolicyServer) -> None:
    result = await fetch(server, "malformed.test")
    assert (result.state, result.policy) == (PolicyState.MALFORMED, None)
    assert result.reason == "mode must be none, testing or enforce, got 'strict'"


async def test_not_utf8(server: PolicyServer) -> None:
    result = await fetch(server, "binary.test")
    assert (result.state, result.reason) == (PolicyState.MALFORMED, "policy is not UTF-8 text")


async def test_wrong_content_type(server: PolicyServer) -> None:
    result = await fetch(server, "content-type.test")
    assert (result.state, result.policy) == (PolicyState.MALFORMED, None)
    assert result.reason == "content type 'text/html; charset=utf-8', not text/plain"


async def test_oversized_is_cut_off(server: PolicyServer) -> None:
    result = await fetch(server, "oversized.test")
    assert (result.state, result.policy) == (PolicyState.MALFORMED, None)
    assert result.reason == f"policy larger than {LIMIT} bytes"
    await asyncio.wait_for(server.stream_ended.wait(), TIMEOUT)  # noticed on the server's next write
    [(domain, sent, finished)] = server.streamed
    assert domain == "oversized.test"
    assert not finished and sent < server.oversize_bytes  # the client hung up: it never read the whole body


async def test_size_limit_is_exact(server: PolicyServer) -> None:
    exact = await fetch(server, "exact.test", max_bytes=PADDED)
    assert (exact.state, exact.reason) == (PolicyState.VALID, "mode enforce, max_age 604800, 2 mx patterns")
    over = await fetch(server, "one-more.test", max_bytes=PADDED)
    assert (over.state, over.reason) == (PolicyState.MALFORMED, f"policy larger than {PADDED} bytes")
    small = await fetch(server, "oversized.test", max_bytes=512)
    assert (small.state, small.reason) == (PolicyState.MALFORMED, "policy larger than 512 bytes")


# --- HTTP


async def test_redirect_is_not_followed(server: PolicyServer) -> None:
    result = await fetch(server, "redirect.test")
    assert (result.state, result.policy) == (PolicyState.HTTP_ERROR, None)
    assert result.reason == f"redirect to {REDIRECT_TO} (HTTP 302, not followed)"
    assert server.requests == [("mta-sts.redirect.test", "/.well-known/mta-sts.txt")]


async def test_not_found(server: PolicyServer) -> None:
    result = await fetch(server, "not-found.test")
    assert (result.state, result.reason) == (PolicyState.HTTP_ERROR, "HTTP 404 Not Found")


async def test_server_error(server: PolicyServer) -> None:
    result = await fetch(server, "error.test")
    assert (result.state, result.reason) == (PolicyState.HTTP_ERROR, "HTTP 500 Internal Server Error")


async def test_slow_times_out(server: PolicyServer) -> None:
    started = time.monotonic()
    result = await fetch(server, "slow.test", seconds=0.5)
    took = time.monotonic() - started
    assert (result.state, result.policy) == (PolicyState.UNREACHABLE, None)
    assert result.reason == "mta-sts.slow.test: timed out after 500 ms"
    assert 0.5 <= result.seconds <= took < 3.0


# --- certificates


async def test_wrong_name_certificate() -> None:
    async with PolicyServer({"enforce.test": "enforce"}, wrong_name=True) as wrong:
        result = await fetch(wrong, "enforce.test")
    assert (result.state, result.policy) == (PolicyState.CERTIFICATE_INVALID, None)
    assert result.reason == (
        "mta-sts.enforce.test: certificate verification failed: "
        "Hostname mismatch, certificate is not valid for 'mta-sts.enforce.test'"
    )


async def test_certificate_for_another_domain(server: PolicyServer) -> None:
    # the server's certificate names every domain it serves, but not this one
    result = await fetch(server, "unserved.test")
    assert result.state is PolicyState.CERTIFICATE_INVALID
    assert result.reason == (
        "mta-sts.unserved.test: certificate verification failed: "
        "Hostname mismatch, certificate is not valid for 'mta-sts.unserved.test'"
    )
    assert server.requests == []  # no HTTP request is sent over an unverified connection


async def test_unknown_ca(server: PolicyServer, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    result = await fetch(server, "enforce.test", ca_file=str(other))
    assert (result.state, result.policy) == (PolicyState.CERTIFICATE_INVALID, None)
    assert (
        result.reason
        == "mta-sts.enforce.test: certificate verification failed: unable to get local issuer certificate"
    )
    assert server.requests == []


async def test_unusable_ca_file(server: PolicyServer, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = await fetch(server, "enforce.test", ca_file=str(missing))
    assert result.state is PolicyState.CERTIFICATE_INVALID
    assert result.reason == f"CA file {missing} unusable: [Errno 2] No such file or directory"
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    result = await fetch(server, "enforce.test", ca_file=str(empty))
    assert result.state is PolicyState.CERTIFICATE_INVALID
    assert result.reason.startswith(f"CA file {empty} unusable: ")


# --- connecting


async def test_connection_refused() -> None:
    result = await fetch_policy(
        "enforce.test", ["127.0.0.1"], ca_file=None, timeout=TIMEOUT, port=refused_port()
    )
    assert (result.state, result.policy) == (PolicyState.UNREACHABLE, None)
    assert result.reason == "mta-sts.enforce.test: cannot connect: connection refused"


async def test_no_address() -> None:
    result = await fetch_policy("enforce.test", [], ca_file=None, timeout=TIMEOUT)
    assert result == FetchResult(PolicyState.UNREACHABLE, None, "mta-sts.enforce.test has no address", 0.0)


async def test_not_tls() -> None:
    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    plain = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    try:
        port = plain.sockets[0].getsockname()[1]
        result = await fetch_policy("enforce.test", ["127.0.0.1"], ca_file=None, timeout=TIMEOUT, port=port)
    finally:
        plain.close()
        await plain.wait_closed()
    assert result.state is PolicyState.UNREACHABLE
    assert result.reason.startswith("mta-sts.enforce.test: TLS handshake failed: ")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
async def test_ipv6_address() -> None:
    async with PolicyServer({"enforce.test": "enforce"}, host="::1") as v6:
        result = await fetch_policy(
            "enforce.test", ["::1"], ca_file=v6.ca_file, timeout=TIMEOUT, port=v6.port
        )
    assert (result.state, result.reason) == (PolicyState.VALID, "mode enforce, max_age 604800, 2 mx patterns")


def test_background_thread_server() -> None:
    """The threaded variant (for exporter subprocess tests) serves the same answers."""
    with policy_server_thread({"testing.test": "testing"}) as threaded:
        result = asyncio.run(
            fetch_policy(
                "testing.test", ["127.0.0.1"], ca_file=threaded.ca_file, timeout=TIMEOUT, port=threaded.port
            )
        )
        assert threaded.requests == [("mta-sts.testing.test", "/.well-known/mta-sts.txt")]
    assert (result.state, result.reason) == (PolicyState.VALID, "mode testing, max_age 86400, 1 mx pattern")


def test_unknown_behaviour_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy server behaviour 'teapot'"):
        PolicyServer({"x.test": "teapot"})
