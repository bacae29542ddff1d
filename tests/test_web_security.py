"""--web.config.file on the real process: HTTPS only, basic auth on every endpoint, mutual TLS when asked."""

from __future__ import annotations

import base64
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme
import yaml

from tests.lab.exporter import Exporter, exporter_command, lab_config

Start = Callable[..., Exporter]
PASSWORD = "correct horse"
ENDPOINTS = ("/", "/metrics", "/config", "/-/healthy", "/-/ready", "/probe?target=healthy.lab.test")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus.example.net")
    server.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    return {"folder": folder, "ca": ca, "client": client}


def web_config(pki: dict[str, Any], name: str, **tls: str) -> Path:
    folder: Path = pki["folder"]
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = {
        "tls_server_config": {
            "cert_file": str(folder / "server.crt"),
            "key_file": str(folder / "server.key"),
            **tls,
        },
        "basic_auth_users": {"prometheus": hashed},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def client_context(pki: dict[str, Any], with_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)
    if with_cert:
        pki["client"].configure_cert(ctx)
    return ctx


def fetch(url: str, ctx: ssl.SSLContext | None, user: str | None = None, password: str = PASSWORD) -> int:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10, context=ctx
        ) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


def start_secure(start_exporter: Start, config: dict[str, Any], path: Path, ctx: ssl.SSLContext) -> str:
    exporter = start_exporter(config, "--web.config.file", str(path), wait_ready=False)
    url = exporter.url.replace("http://", "https://")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert exporter.proc.poll() is None, exporter.log()
        try:
            if fetch(url + "/-/ready", ctx, "prometheus") == 200:
                return url
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.2)
    raise AssertionError("secured exporter never became ready\n" + exporter.log())


def test_tls_and_basic_auth_on_every_endpoint(
    nsd_server: Any, smtp_lab: Any, start_exporter: Start, pki: dict[str, Any]
) -> None:
    config = lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"])
    ctx = client_context(pki)
    url = start_secure(start_exporter, config, web_config(pki, "web.yml"), ctx)
    for endpoint in ENDPOINTS:
        assert fetch(url + endpoint, ctx) == 401, endpoint
        assert fetch(url + endpoint, ctx, "prometheus", "wrong") == 401, endpoint
        assert fetch(url + endpoint, ctx, "nobody") == 401, endpoint
        assert fetch(url + endpoint, ctx, "prometheus") == 200, endpoint
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(url.replace("https://", "http://") + "/metrics", None, "prometheus")


def test_mutual_tls_requires_a_client_certificate(
    nsd_server: Any, smtp_lab: Any, start_exporter: Start, pki: dict[str, Any]
) -> None:
    config = lab_config(nsd_server.nameserver, smtp_lab.port, ["healthy.lab.test"])
    path = web_config(
        pki,
        "mtls.yml",
        client_ca_file=str(pki["folder"] / "ca.crt"),
        client_auth_type="RequireAndVerifyClientCert",
    )
    with_cert = client_context(pki, with_cert=True)
    url = start_secure(start_exporter, config, path, with_cert)
    assert fetch(url + "/metrics", with_cert, "prometheus") == 200
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        fetch(url + "/metrics", client_context(pki), "prometheus")


def test_bad_web_config_fails_start_and_config_check(tmp_path: Path) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("basic_auth_users:\n  prometheus: not-a-hash\ntls_server_config:\n  cert_fil: x\n")
    settings = tmp_path / "s.yml"
    settings.write_text(yaml.safe_dump({"ehlo_name": "probe.example.net", "listen_address": "127.0.0.1:0"}))
    for extra in (["--config.check"], []):
        done = subprocess.run(
            [*exporter_command(), "--config.file", str(settings), "--web.config.file", str(bad), *extra],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1, done.stderr
        assert str(bad) in done.stderr and "cert_fil" in done.stderr
        assert "Traceback" not in done.stderr
