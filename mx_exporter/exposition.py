"""The watched domains' part of /metrics as Prometheus text, with a render cost proportional to what changed.

With 10,000 domains a full render takes far longer than a scrape may; during a refresh every report changes one
by one. So text is cached per domain (keyed by the report object: reports are immutable and replaced, never
edited) and per exchange name (keyed by the exchange object chosen by ``collector.latest_exchanges``), one text
fragment per metric family; a render re-formats only the domains and exchanges whose objects changed and then
joins the fragments family by family (the text format wants each family's samples together).

The gzip body is cached too, as the head of a gzip stream that a scrape finishes with the small, ever-changing
part (the exporter's own metrics): compressing tens of megabytes per scrape would cost more than rendering.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mx_exporter.collector import (
    REPORT_SPECS,
    Sample,
    domain_samples,
    exchange_samples,
    latest_exchanges,
    latest_reports,
)
from mx_exporter.metrics import MetricSpec
from mx_exporter.model import DomainReport, Exchange

GZIP_LEVEL = 6  # zlib's default; the cached head is compressed once per change, not per scrape
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
_LABELS: dict[str, tuple[str, ...]] = {s.name: s.labels for s in REPORT_SPECS}


def _number(value: float) -> str:
    """A sample value as the text format reads it: Python's shortest float text, or NaN/+Inf/-Inf."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(spec: MetricSpec) -> bytes:
    help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n".encode()


_HEADERS = [(spec.name, _header(spec)) for spec in REPORT_SPECS]


def sample_text(samples: Iterable[Sample]) -> dict[str, bytes]:
    """Samples -> family name -> their exposition lines, in the order given (bytes: joined without a copy)."""
    lines: dict[str, list[str]] = {}
    for name, values, value in samples:
        labels = ",".join(f'{key}="{_escape(v)}"' for key, v in zip(_LABELS[name], values, strict=True))
        lines.setdefault(name, []).append(f"{name}{{{labels}}} {_number(value)}\n")
    return {name: "".join(chunk).encode() for name, chunk in lines.items()}


@dataclass
class _Cached:
    source: object  # the report or exchange the text was made from (compared by identity)
    text: dict[str, bytes]


class Renderer:
    """Renders the report families of many domains, reusing the text of everything that did not change.

    Not thread-safe: one caller at a time (the web layer serialises renders behind a lock).
    """

    def __init__(self) -> None:
        self._domains: dict[str, _Cached] = {}
        self._exchanges: dict[str, _Cached] = {}
        self.formatted = 0  # domains and exchanges formatted afresh, over the renderer's life (for tests)

    def _domain_text(self, report: DomainReport) -> dict[str, bytes]:
        cached = self._domains.get(report.domain)
        if cached is None or cached.source is not report:
            cached = _Cached(report, sample_text(domain_samples(report)))
            self._domains[report.domain] = cached
            self.formatted += 1
        return cached.text

    def _exchange_text(self, exchange: Exchange) -> dict[str, bytes]:
        cached = self._exchanges.get(exchange.name)
        if cached is None or cached.source is not exchange:
            cached = _Cached(exchange, sample_text(exchange_samples(exchange)))
            self._exchanges[exchange.name] = cached
            self.formatted += 1
        return cached.text

    def render(self, reports: Sequence[DomainReport]) -> bytes:
        """The text of every report family (HELP and TYPE even without samples), in catalogue order."""
        unique = latest_reports(reports)
        exchanges = latest_exchanges(unique)
        fragments = [self._domain_text(r) for r in unique]
        fragments += [self._exchange_text(x) for x in exchanges.values()]
        names = {r.domain for r in unique}
        for gone in [d for d in self._domains if d not in names]:
            del self._domains[gone]
        for gone in [x for x in self._exchanges if x not in exchanges]:
            del self._exchanges[gone]
        parts: list[bytes] = []
        for name, header in _HEADERS:
            parts.append(header)
            parts.extend(text[name] for text in fragments if name in text)
        return b"".join(parts)


@dataclass(frozen=True)
class GzipHead:
    """The start of a gzip stream: header and raw deflate data ending on a full flush, plus its CRC and size."""

    data: bytes
    crc: int
    size: int


def gzip_head(body: bytes, level: int = GZIP_LEVEL) -> GzipHead:
    """Compress ``body`` as the head of a gzip stream that ``gzip_finish`` completes with any tail."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = _GZIP_HEADER + deflate.compress(body) + deflate.flush(zlib.Z_FULL_FLUSH)
    return GzipHead(data, zlib.crc32(body), len(body))


def gzip_finish(head: GzipHead, tail: bytes) -> bytes:
    """One valid gzip member holding head's body followed by ``tail`` (RFC 1951 §3.2.3, RFC 1952).

    After a full flush the deflate stream is byte-aligned and nothing later refers back into it, so a fresh raw
    deflate stream for the tail can follow it directly; only the trailer (CRC-32 and size) covers both parts.
    """
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = deflate.compress(tail) + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(tail, head.crc)
    size = (head.size + len(tail)) & 0xFFFFFFFF
    return head.data + data + struct.pack("<II", crc, size)
