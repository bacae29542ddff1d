"""MX change tracking against the real lab: NSD's zone is rewritten and reloaded under a running exporter."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.lab import plan
from tests.lab.exporter import Exporter, lab_config, series, value, wait_for
from tests.lab.nsd import NsdServer

ZONE = "change.test"
HEAD = f"""$ORIGIN {ZONE}.
$TTL 1
@ SOA ns.{ZONE}. hostmaster.{ZONE}. {{serial}} 3600 600 86400 1
@ NS ns.{ZONE}.
ns A 127.0.0.1
"""
BEFORE = "moved MX 10 mx1.moved\nmx1.moved A {a}\nsteady MX 10 mx.steady\nmx.steady A {a}\n"
AFTER = "moved MX 10 mx3.moved\nmx3.moved A {a}\nsteady MX 10 mx.steady\nmx.steady A {a}\n"


def _write(folder: Path, serial: int, body: str) -> None:
    (folder / f"{ZONE}.zone").write_text(HEAD.format(serial=serial) + body.format(a=plan.ACCEPT_1))


def test_a_zone_change_moves_the_digest_and_the_timestamp_of_that_domain_only(
    smtp_lab: Any, tmp_path: Path, start_exporter: Any
) -> None:
    _write(tmp_path, 1, BEFORE)
    with NsdServer(zones_dir=tmp_path, zone=ZONE) as nsd:
        domains = [f"moved.{ZONE}", f"steady.{ZONE}"]
        exporter: Exporter = start_exporter(
            lab_config(nsd.nameserver, smtp_lab.port, domains, refresh_interval=1)
        )
        first = exporter.scrape()
        (before,) = series(first, "mx_record_set_info", domain=f"moved.{ZONE}")
        assert before.labels["records"] == f"10 mx1.moved.{ZONE}"
        seen_at = value(first, "mx_records_changed_timestamp_seconds", domain=f"moved.{ZONE}")
        steady = value(first, "mx_records_changed_timestamp_seconds", domain=f"steady.{ZONE}")
        time.sleep(1.1)  # the change must get a later timestamp than the first observation

        _write(tmp_path, 2, AFTER)
        nsd.reload()
        moved: list[Any] = []

        def digest_moved() -> bool:
            moved[:] = series(exporter.scrape(), "mx_record_set_info", domain=f"moved.{ZONE}")
            return len(moved) == 1 and moved[0].labels["digest"] != before.labels["digest"]

        wait_for(digest_moved, 20, "a new digest for the changed domain", exporter.log)
        after = exporter.scrape()
        assert moved[0].labels["records"] == f"10 mx3.moved.{ZONE}"
        assert value(after, "mx_records_changed_timestamp_seconds", domain=f"moved.{ZONE}") > seen_at
        assert value(after, "mx_records_changed_timestamp_seconds", domain=f"steady.{ZONE}") == steady
        page = exporter.get(f"/?q=moved.{ZONE}")[1]  # a filtered domain is shown in full
        assert f"changed 0 min ago: +10 mx3.moved.{ZONE}" in page and f"\u221210 mx1.moved.{ZONE}" in page
