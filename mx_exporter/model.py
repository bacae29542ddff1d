"""Plain data passed between the pipeline stages.

Every stage takes and returns these frozen dataclasses, so each stage can be tested alone with literal data:
resolve -> ``Resolution``; smtp -> ``AddressResult``; assess -> ``DomainReport``; collector reads reports.
Closed sets are enums: the collector emits one 0/1 series per member, so alerts never wait on absent series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class DnsStatus(StrEnum):
    """How the MX lookup for a domain ended (RFC 5321 §5.1)."""

    OK = "ok"  # an MX RRset (including a null MX)
    NODATA = "nodata"  # the name exists but has no MX RRset
    NXDOMAIN = "nxdomain"  # the name does not exist: no fallback to A
    SERVFAIL = "servfail"  # every nameserver failed or refused: temporary, a sender retries later
    TIMEOUT = "timeout"  # no answer in time: temporary, a sender retries later
    ERROR = "error"  # anything else (malformed answer, bad name)


class SmtpOutcome(StrEnum):
    """How one polite SMTP session against one address ended."""

    ACCEPTED = "accepted"  # 2xx final greeting line and 250 to EHLO
    CONNECTION_REFUSED = "connection_refused"  # RST / unreachable network
    CONNECT_TIMEOUT = "connect_timeout"  # TCP handshake did not finish in time
    GREETING_TIMEOUT = (
        "greeting_timeout"  # connected, but no final greeting line in time (or overall deadline)
    )
    GREETING_4XX = "greeting_4xx"  # temporary refusal in the greeting (e.g. 421)
    GREETING_5XX = "greeting_5xx"  # permanent refusal in the greeting (e.g. 554)
    EHLO_FAILED = "ehlo_failed"  # greeting fine, EHLO not answered with 250
    PROTOCOL_ERROR = "protocol_error"  # garbage, over-long lines, connection dropped mid-reply
    SKIPPED = "skipped"  # never connected: address not global and not in allow_networks


class Misconfiguration(StrEnum):
    """MX set problems that trip senders (docs/architecture.md, "What DNS answers mean")."""

    CNAME_TARGET = "cname_target"
    IP_LITERAL_TARGET = "ip_literal_target"
    UNRESOLVABLE_TARGET = "unresolvable_target"
    NULL_MX_MIXED = "null_mx_mixed"
    DUPLICATE_EXCHANGE = "duplicate_exchange"
    NON_GLOBAL_ADDRESS = "non_global_address"
    IPV6_BROKEN = "ipv6_broken"  # an exchange's AAAA addresses all fail while one of its A addresses accepts


class Family(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class Sender(StrEnum):
    """A sending MTA whose choice of MX host, and of deliver / queue / bounce, a profile reproduces (senders.py)."""

    POSTFIX = "postfix"
    EXIM = "exim"
    QMAIL = "qmail"


class DeliveryOutcome(StrEnum):
    """What happens to a message a sender of one profile sends now."""

    DELIVERED = "delivered"  # some address accepted: the message goes there
    QUEUED = "queued"  # a temporary failure: the sender keeps the message and retries later
    BOUNCED = "bounced"  # a permanent failure: the message comes back to its author now


class DaneState(StrEnum):
    """DANE for one address of one exchange (dane.py, RFC 7672)."""

    SECURE_MATCH = "secure_match"  # a secure usable TLSA record matches the presented chain
    SECURE_NO_MATCH = "secure_no_match"  # secure usable TLSA records, none matches (or no TLS): senders defer
    INSECURE = (
        "insecure"  # the address records or the TLSA RRset are not DNSSEC-validated: DANE does not apply
    )
    BOGUS = "bogus"  # validation failed (or the TLSA lookup failed): DANE senders skip the host
    NO_TLSA = "no_tlsa"  # secure, but no TLSA record usable for SMTP: TLS without authentication


@dataclass(frozen=True)
class TlsaRecord:
    usage: int  # 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE
    selector: int  # 0 the whole certificate, 1 its SubjectPublicKeyInfo
    matching_type: int  # 0 the data itself, 1 SHA2-256, 2 SHA2-512
    data: bytes


@dataclass(frozen=True)
class TlsaLookup:
    """What DNS says about one exchange's ``_25._tcp.<exchange>`` TLSA RRset (transport.py)."""

    # "secure": validated (records may be empty: a secure denial); "insecure": the exchange's address records or
    # the TLSA answer are not validated, so no DANE; "bogus": validation failed, or the lookup itself failed.
    state: Literal["secure", "insecure", "bogus"]
    records: tuple[TlsaRecord, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class DaneAddress:
    address: str
    state: DaneState
    detail: str = ""


@dataclass(frozen=True)
class DomainDane:
    """The domain's DANE verdict (assess.py)."""

    applies: bool  # some exchange has a secure TLSA RRset with a usable record
    valid: bool  # every accepting address DANE applies to matches (True when it applies nowhere)
    bogus: bool  # some exchange's TLSA (or address) answer failed validation
    detail: str = ""


class PolicyMode(StrEnum):
    """An MTA-STS policy's mode (RFC 8461 §3.2)."""

    NONE = "none"
    TESTING = "testing"
    ENFORCE = "enforce"


class PolicyState(StrEnum):
    """How the domain's MTA-STS record and policy fetch ended (mtasts.py)."""

    NONE = "none"  # no _mta-sts TXT record: the domain does not use MTA-STS
    RECORD_INVALID = "record_invalid"  # the TXT record is there but broken (or there are two)
    UNREACHABLE = "unreachable"  # the policy host could not be reached (or looked up) in time
    CERTIFICATE_INVALID = "certificate_invalid"  # the policy host's certificate failed WebPKI validation
    HTTP_ERROR = "http_error"  # a status other than 200, or a redirect (senders must not follow one)
    MALFORMED = "malformed"  # wrong content type, too large, or not a valid policy
    VALID = "valid"


@dataclass(frozen=True)
class StsVerdict:
    """The domain's MTA-STS verdict (assess_transport.py)."""

    state: PolicyState  # this refresh's record and fetch (a cached policy may still be in force)
    reason: str  # one short human line
    mode: PolicyMode | None = None  # of the policy in force; None without one
    max_age: int | None = None
    uncovered: tuple[str, ...] = ()  # exchanges no policy mx pattern matches
    certificates_valid: bool = True  # every accepting address presented a certificate valid for its exchange
    deliverable: bool = False  # a sender enforcing the policy would deliver now

    @property
    def mx_match(self) -> bool:
        return not self.uncovered


@dataclass(frozen=True)
class TlsRptVerdict:
    valid: bool  # exactly one well-formed v=TLSRPTv1 record with rua= (RFC 8460 §3)
    reason: str = ""
    rua: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsFacts:
    """STARTTLS handshake facts, filled by the TLS stage (tls.py) after the session's handshake."""

    handshake_ok: bool
    version: str | None = None  # e.g. "TLSv1.3"
    cert_not_after: float | None = None  # unix seconds
    # Chain and exchange name verified. A session is per address, shared by every exchange name pointing at it,
    # so the session leaves this None; assessment sets it per exchange (tls.cert_valid_for) and nothing else does.
    cert_valid: bool | None = None
    chain_valid: bool | None = None  # presented chain verifies to a trusted root; None: no certificate seen
    names: tuple[str, ...] = ()  # the leaf's DNS subjectAltNames, lower case
    detail: str = ""  # one short human line: why the handshake failed or the chain did not verify
    # The presented chain (DER, leaf first, at most tls.MAX_CHAIN): DANE TLSA records are matched against it per
    # exchange name in assessment. Not compared: equal facts with another chain are the same facts.
    chain: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class AddressResult:
    """What one SMTP session against one IP address found."""

    address: str
    family: Family
    outcome: SmtpOutcome
    greeting_code: int = 0  # code of the final greeting line, 0 when none
    ehlo_code: int = 0  # code of the EHLO reply, 0 when none
    helo_code: int = 0  # code of the HELO reply after a refused EHLO (the senders' fallback), 0 when not sent
    connect_seconds: float | None = None  # TCP connect time
    greeting_seconds: float | None = None  # connect done -> final greeting line
    session_seconds: float | None = None  # the whole session
    starttls_advertised: bool = False
    tls: TlsFacts | None = None
    detail: str = ""  # one short human line (logs, status page, check output); never a label
    transcript: tuple[str, ...] = ()  # timed "C:"/"S:" lines for /probe?debug=true
    # The connect failed with ENETUNREACH: this exporter's host has no route for the family, which says
    # nothing about the peer (a host without IPv6 must not call every AAAA broken).
    no_route_here: bool = False

    @property
    def up(self) -> bool:
        return self.outcome is SmtpOutcome.ACCEPTED


@dataclass(frozen=True)
class ResolvedAddress:
    address: str
    family: Family
    allowed: bool  # global unicast or inside allow_networks: may be probed


@dataclass(frozen=True)
class ResolvedExchange:
    """One MX target after A/AAAA lookups."""

    name: str  # lower case, no trailing dot; "" never appears (null MX is not an exchange)
    preference: int
    addresses: tuple[ResolvedAddress, ...]
    cname_target: str | None = None  # where the exchange name's CNAME chain led, when it had one
    problems: frozenset[Misconfiguration] = frozenset()
    # How its address lookup ended when it found none: NXDOMAIN/NODATA are permanent for a sender, SERVFAIL and
    # TIMEOUT temporary (the sender queues rather than bounce when no other exchange has an address).
    lookup: DnsStatus = DnsStatus.OK
    secure: bool = (
        False  # every A/AAAA answer (or denial) was DNSSEC-validated: DANE may apply (RFC 7672 §2.2.2)
    )


@dataclass(frozen=True)
class Resolution:
    """Everything DNS says about a domain's mail hosts, classified like a sender would."""

    domain: str  # lower case, IDNA, no trailing dot
    status: DnsStatus
    mx_records: int = 0  # records in the MX answer (null MX included)
    null_mx: bool = False  # exactly one "0 ." record
    fallback_to_a: bool = False  # no MX RRset: the domain's own A/AAAA form an implicit MX at preference 0
    ttl: int | None = None  # TTL of the MX RRset
    exchanges: tuple[ResolvedExchange, ...] = ()  # ascending preference, then name; each name once
    misconfigurations: frozenset[Misconfiguration] = frozenset()
    detail: str = ""
    log: tuple[str, ...] = ()  # human lines: each DNS question and answer
    mx_secure: bool = False  # the MX answer was DNSSEC-validated (the resolver's AD bit)


@dataclass(frozen=True)
class Exchange:
    name: str
    preference: int
    addresses: tuple[AddressResult, ...]
    cname_target: str | None = None
    problems: frozenset[Misconfiguration] = frozenset()
    lookup: DnsStatus = DnsStatus.OK  # ResolvedExchange.lookup
    tlsa: TlsaLookup | None = None  # None: DANE not evaluated (resolver.dnssec ignore, or switched off)
    dane: tuple[DaneAddress, ...] = ()  # per address, in address order (assess.py via dane.address_state)
    tlsa_usable: int = 0  # records of a secure TLSA RRset usable for SMTP (DANE-TA, DANE-EE)

    @property
    def up(self) -> bool:
        return any(a.up for a in self.addresses)


@dataclass(frozen=True)
class Tier:
    """All exchanges of one preference: senders pick among them at random."""

    preference: int
    exchanges: tuple[Exchange, ...]

    @property
    def up(self) -> bool:
        return any(e.up for e in self.exchanges)


@dataclass(frozen=True)
class Delivery:
    """One sender profile's answer to "what happens to a message sent now" (senders.deliver)."""

    outcome: DeliveryOutcome
    preference: int = -1  # the preference delivered to; -1 unless delivered
    exchange: str = ""  # the exchange delivered to, "" unless delivered
    address: str = ""  # the address delivered to, "" unless delivered
    reason: str = ""  # one short human line: where it went, or why it queues or bounces


@dataclass(frozen=True)
class Verdict:
    deliverable: bool  # some address of some tier accepted
    primary_up: bool  # some address of the most preferred tier accepted
    active_preference: int  # lowest preference with an accepting address; -1 when none
    preference_gap: int  # second-lowest minus lowest distinct preference; 0 with fewer than two tiers
    deliveries: dict[Sender, Delivery] = field(default_factory=dict)  # one per sender profile
    expectations: dict[str, bool] = field(default_factory=dict)  # configured expectation name -> met
    # Every misconfiguration of the MX set: the resolution's own and each probed exchange's.
    misconfigurations: frozenset[Misconfiguration] = frozenset()
    # "nolisting" or "greylisting" when that setup is configured and holds: the primary is down on purpose.
    intended_setup: str = ""
    ipv6_deliverable: bool = False  # some IPv6 address of some tier accepted (IPv6-only senders can deliver)
    dane: DomainDane | None = None  # None: DANE not evaluated for this domain
    mta_sts: StsVerdict | None = None  # None: MTA-STS not checked for this domain
    tls_rpt: TlsRptVerdict | None = None  # None: not checked (it follows the mta_sts switch)


MAX_RECORDS_SHOWN = 256  # characters of a record set shown in a label and on the status page


@dataclass(frozen=True)
class RecordSet:
    members: tuple[str, ...]  # sorted: "10 mx1.example.org", "mx1.example.org 192.0.2.1", "0 .", "nxdomain"
    digest: str
    changed_at: float  # unix seconds: the first observation, or the last change this process saw
    added: tuple[str, ...] = ()  # members new at the last change (empty at the first observation)
    removed: tuple[str, ...] = ()  # members gone at the last change

    @property
    def records(self) -> str:
        """The MX part as one short line, for a label and the status page: "10 mx1.example.org, 20 mx2…"."""
        text = ", ".join(m for m in self.members if " " in m and m.split(" ", 1)[0].isdigit())
        text = text or ", ".join(self.members)
        return text if len(text) <= MAX_RECORDS_SHOWN else text[: MAX_RECORDS_SHOWN - 1] + "…"


@dataclass(frozen=True)
class DomainReport:
    """One finished probe of one domain: what the collector, status page and `check` read."""

    resolution: Resolution
    tiers: tuple[Tier, ...]  # ascending preference
    verdict: Verdict
    probe_seconds: float  # wall time of the whole probe
    finished_at: float  # unix seconds
    records: RecordSet | None = None  # the MX record set and when this process saw it change (changes.py)

    @property
    def domain(self) -> str:
        return self.resolution.domain
