"""Domain names and addresses as the exporter accepts them: for settings, /probe, `check` and the resolver.

``normalize_domain`` turns what an operator typed into the IDNA ASCII form or refuses it with a one-line reason;
``address_allowed`` is the SSRF guard (only global unicast, unless inside ``allow_networks``);
``looks_like_ip_literal`` spots an MX target that is an address written as a name; ``split_host_port`` is the one
reader of host:port forms (``parse_nameserver``, ``parse_canary``, ``split_listen_address`` build on it);
``normalize_name`` is the one form exchange and host names are compared in; ``check_ehlo_name`` judges the EHLO
name. Imports nothing from the pipeline, so the settings model validates with the same code the stages use
without importing them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.name
import idna

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LDH_LABEL = re.compile(r"[a-z0-9-]{1,63}")


def normalize_domain(text: str) -> str:
    """The IDNA 2008 (UTS #46) ASCII form, lower case, no trailing dot; ValueError with a one-line reason."""
    if not text:
        raise ValueError("domain is empty")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"domain {text!r} contains whitespace")
    if _is_ip(text.strip("[]")):
        raise ValueError(f"{text!r} is an IP address, not a domain name")
    if any(ch in text for ch in "/:@"):
        raise ValueError(f"{text!r} looks like a URL or mail address; give a bare domain name")
    bare = text[:-1] if text.endswith(".") else text
    if not bare:
        raise ValueError("the root '.' is not a mail domain")
    if bare.isascii():
        ascii_name = bare.lower()
    else:
        try:
            ascii_name = idna.encode(bare, uts46=True).decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"domain {text!r} is not a valid internationalized name: {exc}") from None
    if len(ascii_name) > 253:
        raise ValueError(f"domain is {len(ascii_name)} characters long, the limit is 253")
    for label in ascii_name.split("."):
        _check_label(label, text)
    if ascii_name.rsplit(".", 1)[-1].isdigit():
        raise ValueError(
            f"{text!r} looks like an IP address (its last label is all digits), not a domain name"
        )
    return ascii_name


def _is_ip(text: str) -> bool:
    if ":" not in text and not text[-1:].isdigit():
        return False  # neither IPv6 nor a dotted quad: skip the exception path (every domain passes here)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_label(label: str, text: str) -> None:
    if not label:
        raise ValueError(f"domain {text!r} has an empty label ('..' or a leading dot)")
    if len(label) > 63:
        raise ValueError(f"domain {text!r} has a label of {len(label)} characters, the limit is 63")
    if not _LDH_LABEL.fullmatch(label):
        raise ValueError(f"domain {text!r}: label {label!r} may only hold letters, digits and hyphens")
    if label.startswith("-") or label.endswith("-"):
        raise ValueError(f"domain {text!r}: label {label!r} starts or ends with a hyphen")


def address_allowed(address: str, allow_networks: Sequence[Network]) -> bool:
    """May this address be probed: global unicast, or inside an allowed network (ValueError if not an IP)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # judge ::ffff:10.0.0.1 as the IPv4 address it reaches
    if any(ip.version == net.version and ip in net for net in allow_networks):
        return True
    return ip.is_global and not ip.is_multicast


def looks_like_ip_literal(name: dns.name.Name) -> bool:
    """An exchange "name" that is an address: 192.0.2.1., [192.0.2.1], [2001:db8::1], all-digit labels."""
    labels = [label for label in name.labels if label]
    if labels and not labels[-1].isdigit() and not any(b":" in x or b"[" in x for x in labels):
        return False  # the usual case, decided without formatting the name (once per exchange per domain)
    if _is_ip(name.to_text(omit_final_dot=True).strip("[]")):
        return True
    return bool(labels) and all(label.isdigit() for label in labels)


def split_host_port(text: str, default_port: int | None = None, lowest_port: int = 1) -> tuple[str, int]:
    """The one reader of host:port forms: "host:port", "[v6]:port", ":port" (an empty host is the caller's
    to judge); with ``default_port`` also "host", "[v6]" and a bare IPv6 address. An IPv6 address before a port
    needs its brackets (otherwise its last group would read as the port). ValueError with the reason."""
    port_text: str | None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("expected [ipv6] or [ipv6]:port")
        try:
            host = str(ipaddress.IPv6Address(host))  # one spelling: [2001:DB8:0::1] is 2001:db8::1
        except ValueError:
            raise ValueError(f"brackets are only for IPv6 addresses, not {host!r}") from None
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text and (default_port is None or not _is_ip(text)):  # two colons or more: IPv6 or nothing
        raise ValueError("write an IPv6 address in brackets, [2001:db8::1]:25")
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise ValueError("a port is required")
        return host, default_port
    if not port_text:
        raise ValueError("empty port after ':'")
    if not (port_text.isascii() and port_text.isdigit()) or not lowest_port <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from {lowest_port} to 65535")
    return host, int(port_text)


def parse_nameserver(text: str) -> tuple[str, int]:
    """Split "ip", "ip:port", "[v6]" or "[v6]:port" into (ip, port); the port defaults to 53."""
    try:
        host, port = split_host_port(text, default_port=53)
    except ValueError as err:
        raise ValueError(f"nameserver {text!r}: {err}") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: {host!r} is not an IP address") from None
    return str(address), port


@dataclass(frozen=True)
class Canary:
    host: str  # an IP address or a host name
    port: int


def parse_canary(text: str) -> Canary:
    """ "host:port" or "[v6]:port"; ValueError with the reason. The port is required (it says what is tested)."""
    try:
        host, port = split_host_port(text)
    except ValueError as err:
        raise ValueError(f"{text!r} is not host:port ({err})") from None
    if not host:
        raise ValueError(f"{text!r}: empty host")
    return Canary(host.lower().rstrip("."), port)


def split_listen_address(text: str) -> tuple[str, int]:
    """ "host:port", "[v6]:port" or ":port" (every IPv4 address) -> (host, port); port 0 picks a free one."""
    try:
        host, port = split_host_port(text, lowest_port=0)
    except ValueError as err:
        raise ValueError(f"{text!r} is not host:port ({err})") from None
    return host or "0.0.0.0", port


def normalize_name(name: str) -> str:
    """An exchange or host name in the one form names are compared in: lower case, no trailing dot, U-labels as
    A-labels ("*." kept in front, for MTA-STS patterns). Never raises: a name IDNA refuses matches only itself."""
    name = name.strip().rstrip(".").lower()
    wild, rest = ("*.", name[2:]) if name.startswith("*.") else ("", name)
    if rest.isascii():
        return name
    try:
        return wild + idna.encode(rest, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError is a UnicodeError
        return name


def check_ehlo_name(value: str) -> str:
    """The name sent in EHLO/HELO: a fully qualified domain name (RFC 5321 §4.1.1.1), never localhost; returned
    in its IDNA ASCII form, so what the settings accept is what goes on the wire."""
    name = normalize_name(value)
    if not name or name == "localhost" or name.startswith("localhost.") or "." not in name:
        raise ValueError(f"{value!r} is not a fully qualified domain name (and localhost is refused)")
    return normalize_domain(name)
