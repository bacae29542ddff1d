"""The DNSSEC half of the lab: zones signed at test time (ldns) and Debian's Unbound validating them on loopback.

The exporter does not validate DNSSEC itself; it trusts the AD bit of a validating resolver (issue 10's spec).
So DANE tests need a real validator between the exporter and NSD: Unbound, run in the foreground as a child
process with a generated unbound.conf in a temp dir, on a free port of 127.0.0.1, holding a trust anchor for
each signed lab zone and sending every query to the lab's NSD (stub zones), never to the internet.

Zones are signed at test time because their TLSA records hash certificates that trustme makes at test time.
Typical use::

    secure = sign_zone(zone_header("secure.test") + body, "secure.test", tmp_path)
    with NsdServer(extra_zones=[(secure.origin, secure.path)]) as nsd, Unbound(nsd.nameserver, [secure]) as ub:
        ...  # resolver.nameservers: [ub.nameserver], resolver.dnssec: require
"""

from __future__ import annotations

import base64
import dataclasses
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from mx_exporter.names import parse_nameserver
from tests.lab.nsd import ADDRESS, start_on_a_free_port, terminate

LDNS_KEYGEN = Path("/usr/bin/ldns-keygen")
LDNS_SIGNZONE = Path("/usr/bin/ldns-signzone")
UNBOUND_BINARY = Path("/usr/sbin/unbound")
ALGORITHM = (
    "ECDSAP256SHA256"  # DNSSEC algorithm 13: small keys and signatures, fast to make, what most zones use
)
SIGNATURE_BACKDATE = (
    3600  # seconds: inception an hour ago, so a validator's clock a little behind still accepts
)
SIGNATURE_LIFETIME = 30 * 86400  # seconds: expiry in 30 days, far beyond any test run
STARTUP_TIMEOUT = 10.0  # seconds for Unbound to answer as itself
# Unbound 1.17 says "error: bind: address already in use" then "fatal error: could not open ports".
UNBOUND_RACE_SIGNS = ("another server answers", "address already in use", "could not open ports")


@dataclass(frozen=True)
class SignedZone:
    """A zone file signed by sign_zone: what NSD serves (origin, path) and what Unbound trusts (trust_anchor)."""

    origin: str  # without the trailing dot, like NsdServer.zone
    path: Path  # the signed zone file
    trust_anchor: str  # the KSK's DS record on one line, as unbound.conf's trust-anchor: takes it


def zone_header(origin: str, ttl: int = 300, serial: int = 1) -> str:
    """$ORIGIN, $TTL, SOA, NS and the name server's A: the lines every lab zone needs before its own records."""
    origin = origin.rstrip(".")
    return (
        f"$ORIGIN {origin}.\n$TTL {ttl}\n"
        f"@ SOA ns.{origin}. hostmaster.{origin}. {serial} 3600 600 86400 {ttl}\n"
        f"@ NS ns.{origin}.\nns A {ADDRESS}\n"
    )


def _run(argv: list[str], cwd: Path) -> str:
    """Run an ldns tool; its stdout, or RuntimeError with its output (the tools say little, so show all)."""
    done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _keygen(origin: str, workdir: Path, ksk: bool) -> str:
    """A new key pair for origin in workdir; its base name K<origin>+013+<id> (files .key/.private, .ds for KSK)."""
    argv = [str(LDNS_KEYGEN), "-a", ALGORITHM, "-r", "/dev/urandom", *(["-k"] if ksk else []), origin]
    return _run(argv, workdir).strip()


def sign_zone(zone_text: str, origin: str, workdir: Path, now: float | None = None) -> SignedZone:
    """Sign zone_text with a fresh KSK (257) and ZSK (256); all files in workdir, signatures valid now-1h..now+30d.

    Two keys, as real zones have them: the KSK signs the DNSKEY RRset and its DS is the trust anchor; the ZSK signs
    everything else, so break_signature on a data RRset leaves the key chain intact.
    """
    if not LDNS_KEYGEN.exists() or not LDNS_SIGNZONE.exists():
        raise RuntimeError("ldnsutils not installed: run the README test command")
    origin = origin.rstrip(".")
    workdir.mkdir(parents=True, exist_ok=True)
    unsigned = workdir / f"{origin}.zone"
    unsigned.write_text(zone_text)
    ksk = _keygen(origin, workdir, ksk=True)
    zsk = _keygen(origin, workdir, ksk=False)
    signed = workdir / f"{origin}.zone.signed"
    moment = int(time.time() if now is None else now)
    inception, expiration = moment - SIGNATURE_BACKDATE, moment + SIGNATURE_LIFETIME
    _run(
        [
            str(LDNS_SIGNZONE),
            *("-i", str(inception), "-e", str(expiration)),  # epoch seconds: no time zone to get wrong
            *("-o", f"{origin}.", "-f", str(signed)),
            str(unsigned),
            ksk,
            zsk,
        ],
        workdir,
    )
    return SignedZone(origin=origin, path=signed, trust_anchor=_trust_anchor(workdir / f"{ksk}.ds"))


def _trust_anchor(ds_file: Path) -> str:
    """The DS line of ldns-keygen's .ds file without comments or runs of tabs: one line for trust-anchor:."""
    lines = [line.split(";", 1)[0].split() for line in ds_file.read_text().splitlines()]
    records = [" ".join(fields) for fields in lines if len(fields) > 3 and fields[2] == "DS"]
    if len(records) != 1:
        raise RuntimeError(f"{ds_file}: expected one DS record, found {records}")
    return records[0]


def break_signature(signed_zone: SignedZone, owner: str, rrtype: str) -> SignedZone:
    """A copy of the zone whose RRSIGs covering exactly (owner, rrtype) no longer verify: that RRset is bogus.

    The signature's base64 is decoded, one byte in the middle flipped, and encoded again, so the record still
    parses and keeps its length, key tag and dates: only the cryptographic check fails, the failure DANE's
    "bogus" state is about. Every other RRSIG is untouched, so the rest of the zone stays secure.
    owner is absolute or relative to the zone's origin. The copy is written beside the original; chain calls to
    break several RRsets.
    """
    origin = dns.name.from_text(signed_zone.origin)
    target = dns.name.from_text(owner, origin=origin)
    covered = dns.rdatatype.from_text(rrtype)
    lines = signed_zone.path.read_text().splitlines(keepends=True)
    broken = 0
    for index, line in enumerate(lines):
        fields = line.split()
        # ldns-signzone writes one RR per line: owner TTL class RRSIG covered alg labels ttl exp inc tag signer sig
        if len(fields) < 13 or fields[3] != "RRSIG":
            continue
        if dns.name.from_text(fields[0], origin=origin) != target:
            continue
        if dns.rdatatype.from_text(fields[4]) != covered:
            continue
        signature = bytearray(base64.b64decode("".join(fields[12:])))
        signature[len(signature) // 2] ^= 0xFF
        lines[index] = "\t".join([*fields[:12], base64.b64encode(bytes(signature)).decode("ascii")]) + "\n"
        broken += 1
    if not broken:
        raise ValueError(f"{signed_zone.path}: no RRSIG covers {target} {rrtype}")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{target.to_text(omit_final_dot=True)}_{rrtype}")
    copy = signed_zone.path.with_name(f"{signed_zone.path.name}.bogus-{slug}")
    copy.write_text("".join(lines))
    return dataclasses.replace(signed_zone, path=copy)


# Unbound's configuration. The lab rules it follows, and why (each checked against Unbound 1.17's behaviour):
# - It must never try the internet. With no hints for the root, Unbound uses its compiled-in root hints and sends
#   ". NS" to the real root servers for any name outside its stub zones. A stub-zone for "." pointing at the lab's
#   NSD replaces those hints, so NSD is the only server Unbound ever queries. Every lab zone has its own stub zone;
#   for any other name Unbound primes the root against NSD, NSD answers REFUSED (it serves no root), and the query
#   gets a SERVFAIL at once ("failed to get a delegation (eg. prime failure)" in the log) -- also for zones NSD
#   serves but this Unbound was not told about. outgoing-interface 127.0.0.1 is the second lock: a socket bound
#   to loopback cannot reach another host (connect fails with EINVAL at once, no timeout). A `local-zone: "."
#   refuse` guard is not used: local zones answer client queries before any stub is consulted, so it would
#   refuse the lab zones too unless each got a transparent local-zone of its own.
# - RFC 6761's "test." is one of Unbound's default local zones (static: NXDOMAIN for every name under it, stubs or
#   not); the lab zones live under it, so that default is switched off (nodefault) and .test names reach the stubs.
# - do-not-query-localhost: no, or Unbound would refuse to send anything to 127.0.0.1.
# - Signed zones get a trust-anchor (their KSK's DS): the lab has no signed root or "test." to chain from, so each
#   zone is its own island of trust. Unsigned zones are domain-insecure, stated so a trust anchor above them can
#   never make them bogus. No auto-trust-anchor-file: no root key, no RFC 5011 probes, no key tag signalling.
# - Caches are small, with TTLs capped at cache_max_ttl, so a test that rewrites and reloads a zone sees the change
#   quickly (bogus answers, val-bogus-ttl, and negative answers too). aggressive-nsec is off for the same reason:
#   no NXDOMAIN synthesised from a cached NSEC of an older version of the zone.
# - identity is a per-instance token (as NSD's in nsd.py): a port race that lands our queries on someone else's
#   resolver is detected, not trusted. so-reuseport: no, so a second process cannot share our port silently.
# - Foreground (-d -d: logs stay on stderr, which goes to a log file in the temp dir), no chroot, no user switch,
#   pidfile in the temp dir, val-log-level 2 so a validation failure in the log names the RRset and the reason.
SERVER_TEMPLATE = """\
server:
    interface: {address}
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    outgoing-interface: {address}
    do-not-query-localhost: no
    num-threads: 1
    outgoing-range: 64
    num-queries-per-thread: 32
    directory: "{state}"
    chroot: ""
    username: ""
    pidfile: "{state}/unbound.pid"
    use-syslog: no
    logfile: ""
    log-time-ascii: yes
    log-servfail: yes
    verbosity: 1
    use-systemd: no
    hide-identity: no
    identity: "{identity}"
    hide-version: yes
    module-config: "validator iterator"
    val-log-level: 2
    harden-dnssec-stripped: yes
    val-permissive-mode: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    qname-minimisation: no
    aggressive-nsec: no
    prefetch: no
    prefetch-key: no
    target-fetch-policy: "0 0 0 0 0"
    msg-cache-size: 1m
    rrset-cache-size: 1m
    key-cache-size: 1m
    neg-cache-size: 1m
    infra-cache-numhosts: 100
    cache-max-ttl: {cache_max_ttl}
    cache-max-negative-ttl: {cache_max_ttl}
    val-bogus-ttl: {cache_max_ttl}
    local-zone: "test." nodefault
"""
TRUST_ANCHOR_TEMPLATE = '    trust-anchor: "{record}"\n'
INSECURE_TEMPLATE = '    domain-insecure: "{zone}."\n'
STUB_TEMPLATE = """\
stub-zone:
    name: "{zone}"
    stub-addr: {upstream}
    stub-prime: no
    stub-first: no
"""
REMOTE_CONTROL = """\
remote-control:
    control-enable: no
"""


class Unbound:
    """Debian's Unbound validating the lab zones on 127.0.0.1 and a free port; ``nameserver`` is the setting for it.

    upstream is the lab NSD's nameserver ("127.0.0.1:PORT", NsdServer.nameserver). signed_zones get trust anchors,
    insecure_zones (origins) are declared unsigned; both get stub zones to upstream, and so does the root.
    """

    def __init__(
        self,
        upstream: str,
        signed_zones: Iterable[SignedZone] = (),
        insecure_zones: Iterable[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
        cache_max_ttl: int = 1,
    ) -> None:
        host, port = parse_nameserver(upstream)
        self.upstream = f"{host}@{port}"  # unbound.conf's address@port
        self.signed_zones = tuple(signed_zones)
        self.insecure_zones = tuple(zone.rstrip(".") for zone in insecure_zones)
        self.address = ADDRESS
        self.port = 0
        self.startup_timeout = startup_timeout
        self.cache_max_ttl = cache_max_ttl
        self.identity = f"mx-exporter-unbound-{uuid.uuid4().hex}"
        self._process: subprocess.Popen[bytes] | None = None
        self._state: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None

    @property
    def nameserver(self) -> str:
        """ "ip:port", as the exporter's resolver.nameservers takes it (mx_exporter.names.parse_nameserver)."""
        return f"{self.address}:{self.port}"

    @property
    def zones(self) -> tuple[str, ...]:
        return (*(zone.origin for zone in self.signed_zones), *self.insecure_zones)

    def config(self, port: int, state: Path) -> str:
        """The unbound.conf for this instance on the port (see the comment above SERVER_TEMPLATE)."""
        text = SERVER_TEMPLATE.format(
            address=self.address,
            port=port,
            state=state,
            identity=self.identity,
            cache_max_ttl=self.cache_max_ttl,
        )
        text += "".join(TRUST_ANCHOR_TEMPLATE.format(record=zone.trust_anchor) for zone in self.signed_zones)
        text += "".join(INSECURE_TEMPLATE.format(zone=zone) for zone in self.insecure_zones)
        text += "".join(STUB_TEMPLATE.format(zone=f"{zone}.", upstream=self.upstream) for zone in self.zones)
        text += STUB_TEMPLATE.format(
            zone=".", upstream=self.upstream
        )  # the root: no built-in hints, no internet
        return text + REMOTE_CONTROL

    def log(self) -> str:
        """Unbound's log so far (stderr: startup errors, validation failures at val-log-level 2)."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")

    def start(self) -> None:
        """Start Unbound; return once it answers as itself and for every lab zone, else RuntimeError with its log."""
        if not UNBOUND_BINARY.exists():
            raise RuntimeError("unbound not installed: run the README test command")
        self._state = tempfile.TemporaryDirectory(prefix="mx-exporter-unbound-")
        try:
            self.port = start_on_a_free_port(self._try_start, UNBOUND_RACE_SIGNS, "Unbound")
        except RuntimeError:
            self.stop()
            raise

    def _try_start(self, port: int) -> str | None:
        assert self._state is not None
        state = Path(self._state.name)
        conf = state / "unbound.conf"
        conf.write_text(self.config(port, state))
        self._log = state / f"unbound-{port}.log"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [str(UNBOUND_BINARY), "-d", "-d", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        problem = self._wait_ready(port)
        if problem is not None:
            self._terminate()
            return f"{problem}\n--- unbound log ---\n{self.log()}"
        return None

    def _wait_ready(self, port: int) -> str | None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"unbound exited with status {self._process.returncode}"
            try:
                return self._check_answers(port, deadline)
            except (OSError, dns.exception.DNSException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        return f"unbound was not ready within {self.startup_timeout:g} s ({last})"

    def _check_answers(self, port: int, deadline: float) -> str | None:
        """Who answers (identity, UDP), then each zone's SOA through the stub with CD=1 (a zone may be bogus on
        purpose; CD asks for the data all the same, so this checks the path to NSD, not the signatures)."""
        who = dns.message.make_query("id.server.", dns.rdatatype.TXT, dns.rdataclass.CH)
        reply = self._ask(who, port, 0.2, deadline, "id.server CH TXT")
        if not any(self.identity in rdata.to_text() for rrset in reply.answer for rdata in rrset):
            return f"another server answers on port {port}: {reply.answer}"
        for zone in self.zones:
            soa = dns.message.make_query(f"{zone}.", dns.rdatatype.SOA)
            soa.flags |= dns.flags.CD
            reply = self._ask(soa, port, 2.0, deadline, f"SOA {zone} via {self.upstream}")
            if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
                rcode = dns.rcode.to_text(reply.rcode())
                return f"SOA {zone} via unbound answered {rcode} (is {self.upstream} serving it?)"
        return None

    def _ask(
        self, query: dns.message.Message, port: int, timeout: float, deadline: float, what: str
    ) -> dns.message.Message:
        """One UDP query within the startup deadline; a timeout names the query, so the error says what hung."""
        wait = max(0.05, min(timeout, deadline - time.monotonic()))
        try:
            return dns.query.udp(query, self.address, port=port, timeout=wait)
        except dns.exception.Timeout:
            raise TimeoutError(f"{what}: no answer within {wait:.2g} s") from None

    def _terminate(self) -> None:
        process, self._process = self._process, None
        terminate(process)

    def stop(self) -> None:
        self._terminate()
        if self._state is not None:
            self._state.cleanup()
            self._state = None
            self._log = None

    def __enter__(self) -> Unbound:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
