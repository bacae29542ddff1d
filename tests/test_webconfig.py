"""--web.config.file with real parts: trustme certificates on disk, an aiohttp server on 127.0.0.1 built from
``WebConfig.ssl_context()`` and ``auth_middleware``, and an aiohttp client speaking (or refusing) TLS.

Bad files map to exact messages, like the toolkit's testdata/*.bad.yml.
"""

from __future__ import annotations

import base64
import ssl
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from mx_exporter import webauth
from mx_exporter.webauth import auth_middleware
from mx_exporter.webconfig import WebConfig, WebConfigError, load_web_config

PASSWORD = "s3cret pässword"
TIMEOUT = aiohttp.ClientTimeout(total=5)
# How a refused TLS handshake looks to the client; never a timeout (ServerTimeoutError is neither of these).
REFUSED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@dataclass
class Pki:
    folder: Path
    ca: trustme.CA
    client: trustme.LeafCert  # issued by ca
    stranger: trustme.LeafCert  # issued by another CA

    def client_context(self, cert: trustme.LeafCert | None = None, **kw: Any) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.folder / "ca.pem"))
        for name, value in kw.items():
            setattr(ctx, name, value)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(folder / "server.pem"), append=i > 0)
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    other_ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(folder / "other.key"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    (folder / "encrypted.key").write_bytes(encrypted)
    (folder / "garbage.pem").write_text("not a certificate\n")
    return Pki(folder, ca, ca.issue_cert("scraper@lab.test"), other_ca.issue_cert("scraper@lab.test"))


def hash_of(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write(folder: Path, text: str, name: str = "web.yml") -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="nothing here\n")


@asynccontextmanager
async def serve(cfg: WebConfig) -> AsyncIterator[int]:
    """The real wiring: middleware on the app, the config's SSL context on the listening socket."""
    app = web.Application(middlewares=[auth_middleware(cfg)])
    app.router.add_get("/", hello)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cfg.ssl_context())
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def get(
    url: str, ssl_ctx: ssl.SSLContext | bool = True, **headers: str
) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, ssl=ssl_ctx, headers=headers) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


def tls_config(pki: Pki, *tls_lines: str, tail: str = "") -> str:
    """A config using the pki folder's server certificate, with extra tls_server_config lines and a tail."""
    lines = ["tls_server_config:", "  cert_file: server.pem", "  key_file: server.key"]
    return write(pki.folder, "\n".join([*lines, *(f"  {x}" for x in tls_lines), tail, ""]), name="tls.yml")


async def test_basic_auth_over_tls(pki: Pki) -> None:
    users = f"basic_auth_users:\n  prometheus: '{hash_of(PASSWORD)}'\n  other: '{hash_of('x')}'"
    cfg = load_web_config(tls_config(pki, tail=users))
    ctx = pki.client_context()
    async with serve(cfg) as port:
        url = f"https://127.0.0.1:{port}/"
        status, body, headers = await get(url, ctx)
        assert (status, body) == (401, "Unauthorized\n")
        assert headers["WWW-Authenticate"] == 'Basic realm="mx-exporter"'
        for user, password in (("prometheus", "wrong"), ("nobody", PASSWORD), ("other", PASSWORD)):
            assert (await get(url, ctx, Authorization=basic(user, password)))[0] == 401
        assert (await get(url, ctx, Authorization="Bearer abc"))[0] == 401
        assert (await get(url, ctx, Authorization=basic("prometheus", PASSWORD)))[:2] == (200, "hello\n")
        assert (await get(url, ctx, Authorization=basic("prometheus", PASSWORD)))[:2] == (
            200,
            "hello\n",
        )  # cached
        missing_status, _, _ = await get(url + "missing", ctx)
        assert missing_status == 401  # every path is protected, unknown ones too
        assert (await get(url + "missing", ctx, Authorization=basic("prometheus", PASSWORD)))[0] == 404


async def test_plain_http_refused_when_tls_configured(pki: Pki) -> None:
    cfg = load_web_config(tls_config(pki))
    async with serve(cfg) as port:
        with pytest.raises(REFUSED):
            await get(f"http://127.0.0.1:{port}/")
        assert (await get(f"https://127.0.0.1:{port}/", pki.client_context()))[:2] == (200, "hello\n")
        with pytest.raises(
            aiohttp.ClientConnectorCertificateError
        ):  # the client checks our CA, not a public one
            await get(f"https://127.0.0.1:{port}/", ssl.create_default_context())


async def test_basic_auth_without_tls(tmp_path: Path) -> None:
    cfg = load_web_config(write(tmp_path, f"basic_auth_users:\n  p: '{hash_of(PASSWORD)}'\n"))
    assert cfg.ssl_context() is None
    async with serve(cfg) as port:
        assert (await get(f"http://127.0.0.1:{port}/"))[0] == 401
        assert (await get(f"http://127.0.0.1:{port}/", Authorization=basic("p", PASSWORD)))[0] == 200


async def test_mutual_tls_required(pki: Pki) -> None:
    cfg = load_web_config(
        tls_config(pki, "client_auth_type: RequireAndVerifyClientCert", "client_ca_file: ca.pem")
    )
    async with serve(cfg) as port:
        url = f"https://127.0.0.1:{port}/"
        with pytest.raises(REFUSED):
            await get(url, pki.client_context())
        with pytest.raises(REFUSED):
            await get(url, pki.client_context(pki.stranger))
        assert (await get(url, pki.client_context(pki.client)))[:2] == (200, "hello\n")


async def test_client_cert_verified_if_given(pki: Pki) -> None:
    cfg = load_web_config(
        tls_config(pki, "client_auth_type: VerifyClientCertIfGiven", "client_ca_file: ca.pem")
    )
    async with serve(cfg) as port:
        url = f"https://127.0.0.1:{port}/"
        assert (await get(url, pki.client_context()))[0] == 200
        assert (await get(url, pki.client_context(pki.client)))[0] == 200
        with pytest.raises(REFUSED):
            await get(url, pki.client_context(pki.stranger))


async def test_request_client_cert_lets_every_client_in(pki: Pki) -> None:
    cfg = load_web_config(tls_config(pki, "client_auth_type: RequestClientCert"))
    async with serve(cfg) as port:
        for cert in (None, pki.client, pki.stranger):
            assert (await get(f"https://127.0.0.1:{port}/", pki.client_context(cert)))[0] == 200


async def test_min_version(pki: Pki) -> None:
    cfg = load_web_config(tls_config(pki, "min_version: TLS13"))
    ctx = cfg.ssl_context()
    assert ctx is not None and ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    async with serve(cfg) as port:
        url = f"https://127.0.0.1:{port}/"
        with pytest.raises(REFUSED):
            await get(url, pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
        assert (await get(url, pki.client_context()))[0] == 200
    default = load_web_config(tls_config(pki)).ssl_context()
    assert default is not None
    assert (default.minimum_version, default.maximum_version) == (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    )


async def test_configured_headers_on_every_answer(tmp_path: Path) -> None:
    text = f"""
    http_server_config:
      http2: false
      headers:
        X-Frame-Options: deny
        Content-Security-Policy: "default-src 'none'"
    basic_auth_users:
      p: '{hash_of(PASSWORD)}'
    """
    cfg = load_web_config(write(tmp_path, text))
    async with serve(cfg) as port:
        for path, auth, status in (
            ("/", "", 401),
            ("/", basic("p", PASSWORD), 200),
            ("/missing", basic("p", PASSWORD), 404),
        ):
            got, _, headers = await get(
                f"http://127.0.0.1:{port}{path}", **({"Authorization": auth} if auth else {})
            )
            assert got == status
            assert headers["X-Frame-Options"] == "deny"
            assert headers["Content-Security-Policy"] == "default-src 'none'"


def test_no_users_means_no_auth(tmp_path: Path) -> None:
    for text in ("", "basic_auth_users:\n", "tls_server_config:\n"):
        cfg = load_web_config(write(tmp_path, text))
        assert cfg.users == {} and cfg.tls is None and cfg.ssl_context() is None
        assert cfg.check_basic_auth(None)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"p:\xff\xfe").decode(),  # not UTF-8
        basic("p", PASSWORD) + "A" * 5000,  # oversized
        basic("P", PASSWORD),  # user names are case-sensitive
        basic("p", PASSWORD + " "),
    ],
)
def test_bad_credentials(tmp_path: Path, header: str | None) -> None:
    cfg = load_web_config(write(tmp_path, f"basic_auth_users:\n  p: '{hash_of(PASSWORD)}'\n"))
    assert not cfg.check_basic_auth(header)
    assert cfg.check_basic_auth(basic("p", PASSWORD))


def test_long_password_uses_first_72_bytes_like_bcrypt(tmp_path: Path) -> None:
    long = "x" * 80
    cfg = load_web_config(write(tmp_path, f"basic_auth_users:\n  p: '{hash_of(long[:72])}'\n"))
    assert cfg.check_basic_auth(basic("p", long))
    assert not cfg.check_basic_auth(basic("p", "x" * 71))


def test_successful_checks_are_cached_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = {f"user{i}": f"pw{i}" for i in range(webauth.CACHE_SIZE + 6)}
    text = "basic_auth_users:\n" + "".join(f"  {u}: '{hash_of(p)}'\n" for u, p in users.items())
    cfg = load_web_config(write(tmp_path, text))
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webauth.bcrypt, "checkpw", counting)
    assert not cfg.cached(basic("user0", "pw0"))
    assert cfg.check_basic_auth(basic("user0", "pw0")) and len(calls) == 1
    assert cfg.cached(basic("user0", "pw0"))
    assert cfg.check_basic_auth(basic("user0", "pw0")) and len(calls) == 1  # from the cache
    assert not cfg.check_basic_auth(basic("user0", "bad")) and len(calls) == 2  # failures are never cached
    assert not cfg.check_basic_auth(basic("user0", "bad")) and len(calls) == 3
    assert not cfg.check_basic_auth(basic("ghost", "pw0")) and calls[-1] == webauth.DUMMY_HASH  # same cost
    for user, password in users.items():
        assert cfg.check_basic_auth(basic(user, password))
    assert len(cfg._cache) == webauth.CACHE_SIZE
    assert not cfg.cached(basic("user0", "pw0"))  # the oldest entry went first
    assert cfg.cached(basic(f"user{len(users) - 1}", f"pw{len(users) - 1}"))


def test_relative_paths_follow_the_config_file(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the config's folder
    mtls = ("client_auth_type: RequireAndVerifyClientCert", "client_ca_file: ca.pem")
    cfg = load_web_config(tls_config(pki, *mtls))
    assert cfg.tls is not None
    assert cfg.tls.cert_file == str(pki.folder / "server.pem")
    assert cfg.tls.client_ca_file == str(pki.folder / "ca.pem")
    absolute = tls_config(
        pki, "client_auth_type: VerifyClientCertIfGiven", f"client_ca_file: {tmp_path}/ca.pem"
    )
    (tmp_path / "ca.pem").write_bytes((pki.folder / "ca.pem").read_bytes())
    tls = load_web_config(absolute).tls
    assert tls is not None and tls.client_ca_file == str(tmp_path / "ca.pem")


WEBCONFIG_DATA = Path(__file__).parent / "testdata" / "webconfig"
# Each tests/testdata/webconfig/<name>.bad.yml and its exact message; {file} is the file's path, {dir} its folder
# (the files name the fixture's certificates by relative paths, which follow the config file).
INVALID = {
    "unknown_top": "web config {file}: unknown key 'colour'",
    "unknown_nested": "web config {file}: unknown key 'tls_server_config.crt_file'",
    "unsupported": "web config {file}: tls_server_config.cipher_suites is an exporter-toolkit option mx-exporter does not support",
    "rate_limit": "web config {file}: rate_limit is an exporter-toolkit option mx-exporter does not support",
    "auth_type": "web config {file}: tls_server_config.client_auth_type: Input should be '', 'NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'RequireClientCert', 'VerifyClientCertIfGiven' or 'RequireAndVerifyClientCert' (got 'Sometimes')",
    "version": "web config {file}: tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13' (got 'TLS14')",
    "min_above_max": "web config {file}: tls_server_config.min_version TLS13 is above max_version TLS12",
    "types": "web config {file}: tls_server_config.cert_file: Input should be a valid string (got 42); basic_auth_users: Input should be a valid dictionary (got ['a'])",
    "no_key": "web config {file}: tls_server_config.key_file is missing (TLS is enabled by the other tls_server_config keys)",
    "only_auth_type": "web config {file}: tls_server_config.cert_file is missing (TLS is enabled by the other tls_server_config keys)",
    "cert_missing": "web config {file}: cannot read tls_server_config.cert_file {dir}/nope.pem: No such file or directory",
    "cert_garbage": "web config {file}: tls_server_config.cert_file {dir}/garbage.pem holds no PEM certificate",
    "key_garbage": "web config {file}: tls_server_config.key_file {dir}/garbage.pem holds no PEM private key",
    "key_encrypted": "web config {file}: tls_server_config.key_file {dir}/encrypted.key is encrypted (not supported)",
    "key_mismatch": "web config {file}: tls_server_config.cert_file {dir}/server.pem and key_file {dir}/other.key do not match (KEY_VALUES_MISMATCH)",
    "ca_garbage": "web config {file}: tls_server_config.client_ca_file {dir}/garbage.pem holds no PEM certificate",
    "ca_without_policy": "web config {file}: tls_server_config.client_ca_file is set but client_auth_type is NoClientCert",
    "verify_without_ca": "web config {file}: tls_server_config.client_auth_type RequireAndVerifyClientCert needs client_ca_file",
    "require_any": "web config {file}: tls_server_config.client_auth_type RequireAnyClientCert is not supported: Python's ssl cannot accept a client certificate without verifying it; use RequireAndVerifyClientCert with client_ca_file",
    "bad_hash": "web config {file}: basic_auth_users.alice is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4-31)",
    "colon_user": "web config {file}: basic_auth_users: user name 'a:b' contains ':'",
    "header_name": "web config {file}: http_server_config.headers: Server cannot be configured",
    "header_value": "web config {file}: http_server_config.headers.X-Frame-Options must be one of deny, sameorigin",
    "not_mapping": "web config {file}: expected a mapping at the top level, got list",
    "yaml": "web config {file}: invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_files(pki: Pki, name: str) -> None:
    path = write(pki.folder, (WEBCONFIG_DATA / f"{name}.bad.yml").read_text(), name=f"{name}.bad.yml")
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    assert str(err.value) == INVALID[name].format(file=path, dir=pki.folder)


def test_every_invalid_file_is_in_the_table() -> None:
    assert {p.name.removesuffix(".bad.yml") for p in WEBCONFIG_DATA.glob("*.bad.yml")} == set(INVALID)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yml")
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    assert str(err.value) == f"web config {path}: cannot read file {path}: No such file or directory"
    assert isinstance(err.value, ValueError)  # the CLI's config-error path catches ValueError
