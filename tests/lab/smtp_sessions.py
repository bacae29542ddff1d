"""Probing SMTP peers from tests: the lab's probe policy, targets, one-off scripted peers, conversation checks.

Shared by tests/test_smtp.py and tests/test_tls.py, so that neither test module imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mx_exporter.model import Family, ResolvedAddress
from mx_exporter.smtp import probe_address
from mx_exporter.smtp_wire import SmtpPolicy
from tests.lab import plan
from tests.lab.smtp_peers import SmtpLab

T = plan.LAB_TIMEOUTS
EHLO = f"EHLO {plan.EHLO_NAME}"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def policy(port: int, **overrides: Any) -> SmtpPolicy:
    settings: dict[str, Any] = {
        "ehlo_name": plan.EHLO_NAME,
        "port": port,
        "connect_timeout": T["connect_timeout"],
        "greeting_timeout": T["greeting_timeout"],
        "ehlo_timeout": T["ehlo_timeout"],
        "session_timeout": T["session_timeout"],
    }
    return SmtpPolicy(**(settings | overrides))


def target(ip: str, allowed: bool = True) -> ResolvedAddress:
    return ResolvedAddress(ip, Family.IPV6 if ":" in ip else Family.IPV4, allowed)


def commands(conversation: tuple[str, ...]) -> list[str]:
    return [line[3:] for line in conversation if line.startswith("C: ")]


def assert_polite(conversation: tuple[str, ...]) -> None:
    """Nothing sent before the final greeting line; every command waits for a whole reply (no pipelining)."""
    waiting_for_reply = True  # the greeting
    for line in conversation:
        if line.startswith("C: "):
            assert not waiting_for_reply, f"command sent before the previous reply ended: {conversation}"
            waiting_for_reply = True
        elif line[6:7] != "-":  # "S: 250 x" ends a reply, "S: 250-x" continues it
            waiting_for_reply = False


async def probe_lab(lab: SmtpLab, ip: str, **overrides: Any) -> tuple[Any, tuple[str, ...]]:
    """Probe one lab peer; check it saw exactly one connection and that it closed; return its conversation."""
    before = lab.connections(ip)
    result = await probe_address(target(ip), policy(lab.port, **overrides))
    await asyncio.to_thread(lab.wait_idle, ip)
    assert lab.connections(ip) == before + 1
    return result, lab.conversations(ip)[-1]


@contextlib.asynccontextmanager
async def scripted_peer(script: Script) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A one-off raw peer; yields its port and every line it received."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        readline = reader.readline

        async def recording_readline() -> bytes:
            line = await readline()
            if line:
                received.append(line)
            return line

        reader.readline = recording_readline  # type: ignore[method-assign]
        with contextlib.suppress(ConnectionError):
            await script(reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
