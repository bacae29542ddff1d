"""The incremental renderer of /metrics: same samples as client_python's rendering, cost only for changes."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mx_exporter.assess import build_report
from mx_exporter.exposition import Renderer, gzip_finish, gzip_head
from mx_exporter.model import DomainReport
from tests.builders import FINISHED, REPORTS, Out, domain, render, res


def _parsed(text: bytes) -> list[tuple[str, str, str, tuple[tuple[str, str], ...], float]]:
    """(family, help, type, labels, value) of every sample, in order, for a format-independent comparison."""
    return [
        (f.name, f.documentation, f.type, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    ] + [(f.name, f.documentation, f.type, (), -0.0) for f in text_string_to_metric_families(text.decode())]


def test_same_families_and_samples_as_client_python() -> None:
    reports = list(REPORTS.values())
    assert _parsed(Renderer().render(reports)) == _parsed(render(reports))


def test_no_reports_renders_every_family_header() -> None:
    assert _parsed(Renderer().render([])) == _parsed(render([]))


def _hosted(i: int, outcome: Out = Out.ACCEPTED, finished: float = FINISHED) -> DomainReport:
    return build_report(
        *domain(
            f"d{i}.hosted.test",
            (10, "mx1.provider.test", (res("127.0.0.50", outcome),)),
            (20, f"mx.d{i}.hosted.test", (res(f"127.0.1.{i}", outcome),)),
        ),
        0.1,
        finished,
    )


def test_only_changed_domains_and_exchanges_are_formatted_again() -> None:
    renderer = Renderer()
    reports = [_hosted(i) for i in range(20)]
    first = renderer.render(reports)
    assert renderer.formatted == 20 + 21  # every domain, its own exchange and the shared one
    assert renderer.render(reports) == first
    assert renderer.formatted == 41  # nothing changed: nothing formatted
    reports[3] = _hosted(3, Out.CONNECTION_REFUSED, FINISHED + 60)
    changed = renderer.render(reports)
    # domain 3, its own exchange, and the shared exchange (its newest copy is now domain 3's)
    assert renderer.formatted == 41 + 3
    assert _parsed(changed) == _parsed(render(reports))


def test_removed_domains_and_exchanges_disappear() -> None:
    renderer = Renderer()
    renderer.render([_hosted(i) for i in range(3)])
    text = renderer.render([_hosted(0)]).decode()
    assert "d1.hosted.test" not in text and "d2.hosted.test" not in text
    assert 'exchange="mx.d0.hosted.test"' in text and 'exchange="mx1.provider.test"' in text


def test_label_values_are_escaped() -> None:
    odd = 'we"ird\\name\nx'
    report = replace(REPORTS["nxdomain"], resolution=replace(REPORTS["nxdomain"].resolution, domain=odd))
    samples = [
        s for f in text_string_to_metric_families(Renderer().render([report]).decode()) for s in f.samples
    ]
    assert {s.labels["domain"] for s in samples} == {odd}


@pytest.mark.parametrize("tail", [b"", b"# own metrics\nmx_exporter_domains 3.0\n"])
def test_gzip_head_and_tail_make_one_valid_stream(tail: bytes) -> None:
    chunks = Renderer().render_chunks(list(REPORTS.values())) * 20
    body = b"".join(chunks)
    whole = gzip_finish(gzip_head(chunks), tail)
    assert gzip_finish(gzip_head(body), tail) == whole  # chunked or whole: the same stream
    assert gzip.decompress(whole) == body + tail
    # one member, as strict readers (zlib with the gzip wrapper) expect: nothing left over
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(whole) == body + tail and reader.eof and reader.unused_data == b""
    assert len(whole) < len(body) / 5


@pytest.mark.parametrize("value", [0, 1, -1, 0.0012, 1767225600.0, 1e300, float("inf"), float("-inf")])
def test_sample_values_read_back_exactly(value: float) -> None:
    from mx_exporter.exposition import sample_text

    text = sample_text([("mx_records", ("x.test",), value)])["mx_records"].decode()
    parsed = next(iter(text_string_to_metric_families(text))).samples[0].value
    assert parsed == value
