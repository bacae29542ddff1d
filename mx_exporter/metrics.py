"""The metric catalogue: the one list of names, types, labels and help texts.

The collector, the README metric table and the naming tests all read this list, so a metric cannot exist in one
place and not the others. Per-domain values come from the last finished refresh; HELP texts say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram"]

# Each fact is exported once, at the level it belongs to (docs/architecture.md, "Metric model"):
DOMAIN = ("domain",)  # the domain's DNS facts and verdicts
MEMBERSHIP = ("domain", "exchange")  # which exchanges a domain's MX set names: the join between the levels
EXCHANGE = ("exchange",)  # an exchange name's facts, shared by every domain that names it
ADDRESS = (
    "exchange",
    "address",
    "family",
)  # one SMTP session's facts, shared by every domain behind the name
LEVELS = (DOMAIN, MEMBERSHIP, EXCHANGE, ADDRESS)

LAST = " (from the last finished probe)"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str


CATALOGUE: tuple[MetricSpec, ...] = (
    # --- domain verdicts
    MetricSpec(
        "mx_domain_deliverable",
        "gauge",
        DOMAIN,
        "1 when at least one address of the domain's mail hosts (explicit or implicit MX) accepted a "
        "session: 2xx greeting and 250 to EHLO" + LAST,
    ),
    MetricSpec(
        "mx_primary_up",
        "gauge",
        DOMAIN,
        "1 when at least one address in the most preferred MX tier accepted a session" + LAST,
    ),
    MetricSpec(
        "mx_active_preference",
        "gauge",
        DOMAIN,
        "Preference of the tier a sender would use now (lowest with an accepting address); -1 when none"
        + LAST,
    ),
    MetricSpec(
        "mx_ipv6_deliverable",
        "gauge",
        DOMAIN,
        "1 when at least one IPv6 address of the domain's mail hosts accepted a session: IPv6-capable senders "
        "can deliver over IPv6" + LAST,
    ),
    MetricSpec(
        "mx_delivery_outcome",
        "gauge",
        ("domain", "sender", "outcome"),
        "1 for what happens to a message this sending MTA (postfix, exim, qmail) sends now: delivered, queued "
        "or bounced; every outcome is always emitted" + LAST,
    ),
    MetricSpec(
        "mx_delivery_preference",
        "gauge",
        ("domain", "sender"),
        "Preference this sending MTA would deliver to now; -1 unless it delivers" + LAST,
    ),
    MetricSpec(
        "mx_expectation_met",
        "gauge",
        ("domain", "expectation"),
        "1 when the configured expectation holds" + LAST,
    ),
    # --- DNS facts
    MetricSpec(
        "mx_record_set_info",
        "gauge",
        ("domain", "digest", "records"),
        "Always 1: the domain's MX record set (digest: a short stable hash of every MX record and every "
        "exchange's addresses; records: the MX records); one series per domain, a new digest on every change"
        + LAST,
    ),
    MetricSpec(
        "mx_records_changed_timestamp_seconds",
        "gauge",
        DOMAIN,
        "Unix time this exporter first saw the domain's record set, or last saw it change" + LAST,
    ),
    MetricSpec("mx_records", "gauge", DOMAIN, "MX records in the answer, 0 when none" + LAST),
    MetricSpec("mx_tiers", "gauge", DOMAIN, "Distinct MX preference values (1 for an implicit MX)" + LAST),
    MetricSpec(
        "mx_preference_gap",
        "gauge",
        DOMAIN,
        "Second-lowest minus lowest distinct MX preference; 0 with fewer than two tiers" + LAST,
    ),
    MetricSpec(
        "mx_fallback_to_a",
        "gauge",
        DOMAIN,
        "1 when the domain has no MX RRset and its own A/AAAA is used as implicit MX" + LAST,
    ),
    MetricSpec(
        "mx_null_mx",
        "gauge",
        DOMAIN,
        "1 for an RFC 7505 null MX (0 .): the domain accepts no mail by design" + LAST,
    ),
    MetricSpec(
        "mx_dns_status",
        "gauge",
        ("domain", "status"),
        "State set: 1 for the status of the MX lookup, 0 for the others" + LAST,
    ),
    MetricSpec(
        "mx_misconfiguration",
        "gauge",
        ("domain", "kind"),
        "1 when the MX set has this kind of misconfiguration" + LAST,
    ),
    MetricSpec("mx_record_ttl_seconds", "gauge", DOMAIN, "TTL of the MX RRset" + LAST),
    # --- transport security (DANE, MTA-STS, TLS-RPT); absent when that check is off for the domain
    MetricSpec(
        "mx_dane_applies",
        "gauge",
        DOMAIN,
        "1 when some exchange publishes a DNSSEC-secure TLSA RRset with a record usable for SMTP (RFC 7672)"
        + LAST,
    ),
    MetricSpec(
        "mx_dane_valid",
        "gauge",
        DOMAIN,
        "1 when every accepting address that DANE applies to presented a chain matching its TLSA records "
        "(1 when DANE applies nowhere)" + LAST,
    ),
    MetricSpec(
        "mx_dane_bogus",
        "gauge",
        DOMAIN,
        "1 when some exchange's TLSA or address answer failed DNSSEC validation (or the TLSA lookup failed)"
        + LAST,
    ),
    MetricSpec(
        "mx_mta_sts_policy_state",
        "gauge",
        ("domain", "state"),
        "State set: 1 for how the MTA-STS record and policy fetch ended (none: no _mta-sts record)" + LAST,
    ),
    MetricSpec(
        "mx_mta_sts_mode",
        "gauge",
        ("domain", "mode"),
        "State set: 1 for the mode of the MTA-STS policy in force (fetched or cached); all 0 without one"
        + LAST,
    ),
    MetricSpec(
        "mx_mta_sts_max_age_seconds", "gauge", DOMAIN, "max_age of the MTA-STS policy in force" + LAST
    ),
    MetricSpec(
        "mx_mta_sts_mx_match",
        "gauge",
        DOMAIN,
        "1 when every exchange of the MX set matches an mx pattern of the MTA-STS policy in force" + LAST,
    ),
    MetricSpec(
        "mx_mta_sts_certificates_valid",
        "gauge",
        DOMAIN,
        "1 when every accepting address presented a certificate valid for its exchange name, as MTA-STS "
        "requires (only with a policy in force)" + LAST,
    ),
    MetricSpec(
        "mx_mta_sts_deliverable",
        "gauge",
        DOMAIN,
        "1 when a sender applying the MTA-STS policy would deliver now (enforce: a matching exchange with a "
        "valid certificate accepts; otherwise as mx_domain_deliverable)" + LAST,
    ),
    MetricSpec(
        "mx_tls_rpt_valid",
        "gauge",
        DOMAIN,
        "1 when exactly one well-formed TLS-RPT record (v=TLSRPTv1 with rua=) is published (RFC 8460)" + LAST,
    ),
    MetricSpec("mx_probe_duration_seconds", "gauge", DOMAIN, "Wall time of the domain's last full probe"),
    MetricSpec(
        "mx_last_probe_timestamp_seconds", "gauge", DOMAIN, "Unix time the domain's last probe finished"
    ),
    # --- membership: the one series per (domain, exchange), joined on `exchange`
    MetricSpec(
        "mx_exchange_preference",
        "gauge",
        MEMBERSHIP,
        "MX preference of the exchange in the domain's MX set (0 for an implicit MX); one series per domain "
        "and exchange, to join exchange and address series to domains on `exchange`" + LAST,
    ),
    # --- per exchange name, shared by every domain that names it
    MetricSpec("mx_exchange_up", "gauge", EXCHANGE, "1 when any address of the exchange accepted" + LAST),
    MetricSpec(
        "mx_dane_tlsa_records",
        "gauge",
        EXCHANGE,
        "TLSA records usable for SMTP (DANE-TA, DANE-EE) in the exchange's DNSSEC-secure _25._tcp RRset; 0 "
        "when insecure or bogus (only when DANE is evaluated)" + LAST,
    ),
    # --- per session: (exchange, address), shared by every domain behind the exchange
    MetricSpec("mx_smtp_up", "gauge", ADDRESS, "1 when this address accepted a session" + LAST),
    MetricSpec(
        "mx_smtp_outcome",
        "gauge",
        (*ADDRESS, "outcome"),
        "State set: 1 for how the session with this address ended, 0 for the others" + LAST,
    ),
    MetricSpec("mx_smtp_greeting_code", "gauge", ADDRESS, "Final greeting reply code, 0 when none" + LAST),
    MetricSpec("mx_smtp_connect_duration_seconds", "gauge", ADDRESS, "TCP connect time" + LAST),
    MetricSpec(
        "mx_smtp_greeting_duration_seconds",
        "gauge",
        ADDRESS,
        "Time from connect to the final greeting line" + LAST,
    ),
    MetricSpec(
        "mx_smtp_starttls_advertised", "gauge", ADDRESS, "1 when the EHLO reply advertised STARTTLS" + LAST
    ),
    MetricSpec(
        "mx_smtp_tls_handshake_success", "gauge", ADDRESS, "1 when the STARTTLS handshake succeeded" + LAST
    ),
    MetricSpec("mx_smtp_tls_version_info", "gauge", (*ADDRESS, "version"), "Negotiated TLS version" + LAST),
    MetricSpec(
        "mx_smtp_tls_cert_not_after_timestamp_seconds",
        "gauge",
        ADDRESS,
        "Expiry of the presented certificate, unix time" + LAST,
    ),
    MetricSpec(
        "mx_smtp_tls_cert_valid",
        "gauge",
        ADDRESS,
        "1 when the certificate chain verified and its names cover the exchange name" + LAST,
    ),
    MetricSpec(
        "mx_dane_state",
        "gauge",
        (*ADDRESS, "state"),
        "State set: 1 for this address's DANE state for the exchange (secure_match, secure_no_match, "
        "insecure, bogus, no_tlsa); absent when nothing could be matched (no accepted session)" + LAST,
    ),
    # --- the exporter itself
    MetricSpec("mx_exporter_build_info", "gauge", ("version", "python"), "Build information, always 1"),
    MetricSpec("mx_exporter_refresh_duration_seconds", "histogram", (), "Wall time of full refresh cycles"),
    MetricSpec("mx_exporter_domains", "gauge", (), "Watched domains"),
    MetricSpec(
        "mx_exporter_config_last_reload_successful",
        "gauge",
        (),
        "1 when the last configuration load succeeded",
    ),
    MetricSpec(
        "mx_exporter_config_last_reload_success_timestamp_seconds",
        "gauge",
        (),
        "Unix time of the last successful configuration load",
    ),
    MetricSpec("mx_exporter_refreshes", "counter", (), "Finished refresh cycles"),
    MetricSpec(
        "mx_exporter_probe_errors",
        "counter",
        (),
        "Domain probes that raised an unexpected error (a bug: the domain keeps its previous result)",
    ),
    MetricSpec("mx_exporter_smtp_sessions", "counter", (), "SMTP sessions opened"),
    MetricSpec(
        "mx_exporter_last_refresh_timestamp_seconds", "gauge", (), "Unix time the last refresh cycle finished"
    ),
    MetricSpec(
        "mx_exporter_dns_queries",
        "counter",
        ("type", "result"),
        "DNS questions sent on the wire, by record type and how they ended (answer, nxdomain, nodata, "
        "servfail, timeout, error); questions answered from the refresh cycle's cache are not counted",
    ),
    MetricSpec(
        "mx_exporter_dns_tcp_retries",
        "counter",
        ("type",),
        "DNS answers that came back truncated over UDP and were asked again over TCP",
    ),
    MetricSpec(
        "mx_exporter_dns_cache_hits",
        "counter",
        (),
        "DNS questions answered from the refresh cycle's cache or joined to one already in flight",
    ),
    MetricSpec(
        "mx_exporter_last_refresh_dns_queries",
        "gauge",
        ("result",),
        "DNS questions sent on the wire during the last finished refresh cycle, by result",
    ),
    MetricSpec(
        "mx_exporter_last_refresh_smtp_sessions",
        "gauge",
        (),
        "SMTP sessions opened during the last finished refresh cycle",
    ),
    MetricSpec("mx_exporter_asyncio_tasks", "gauge", (), "asyncio tasks alive in the exporter's event loop"),
    MetricSpec(
        "mx_exporter_egress_up",
        "gauge",
        (),
        "1 when this exporter could connect to one of its egress canaries (egress.canaries) at the start of the "
        "last refresh; 0: outbound port 25 is blocked here and domain verdicts are inconclusive; absent without "
        "canaries",
    ),
    MetricSpec(
        "mx_exporter_egress_state",
        "gauge",
        ("state",),
        "1 for how the last egress canary check ended: up, connect_timeout, connection_refused, unresolved; "
        "absent without canaries",
    ),
    MetricSpec(
        "mx_exporter_ipv6_no_route",
        "gauge",
        (),
        "1 when IPv6 connects in the last refresh failed with 'network unreachable': this exporter's host has no "
        "IPv6 route, so its AAAA results say nothing about the peers (they never count as ipv6_broken)",
    ),
    MetricSpec(
        "mx_exporter_egress_suspected",
        "gauge",
        (),
        "1 when at least 90 % of the distinct addresses of the last refresh failed with connect timeouts: "
        "outbound port 25 may be blocked (a heuristic; configure egress.canaries to know)",
    ),
)

# Only for the /probe endpoint (multi-target pattern), never on /metrics.
PROBE_CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec(
        "mx_probe_success",
        "gauge",
        (),
        "1 when the probe finished and the domain is deliverable (or a null MX by design)",
    ),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in CATALOGUE + PROBE_CATALOGUE}


def spec(name: str) -> MetricSpec:
    return BY_NAME[name]


def exposed_name(m: MetricSpec) -> str:
    """The name as it appears in the exposition (counters gain _total)."""
    return m.name + "_total" if m.type == "counter" else m.name


def markdown_table() -> str:
    """The README metric table, generated so it cannot drift from the catalogue."""
    rows = ["| metric | type | labels | help |", "|---|---|---|---|"]
    for m in CATALOGUE + PROBE_CATALOGUE:
        labels = ", ".join(m.labels) or "—"
        rows.append(f"| `{exposed_name(m)}` | {m.type} | {labels} | {m.help} |")
    return "\n".join(rows)
