"""The one settings model: YAML file, then ``MX_EXPORTER_*`` environment, then command-line flags.

Precedence (highest first): CLI flag > environment > settings file > default. Every key is strict: an unknown or
mistyped key is rejected with a message that names the key and where it came from (the file's path, the
environment variable or the flag), so ``--config.check`` can tell an operator exactly what to fix.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mx_exporter.model import Family
from mx_exporter.names import (
    check_ehlo_name,
    normalize_domain,
    parse_canary,
    parse_nameserver,
    split_listen_address,
)

ENV_PREFIX = "MX_EXPORTER_"
DEFAULT_PORT = 9706

Seconds = Annotated[float, Field(gt=0, le=3600)]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A settings problem, already phrased for the operator (names the key and its source)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _readable(value: str | None) -> str | None:
    """A CA bundle (or directory) this process can read; None keeps the system store."""
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"{value!r} is not a readable file")
    return value


class ResolverSettings(_Strict):
    nameservers: list[str] = Field(default_factory=list, description="empty: the system resolver")
    timeout: Seconds = 5.0
    max_concurrent_queries: Annotated[int, Field(ge=1, le=10_000)] = 64
    # Queries put on the wire per second, at most (a token bucket); None: unlimited.
    max_queries_per_second: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    # require: the nameservers validate DNSSEC and their AD bit is trusted (needed for DANE); ignore: AD is not
    # read and DANE is not evaluated. Trust AD only from a resolver on this host or over a trusted path.
    dnssec: Literal["ignore", "require"] = "ignore"

    @field_validator("nameservers")
    @classmethod
    def _nameservers_parse(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_nameserver(item)
        return value


class SmtpSettings(_Strict):
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    connect_timeout: Seconds = 5.0
    greeting_timeout: Seconds = 15.0
    ehlo_timeout: Seconds = 10.0
    session_timeout: Seconds = 30.0
    max_concurrent_sessions: Annotated[int, Field(ge=1, le=10_000)] = 32
    address_families: list[Family] = Field(default_factory=lambda: [Family.IPV4, Family.IPV6], min_length=1)
    max_addresses_per_exchange: Annotated[int, Field(ge=1, le=64)] = 5
    starttls: bool = True  # try STARTTLS when advertised, to report TLS and certificate facts
    tls_ca_file: str | None = None  # PEM bundle to verify certificate chains; default: the system store

    _tls_ca_file_readable = field_validator("tls_ca_file")(_readable)


class SmtpOverride(_Strict):
    """Per-domain timeouts; unset keys keep the global value."""

    connect_timeout: Seconds | None = None
    greeting_timeout: Seconds | None = None
    ehlo_timeout: Seconds | None = None
    session_timeout: Seconds | None = None


class ExpectSettings(_Strict):
    """Per-domain expectations, each exported as ``mx_expectation_met{expectation=...}``."""

    min_records: Annotated[int, Field(ge=0)] | None = None
    min_tiers: Annotated[int, Field(ge=0)] | None = None
    exchanges: list[str] | None = None
    starttls: bool | None = None
    null_mx: bool | None = None
    fallback_to_a: bool | None = None
    deliverable: bool | None = None
    primary_up: bool | None = None
    # Intended setups: the primary is meant not to accept, so its outage never pages (only `true` is meaningful).
    nolisting: Literal[True] | None = None
    greylisting: Literal[True] | None = None
    max_greeting_seconds: Seconds | None = None

    @field_validator("exchanges")
    @classmethod
    def _exchange_names(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [normalize_domain(name) for name in value]


class DomainSettings(_Strict):
    name: str
    smtp: SmtpOverride = Field(default_factory=SmtpOverride)
    expect: ExpectSettings = Field(default_factory=ExpectSettings)
    dane: bool | None = None  # None: the global dane.enabled
    mta_sts: bool | None = None  # None: the global mta_sts.enabled (TLS-RPT follows it)

    @field_validator("name")
    @classmethod
    def _name_valid(cls, value: str) -> str:
        return normalize_domain(value)


class ProbeSettings(_Strict):
    timeout: Seconds = 30.0
    timeout_offset: Annotated[float, Field(ge=0, le=60)] = 0.5
    max_concurrent: Annotated[int, Field(ge=1, le=10_000)] = 10
    reuse_max_age: Annotated[float, Field(ge=0, le=86_400)] = 30.0


class ShardSettings(_Strict):
    index: Annotated[int, Field(ge=0)] = 0
    count: Annotated[int, Field(ge=1, le=10_000)] = 1

    @model_validator(mode="after")
    def _index_below_count(self) -> ShardSettings:
        if self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        return self


class EgressSettings(_Strict):
    # host:port targets the operator trusts (their own MX, a big provider's MX), probed first in every refresh.
    canaries: Annotated[list[str], Field(max_length=16)] = Field(default_factory=list)

    @field_validator("canaries")
    @classmethod
    def _canaries_parse(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_canary(item)
        return value


class DaneSettings(_Strict):
    # DANE TLSA checks (RFC 7672); evaluated only with resolver.dnssec: require.
    enabled: bool = True


class MtaStsSettings(_Strict):
    # MTA-STS (RFC 8461) record and policy, and the TLS-RPT record (RFC 8460).
    enabled: bool = True
    ca_file: str | None = None  # PEM bundle to verify policy hosts' certificates; default: the system store
    timeout: Seconds = 10.0  # one policy fetch, connect to last byte
    max_policy_bytes: Annotated[int, Field(ge=512, le=1024 * 1024)] = 64 * 1024
    # A cached policy is fetched again after its max_age, or after this many seconds, whichever comes first.
    refetch_seconds: Annotated[float, Field(ge=60, le=31_557_600)] = 86_400.0

    _ca_file_readable = field_validator("ca_file")(_readable)


class WebSettings(_Strict):
    config_file: str | None = None


FALLBACK_EHLO_NAME = "mx-exporter.invalid"


def host_fqdn() -> str:
    return socket.getfqdn()


def default_ehlo_name() -> str:
    """This host's FQDN; a host without one (a container, a laptop) gets the reserved, honest
    ``mx-exporter.invalid`` rather than a name that is not its own. Set ``ehlo_name`` in production."""
    try:
        return check_ehlo_name(host_fqdn())
    except ValueError:
        return FALLBACK_EHLO_NAME


class Settings(BaseSettings):
    """Everything the exporter can be told. Field names are the YAML keys (README "Settings")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    refresh_interval: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    ehlo_name: str = Field(default_factory=lambda: default_ehlo_name(), validate_default=True)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    resolver: ResolverSettings = Field(default_factory=ResolverSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    allow_networks: list[Network] = Field(default_factory=list)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    shard: ShardSettings = Field(default_factory=ShardSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    egress: EgressSettings = Field(default_factory=EgressSettings)
    dane: DaneSettings = Field(default_factory=DaneSettings)
    mta_sts: MtaStsSettings = Field(default_factory=MtaStsSettings)
    domains: list[DomainSettings] = Field(default_factory=list)

    @field_validator("ehlo_name")
    @classmethod
    def _ehlo_fqdn(cls, value: str) -> str:
        return check_ehlo_name(value)

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _networks_parse(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        networks = []
        for item in value:
            try:
                networks.append(ipaddress.ip_network(str(item), strict=True))
            except ValueError as err:
                raise ValueError(f"{item!r} is not a network in CIDR form: {err}") from None
        return networks

    @field_validator("listen_address")
    @classmethod
    def _listen_parse(cls, value: str) -> str:
        split_listen_address(value)
        return value

    @field_validator("domains", mode="before")
    @classmethod
    def _domain_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("domains")
    @classmethod
    def _domains_unique(cls, value: list[DomainSettings]) -> list[DomainSettings]:
        seen: set[str] = set()
        for domain in value:
            if domain.name in seen:
                raise ValueError(f"domain {domain.name} is listed twice")
            seen.add(domain.name)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


_file_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_file_data", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed settings file (lowest precedence after defaults)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_file_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


def read_settings_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read settings file: {err.strerror or err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the settings file must be a mapping of keys, not {type(data).__name__}")
    return data


def _has_path(data: Any, loc: tuple[str | int, ...]) -> bool:
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if in_dict or in_list:
            data = data[part]
        else:
            return False
    return True


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    bad = []
    for key in environ:
        if key.startswith(ENV_PREFIX):
            top = key[len(ENV_PREFIX) :].split("__", 1)[0]
            if top not in known:
                bad.append(key)
    return sorted(bad)


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p) for p in loc).upper()


def _describe_error(
    err: dict[str, Any], path: str | None, file_data: dict[str, Any], overrides: dict[str, Any]
) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    forbidden = err["type"] == "extra_forbidden"
    reason = "unknown key" if forbidden else str(err["msg"]).removeprefix("Value error, ")
    if loc and _has_path(overrides, loc):
        origin = f"flag --{key}"
    elif _env_name(loc) in os.environ or (loc and _env_name(loc[:1]) in os.environ):
        origin = f"environment {_env_name(loc) if _env_name(loc) in os.environ else _env_name(loc[:1])}"
    elif path is not None and (not loc or _has_path(file_data, loc[:1])):
        origin = path
    else:
        origin = "default"
    return f"{origin}: {key}: {reason}"


def _domain_key(item: Any) -> Any:
    """A listed domain's normalized name, for de-duplicating --domain flags against the file's list."""
    name = item.get("name") if isinstance(item, dict) else item
    try:
        return normalize_domain(str(name))
    except ValueError:
        return name


def load_settings(
    path: str | None = None, overrides: dict[str, Any] | None = None, extra_domains: Sequence[str] = ()
) -> Settings:
    """Build Settings from file, environment and overrides; raise ConfigError with one line per problem.

    ``extra_domains`` (from ``--domain`` flags) are added to the file's domain list rather than replacing it.
    """
    overrides = overrides or {}
    bad_env = _unknown_env_keys(dict(os.environ))
    if bad_env:
        raise ConfigError(f"environment {bad_env[0]}: unknown key")
    data = read_settings_file(path)
    if extra_domains:
        listed = data.get("domains") or []
        if not isinstance(listed, list):
            raise ConfigError(f"{path}: domains: must be a list")
        present = {_domain_key(item) for item in listed}
        data["domains"] = listed + [d for d in dict.fromkeys(extra_domains) if _domain_key(d) not in present]
    token = _file_data.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        lines = [_describe_error(dict(e), path, data, overrides) for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None
    finally:
        _file_data.reset(token)


def leaf_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every settable dotted key (for CLI flags and docs); lists and domains count as leaves."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Strict) and name != "domains":
            keys.extend(leaf_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


@dataclass(frozen=True)
class SettingsLoader:
    """How this process gets its settings, kept so a reload reads them the same way."""

    path: str | None = None
    overrides: dict[str, Any] = dataclass_field(default_factory=dict)
    extra_domains: tuple[str, ...] = ()

    def load(self) -> Settings:
        return load_settings(self.path, self.overrides, self.extra_domains)
