"""The DNS wire format of the stub client (``dnsquery``): one query out, one answer in, classified as dnspython's
resolver would. Pure: no sockets, no clock.

The types the exporter asks: MX, A, AAAA; TXT and TLSA for the transport-security checks.

- **Bounds.** EDNS payload 1232; answers parsed with bounds checks (names at most 255 octets, compression
  pointers strictly backwards, no trailing bytes); at most ``MAX_CHAIN`` CNAMEs followed.
- **DNSSEC flags.** Every query sets AD, and CD when asked (``encode_query``); ``Reply.secure`` is the answer's AD
  bit (``dnsquery`` says why the client trusts it and validates nothing itself).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Literal, cast

import dns.name

Result = Literal["answer", "nxdomain", "nodata", "servfail", "timeout", "error"]

PAYLOAD = 1232  # EDNS UDP payload (DNS flag day 2020)
MAX_CHAIN = 16  # as dnspython: the 16th CNAME in a chain is an error

TYPES = {"A": 1, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}
_RAW_RDATA = frozenset({16, 52})  # TXT (its strings joined) and TLSA (as sent): kept as bytes for the caller
_FLAGS_RD_AD = 0x0120  # recursion desired, authentic data (RFC 6840 §5.7)
_FLAG_CD = 0x0010  # checking disabled: the resolver answers even when validation fails
_FLAG_AD = 0x0020
_CNAME, _SOA, _OPT = 5, 6, 41
_NAME_RDATA = frozenset({2, 5, 12, 39})  # NS, CNAME, PTR, DNAME: rdata is one name
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_SOA_TAIL = struct.Struct("!IIIII")
# The OPT record of every query: root owner, the payload, extended rcode/version/flags 0, no options.
_OPT_RR = b"\x00" + _RR.pack(_OPT, PAYLOAD, 0, 0)
_MAX_TTL = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Mx:
    preference: int
    exchange: dns.name.Name


@dataclass(frozen=True, slots=True)
class Reply:
    """How one question ended. Immutable: a cache may hand one reply to many askers."""

    result: Result
    addresses: tuple[str, ...] = ()  # A/AAAA answers, in answer order, duplicates removed
    mx: tuple[Mx, ...] = ()  # MX answers, in answer order, duplicates removed
    records: tuple[bytes, ...] = ()  # TXT (strings of one record joined) and TLSA (rdata as sent) answers
    secure: bool = False  # the resolver set AD: it validated the answer (or the denial) with DNSSEC
    ttl: int | None = None  # answers: the RRset's TTL
    cache_ttl: int | None = None  # how long this may be reused: the chain's lowest TTL; None = no TTL known
    canonical: dns.name.Name | None = None  # where a CNAME chain from the question led, when there was one
    detail: str = ""  # failures: what each server said
    tcp_retry: bool = False  # truncated over UDP and asked again over TCP


class MalformedResponse(ValueError):
    """An answer that matches the question but cannot be parsed (dnspython's FormError)."""


def encode_question(qname: dns.name.Name, rdtype: int) -> bytes:
    wire = qname.to_wire()
    assert wire is not None  # to_wire() without a file returns the bytes
    return wire + struct.pack("!HH", rdtype, 1)


def encode_query(qid: int, question: bytes, checking_disabled: bool = False) -> bytes:
    flags = _FLAGS_RD_AD | (_FLAG_CD if checking_disabled else 0)
    return _HEADER.pack(qid, flags, 1, 0, 0, 1) + question + _OPT_RR  # one question, one OPT


def _name(wire: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    """The labels (root excluded) of the name at offset, and the offset after it; MalformedResponse if bad."""
    labels: list[bytes] = []
    size = len(wire)
    after = -1
    limit = offset  # a pointer must point before the fragment that holds it: no loops
    octets = 1
    while True:
        if offset >= size:
            raise MalformedResponse("a name runs past the end")
        count = wire[offset]
        if count == 0:
            return tuple(labels), offset + 1 if after < 0 else after
        if count < 64:
            stop = offset + 1 + count
            octets += count + 1
            if stop > size or octets > 255:
                raise MalformedResponse("a name runs past the end or beyond 255 octets")
            labels.append(wire[offset + 1 : stop])
            offset = stop
        elif count >= 0xC0 and offset + 1 < size:
            pointer = ((count & 0x3F) << 8) | wire[offset + 1]
            if pointer >= limit:
                raise MalformedResponse("a compression pointer does not point backwards")
            if after < 0:
                after = offset + 2
            limit = offset = pointer
        else:
            raise MalformedResponse("unknown label type")


def _lower(labels: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in labels)


@dataclass(slots=True)
class _Record:
    owner: tuple[bytes, ...]  # lower case
    rdtype: int
    ttl: int
    data: object  # str (A/AAAA), (preference, labels) (MX), labels (CNAME...), (ttl, minimum) (SOA), None


@dataclass(slots=True)
class Message:
    rcode: int
    truncated: bool
    answer: list[_Record]
    authority: list[_Record]
    authentic: bool = False  # AD


def parse_message(wire: bytes) -> Message:
    """Header, question and every record, bounds-checked; records of class IN kept from answer and authority."""
    size = len(wire)
    if size < 12:
        raise MalformedResponse("shorter than a DNS header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    offset = 12
    for _ in range(qdcount):
        offset = _name(wire, offset)[1] + 4
        if offset > size:
            raise MalformedResponse("the question runs past the end")
    answer: list[_Record] = []
    authority: list[_Record] = []
    ext_rcode = 0
    seen_opt = False
    for section, count in ((answer, ancount), (authority, nscount), (None, arcount)):
        for _ in range(count):
            owner, offset = _name(wire, offset)
            if offset + 10 > size:
                raise MalformedResponse("a record runs past the end")
            rdtype, rdclass, ttl, rdlength = _RR.unpack_from(wire, offset)
            offset += 10
            end = offset + rdlength
            if end > size:
                raise MalformedResponse("record data runs past the end")
            if rdtype == _OPT:
                if section is not None or owner or seen_opt:
                    raise MalformedResponse("an OPT record outside the additional section, or two")
                seen_opt = True
                ext_rcode = ttl >> 24
            elif rdclass == 1:
                data = _rdata(wire, offset, end, rdtype, section is not None)
                if section is not None:
                    section.append(_Record(_lower(owner), rdtype, 0 if ttl > _MAX_TTL else ttl, data))
            offset = end
    if offset != size:
        raise MalformedResponse("trailing bytes after the last record")
    rcode = (ext_rcode << 4) | (flags & 0x0F)
    return Message(rcode, bool(flags & 0x0200), answer, authority, bool(flags & _FLAG_AD))


def _rdata(wire: bytes, start: int, end: int, rdtype: int, keep: bool) -> object:
    """Check the record data of the types that matter here and decode it when kept; others are skipped."""
    length = end - start
    if rdtype == 1 or rdtype == 28:
        if length != (4 if rdtype == 1 else 16):
            raise MalformedResponse(f"an {'A' if rdtype == 1 else 'AAAA'} record of {length} octets")
        if not keep:
            return None
        return socket.inet_ntop(socket.AF_INET if rdtype == 1 else socket.AF_INET6, wire[start:end])
    if rdtype == 15:
        if length < 3:
            raise MalformedResponse("an MX record too short")
        labels, after = _name(wire, start + 2)
        if after != end:
            raise MalformedResponse("an MX record with bytes after its name")
        return (wire[start] << 8) | wire[start + 1], labels
    if rdtype in _NAME_RDATA:
        labels, after = _name(wire, start)
        if after != end:
            raise MalformedResponse("a name record with bytes after its name")
        return labels
    if rdtype in _RAW_RDATA:
        return _raw(wire, start, end, rdtype) if keep else None
    if rdtype == _SOA:
        after = _name(wire, _name(wire, start)[1])[1]
        if after + 20 != end:
            raise MalformedResponse("an SOA record of the wrong length")
        return _SOA_TAIL.unpack_from(wire, after)[4]  # minimum
    return None


def _raw(wire: bytes, start: int, end: int, rdtype: int) -> bytes:
    """TLSA rdata as sent (usage, selector, matching type, data); a TXT record's strings joined (RFC 7208 §3.3
    and RFC 8461 §3.1 read one record as its strings concatenated)."""
    if rdtype == 52:
        if end - start < 4:
            raise MalformedResponse("a TLSA record too short")
        return wire[start:end]
    parts: list[bytes] = []
    offset = start
    while offset < end:
        stop = offset + 1 + wire[offset]
        if stop > end:
            raise MalformedResponse("a TXT string runs past its record")
        parts.append(wire[offset + 1 : stop])
        offset = stop
    return b"".join(parts)


def _rrset(records: list[_Record], owner: tuple[bytes, ...], rdtype: int) -> list[_Record]:
    return [r for r in records if r.rdtype == rdtype and r.owner == owner]


class BadAnswer(Exception):
    """The answer is well-formed but unusable (CNAME chain too long, an answer under NXDOMAIN)."""


def classify(message: Message, qname: dns.name.Name, rdtype: int) -> Reply:
    """NOERROR/NXDOMAIN as dnspython's Answer and resolve_chaining see them; BadAnswer when they would raise."""
    name = _lower(qname.labels[:-1])
    shown: tuple[bytes, ...] | None = None  # the chain's end as sent (case kept), for the canonical name
    min_ttl = _MAX_TTL
    chain = 0
    found: list[_Record] = []
    while True:
        found = _rrset(message.answer, name, rdtype)
        if found:
            break
        cnames = _rrset(message.answer, name, _CNAME)
        if not cnames:
            break
        min_ttl = min(min_ttl, *(r.ttl for r in cnames))
        target = cnames[0].data
        assert isinstance(target, tuple)
        shown, name = target, _lower(target)
        chain += 1
        if chain >= MAX_CHAIN:
            raise BadAnswer(f"CNAME chain longer than {MAX_CHAIN - 1}")
    canonical = None if shown is None else dns.name.Name((*shown, b""))
    if message.rcode == 3 and found:
        raise BadAnswer("an answer under NXDOMAIN")
    if not found:
        for cut in range(len(name) + 1):  # the SOA of the closest enclosing zone bounds a negative answer
            soas = _rrset(message.authority, name[cut:], _SOA)
            if soas:
                minimum = soas[0].data
                assert isinstance(minimum, int)
                min_ttl = min(min_ttl, soas[0].ttl, minimum)
                break
        result: Result = "nxdomain" if message.rcode == 3 else "nodata"
        return Reply(result, cache_ttl=None if min_ttl == _MAX_TTL else min_ttl, canonical=canonical)
    ttl = min(r.ttl for r in found)
    min_ttl = min(min_ttl, ttl)
    if rdtype == 15:
        unique: dict[tuple[int, tuple[bytes, ...]], Mx] = {}
        for record in found:
            preference, labels = cast(tuple[int, tuple[bytes, ...]], record.data)
            key = (preference, _lower(labels))
            if key not in unique:
                unique[key] = Mx(preference, dns.name.Name((*labels, b"")))
        return Reply("answer", mx=tuple(unique.values()), ttl=ttl, cache_ttl=min_ttl, canonical=canonical)
    if rdtype in _RAW_RDATA:
        records = tuple(dict.fromkeys(cast(bytes, r.data) for r in found))
        return Reply("answer", records=records, ttl=ttl, cache_ttl=min_ttl, canonical=canonical)
    addresses = tuple(dict.fromkeys(str(r.data) for r in found))
    return Reply("answer", addresses=addresses, ttl=ttl, cache_ttl=min_ttl, canonical=canonical)


__all__ = [
    "MAX_CHAIN",
    "PAYLOAD",
    "TYPES",
    "BadAnswer",
    "MalformedResponse",
    "Message",
    "Mx",
    "Reply",
    "Result",
    "classify",
    "encode_query",
    "encode_question",
    "parse_message",
]
