"""The SMTP probe stage against every lab peer (real sockets on loopback), plus table tests of pure parts."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import pytest

from mx_exporter.model import Family, ResolvedAddress, SmtpOutcome
from mx_exporter.smtp import probe_address
from mx_exporter.smtp_wire import (
    MAX_TRANSCRIPT_LINE,
    MAX_TRANSCRIPT_LINES,
    SmtpPolicy,
    Transcript,
    classify_ehlo,
    classify_greeting,
    reply_summary,
)
from tests.lab import plan
from tests.lab.smtp_peers import SmtpLab
from tests.lab.smtp_sessions import (
    EHLO,
    Script,
    T,
    assert_polite,
    commands,
    policy,
    probe_lab,
    scripted_peer,
    target,
)


@pytest.mark.parametrize(
    "conversation",
    [
        ("C: EHLO x",),  # before any greeting
        ("S: 220-first", "C: EHLO x", "S: 220 last"),  # before the final greeting line
        ("S: 220 ok", "C: EHLO x", "C: QUIT", "S: 250 ok"),  # pipelined
        ("S: 220 ok", "C: EHLO x", "S: 250-x", "C: QUIT"),  # inside a multi-line reply
    ],
)
def test_politeness_check_catches_impatience(conversation: tuple[str, ...]) -> None:
    with pytest.raises(AssertionError):
        assert_polite(conversation)
    assert_polite(("S: 220-a", "S: 220 b", "C: EHLO x", "S: 250-x", "S: 250 y", "C: QUIT", "S: 221 bye"))


def assert_sane_timings(result: Any, greeting: bool = True) -> None:
    assert result.connect_seconds is not None and 0 <= result.connect_seconds < T["connect_timeout"]
    if greeting:
        assert result.greeting_seconds is not None and 0 <= result.greeting_seconds < T["greeting_timeout"]
        assert result.session_seconds >= result.connect_seconds + result.greeting_seconds
    assert result.session_seconds is not None and result.session_seconds < T["session_timeout"]


# --- lab peers


@pytest.mark.parametrize(("ip", "starttls"), [(plan.ACCEPT_1, True), (plan.ACCEPT_2, False)])
async def test_accepting_peer(smtp_lab: SmtpLab, ip: str, starttls: bool) -> None:
    result, conversation = await probe_lab(smtp_lab, ip)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.ACCEPTED, 220, 250)
    assert result.up and result.starttls_advertised is starttls
    assert (result.tls is not None and result.tls.handshake_ok) is starttls  # STARTTLS when advertised
    assert_sane_timings(result)
    assert commands(conversation) == ([EHLO, "STARTTLS", EHLO, "QUIT"] if starttls else [EHLO, "QUIT"])
    assert conversation[-1].startswith("S: 221")
    assert_polite(conversation)
    assert (
        result.transcript[0].startswith("+0.0")
        and f"connect {ip} port {smtp_lab.port}" in result.transcript[0]
    )
    assert any(line.endswith(f"C: {EHLO}") for line in result.transcript)


async def test_multiline_greeting_waited_for(smtp_lab: SmtpLab) -> None:
    result, conversation = await probe_lab(smtp_lab, plan.MULTILINE)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.ACCEPTED, 220, 250)
    assert result.greeting_seconds >= plan.MULTILINE_PAUSE
    assert conversation.index("S: 220 last") < conversation.index(f"C: {EHLO}")
    assert commands(conversation) == [EHLO, "QUIT"]
    assert_polite(conversation)


async def test_greeting_421_closes_without_a_command(smtp_lab: SmtpLab) -> None:
    result, conversation = await probe_lab(smtp_lab, plan.GREET_421)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.GREETING_4XX, 421, 0)
    assert not result.up and "421 4.3.2 too busy" in result.detail
    assert commands(conversation) == []
    assert_sane_timings(result)


async def test_greeting_554_gets_quit(smtp_lab: SmtpLab) -> None:
    """RFC 5321 §3.1: after a 554 greeting the client sends QUIT and waits for the reply."""
    result, conversation = await probe_lab(smtp_lab, plan.GREET_554)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.GREETING_5XX, 554, 0)
    assert commands(conversation) == ["QUIT"]
    assert conversation[-1].startswith("S: 221")
    assert_sane_timings(result)


async def test_silent_peer_is_a_greeting_timeout(smtp_lab: SmtpLab) -> None:
    started = time.monotonic()
    result, conversation = await probe_lab(smtp_lab, plan.SILENT)
    elapsed = time.monotonic() - started
    assert (result.outcome, result.greeting_code) == (SmtpOutcome.GREETING_TIMEOUT, 0)
    assert T["greeting_timeout"] <= elapsed < T["greeting_timeout"] + 1
    assert result.greeting_seconds is None and commands(conversation) == []
    assert_sane_timings(result, greeting=False)


async def test_closed_address_is_refused(smtp_lab: SmtpLab) -> None:
    result = await probe_address(target(plan.CLOSED), policy(smtp_lab.port))
    assert result.outcome is SmtpOutcome.CONNECTION_REFUSED
    assert result.detail == "connect failed: connection refused"
    assert result.connect_seconds is None and result.greeting_code == 0
    assert result.session_seconds is not None and result.session_seconds < T["connect_timeout"]


async def test_slow_greeting_ends_near_greeting_timeout(smtp_lab: SmtpLab) -> None:
    started = time.monotonic()
    result, conversation = await probe_lab(smtp_lab, plan.SLOW_GREETING)
    elapsed = time.monotonic() - started
    assert result.outcome is SmtpOutcome.GREETING_TIMEOUT
    assert T["greeting_timeout"] <= result.session_seconds < T["greeting_timeout"] + 0.5
    assert elapsed < plan.SLOW_GREETING_DELAY  # we left before the peer ever greeted
    assert commands(conversation) == [] and conversation == ()


async def test_ehlo_rejected(smtp_lab: SmtpLab) -> None:
    result, conversation = await probe_lab(smtp_lab, plan.EHLO_REJECT)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.EHLO_FAILED, 220, 502)
    assert "502 5.5.1 no EHLO" in result.detail
    # The HELO fallback senders use: it tells the sender profiles this address takes mail (250), but the
    # address still did not accept EHLO.
    assert result.helo_code == 250 and "HELO answered 250" in result.detail
    assert commands(conversation) == [EHLO, EHLO.replace("EHLO", "HELO"), "QUIT"]
    assert_polite(conversation)
    assert_sane_timings(result)


async def test_garbage_is_a_protocol_error(smtp_lab: SmtpLab) -> None:
    result, conversation = await probe_lab(smtp_lab, plan.GARBAGE)
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.PROTOCOL_ERROR, 0, 0)
    assert result.detail == "malformed greeting: HTTP/1.1 400 Bad Request"
    assert commands(conversation) == []  # no QUIT into a stream we cannot parse


async def test_dribbler_ends_within_the_deadline(smtp_lab: SmtpLab) -> None:
    started = time.monotonic()
    result, conversation = await probe_lab(smtp_lab, plan.DRIBBLE)
    assert time.monotonic() - started < T["session_timeout"] + 1
    assert result.outcome is SmtpOutcome.GREETING_TIMEOUT
    assert "bytes received" in result.detail and "(0 bytes" not in result.detail
    assert any(line.endswith("(incomplete line)") for line in result.transcript)
    assert commands(conversation) == []


async def test_overall_deadline_alone_ends_the_dribbler(smtp_lab: SmtpLab) -> None:
    """With a greeting timeout far too long, only the session deadline stops a peer that never finishes."""
    started = time.monotonic()
    result, _ = await probe_lab(smtp_lab, plan.DRIBBLE, greeting_timeout=60.0, session_timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 2.5
    assert result.outcome is SmtpOutcome.GREETING_TIMEOUT
    assert result.detail == "session deadline 1.5 s hit before the final greeting line"


async def test_smtp_sink_accepts(smtp_lab: SmtpLab) -> None:
    result = await probe_address(target(plan.SINK), policy(smtp_lab.port))
    assert (result.outcome, result.greeting_code, result.ehlo_code) == (SmtpOutcome.ACCEPTED, 220, 250)
    assert "S: 220 sink.lab.test ESMTP" in " ".join(result.transcript)
    assert_sane_timings(result)


async def test_ipv6_peer(smtp_lab: SmtpLab) -> None:
    result, conversation = await probe_lab(smtp_lab, plan.IPV6_ACCEPT)
    assert (result.outcome, result.family, result.address) == (SmtpOutcome.ACCEPTED, Family.IPV6, "::1")
    assert commands(conversation) == [EHLO, "QUIT"]
    assert_polite(conversation)


async def test_skipped_address_never_connects(smtp_lab: SmtpLab) -> None:
    before = smtp_lab.connections(plan.ACCEPT_2)
    result = await probe_address(target(plan.ACCEPT_2, allowed=False), policy(smtp_lab.port))
    await asyncio.sleep(0.2)
    assert smtp_lab.connections(plan.ACCEPT_2) == before
    assert result.outcome is SmtpOutcome.SKIPPED
    assert (result.connect_seconds, result.session_seconds, result.transcript) == (None, None, ())


async def test_never_resolves_a_name(smtp_lab: SmtpLab, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"name resolution attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for ip in (plan.ACCEPT_2, plan.IPV6_ACCEPT):
        assert (await probe_address(target(ip), policy(smtp_lab.port))).outcome is SmtpOutcome.ACCEPTED


async def test_cancellation_propagates_and_closes_the_socket(smtp_lab: SmtpLab) -> None:
    task = asyncio.ensure_future(probe_address(target(plan.SILENT), policy(smtp_lab.port)))
    await asyncio.sleep(0.3)
    assert smtp_lab.open_connections(plan.SILENT) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(smtp_lab.wait_idle, plan.SILENT, 2.0)


async def test_stopped_peer_refuses_and_comes_back(smtp_lab: SmtpLab) -> None:
    ip = plan.FAILOVER_PRIMARY
    reader, writer = await asyncio.open_connection(ip, smtp_lab.port)
    assert (await reader.readline()).startswith(b"220 ")
    smtp_lab.stop_peer(ip)
    try:
        assert await asyncio.wait_for(reader.read(), 2) == b""  # open connections are closed too
        result = await probe_address(target(ip), policy(smtp_lab.port))
        assert result.outcome is SmtpOutcome.CONNECTION_REFUSED
    finally:
        writer.close()
        smtp_lab.start_peer(ip)
    assert (await probe_address(target(ip), policy(smtp_lab.port))).outcome is SmtpOutcome.ACCEPTED


async def test_lab_counts_concurrent_connections(smtp_lab: SmtpLab) -> None:
    ip = plan.MANY[-1]
    smtp_lab.reset_counts(ip)
    try:
        results = await asyncio.gather(*(probe_address(target(ip), policy(smtp_lab.port)) for _ in range(3)))
        assert {r.outcome for r in results} == {SmtpOutcome.ACCEPTED}
        assert smtp_lab.connections(ip) == 3
        assert 2 <= smtp_lab.max_concurrent(ip) <= 3
    finally:
        await asyncio.to_thread(smtp_lab.wait_idle, ip)
        smtp_lab.reset_counts(ip)


# --- scripted peers on 127.0.0.1 for the malformed cases the lab plan does not name


def greet_then(*ehlo_reply: bytes, greeting: bytes = b"220 scripted\r\n") -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while line := await reader.readline():
            if line.startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                return
            writer.write(b"".join(ehlo_reply))
            if not ehlo_reply:
                return  # close without answering

    return script


async def send_then_wait(data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(data)
    await reader.read()


async def write_close(data: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(data)
    await writer.drain()


async def greet_and_wait(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    writer.write(b"220 scripted\r\n")
    while await reader.readline():
        pass


LONG = b"x" * 3000
CASES = [
    # (name, script, policy overrides, outcome, greeting code, ehlo code, detail fragment, commands received)
    ("long greeting line", greet_then(b"250 ok\r\n", greeting=b"220 " + LONG + b"\r\n"), {},
     SmtpOutcome.PROTOCOL_ERROR, 0, 0, "greeting line longer than 2048 bytes", []),
    ("long line allowed by policy", greet_then(b"250 ok\r\n", greeting=b"220 " + LONG + b"\r\n"),
     {"max_line_length": 4096}, SmtpOutcome.ACCEPTED, 220, 250, "EHLO 250", [EHLO, "QUIT"]),
    ("endless line", lambda r, w: send_then_wait(b"220 " + LONG * 4, r, w), {},
     SmtpOutcome.PROTOCOL_ERROR, 0, 0, "greeting line longer than 2048 bytes", []),
    ("dropped mid-greeting", lambda r, w: write_close(b"220-part\r\n", w), {},
     SmtpOutcome.PROTOCOL_ERROR, 0, 0, "connection closed mid-greeting", []),
    ("closed before greeting", lambda r, w: write_close(b"", w), {},
     SmtpOutcome.PROTOCOL_ERROR, 0, 0, "connection closed before the greeting", []),
    ("greeting code 999", lambda r, w: send_then_wait(b"999 what\r\n", r, w), {},
     SmtpOutcome.PROTOCOL_ERROR, 999, 0, "not an SMTP greeting: 999 what", []),
    ("EHLO unanswered, closed", greet_then(), {},
     SmtpOutcome.EHLO_FAILED, 220, 0, "connection closed before the EHLO reply", [EHLO]),
    ("EHLO 421", greet_then(b"421 4.3.2 shutting down\r\n"), {},
     SmtpOutcome.EHLO_FAILED, 220, 421, "EHLO answered 421 4.3.2 shutting down", [EHLO]),
    ("EHLO garbage", greet_then(b"hello there\r\n"), {},
     SmtpOutcome.PROTOCOL_ERROR, 220, 0, "malformed EHLO reply: hello there", [EHLO]),
    ("EHLO silence", lambda r, w: greet_and_wait(w, r), {"ehlo_timeout": 0.5},
     SmtpOutcome.EHLO_FAILED, 220, 0, "no complete EHLO reply within 500 ms", [EHLO]),
    ("greeting 2xx other than 220", greet_then(b"250 ok\r\n", greeting=b"250 odd but 2xx\r\n"), {},
     SmtpOutcome.ACCEPTED, 250, 250, "greeting 250", [EHLO, "QUIT"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "overrides", "outcome", "greeting", "ehlo", "detail", "received"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_scripted_peer(
    script: Script,
    overrides: dict[str, Any],
    outcome: SmtpOutcome,
    greeting: int,
    ehlo: int,
    detail: str,
    received: list[str],
) -> None:
    async with scripted_peer(script) as (port, lines):
        result = await probe_address(target("127.0.0.1"), policy(port, **overrides))
        await asyncio.sleep(0.1)
        assert (result.outcome, result.greeting_code, result.ehlo_code) == (outcome, greeting, ehlo)
        assert detail in result.detail
        assert [line.decode().rstrip("\r\n") for line in lines] == received
        assert result.session_seconds is not None and result.session_seconds < T["session_timeout"]


async def test_transcript_and_detail_are_bounded() -> None:
    """A chatty peer with control characters: the transcript stays at 50 short printable lines."""
    ehlo = (
        b"".join(b"250-EXT%d " % n + b"\x1b[31m" + b"y" * 300 + b"\r\n" for n in range(80)) + b"250 end\r\n"
    )
    greeting = b"220 \x00\x07" + b"z" * 500 + b"\r\n"
    async with scripted_peer(greet_then(ehlo, greeting=greeting)) as (port, _):
        result = await probe_address(target("127.0.0.1"), policy(port))
    assert result.outcome is SmtpOutcome.ACCEPTED
    assert len(result.transcript) == MAX_TRANSCRIPT_LINES
    assert result.transcript[-1].endswith("... transcript truncated")
    for text in (*result.transcript, result.detail):
        assert len(text) <= MAX_TRANSCRIPT_LINE and text.isprintable() and text.isascii()


async def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=re.escape("not an IP address: 'mx.lab.test'")):
        await probe_address(ResolvedAddress("mx.lab.test", Family.IPV4, True), policy(25))
    with pytest.raises(ValueError, match="is not ipv6"):
        await probe_address(ResolvedAddress("127.0.0.1", Family.IPV6, True), policy(25))


# --- pure helpers


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(220, None), (200, None), (250, None), (299, None), (421, SmtpOutcome.GREETING_4XX),
     (450, SmtpOutcome.GREETING_4XX), (499, SmtpOutcome.GREETING_4XX), (500, SmtpOutcome.GREETING_5XX),
     (554, SmtpOutcome.GREETING_5XX), (599, SmtpOutcome.GREETING_5XX), (199, SmtpOutcome.PROTOCOL_ERROR),
     (354, SmtpOutcome.PROTOCOL_ERROR), (600, SmtpOutcome.PROTOCOL_ERROR), (22, SmtpOutcome.PROTOCOL_ERROR),
     (0, SmtpOutcome.PROTOCOL_ERROR), (-1, SmtpOutcome.PROTOCOL_ERROR)],
)  # fmt: skip
def test_classify_greeting(code: int, outcome: SmtpOutcome | None) -> None:
    assert classify_greeting(code) is outcome


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(250, None), (220, SmtpOutcome.EHLO_FAILED), (421, SmtpOutcome.EHLO_FAILED),
     (502, SmtpOutcome.EHLO_FAILED), (550, SmtpOutcome.EHLO_FAILED), (199, SmtpOutcome.PROTOCOL_ERROR),
     (999, SmtpOutcome.PROTOCOL_ERROR), (-1, SmtpOutcome.PROTOCOL_ERROR)],
)  # fmt: skip
def test_classify_ehlo(code: int, outcome: SmtpOutcome | None) -> None:
    assert classify_ehlo(code) is outcome


@pytest.mark.parametrize(
    ("code", "message", "summary"),
    [
        (421, "too busy", "421 too busy"),
        (220, "first\nsecond\nlast", "220 first"),
        (554, "", "554"),
        (220, "  padded  ", "220 padded"),
        (421, "bad\x1b[31m\ttab", "421 bad?[31m?tab"),
        (220, "caf\u00e9", "220 caf?"),
        (220, "x" * 300, "220 " + "x" * 113 + "..."),
    ],
)
def test_reply_summary(code: int, message: str, summary: str) -> None:
    assert reply_summary(code, message) == summary
    assert len(reply_summary(code, message)) <= 120


def test_transcript_bound() -> None:
    loop = asyncio.new_event_loop()
    transcript = Transcript(loop)
    for n in range(120):
        transcript.add(f"S: 250-{n} " + "w" * 400)
    loop.close()
    assert len(transcript.lines) == MAX_TRANSCRIPT_LINES
    assert transcript.lines[-1].endswith("... transcript truncated")
    assert all(len(line) <= MAX_TRANSCRIPT_LINE for line in transcript.lines)


def test_policy_defaults_follow_the_design() -> None:
    p = SmtpPolicy(ehlo_name="mx-probe.example.net")
    assert (p.port, p.connect_timeout, p.greeting_timeout, p.session_timeout) == (25, 5.0, 15.0, 30.0)
    assert (
        p.greeting_timeout > 6
    )  # postscreen pauses ~6 s before greeting (docs/architecture.md, "Polite probing")
