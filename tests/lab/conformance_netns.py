"""The conformance lab's private world: network, mount and PID namespaces, addressing, /etc, and NSD on port 53.

Real MTAs read /etc/resolv.conf and resolve on port 53, so the lab cannot use the suite's NSD on a high port:
the runner re-execs itself under ``unshare --net --mount --pid --fork`` where port 53, port 25 and /etc are
its own. The PID namespace is the safety net: when the runner (its PID 1) exits, however it exits, the kernel
kills every Postfix, Exim and NSD process left in it. Nothing in the namespace can reach the host's network:
it has ``lo`` and a packet-dropping device, no route out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.lab.conformance_scenarios import HOLE, NSD_ADDRESS
from tests.lab.nsd import SERVER_TEMPLATE

NETNS_MARK = "MX_CONFORMANCE_NETNS"  # set for the re-exec'd runner: the network namespace it came from
UNAVAILABLE = 77  # exit status of the runner when the lab cannot run here (the test skips on it)
NSD_BINARY = Path("/usr/sbin/nsd")
NSD_START_TIMEOUT = 10.0
HOLE_DEVICE = "hole0"


class LabUnavailable(RuntimeError):
    """This machine cannot run the lab (not root, no namespaces, a package missing): a reason to skip."""


def _netns() -> str:
    return os.readlink("/proc/self/ns/net")


def _run(argv: Sequence[str], what: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(argv)}): {(done.stderr or done.stdout).strip()}")
    return done


def enter_namespaces(module: str, argv: Sequence[str]) -> None:
    """Re-exec ``python -m module argv`` in fresh net+mount+pid namespaces (once); LabUnavailable if impossible."""
    if os.environ.get(NETNS_MARK):
        if _netns() == os.environ[NETNS_MARK] or os.getpid() != 1:
            raise RuntimeError("expected to run as PID 1 of a private network namespace; refusing to run")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # PID 1 ignores SIGTERM unless handled
        return
    if os.geteuid() != 0:
        raise LabUnavailable("the sender-conformance lab needs root (network namespaces, port 25/53, Exim)")
    unshare = shutil.which("unshare")
    if unshare is None:
        raise LabUnavailable("unshare (util-linux) not found")
    flags = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    probe = subprocess.run(
        [unshare, *flags, "--", "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        raise LabUnavailable(
            f"cannot create namespaces with unshare {' '.join(flags)}: {probe.stderr.strip()}"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[NETNS_MARK] = _netns()
    os.execv(unshare, [unshare, *flags, "--", sys.executable, "-m", module, *argv])


def setup_network(local: Sequence[str], hole: Sequence[str]) -> str:
    """``lo`` up with every peer address on it, and the blackhole range routed into a device that drops packets.

    Returns how the blackhole is made. First choice: a veth pair whose near end routes the range to a gateway
    with a permanent (fake) neighbour entry, so no ARP is needed; the far end discards frames not for it. The
    fallback is ifb (NOARP, drops what it is handed), avoided first because loading its module creates ifb0
    and ifb1 in the host's namespace too. Either way a SYN vanishes: the connect times out, no EHOSTUNREACH.
    """
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if not Path(ip).exists():
        raise LabUnavailable("ip (iproute2) not found")
    batch = ["link set lo up", *(f"addr add {a}/32 dev lo" for a in local)]
    subprocess.run(
        [ip, "-batch", "-"],
        input="\n".join(batch) + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )
    hole_net = f"{HOLE}.0.0/16"
    veth = [ip, "link", "add", HOLE_DEVICE, "type", "veth", "peer", "name", "hole1"]
    if subprocess.run(veth, capture_output=True, check=False, timeout=30).returncode == 0:
        for dev in (HOLE_DEVICE, "hole1"):
            _run([ip, "link", "set", dev, "up"], f"{dev} up")
        gateway = f"{HOLE}.255.1"
        _run([ip, "route", "add", hole_net, "via", gateway, "dev", HOLE_DEVICE, "onlink"], "blackhole route")
        fake_mac = "02:00:00:00:00:01"
        _run(
            [ip, "neigh", "add", gateway, "lladdr", fake_mac, "dev", HOLE_DEVICE, "nud", "permanent"], "neigh"
        )
        how = "veth+permanent-neighbour"
    else:
        _run([ip, "link", "add", HOLE_DEVICE, "type", "ifb"], "blackhole device (neither veth nor ifb)")
        _run([ip, "link", "set", HOLE_DEVICE, "up"], "ifb up")
        _run([ip, "route", "add", hole_net, "dev", HOLE_DEVICE], "blackhole route")
        how = "ifb"
    for address in hole[:1]:
        _check_times_out(address)
    return how


def _check_times_out(address: str, seconds: float = 0.5) -> None:
    """A blackhole address must time out (no RST, no ICMP): a quick unreachable error would test nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(seconds)
        try:
            sock.connect((address, 25))
        except TimeoutError:
            return
        except OSError as err:
            raise RuntimeError(f"blackhole {address}: connect failed at once ({err}), not a timeout") from err
    raise RuntimeError(f"blackhole {address}: connect succeeded")


@contextlib.contextmanager
def private_etc(workdir: Path) -> Iterator[None]:
    """/etc/resolv.conf -> the lab NSD, /etc/hosts knows only localhost (bind mounts in our mount namespace)."""
    files = {
        "resolv.conf": f"nameserver {NSD_ADDRESS}\noptions timeout:2 attempts:2\n",
        "hosts": "127.0.0.1 localhost\n",
    }
    mounted = []
    try:
        for name, text in files.items():
            path = workdir / f"etc-{name}"
            path.write_text(text)
            path.chmod(0o644)
            _run(["mount", "--bind", str(path), f"/etc/{name}"], f"bind-mount /etc/{name}")
            mounted.append(f"/etc/{name}")
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", target], capture_output=True, check=False, timeout=30)


# The lab NSD's server settings (tests/lab/nsd.py), on port 53: /etc/resolv.conf has no port.
NSD_CONF = SERVER_TEMPLATE.replace("{port}", "53").replace("{identity}", "mx-exporter-conformance")


class LabNsd:
    """NSD on 127.0.0.1:53 in the namespace, as tests/lab/nsd.py runs it (``nsd -d``, every file in a temp dir).

    ``zones`` maps a zone name to its text, or to None for a zone NSD lists but cannot load (SERVFAIL).
    """

    def __init__(self, zones: Mapping[str, str | None], probe_zone: str) -> None:
        self.zones = dict(zones)
        self.probe_zone = probe_zone
        self._state = tempfile.TemporaryDirectory(prefix="mx-conformance-nsd-")
        self._process: subprocess.Popen[bytes] | None = None
        self.stderr_path = Path(self._state.name) / "nsd.stderr"

    def start(self) -> None:
        if not NSD_BINARY.exists():
            raise LabUnavailable("nsd not installed (Debian package nsd)")
        state = Path(self._state.name)
        conf = NSD_CONF.format(address=NSD_ADDRESS, state=state)
        for index, (zone, text) in enumerate(self.zones.items()):
            zonefile = state / f"zone{index}.zone"
            if text is not None:
                zonefile.write_text(text)
            conf += f'zone:\n    name: "{zone}"\n    zonefile: "{zonefile}"\n'
        (state / "nsd.conf").write_text(conf)
        with self.stderr_path.open("wb") as err:
            self._process = subprocess.Popen(
                [str(NSD_BINARY), "-d", "-c", str(state / "nsd.conf")],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + NSD_START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with contextlib.suppress(OSError, dns.exception.DNSException):
                query = dns.message.make_query(f"{self.probe_zone}.", dns.rdatatype.SOA)
                reply = dns.query.udp(query, NSD_ADDRESS, port=53, timeout=0.3)
                if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                    return
            time.sleep(0.05)
        log = self.stderr_path.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"NSD did not answer for {self.probe_zone}: {log}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self._state.cleanup()

    def __enter__(self) -> LabNsd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
