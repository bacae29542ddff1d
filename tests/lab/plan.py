"""The lab's address plan: which loopback address hosts which SMTP behaviour.

Shared by the DNS zone (tests/lab/zones) and the SMTP peers (tests/lab/smtp_peers.py). Every peer listens on the
same high port (chosen free at lab start), on its own 127.0.0.x address; ::1 hosts an accepting peer for IPv6.
Timeouts in the lab settings (LAB_TIMEOUTS) are short so the suite stays fast; behaviours are sized against them.
"""

from __future__ import annotations

# --- SMTP peers: address -> behaviour
ACCEPT_1 = "127.0.0.10"  # aiosmtpd: 220 greeting, 250 EHLO with STARTTLS advertised, 221 on QUIT
ACCEPT_2 = "127.0.0.11"  # aiosmtpd: same, no STARTTLS
MULTILINE = (
    "127.0.0.12"  # raw: "220-first", pause MULTILINE_PAUSE s, "220-second", "220 last"; then normal EHLO/QUIT
)
GREET_421 = "127.0.0.20"  # raw: "421 too busy" then closes
GREET_554 = "127.0.0.21"  # raw: "554 no service", waits for QUIT, answers 221
SILENT = "127.0.0.22"  # raw: accepts TCP, never writes
CLOSED = "127.0.0.23"  # nothing listens: connection refused
SLOW_GREETING = "127.0.0.24"  # raw: greets "220" after SLOW_GREETING_DELAY s (beyond greeting_timeout)
EHLO_REJECT = "127.0.0.25"  # raw: 220, then "502 5.5.1 no EHLO" (and 250 to HELO), 221 to QUIT
GARBAGE = "127.0.0.26"  # raw: writes "HTTP/1.1 400 Bad Request" style garbage instead of a reply
DRIBBLE = "127.0.0.27"  # raw: writes "220-" continuation lines one byte every DRIBBLE_INTERVAL s, forever
FAILOVER_PRIMARY = "127.0.0.30"  # aiosmtpd: accepting; tests stop and start it
FAILOVER_BACKUP = "127.0.0.31"  # aiosmtpd: accepting; tests stop and start it
SINK = "127.0.0.40"  # Postfix smtp-sink (a real MTA-grade peer)
MANY = tuple(f"127.0.0.{n}" for n in range(50, 57))  # 7 addresses of one exchange, all accepting (aiosmtpd)
IPV6_ACCEPT = "::1"  # aiosmtpd: accepting
V4_ONLY_PEER = (
    "127.0.0.77"  # nothing in the shared lab; tests/test_ipv6_parity.py runs an IPv4-only peer here
)
PRIVATE = "10.255.255.1"  # in the zone only; outside allow_networks, so it must never be connected to

MULTILINE_PAUSE = 1.0
SLOW_GREETING_DELAY = 6.0
DRIBBLE_INTERVAL = 0.5

# Lab settings: the exporter's timeouts for lab runs (seconds).
LAB_TIMEOUTS = {
    "dns_timeout": 2.0,
    "connect_timeout": 1.0,
    "greeting_timeout": 2.5,  # above MULTILINE_PAUSE, below SLOW_GREETING_DELAY
    "ehlo_timeout": 2.0,
    "session_timeout": 4.0,  # the dribbler never finishes: only this deadline ends it
}

ALLOW_NETWORKS = ["127.0.0.0/8", "::1/128"]
EHLO_NAME = "probe.lab.test"

# --- DNS: the zone "lab.test" and what each domain in it is for (see tests/lab/zones/lab.test.zone).
ZONE = "lab.test"
DOMAINS = {
    "healthy.lab.test": "MX 10 mx1 (ACCEPT_1 + IPV6_ACCEPT), MX 20 mx2 (ACCEPT_2): two tiers, all up",
    "primary-down.lab.test": "MX 10 -> CLOSED, MX 20 -> ACCEPT_2: primary down, deliverable via backup",
    "failover.lab.test": "MX 10 -> FAILOVER_PRIMARY, MX 20 -> FAILOVER_BACKUP: tests stop peers",
    "undeliverable.lab.test": "MX 10 -> CLOSED, MX 20 -> SILENT: nothing accepts",
    "equal.lab.test": "MX 10 a -> ACCEPT_1, MX 10 b -> SILENT: one tier of two, up",
    "fallback.lab.test": "no MX, A ACCEPT_1: implicit MX at preference 0",
    "noaddr.lab.test": "no MX, no A/AAAA (TXT only): nodata, no mail hosts",
    "nxdomain.lab.test": "does not exist",
    "nullmx.lab.test": "MX 0 . : accepts no mail by design",
    "nullmixed.lab.test": "MX 0 . and MX 10 -> ACCEPT_1: null_mx_mixed",
    "cname.lab.test": "MX 10 alias.cname.lab.test, a CNAME to mx1.healthy.lab.test: cname_target, followed",
    "literal.lab.test": "MX 10 127.0.0.10. (an IP literal as a name), MX 20 -> ACCEPT_2: ip_literal_target",
    "unresolvable.lab.test": "MX 10 nohost.unresolvable.lab.test (no records), MX 20 -> ACCEPT_2",
    "duplicate.lab.test": "MX 10 mx1 and MX 20 mx1 (same exchange): duplicate_exchange, probed once",
    "nonglobal.lab.test": "MX 10 -> PRIVATE (10.255.255.1), MX 20 -> ACCEPT_2: non_global_address, skipped",
    "multiline.lab.test": "MX 10 -> MULTILINE",
    "greet421.lab.test": "MX 10 -> GREET_421",
    "greylist.lab.test": "MX 10 -> GREET_421, MX 20 -> ACCEPT_2: greylisting's 421, Postfix and Exim use the backup",
    "greet554.lab.test": "MX 10 -> GREET_554",
    "silent.lab.test": "MX 10 -> SILENT",
    "closed.lab.test": "MX 10 -> CLOSED",
    "slow.lab.test": "MX 10 -> SLOW_GREETING",
    "ehloreject.lab.test": "MX 10 -> EHLO_REJECT",
    "garbage.lab.test": "MX 10 -> GARBAGE",
    "dribble.lab.test": "MX 10 -> DRIBBLE",
    "sink.lab.test": "MX 10 -> SINK (smtp-sink)",
    "v6only.lab.test": "MX 10 -> AAAA IPV6_ACCEPT only",
    "dualstack.lab.test": "MX 10 -> A V4_ONLY_PEER (closed in the shared lab) and AAAA IPV6_ACCEPT",
    "many.lab.test": "MX 10 -> one exchange with the 7 MANY addresses (capped at 5 per exchange)",
    "shared1.lab.test": "MX 10 -> ACCEPT_1 (shares the address with healthy: probed once per refresh)",
    "shared2.lab.test": "MX 10 -> ACCEPT_1",
    "ttl.lab.test": "MX 10 -> ACCEPT_2 with TTL 1234 on the MX RRset",
}
# Not in any served zone: NSD answers REFUSED, which the resolver reports as servfail.
REFUSED_DOMAIN = "elsewhere.example.test"
# In nsd.conf but with a missing zone file: NSD answers SERVFAIL for names in it.
SERVFAIL_DOMAIN = "mail.broken.test"
