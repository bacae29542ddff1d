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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

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
S = TypeVar("S", DomainReport, Exchange)


def _number(value: float) -> str:
    """A sample value as the text format reads it: Python's shortest float text, or NaN/+Inf/-Inf."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    if '"' not in value and "\\" not in value and "\n" not in value:
        return value  # the usual case: host names need no escaping
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(spec: MetricSpec) -> bytes:
    help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n".encode()


_HEADERS = [(spec.name, _header(spec)) for spec in REPORT_SPECS]


def _labels(keys: tuple[str, ...], values: tuple[str, ...]) -> str:
    """'domain="x",status="ok"' — the common arities spelled out: this runs for every sample rendered."""
    e = _escape
    if len(keys) == 1:
        return f'{keys[0]}="{e(values[0])}"'
    if len(keys) == 2:
        return f'{keys[0]}="{e(values[0])}",{keys[1]}="{e(values[1])}"'
    if len(keys) == 3:
        return f'{keys[0]}="{e(values[0])}",{keys[1]}="{e(values[1])}",{keys[2]}="{e(values[2])}"'
    return ",".join(f'{k}="{e(v)}"' for k, v in zip(keys, values, strict=True))


_NUMBERS = {0.0: "0.0", 1.0: "1.0", -1.0: "-1.0"}  # most samples are 0/1 flags


def sample_text(samples: Iterable[Sample]) -> dict[str, bytes]:
    """Samples -> family name -> their exposition lines, in the order given (bytes: joined without a copy)."""
    lines: dict[str, list[str]] = {}
    for name, values, value in samples:
        keys = _LABELS[name]
        if len(keys) != len(values):
            raise ValueError(f"{name} takes labels {keys}, got values {values}")
        number = _NUMBERS.get(value) or _number(value)
        chunk = lines.get(name)
        if chunk is None:
            chunk = lines[name] = []
        chunk.append(f"{name}{{{_labels(keys, values)}}} {number}\n")
    return {name: "".join(chunk).encode() for name, chunk in lines.items()}


@dataclass
class _Cached:
    source: object  # the report or exchange the text was made from (compared by identity)
    text: tuple[bytes, ...]  # one chunk per report family, in catalogue order (b"" where it has none)


def _columns(text: dict[str, bytes]) -> tuple[bytes, ...]:
    return tuple(text.get(name, b"") for name, _ in _HEADERS)


class Renderer:
    """Renders the report families of many domains, reusing the text of everything that did not change.

    Not thread-safe: one caller at a time (the web layer serialises renders behind a lock).
    """

    def __init__(self) -> None:
        self._domains: dict[str, _Cached] = {}
        self._exchanges: dict[str, _Cached] = {}
        self.formatted = 0  # domains and exchanges formatted afresh, over the renderer's life (for tests)

    def _text(
        self, cache: dict[str, _Cached], key: str, source: S, samples: Callable[[S], list[Sample]]
    ) -> tuple[bytes, ...]:
        """The cached text of ``source`` under ``key``, formatted afresh only when the object changed."""
        cached = cache.get(key)
        if cached is None or cached.source is not source:
            cached = cache[key] = _Cached(source, _columns(sample_text(samples(source))))
            self.formatted += 1
        return cached.text

    def render(self, reports: Sequence[DomainReport]) -> bytes:
        """The text of every report family (HELP and TYPE even without samples), in catalogue order."""
        return b"".join(self.render_chunks(reports))

    def render_chunks(self, reports: Sequence[DomainReport]) -> list[bytes]:
        """``render`` as a header and one chunk per family: sent one after the other, never joined into a copy
        (at 10,000 domains the body is ~30 MB)."""
        unique = latest_reports(reports)
        exchanges = latest_exchanges(unique)
        fragments = [self._text(self._domains, r.domain, r, domain_samples) for r in unique]
        fragments += [self._text(self._exchanges, x.name, x, exchange_samples) for x in exchanges.values()]
        names = {r.domain for r in unique}
        for gone in [d for d in self._domains if d not in names]:
            del self._domains[gone]
        for gone in [x for x in self._exchanges if x not in exchanges]:
            del self._exchanges[gone]
        # zip(*fragments) turns the per-entity rows into per-family columns without a Python loop per chunk.
        columns = zip(*fragments, strict=True) if fragments else ((),) * len(_HEADERS)
        parts: list[bytes] = []
        for (_, header), column in zip(_HEADERS, columns, strict=True):
            parts.append(header)
            parts.append(b"".join(column))
        return parts


@dataclass(frozen=True)
class GzipHead:
    """The start of a gzip stream: header and raw deflate data ending on a full flush, plus its CRC and size."""

    data: bytes
    crc: int
    size: int


def gzip_head(body: bytes | Sequence[bytes], level: int = GZIP_LEVEL) -> GzipHead:
    """Compress ``body`` (or its chunks, in order) as the head of a gzip stream ``gzip_finish`` completes."""
    chunks = [body] if isinstance(body, bytes) else body
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    data, crc, size = [_GZIP_HEADER], 0, 0
    for chunk in chunks:
        data.append(deflate.compress(chunk))
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    data.append(deflate.flush(zlib.Z_FULL_FLUSH))
    return GzipHead(b"".join(data), crc, size)


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
