"""The STARTTLS step of a session (RFC 3207): upgrade the connection, then read the handshake's facts.

The session (``smtp.py``) calls ``starttls`` after a 250 EHLO that advertised STARTTLS, and sends the fresh EHLO
RFC 3207 §4.2 asks for itself. The handshake accepts ANY certificate (``tls.handshake_context``), so the facts are
always collected; ``tls.certificate_facts`` judges the presented chain afterwards. Nothing here changes the
session's outcome and nothing raises for peer behaviour: every way the step ends is one ``TlsFacts``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time

from aiosmtplib.errors import (
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from cryptography.x509.verification import Store

from mx_exporter import tls
from mx_exporter.model import TlsFacts
from mx_exporter.smtp_wire import ProbeProtocol, SmtpPolicy, Transcript, reply_summary
from mx_exporter.text import duration, sanitize


async def starttls(protocol: ProbeProtocol, policy: SmtpPolicy, transcript: Transcript) -> TlsFacts:
    """STARTTLS, the handshake (``policy.ehlo_timeout`` each) and the facts of what the peer presented."""
    failure = await _upgrade(protocol, policy.ehlo_timeout, transcript)
    if failure is not None:
        transcript.add(failure)
        return TlsFacts(handshake_ok=False, detail=failure)
    ssl_object = protocol.transport.get_extra_info("ssl_object") if protocol.transport else None
    version = ssl_object.version() if ssl_object is not None else None
    chain = tls.peer_chain(ssl_object) if ssl_object is not None else []
    try:
        store: Store | str = await asyncio.to_thread(tls.load_trust_store, policy.tls_ca_file)
    except ValueError as exc:
        store = f"trust store unavailable: {exc}"
    # The chain itself is kept for DANE (dane.py matches TLSA records per exchange name, in assessment).
    facts = dataclasses.replace(tls.certificate_facts(version, chain, store, time.time()), chain=tuple(chain))
    transcript.add(
        f"TLS handshake done: {version}, {len(chain)} certificate(s), {facts.detail or 'no detail'}"
    )
    return facts


async def _upgrade(protocol: ProbeProtocol, limit: float, transcript: Transcript) -> str | None:
    """Send STARTTLS, read 220, do the handshake; None when done, else why not (one short line)."""
    transcript.add("C: STARTTLS")
    try:
        await protocol.upgrade(tls.handshake_context(), limit)
    except SMTPResponseException as exc:
        if 200 <= exc.code <= 599:
            return f"STARTTLS refused: {reply_summary(exc.code, exc.message)}"
        text = str(exc.message).removeprefix("Malformed SMTP response line:").strip()
        return f"malformed STARTTLS reply: {sanitize(text)}"
    except SMTPReadTimeoutError:
        protocol.note_partial()
        return f"no complete STARTTLS reply within {duration(limit)}"
    except SMTPTimeoutError:
        return f"TLS handshake not done within {duration(limit)}"
    except SMTPServerDisconnected:
        return "connection closed during STARTTLS"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {sanitize(exc.reason or str(exc))}"
    except Exception as exc:  # anything else a peer provokes is a fact too, never a crash
        return f"TLS handshake failed: {type(exc).__name__}"
    return None
