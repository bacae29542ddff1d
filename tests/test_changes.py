"""Table tests for MX change tracking (mx_exporter/changes.py): literal resolutions in, record sets out."""

from __future__ import annotations

from mx_exporter.changes import digest, members, track
from mx_exporter.model import DnsStatus, Family, Resolution, ResolvedAddress, ResolvedExchange


def mx(*exchanges: tuple[int, str, tuple[str, ...]], **kw: object) -> Resolution:
    resolved = tuple(
        ResolvedExchange(name, pref, tuple(ResolvedAddress(a, Family.IPV4, True) for a in addrs))
        for pref, name, addrs in exchanges
    )
    kw.setdefault("status", DnsStatus.OK)
    return Resolution("c.lab.test", exchanges=resolved, **kw)  # type: ignore[arg-type]


ONE = mx((10, "mx1.c.lab.test", ("192.0.2.1",)))
TWO = mx((10, "mx1.c.lab.test", ("192.0.2.1",)), (20, "mx3.c.lab.test", ("192.0.2.3",)))
MOVED = mx((10, "mx1.c.lab.test", ("192.0.2.9",)))


def test_members_cover_records_and_addresses() -> None:
    assert members(TWO) == (
        "10 mx1.c.lab.test",
        "20 mx3.c.lab.test",
        "mx1.c.lab.test 192.0.2.1",
        "mx3.c.lab.test 192.0.2.3",
    )
    assert members(Resolution("c.lab.test", DnsStatus.OK, null_mx=True)) == ("0 .",)
    assert members(Resolution("c.lab.test", DnsStatus.NXDOMAIN)) == ("nxdomain",)
    assert members(Resolution("c.lab.test", DnsStatus.NODATA)) == ("nodata",)
    implicit = mx((0, "c.lab.test", ("192.0.2.5",)), status=DnsStatus.NODATA, fallback_to_a=True)
    assert members(implicit) == ("c.lab.test 192.0.2.5",)
    for temporary in (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT, DnsStatus.ERROR):
        assert members(Resolution("c.lab.test", temporary)) is None


def test_first_observation_then_unchanged_then_changed() -> None:
    first = track(None, ONE, 100.0)
    assert first is not None and (first.changed_at, first.added, first.removed) == (100.0, (), ())
    assert first.digest == digest(members(ONE) or ()) and len(first.digest) == 12
    assert track(first, ONE, 160.0) is first  # same set: same object, same timestamp
    changed = track(first, TWO, 220.0)
    assert changed is not None and changed.changed_at == 220.0 and changed.digest != first.digest
    assert changed.added == ("20 mx3.c.lab.test", "mx3.c.lab.test 192.0.2.3") and changed.removed == ()
    assert changed.records == "10 mx1.c.lab.test, 20 mx3.c.lab.test"
    moved = track(first, MOVED, 300.0)  # an exchange's address changed: a change too
    assert moved is not None and moved.removed == ("mx1.c.lab.test 192.0.2.1",)


def test_a_temporary_failure_keeps_the_previous_set() -> None:
    first = track(None, ONE, 100.0)
    assert track(first, Resolution("c.lab.test", DnsStatus.TIMEOUT), 160.0) is first
    assert track(None, Resolution("c.lab.test", DnsStatus.SERVFAIL), 160.0) is None


def test_the_digest_is_stable_and_order_free() -> None:
    reordered = mx((20, "mx3.c.lab.test", ("192.0.2.3",)), (10, "mx1.c.lab.test", ("192.0.2.1",)))
    a, b = track(None, TWO, 1.0), track(None, reordered, 2.0)
    assert a is not None and b is not None and a.digest == b.digest
