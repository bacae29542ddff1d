"""Start the real ``mx-exporter`` console script against the lab and read its /metrics like Prometheus does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.lab import plan

STARTUP_TIMEOUT = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def exporter_command() -> list[str]:
    """The installed console script when present (what users run), else the module."""
    script = Path(sys.executable).parent / "mx-exporter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mx_exporter"]


def lab_config(nameserver: str, smtp_port: int, domains: list[Any], **extra: Any) -> dict[str, Any]:
    t = plan.LAB_TIMEOUTS
    config: dict[str, Any] = {
        "listen_address": f"127.0.0.1:{free_port()}",
        "refresh_interval": 2,
        "ehlo_name": plan.EHLO_NAME,
        "resolver": {"nameservers": [nameserver], "timeout": t["dns_timeout"]},
        "smtp": {
            "port": smtp_port,
            "connect_timeout": t["connect_timeout"],
            "greeting_timeout": t["greeting_timeout"],
            "ehlo_timeout": t["ehlo_timeout"],
            "session_timeout": t["session_timeout"],
        },
        "allow_networks": plan.ALLOW_NETWORKS,
        "domains": domains,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


Samples = list[Sample]


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, log: Callable[[], str], interval: float = 0.2
) -> None:
    """Poll ``check`` until it holds; past ``timeout`` fail with what was awaited and the process log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log()}")


class Exporter:
    """One running exporter process."""

    def __init__(self, config: dict[str, Any], path: Path, args: list[str], env: dict[str, str]) -> None:
        self.config = config
        self.path = path
        host, _, port = config["listen_address"].rpartition(":")
        self.url = f"http://{host}:{port}"
        self.log_path = path.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*exporter_command(), "--config.file", str(path), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def get(
        self, path: str, timeout: float = 5.0, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_until(lambda: self._status("/-/ready") == 200, timeout, "ready")

    def _status(self, path: str) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.get(path, timeout=2.0)[0]
        except OSError:
            return None

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        wait_for(check, timeout, what, self.log)

    def scrape(self, path: str = "/metrics") -> Samples:
        status, body, _ = self.get(path)
        assert status == 200, body
        return [s for fam in text_string_to_metric_families(body) for s in fam.samples]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Stop the process; return how long it took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return time.monotonic() - started


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample with this name whose labels include ``labels``; fails when absent or ambiguous."""
    found = [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples: {found[:5]}"
    return float(found[0].value)


def series(samples: Samples, name: str, **labels: str) -> Samples:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    """Factory: start_exporter(config, *args, env=None) -> a ready-to-scrape Exporter; all stopped at teardown."""
    started: list[Exporter] = []

    def start(
        config: dict[str, Any], *args: str, env: dict[str, str] | None = None, wait_ready: bool = True
    ) -> Exporter:
        path = tmp_path / f"exporter-{len(started)}.yml"
        path.write_text(yaml.safe_dump(config))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MX_EXPORTER_")}
        full_env.update(env or {})
        exporter = Exporter(config, path, list(args), full_env)
        started.append(exporter)
        if wait_ready:
            exporter.wait_ready()
        return exporter

    yield start
    for exporter in started:
        exporter.stop()
