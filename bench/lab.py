"""Lab plumbing shared by the issue-7 benches (hosted, worstcase, soak).

- A private network namespace: each bench re-execs itself under ``unshare --net`` and brings ``lo`` up, so it can
  serve thousands of distinct 127.x.y.z addresses from one listener on 0.0.0.0 without touching the host's
  network (the host namespace is never bound on 0.0.0.0: ``SharedSink`` refuses outside a private namespace).
- ``SharedSink``: one Postfix smtp-sink on 0.0.0.0:PORT answering every address.
- CPU accounting of the lab's processes from /proc/PID/stat, to show whether the peers are the bottleneck.
- Reading the exporter's /metrics by metric name without depending on anything but the names we are given.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.lab.nsd import CONF_TEMPLATE
from tests.lab.smtp_peers import listening

NETNS_MARK = "MX_BENCH_NETNS"  # the re-exec'd bench's environment: the network namespace it came from
SMTP_SINK = "/usr/sbin/smtp-sink"
SINK_START_TIMEOUT = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ABSENT = -1.0  # a figure whose metric the exporter does not (yet) expose


# --- the private network namespace


def _netns() -> str:
    return os.readlink("/proc/self/ns/net")


def in_private_netns() -> bool:
    """True inside the network namespace ``enter_private_netns`` made: another one than the bench started in,
    with nothing but loopback."""
    names = [name for _, name in socket.if_nameindex()]
    started_in = os.environ.get(NETNS_MARK, "")
    return names == ["lo"] and bool(started_in) and _netns() != started_in


def enter_private_netns(script: Path, argv: Sequence[str]) -> None:
    """Re-exec ``script argv`` under ``unshare --net`` (once), then bring ``lo`` up inside; RuntimeError if not."""
    if not os.environ.get(NETNS_MARK):
        unshare = shutil.which("unshare")
        if unshare is None:
            raise RuntimeError(
                "unshare (util-linux) not found: the bench runs in a private network namespace"
            )
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ[NETNS_MARK] = _netns()  # the namespace we leave: inside, ours must differ from it
        os.execv(unshare, [unshare, "--net", "--", sys.executable, str(script), *argv])
    if not in_private_netns():
        raise RuntimeError(
            "not in a private network namespace (unshare --net needs root or CAP_SYS_ADMIN); refusing to run"
        )
    ip = shutil.which("ip") or "/usr/sbin/ip"
    done = subprocess.run([ip, "link", "set", "lo", "up"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip link set lo up failed: {done.stderr.strip()} (install Debian's iproute2)")


def check_nsd_rate_limit_off() -> None:
    """The lab NSD must not rate-limit (its default RRL would truncate the bench's bursts): verify the config."""
    if "rrl-ratelimit: 0" not in CONF_TEMPLATE:
        raise RuntimeError("tests/lab/nsd.py does not set 'rrl-ratelimit: 0': NSD would rate-limit the bench")


# --- ports


def free_port_any() -> int:
    """A TCP port free on 0.0.0.0 (inside our own namespace nobody else races for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


# --- one smtp-sink for every address


class SharedSink:
    """One Postfix smtp-sink on 0.0.0.0:``port`` inside the private namespace: every 127/8 address reaches it."""

    def __init__(
        self, probe_addresses: Sequence[str], concurrency: int, hostname: str = "sink.bench.test"
    ) -> None:
        self.probe_addresses = tuple(probe_addresses)  # checked to connect once it listens
        self.max_sessions = max(256, 4 * concurrency)
        self.hostname = hostname
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        if not in_private_netns():
            raise RuntimeError("refusing to bind 0.0.0.0 outside a private network namespace")
        if shutil.which(SMTP_SINK) is None:
            raise RuntimeError(f"{SMTP_SINK} not found: install Debian's postfix package")
        self.port = free_port_any()
        user = ["-u", "postfix" if "postfix" in {p.pw_name for p in pwd.getpwall()} else "nobody"]
        argv = [SMTP_SINK, *(user if os.geteuid() == 0 else []), "-4", "-m", str(self.max_sessions)]
        argv += ["-h", self.hostname, f"0.0.0.0:{self.port}", "1024"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + SINK_START_TIMEOUT
        for address in self.probe_addresses:
            while not listening(address, self.port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self._log.seek(0)
                    tail = self._log.read()[-500:].decode("utf-8", "replace")
                    raise RuntimeError(f"smtp-sink does not answer on {address}:{self.port}: {tail}")
                time.sleep(0.02)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        self._log.close()

    def __enter__(self) -> SharedSink:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen[Any] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# --- CPU accounting from /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; the name may hold spaces


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    """The pid and all its live descendants."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, ()))
    return found


def descendants_named(exe_name: str) -> list[int]:
    """Our descendants whose executable's basename is ``exe_name`` (e.g. NSD's processes)."""
    found = []
    for pid in process_tree(os.getpid()):
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == exe_name:
                found.append(pid)
        except OSError:
            continue
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by these processes and their live descendants."""
    total = 0
    seen: set[int] = set()
    for root in pids:
        for pid in process_tree(root):
            if pid in seen or (fields := _stat_fields(pid)) is None:
                continue
            seen.add(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


class CpuMeter:
    """CPU use of named groups of processes over a phase, as percent of one core (100 = one core busy)."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: tuple(pids) for name, pids in groups.items()}
        self.started = time.monotonic()
        self.before = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        self.after: dict[str, float] = {}
        self.wall = 0.0

    def stop(self) -> dict[str, float]:
        """Take the reading (call before the processes are stopped); percent of one core per group."""
        self.wall = time.monotonic() - self.started
        self.after = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        return self.percent()

    def percent(self) -> dict[str, float]:
        wall = max(self.wall, 1e-9)
        return {name: 100 * (self.after[name] - self.before[name]) / wall for name in self.groups}


def self_cpu_seconds() -> float:
    """CPU seconds of this process so far."""
    times = os.times()
    return times.user + times.system


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    times = os.times()
    return times.children_user + times.children_system


# --- process facts


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (or VmHWM, the peak) of a process from /proc/PID/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- reading /metrics by name


def metric_values(body: str, names: Iterable[str]) -> dict[str, list[float]]:
    """Values of every sample named exactly one of ``names`` (any labels), from a text exposition, in one pass."""
    found: dict[str, list[float]] = {name: [] for name in names}
    prefixes = tuple(found)
    for line in body.splitlines():
        if not line.startswith(prefixes):
            continue
        brace, space = line.find("{"), line.find(" ")
        name = line[: brace if 0 <= brace < space else space]
        if name in found:
            found[name].append(float(line.rsplit(" ", 1)[1]))
    return found


def undeliverable(body: str, domains: int) -> int:
    """Domains without ``mx_domain_deliverable ... 1`` in the exposition; warns with a few of their names.

    Every domain of the bench zones is deliverable, so any here is a probe that timed out under load: a finding
    to report, not a reason to throw the run away.
    """
    bad = []
    for line in body.splitlines():
        if line.startswith("mx_domain_deliverable{") and float(line.rsplit(" ", 1)[1]) != 1:
            bad.append(line.split('domain="', 1)[1].split('"', 1)[0])
    missing = domains - body.count("\nmx_domain_deliverable{")
    if bad or missing:
        print(f"warning: {len(bad)} undeliverable, {missing} missing domains: {bad[:5]}", file=sys.stderr)
    if bad:  # what the exposition says about the first one, for the reader (no figure depends on it)
        name = f".{bad[0]}"  # its exchanges' names end with it, in whatever label they appear
        about = [line for line in body.splitlines() if name in line or f'"{bad[0]}"' in line]
        about = [line for line in about if not line.endswith(" 0.0")]
        print("\n".join(about[:40]), file=sys.stderr)
    return len(bad) + max(0, missing)


def total(values: Sequence[float]) -> float:
    """Sum of a metric's samples, or ABSENT (-1) when the exposition has none."""
    return float(sum(values)) if values else ABSENT


def sample_count(body: str) -> int:
    """Samples (series) in a text exposition: lines that are neither comments nor empty."""
    return sum(1 for line in body.splitlines() if line and not line.startswith("#"))


# --- small helpers


def median_or_absent(values: Sequence[float]) -> float:
    return statistics.median(values) if values else ABSENT


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} ...", file=sys.stderr, flush=True)


def write_json(path: Path | None, results: Mapping[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(results, indent=2) + "\n")


def shown(value: float) -> str:
    """A figure for the table: 3 significant digits below 1000, thousands separators above."""
    if isinstance(value, float) and abs(value) < 1000:
        return f"{value:.3g}"
    return f"{value:,.0f}"


def table(
    heading: Sequence[str],
    figures: Sequence[tuple[str, str, str]],
    columns: Sequence[tuple[str, Mapping[str, float]]],
) -> str:
    """A text table: one row per figure, one value column per run (e.g. per size), then unit and meaning."""
    width = max(len(key) for key, _, _ in figures)
    head = (
        f"{'figure':<{width}} " + " ".join(f"{title:>12}" for title, _ in columns) + f" {'unit':<4}  meaning"
    )
    rule = f"{'-' * width} " + " ".join("-" * 12 for _ in columns) + f" {'-' * 4}  {'-' * 40}"
    lines = [*heading, "", head, rule]
    for key, unit, what in figures:
        values = " ".join(f"{shown(run[key]):>12}" for _, run in columns)
        lines.append(f"{key:<{width}} {values} {unit:<4}  {what}")
    return "\n".join(lines)


def bench_main(
    script: Path,
    argv: list[str],
    parse_args: Callable[[list[str]], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    status: Callable[[dict[str, Any]], int] = lambda results: 0,
) -> int:
    """A bench's main: parse, move into the private network namespace, run, print the table, write the JSON;
    the exit status is 1 on a lab failure, else what ``status`` says of the results."""
    args = parse_args(argv)
    try:
        enter_private_netns(script, argv)
        results = run(args)
    except (RuntimeError, OSError, TimeoutError) as err:
        print(f"bench failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(table(results))
    write_json(args.json, results)
    return status(results)
