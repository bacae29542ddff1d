"""Fast SMTP peers for the benchmark: one Postfix smtp-sink process per pool address, all on one port.

smtp-sink (C, event driven) was measured faster than a minimal asyncio responder here (850-1000 vs 360-790
sessions/s from one aiosmtplib client) and, being a separate native process, takes little CPU from the exporter
being measured on a small machine.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

from tests.lab.smtp_peers import listening

SMTP_SINK = "/usr/sbin/smtp-sink"
BACKLOG = "256"
START_ATTEMPTS = 5
LISTEN_TIMEOUT = 10.0  # seconds for every sink to accept connections


def _port_free_everywhere(addresses: Sequence[str]) -> int | None:
    """A TCP port free on every address right now (others may still race for it), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((addresses[0], 0))
        port: int = probe.getsockname()[1]
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return None
    return port


class SinkPeers:
    """smtp-sink on every address at one free port; ``port`` is the exporter's smtp.port."""

    def __init__(self, addresses: Sequence[str], hostname: str = "sink.bench.test") -> None:
        self.addresses = tuple(addresses)
        self.hostname = hostname
        self.port = 0
        self._processes: list[subprocess.Popen[bytes]] = []
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    def start(self) -> None:
        """Start every sink; RuntimeError with the sinks' output when they cannot listen."""
        if shutil.which(SMTP_SINK) is None:
            raise RuntimeError(f"{SMTP_SINK} not found: install Debian's postfix package")
        problem = "no port free on every address"
        for _ in range(START_ATTEMPTS):
            port = _port_free_everywhere(self.addresses)
            if port is None:
                continue
            problem = self._start_on(port)
            if not problem:
                self.port = port
                return
            self._terminate_all()
        raise RuntimeError(f"smtp-sink peers did not start: {problem}")

    def _argv(self, address: str, port: int) -> list[str]:
        # As root, smtp-sink insists on dropping privileges after binding (-u); Debian's postfix user exists.
        users = {p.pw_name for p in pwd.getpwall()}
        user = ["-u", "postfix" if "postfix" in users else "nobody"] if os.geteuid() == 0 else []
        return [SMTP_SINK, *user, "-h", self.hostname, f"{address}:{port}", BACKLOG]

    def _start_on(self, port: int) -> str:
        """Start the sinks on the port; an empty string once all listen, else what went wrong."""
        for address in self.addresses:
            self._processes.append(
                subprocess.Popen(
                    self._argv(address, port), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
                )
            )
        deadline = time.monotonic() + LISTEN_TIMEOUT
        for address, process in zip(self.addresses, self._processes, strict=True):
            while not listening(address, port):
                if process.poll() is not None or time.monotonic() > deadline:
                    self._log.seek(0)
                    tail = self._log.read()[-500:].decode("utf-8", "replace")
                    return f"smtp-sink did not listen on {address}:{port}: {tail}"
                time.sleep(0.02)
        return ""

    def _terminate_all(self) -> None:
        processes, self._processes = self._processes, []
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop(self) -> None:
        self._terminate_all()
        self._log.close()

    def __enter__(self) -> SinkPeers:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
