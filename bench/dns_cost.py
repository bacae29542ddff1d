"""CPU seconds per DNS question for each candidate DNS client, against the lab NSD on loopback.

    python bench/dns_cost.py --queries 5000 [--concurrency 64] [--repeats 3] [--json PATH]

Starts NSD (tests/lab/nsd.py) serving a generated zone (bench/zone.py), then for every candidate asks the same
questions with ``--concurrency`` in flight: per domain its MX (an answer), its exchange's A (an answer) and
AAAA (NODATA), and one name that does not exist (NXDOMAIN). ``time.process_time()`` (every thread of this
process, so c-ares' own thread counts too; NSD is another process) over the timed questions, after a warm-up,
divided by their number; the median of ``--repeats`` runs is reported. Every answer is classified and checked:
a candidate that gets any wrong is marked so. Prints a table (stdout) and writes JSON with ``--json``.

Candidates: dnspython's ``Resolver.resolve`` configured as the exporter did before ``mx_exporter.dnsquery``
("today"), dnspython's ``dns.asyncquery.udp`` (a socket per question), one UDP socket multiplexed by id with
dnspython's codec, c-ares through aiodns/pycares (when installed), ``mx_exporter.dnsquery.DnsClient``, and the
first and last again on uvloop (when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(
    0, str(REPO)
)  # run as a script from anywhere: the package, tests.lab and bench from this tree

import dns.asyncquery  # noqa: E402
import dns.asyncresolver  # noqa: E402
import dns.exception  # noqa: E402
import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.nameserver  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.resolver  # noqa: E402

from bench import zone  # noqa: E402
from mx_exporter import __version__  # noqa: E402
from mx_exporter.dnsquery import DnsClient  # noqa: E402
from tests.lab.nsd import NsdServer  # noqa: E402

TIMEOUT = 2.0  # lifetime of one question; loopback NSD answers in well under a millisecond
Ask = Callable[[dns.name.Name, str], Awaitable[str]]  # a question -> "answer", "nodata", "nxdomain", ...
Setup = Callable[
    [str, int], Awaitable[tuple[Ask, Callable[[], Awaitable[None]]]]
]  # (ip, port) -> (ask, close)


@dataclass(frozen=True)
class Question:
    name: dns.name.Name
    rdtype: str
    expected: str


def questions(domains: tuple[str, ...], count: int) -> list[Question]:
    """``count`` questions cycling over the domains: MX, exchange A, exchange AAAA (NODATA), a missing name."""
    out: list[Question] = []
    for i in range(count):
        domain = domains[(i // 4) % len(domains)]
        kind = i % 4
        if kind == 0:
            out.append(Question(dns.name.from_text(domain + "."), "MX", "answer"))
        elif kind in (1, 2):
            exchange = dns.name.from_text(f"mx1.{domain}.")
            out.append(Question(exchange, "A" if kind == 1 else "AAAA", "answer" if kind == 1 else "nodata"))
        else:
            out.append(Question(dns.name.from_text(f"nx{i}.{zone.ZONE}."), "A", "nxdomain"))
    return out


# --- Candidates: each returns (ask, close) for a nameserver.


async def dnspython_resolver(ip: str, port: int) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    """Resolver.resolve as make_resolver configured it before mx_exporter.dnsquery."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port)]
    resolver.cache = None
    resolver.lifetime = TIMEOUT
    resolver.timeout = min(2.0, TIMEOUT)
    resolver.use_edns(0, 0, 1232)

    async def ask(name: dns.name.Name, rdtype: str) -> str:
        try:
            await resolver.resolve(name, rdtype, lifetime=TIMEOUT, search=False)
        except dns.resolver.NXDOMAIN:
            return "nxdomain"
        except dns.resolver.NoAnswer:
            return "nodata"
        except dns.resolver.NoNameservers:
            return "servfail"
        except dns.exception.Timeout:
            return "timeout"
        except Exception:
            return "error"
        return "answer"

    return ask, _nothing


def _classify_dnspython(response: dns.message.Message) -> str:
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return "servfail"
    assert isinstance(response, dns.message.QueryMessage)
    chain = response.resolve_chaining()
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    return "answer" if chain.answer is not None else "nodata"


async def dnspython_asyncquery(ip: str, port: int) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    """dns.asyncquery.udp: dnspython's codec, a new datagram socket per question, no retry logic."""

    async def ask(name: dns.name.Name, rdtype: str) -> str:
        query = dns.message.make_query(name, rdtype)
        query.use_edns(0, 0, 1232)
        try:
            response = await dns.asyncquery.udp(
                query, ip, timeout=TIMEOUT, port=port, raise_on_truncation=True, ignore_unexpected=True
            )
        except dns.exception.Timeout:
            return "timeout"
        except Exception:
            return "error"
        return _classify_dnspython(response)

    return ask, _nothing


class _MuxProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[int, tuple[dns.message.Message, asyncio.Future[dns.message.Message]]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < 12:
            return
        entry = self.pending.get(int.from_bytes(data[:2], "big"))
        if entry is None:
            return
        try:
            response = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        query, future = entry
        if query.is_response(response) and not future.done():
            future.set_result(response)


async def one_socket_dnspython(ip: str, port: int) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    """One connected UDP socket, questions multiplexed by random id; dnspython's make_query/to_wire/from_wire."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_MuxProtocol, remote_addr=(ip, port))
    rng = random.SystemRandom()

    async def ask(name: dns.name.Name, rdtype: str) -> str:
        query = dns.message.make_query(name, rdtype)
        query.use_edns(0, 0, 1232)
        qid = rng.getrandbits(16)
        while qid in protocol.pending:
            qid = rng.getrandbits(16)
        query.id = qid
        future: asyncio.Future[dns.message.Message] = loop.create_future()
        protocol.pending[qid] = (query, future)
        timer = loop.call_later(TIMEOUT, lambda: future.done() or future.cancel())
        try:
            transport.sendto(query.to_wire())
            response = await future
        except asyncio.CancelledError:
            return "timeout"
        finally:
            timer.cancel()
            del protocol.pending[qid]
        if response.flags & dns.flags.TC:
            return "error"  # not expected here: no TCP fallback in this candidate
        return _classify_dnspython(response)

    async def close() -> None:
        transport.close()

    return ask, close


async def aiodns_cares(ip: str, port: int) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    """c-ares through aiodns 4 / pycares 5 (its own event thread), query_dns for the full record sections."""
    import aiodns
    import pycares

    resolver = aiodns.DNSResolver(nameservers=[f"{ip}:{port}"], timeout=TIMEOUT, tries=1)
    codes = {
        pycares.errno.ARES_ENOTFOUND: "nxdomain",
        pycares.errno.ARES_ENODATA: "nodata",
        pycares.errno.ARES_ESERVFAIL: "servfail",
        pycares.errno.ARES_EREFUSED: "servfail",
        pycares.errno.ARES_ETIMEOUT: "timeout",
    }
    types = {"MX": pycares.QUERY_TYPE_MX, "A": pycares.QUERY_TYPE_A, "AAAA": pycares.QUERY_TYPE_AAAA}

    async def ask(name: dns.name.Name, rdtype: str) -> str:
        try:
            result = await resolver.query_dns(name.to_text(), rdtype)
        except aiodns.error.DNSError as exc:
            return codes.get(exc.args[0], "error")
        wanted = types[rdtype]
        return "answer" if any(record.type == wanted for record in result.answer) else "nodata"

    async def close() -> None:
        await resolver.close()

    return ask, close


async def mx_exporter_client(ip: str, port: int) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    """mx_exporter.dnsquery.DnsClient, as make_resolver builds it."""
    client = DnsClient([(ip, port)], lifetime=TIMEOUT)

    async def ask(name: dns.name.Name, rdtype: str) -> str:
        return (await client.query(name, rdtype)).result

    return ask, client.aclose


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Candidate:
    key: str
    label: str
    setup: Setup
    uvloop: bool = False


CANDIDATES = (
    Candidate("dnspython_resolve", "dnspython Resolver.resolve (today)", dnspython_resolver),
    Candidate("dnspython_asyncquery", "dnspython asyncquery.udp, socket per query", dnspython_asyncquery),
    Candidate("one_socket_dnspython", "one UDP socket + dnspython codec", one_socket_dnspython),
    Candidate("aiodns", "aiodns / pycares (c-ares)", aiodns_cares),
    Candidate("dnsquery", "mx_exporter.dnsquery.DnsClient", mx_exporter_client),
    Candidate("dnspython_resolve_uvloop", "dnspython Resolver.resolve on uvloop", dnspython_resolver, True),
    Candidate("aiodns_uvloop", "aiodns / pycares on uvloop", aiodns_cares, True),
    Candidate("dnsquery_uvloop", "mx_exporter.dnsquery.DnsClient on uvloop", mx_exporter_client, True),
)
BASELINE = "dnspython_resolve"


def available(candidate: Candidate) -> str | None:
    """Why the candidate cannot run here, or None."""
    needs = (["uvloop"] if candidate.uvloop else []) + (["aiodns"] if candidate.setup is aiodns_cares else [])
    for module in needs:
        try:
            __import__(module)
        except ImportError:
            return f"{module} not installed"
    return None


async def _measure(
    candidate: Candidate, ip: str, port: int, warmup: list[Question], timed: list[Question], concurrency: int
) -> dict[str, Any]:
    ask, close = await candidate.setup(ip, port)
    try:
        await _run_all(ask, warmup, concurrency)
        cpu, wall = time.process_time(), time.perf_counter()
        results = await _run_all(ask, timed, concurrency)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await close()
    wrong = sum(got != q.expected for got, q in zip(results, timed, strict=True))
    return {"cpu_seconds": cpu, "wall_seconds": wall, "wrong": wrong}


async def _run_all(ask: Ask, items: list[Question], concurrency: int) -> list[str]:
    results = [""] * len(items)
    indexes: Iterator[int] = iter(range(len(items)))

    async def worker() -> None:
        for i in indexes:
            results[i] = await ask(items[i].name, items[i].rdtype)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def run_candidate(
    candidate: Candidate, ip: str, port: int, warmup: list[Question], timed: list[Question], concurrency: int
) -> dict[str, Any]:
    """One measurement in a fresh event loop (uvloop's when the candidate says so)."""
    coroutine = _measure(candidate, ip, port, warmup, timed, concurrency)
    if candidate.uvloop:
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench_zone = zone.build_zone(args.domains, 50, args.seed)
    all_questions = questions(bench_zone.domains, args.warmup + args.queries)
    warmup, timed = all_questions[: args.warmup], all_questions[args.warmup :]
    chosen = [c for c in CANDIDATES if args.candidates is None or c.key in args.candidates]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mx-exporter-dns-cost-") as workdir:
        (Path(workdir) / f"{bench_zone.name}.zone").write_text(bench_zone.text)
        with NsdServer(zones_dir=Path(workdir), zone=bench_zone.name) as nsd:
            for candidate in chosen:
                why_not = available(candidate)
                if why_not is not None:
                    step(f"{candidate.key}: skipped ({why_not})")
                    rows.append({"key": candidate.key, "label": candidate.label, "skipped": why_not})
                    continue
                runs = []
                for repeat in range(args.repeats):
                    step(f"{candidate.key}: run {repeat + 1} of {args.repeats}")
                    runs.append(
                        run_candidate(candidate, nsd.address, nsd.port, warmup, timed, args.concurrency)
                    )
                cpu = statistics.median(r["cpu_seconds"] for r in runs)
                wall = statistics.median(r["wall_seconds"] for r in runs)
                rows.append(
                    {
                        "key": candidate.key,
                        "label": candidate.label,
                        "cpu_us_per_query": cpu / args.queries * 1e6,
                        "cpu_us_per_query_runs": [r["cpu_seconds"] / args.queries * 1e6 for r in runs],
                        "queries_per_second": args.queries / wall,
                        "wrong": max(r["wrong"] for r in runs),
                    }
                )
    base = next((r for r in rows if r["key"] == BASELINE and "cpu_us_per_query" in r), None)
    for row in rows:
        if base is not None and "cpu_us_per_query" in row:
            row["ratio_to_today"] = base["cpu_us_per_query"] / row["cpu_us_per_query"]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "queries": args.queries,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
            "domains": args.domains,
            "seed": args.seed,
            "mix": "per domain: MX (answer), exchange A (answer), exchange AAAA (nodata), a missing name (nxdomain)",
        },
        "results": rows,
    }


def machine() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for module in ("dns", "pycares", "aiodns", "uvloop"):
        with contextlib.suppress(ImportError):
            mod = __import__(module + (".version" if module == "dns" else ""), fromlist=["_"])
            versions[module] = str(getattr(mod, "version", None) or getattr(mod, "__version__", "?"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mx_exporter": __version__,
        "libraries": versions,
    }


def table(results: dict[str, Any]) -> str:
    p, m = results["parameters"], results["machine"]
    lines = [
        f"mx-exporter {m['mx_exporter']} dns_cost, {results['date']}, {m['nproc']} CPU, Python {m['python']}",
        f"{p['queries']} questions ({p['warmup']} warm-up), {p['concurrency']} in flight, median of "
        f"{p['repeats']}; {', '.join(f'{k} {v}' for k, v in m['libraries'].items())}",
        "",
        f"{'candidate':<44} {'CPU µs/query':>12} {'vs today':>9} {'queries/s':>10} {'wrong':>6}",
        f"{'-' * 44} {'-' * 12} {'-' * 9} {'-' * 10} {'-' * 6}",
    ]
    for row in results["results"]:
        if "skipped" in row:
            lines.append(f"{row['label']:<44} skipped: {row['skipped']}")
            continue
        ratio = f"{row['ratio_to_today']:.2f}x" if "ratio_to_today" in row else "-"
        lines.append(
            f"{row['label']:<44} {row['cpu_us_per_query']:>12.1f} {ratio:>9} "
            f"{row['queries_per_second']:>10,.0f} {row['wrong']:>6}"
        )
    return "\n".join(lines)


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} ...", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=5000, help="timed questions per run (default 5000)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed questions first (default 500)")
    parser.add_argument("--concurrency", type=int, default=64, help="questions in flight (default 64)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per candidate, median reported (default 3)"
    )
    parser.add_argument(
        "--domains", type=int, default=2000, help="domains in the generated zone (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=5321, help="zone generator seed")
    parser.add_argument(
        "--candidates",
        type=lambda text: set(text.split(",")),
        help=f"comma-separated subset of: {', '.join(c.key for c in CANDIDATES)}",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("queries", "concurrency", "repeats", "domains"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    unknown = (args.candidates or set()) - {c.key for c in CANDIDATES}
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (RuntimeError, OSError) as err:
        print(f"dns_cost failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(row.get("wrong", 0) == 0 for row in results["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
