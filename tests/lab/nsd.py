"""The DNS half of the lab: Debian's NSD serving tests/lab/zones, and a black hole that never answers.

NSD runs in the foreground (``nsd -d``) as a child process with a generated nsd.conf in a temp dir: no privilege
drop, no chroot, every state file in that dir, a free high port on 127.0.0.1. Several pytest runs may share the
machine, so the port is never fixed; NSD's ``identity`` is a per-instance token, so a port race that lands our
queries on someone else's server is detected instead of trusted.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.lab import plan

NSD_BINARY = Path("/usr/sbin/nsd")
ZONES_DIR = Path(__file__).parent / "zones"
ADDRESS = "127.0.0.1"
STARTUP_TIMEOUT = 10.0  # seconds for NSD to answer an SOA query
START_ATTEMPTS = 5  # fresh ports to try when another process wins the bind race
RACE_SIGNS = ("another server answers", "can't bind", "Address already in use")

SERVER_TEMPLATE = """\
server:
    ip-address: {address}@{port}
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{state}"
    database: ""
    zonelistfile: "{state}/zone.list"
    pidfile: "{state}/nsd.pid"
    xfrdfile: "{state}/xfrd.state"
    xfrdir: "{state}"
    server-count: 1
    verbosity: 1
    do-ip6: no
    reuseport: no
    hide-version: yes
    hide-identity: no
    identity: "{identity}"
    zonefiles-write: 0
    # No response-rate limiting: NSD's default answers at most ~200 NODATA/NXDOMAIN a second per source,
    # which would turn the suite's and bench's loopback bursts into truncated replies and retries.
    rrl-ratelimit: 0
remote-control:
    control-enable: no
"""
CONF_TEMPLATE = (
    SERVER_TEMPLATE
    + """\
zone:
    name: "{zone}"
    zonefile: "{zonefile}"
# Listed, but its zone file never exists: NSD answers SERVFAIL for every name in it (plan.SERVFAIL_DOMAIN).
zone:
    name: "broken.test"
    zonefile: "{state}/broken.test.zone"
"""
)
# Appended to CONF_TEMPLATE once per extra zone (NsdServer's extra_zones: test-time zones such as signed ones).
EXTRA_ZONE_TEMPLATE = """\
zone:
    name: "{zone}"
    zonefile: "{zonefile}"
"""


def free_port(address: str = ADDRESS) -> int:
    """A port free for both UDP and TCP on the address right now (the caller still races other processes)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {address}")


def start_on_a_free_port(try_start: Callable[[int], str | None], race_signs: Sequence[str], what: str) -> int:
    """Try fresh free ports until ``try_start(port)`` returns None (started) and return that port. Another
    process may take a port between free_port() and the bind, so a failure that reads like a race (one of
    ``race_signs``) tries the next port; any other failure is a broken config another port will not fix."""
    failures = []
    for _ in range(START_ATTEMPTS):
        port = free_port()
        problem = try_start(port)
        if problem is None:
            return port
        failures.append(f"port {port}: {problem}")
        if not any(sign in problem for sign in race_signs):
            break
    raise RuntimeError(f"{what} did not start:\n" + "\n".join(failures))


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a lab server and wait; SIGKILL its process group when it does not end within 5 s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class NsdServer:
    """NSD serving the lab zone on 127.0.0.1 and a free port; ``nameserver`` is the resolver setting for it."""

    def __init__(
        self,
        zones_dir: Path = ZONES_DIR,
        startup_timeout: float = STARTUP_TIMEOUT,
        zone: str = plan.ZONE,
        extra_zones: Sequence[tuple[str, Path]] = (),
    ) -> None:
        self.address = ADDRESS
        self.zone = zone  # served from zones_dir/<zone>.zone (the benchmark serves its own generated zone)
        # (origin, zone file) pairs served besides the main zone: zones built at test time (tests/lab/dnssec.py).
        self.extra_zones = tuple((origin.rstrip("."), Path(path)) for origin, path in extra_zones)
        self.port = 0
        self.zones_dir = zones_dir
        self.startup_timeout = startup_timeout
        self.identity = f"mx-exporter-lab-{uuid.uuid4().hex}"
        self._process: subprocess.Popen[bytes] | None = None
        self._state: tempfile.TemporaryDirectory[str] | None = None

    @property
    def nameserver(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        """Start NSD and return once it answers for the lab zone; RuntimeError with NSD's stderr if it cannot."""
        if not NSD_BINARY.exists():
            raise RuntimeError("nsd not installed: run the README test command")
        self._state = tempfile.TemporaryDirectory(prefix="mx-exporter-nsd-")
        try:
            self.port = start_on_a_free_port(self._try_start, RACE_SIGNS, "NSD")
        except RuntimeError:
            self.stop()
            raise

    def _try_start(self, port: int) -> str | None:
        """Run NSD on the port; None when it answers as itself, else why not (with its stderr)."""
        assert self._state is not None
        state = Path(self._state.name)
        conf = state / "nsd.conf"
        conf.write_text(
            CONF_TEMPLATE.format(
                address=self.address,
                port=port,
                state=state,
                identity=self.identity,
                zone=self.zone,
                zonefile=self.zones_dir / f"{self.zone}.zone",
            )
            + "".join(
                EXTRA_ZONE_TEMPLATE.format(zone=origin, zonefile=path) for origin, path in self.extra_zones
            )
        )
        stderr_path = state / f"nsd-{port}.stderr"
        with stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                [str(NSD_BINARY), "-d", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # NSD forks helpers: stop() signals the whole group it leads
            )
        problem = self._wait_ready(port)
        if problem is not None:
            self._terminate()
            return f"{problem}\n--- nsd stderr ---\n{stderr_path.read_text(errors='replace')}"
        return None

    def _wait_ready(self, port: int) -> str | None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"nsd exited with status {self._process.returncode}"
            try:
                return self._check_answers(port)
            except (OSError, dns.exception.DNSException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        return f"nsd gave no SOA answer for {self.zone} within {self.startup_timeout:g} s ({last})"

    def _check_answers(self, port: int) -> str | None:
        """Ask who answers (identity over UDP) and the zone's SOA over TCP; raise while NSD is still starting."""
        who = dns.message.make_query("id.server.", dns.rdatatype.TXT, dns.rdataclass.CH)
        reply = dns.query.udp(who, self.address, port=port, timeout=0.2)
        if not any(self.identity in rdata.to_text() for rrset in reply.answer for rdata in rrset):
            return f"another server answers on port {port}: {reply.answer}"
        for zone in (self.zone, *(origin for origin, _path in self.extra_zones)):
            soa = dns.message.make_query(f"{zone}.", dns.rdatatype.SOA)
            reply = dns.query.tcp(soa, self.address, port=port, timeout=0.5)
            if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
                return f"SOA {zone} answered {dns.rcode.to_text(reply.rcode())} (zone file not loaded?)"
        return None

    def _terminate(self) -> None:
        process, self._process = self._process, None
        terminate(process)

    def reload(self) -> None:
        """Re-read the zone file (SIGHUP, nsd(8)): tests change a zone under a running exporter."""
        assert self._process is not None and self._process.poll() is None, "NSD is not running"
        self._process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self._terminate()
        if self._state is not None:
            self._state.cleanup()
            self._state = None

    def __enter__(self) -> NsdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BlackholeDns:
    """A "nameserver" on 127.0.0.1 that reads every query (UDP and TCP) and never answers: real timeouts."""

    MAX_TCP = 64  # connections held open at once; older ones are closed

    def __init__(self) -> None:
        self.address = ADDRESS
        self.port = 0
        self.queries = 0  # UDP datagrams and TCP connections received
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    @property
    def nameserver(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        for _ in range(START_ATTEMPTS):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                udp.bind((self.address, 0))
                tcp.bind((self.address, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self.port = udp.getsockname()[1]
            self._sockets = [udp, tcp]
            self._thread = threading.Thread(target=self._serve, args=(udp, tcp), daemon=True)
            self._thread.start()
            return
        raise RuntimeError("no port free for both UDP and TCP for the DNS black hole")

    def _serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        held: list[socket.socket] = []
        with selectors.DefaultSelector() as selector:
            selector.register(udp, selectors.EVENT_READ)
            selector.register(tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is udp:
                        udp.recv(65535)
                        self.queries += 1
                    elif sock is tcp:
                        conn, _addr = tcp.accept()
                        self.queries += 1
                        held.append(conn)  # kept open, never read: the client waits for nothing
                        if len(held) > self.MAX_TCP:
                            held.pop(0).close()
        for conn in held:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []


@pytest.fixture(scope="session")
def nsd_server() -> Iterator[NsdServer]:
    """NSD serving the lab zones for the whole test session."""
    with NsdServer() as server:
        yield server


@pytest.fixture(scope="session")
def blackhole_dns() -> Iterator[BlackholeDns]:
    """A nameserver that never answers, for timeout tests."""
    server = BlackholeDns()
    server.start()
    try:
        yield server
    finally:
        server.stop()
