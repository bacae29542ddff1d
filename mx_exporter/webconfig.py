"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

The same YAML an operator already writes for node_exporter or blackbox_exporter::

    tls_server_config:
      cert_file: server.pem          # relative paths are relative to this file's folder, as in the toolkit
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.pem
      min_version: TLS12             # TLS10 | TLS11 | TLS12 (default) | TLS13; max_version likewise (TLS13)
    http_server_config:
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')

Strict: unknown keys are rejected naming the key and the file; certificate files are checked at load, so a
typo fails at start-up, not on the first scrape. Python's ``ssl`` cannot accept a client certificate without
verifying it, so ``RequireAnyClientCert`` is refused with an explanation, and ``RequestClientCert`` (which
lets every client in, with or without a certificate) is served without asking for one: the same clients get
in. Checking each request against the loaded users and headers is webauth.py's.
"""

from __future__ import annotations

import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, ValidationError

from mx_exporter.webauth import RequestGuard

MAX_FILE_BYTES = 1024 * 1024  # config, certificates and keys are small; refuse to slurp anything huge
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$")

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
VERIFYING = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# Toolkit options this exporter does not implement: refused by name rather than silently ignored.
UNSUPPORTED = {
    "tls_server_config": (
        "cert",
        "key",
        "client_ca",
        "cipher_suites",
        "curve_preferences",
        "client_allowed_sans",
    ),
    "": ("rate_limit",),
}
# The toolkit's list of configurable response headers and, where it is closed, their allowed values.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuthType = Literal[
    "",
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # the toolkit's old name for RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]


class WebConfigError(ValueError):
    """A web config problem, phrased for the operator: names the file and the key or certificate file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _TlsFile(_Strict):
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    client_auth_type: ClientAuthType = ""
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    prefer_server_cipher_suites: bool = True  # accepted for compatibility; Go itself ignores it for TLS 1.3


class _HttpFile(_Strict):
    http2: bool = True  # accepted for compatibility; aiohttp serves HTTP/1.1
    headers: dict[str, str] = {}


class _WebFile(_Strict):
    tls_server_config: _TlsFile = _TlsFile()
    http_server_config: _HttpFile = _HttpFile()
    basic_auth_users: dict[str, str] = {}


@dataclass(frozen=True)
class TlsConfig:
    """Validated TLS settings with absolute file paths."""

    cert_file: str
    key_file: str
    client_ca_file: str | None
    client_auth_type: str
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion


def _read(config: str, key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise WebConfigError(
            f"web config {config}: cannot read {key} {path}: {err.strerror or err}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise WebConfigError(f"web config {config}: {key} {path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _check_certs(config: str, key: str, path: str) -> None:
    data = _read(config, key, path)  # outside the try: WebConfigError is a ValueError too
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise WebConfigError(f"web config {config}: {key} {path} holds no PEM certificate") from None


def _check_key(config: str, path: str) -> None:
    key = "tls_server_config.key_file"
    data = _read(config, key, path)
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise WebConfigError(f"web config {config}: {key} {path} is encrypted (not supported)") from None
    except ValueError:
        raise WebConfigError(f"web config {config}: {key} {path} holds no PEM private key") from None


def _errors(config: str, err: ValidationError) -> WebConfigError:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{where}'")
        else:
            lines.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return WebConfigError(f"web config {config}: " + "; ".join(lines))


def _refuse_unsupported(config: str, raw: Mapping[str, Any]) -> None:
    for section, keys in UNSUPPORTED.items():
        body = raw.get(section) if section else raw
        if not isinstance(body, Mapping):
            continue
        for key in keys:
            if key in body:
                name = f"{section}.{key}" if section else key
                raise WebConfigError(
                    f"web config {config}: {name} is an exporter-toolkit option mx-exporter does not support"
                )


def _tls(config: str, parsed: _TlsFile) -> TlsConfig | None:
    """The toolkit's rules: any TLS key turns TLS on, and then cert_file and key_file are required."""
    if not (parsed.cert_file or parsed.key_file or parsed.client_ca_file or parsed.client_auth_type):
        return None
    where = f"web config {config}: tls_server_config"
    for key in ("cert_file", "key_file"):
        if not getattr(parsed, key):
            raise WebConfigError(
                f"{where}.{key} is missing (TLS is enabled by the other tls_server_config keys)"
            )
    auth = parsed.client_auth_type or "NoClientCert"
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        raise WebConfigError(
            f"{where}.client_auth_type {auth} is not supported: Python's ssl cannot accept a client "
            "certificate without verifying it; use RequireAndVerifyClientCert with client_ca_file"
        )
    if parsed.client_ca_file and auth == "NoClientCert":
        raise WebConfigError(f"{where}.client_ca_file is set but client_auth_type is NoClientCert")
    if auth in VERIFYING and not parsed.client_ca_file:
        raise WebConfigError(f"{where}.client_auth_type {auth} needs client_ca_file")
    if TLS_VERSIONS[parsed.min_version] > TLS_VERSIONS[parsed.max_version]:
        raise WebConfigError(
            f"{where}.min_version {parsed.min_version} is above max_version {parsed.max_version}"
        )
    folder = Path(config).parent

    def absolute(p: str) -> str:
        return str(folder / p) if p else ""

    return TlsConfig(
        cert_file=absolute(parsed.cert_file),
        key_file=absolute(parsed.key_file),
        client_ca_file=absolute(parsed.client_ca_file) or None,
        client_auth_type=auth,
        min_version=TLS_VERSIONS[parsed.min_version],
        max_version=TLS_VERSIONS[parsed.max_version],
    )


def _users(config: str, users: Mapping[str, str]) -> dict[str, bytes]:
    for user, hashed in users.items():
        if ":" in user:
            raise WebConfigError(f"web config {config}: basic_auth_users: user name {user!r} contains ':'")
        if not BCRYPT_HASH.match(hashed):
            raise WebConfigError(
                f"web config {config}: basic_auth_users.{user} is not a bcrypt hash "
                "($2a$, $2b$ or $2y$, cost 4-31)"
            )
    return {user: hashed.encode() for user, hashed in users.items()}


def _headers(config: str, headers: Mapping[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if name not in HEADERS:
            raise WebConfigError(
                f"web config {config}: http_server_config.headers: {name} cannot be configured"
            )
        allowed = HEADERS[name]
        if allowed and value not in allowed:
            raise WebConfigError(
                f"web config {config}: http_server_config.headers.{name} must be one of {', '.join(allowed)}"
            )
    return dict(headers)


class WebConfig(RequestGuard):
    """A loaded web config: builds the server's SSL context; checks requests as its ``RequestGuard``."""

    def __init__(
        self, path: str, tls: TlsConfig | None, users: Mapping[str, bytes], headers: Mapping[str, str]
    ):
        super().__init__(users, headers)
        self.path = path
        self.tls = tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh server context from the files on disk (None without TLS); re-reads the files each call."""
        tls = self.tls
        if tls is None:
            return None
        prefix = "tls_server_config"
        _check_certs(self.path, f"{prefix}.cert_file", tls.cert_file)
        _check_key(self.path, tls.key_file)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated, but the operator asked for them
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version, ctx.maximum_version = tls.min_version, tls.max_version
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as err:
            raise WebConfigError(
                f"web config {self.path}: {prefix}.cert_file {tls.cert_file} and key_file {tls.key_file} "
                f"do not match ({err.reason or err})"
            ) from None
        if tls.client_ca_file:
            _check_certs(self.path, f"{prefix}.client_ca_file", tls.client_ca_file)
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        if tls.client_auth_type == "VerifyClientCertIfGiven":
            ctx.verify_mode = ssl.CERT_OPTIONAL
        elif tls.client_auth_type == "RequireAndVerifyClientCert":
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def load_web_config(path: str) -> WebConfig:
    """Read and check a web config file and its certificates; ``WebConfigError`` names what is wrong."""
    text = _read(path, "file", path).decode("utf-8", errors="replace")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise WebConfigError(f"web config {path}: invalid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WebConfigError(
            f"web config {path}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    raw = {k: ({} if v is None else v) for k, v in raw.items()}  # an empty section means its defaults
    _refuse_unsupported(path, raw)
    try:
        parsed = _WebFile.model_validate(raw)
    except ValidationError as err:
        raise _errors(path, err) from None
    cfg = WebConfig(
        path,
        _tls(path, parsed.tls_server_config),
        _users(path, parsed.basic_auth_users),
        _headers(path, parsed.http_server_config.headers),
    )
    cfg.ssl_context()  # read and check every certificate file now, not on the first connection
    return cfg
