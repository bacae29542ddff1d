"""Which event loop runs the exporter: uvloop when it is installed, else asyncio's own.

The exporter is one process on one event loop; uvloop (libuv, in C) makes each socket operation, timer and
callback cheaper, which is most of an SMTP session's cost. It is optional (the ``fast`` extra), so a plain
install keeps working with the standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """The loop run_event_loop will use: "uvloop" or "asyncio"."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
