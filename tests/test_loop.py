"""The event loop choice: uvloop when installed (it is a dependency on Linux), asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mx_exporter import loop


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_is_used_when_installed() -> None:
    assert loop.loop_name() == "uvloop"
    assert loop.run_event_loop(_loop_type()).startswith("uvloop")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert loop.loop_name() == "asyncio"
    assert loop.run_event_loop(_loop_type()).startswith("asyncio")
