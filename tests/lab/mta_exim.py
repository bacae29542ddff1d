"""Exim 4 for the conformance lab, from Debian's package but never installed (it conflicts with Postfix).

``exim_binary`` downloads exim4-daemon-light with apt-get into a cache directory and unpacks it there with
dpkg -x, once; its shared libraries come from ordinary Debian packages (libidn12 is the one Postfix's system
lacks). ``Exim`` runs that binary with ``-C`` (as root) on a config, spool and log of its own, one ``-odi``
process per message, and reads the verdict of each message from its main log.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.lab.conformance_netns import LabUnavailable
from tests.lab.conformance_scenarios import SENDER_DOMAIN
from tests.lab.mta import BRACKETED, SENDER, TIMEOUTS, Result, message

EXIM_PACKAGE = "exim4-daemon-light"
EXIM_USER = "Debian-exim"  # compiled into Debian's exim4
CACHE_ENV = "MX_EXPORTER_LAB_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mx-exporter-lab")


def exim_binary(cache: Path | None = None) -> Path:
    """Debian's exim4 binary unpacked under the cache (downloaded once), its user present, its libraries there."""
    root = (cache or cache_dir()) / "exim"
    binary = root / "usr" / "sbin" / "exim4"
    if not binary.exists():
        _unpack_exim(root)
    missing = [
        line.split()[0] for line in _run_text(["ldd", str(binary)]).splitlines() if "not found" in line
    ]
    if missing:
        raise LabUnavailable(
            f"exim4 lacks shared libraries {missing}: apt-get install libidn12 (see install.md)"
        )
    _ensure_exim_user()
    return binary


def _run_text(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False).stdout


def _unpack_exim(root: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise LabUnavailable("exim4 is unpacked from Debian's package: apt-get and dpkg are needed")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix="exim-download-") as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user may then write the download itself (no sandbox warning)
        download = ["apt-get", "download", "-q", EXIM_PACKAGE]
        done = subprocess.run(download, cwd=tmp, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:  # no package lists yet (a fresh machine): fetch them once and retry
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, check=False)
            done = subprocess.run(download, cwd=tmp, capture_output=True, text=True, timeout=300)
        debs = list(Path(tmp).glob(f"{EXIM_PACKAGE}_*.deb"))
        if done.returncode != 0 or not debs:
            raise LabUnavailable(
                f"apt-get download {EXIM_PACKAGE} failed (apt-get update?): {done.stderr.strip()}"
            )
        unpacked = Path(tmp) / "root"
        subprocess.run(
            ["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True, timeout=120
        )
        (unpacked / "VERSION").write_text(debs[0].name + "\n")
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)


def _ensure_exim_user() -> None:
    try:
        pwd.getpwnam(EXIM_USER)
        return
    except KeyError:
        pass
    done = subprocess.run(
        [
            "adduser",
            "--system",
            "--group",
            "--no-create-home",
            "--home",
            "/nonexistent",
            "--allow-bad-names",
            EXIM_USER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise LabUnavailable(f"cannot create user {EXIM_USER} for exim4: {done.stderr.strip()}")


EXIM_CONFIG = """\
primary_hostname = exim.{sender}
qualify_domain = {sender}
exim_path = {binary}
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
# Only 127.0.0.1 is "this host": the peers' addresses are on this namespace's lo too, and Exim would otherwise
# treat them as itself (MX list cut at the local host, then the self option). No daemon ever listens.
local_interfaces = 127.0.0.1
disable_ipv6 = true
keep_environment =
dns_retrans = 2s
dns_retry = 2
log_selector = +received_recipients +smtp_confirmation +retry_defer +deliver_time

begin routers
sender_discard:
  driver = redirect
  domains = {sender}
  data = :blackhole:
dnslookup:
  driver = dnslookup
  transport = remote_smtp
  ignore_target_hosts = <; 0.0.0.0
  no_more

begin transports
remote_smtp:
  driver = smtp
  connect_timeout = {connect}s
  command_timeout = {command}s
  data_timeout = {command}s
  final_timeout = {command}s
  hosts_try_fastopen = :

begin retry
*   *   F,2d,1h
"""

EXIM_ID = r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}"
EXIM_RECEIVED = re.compile(rf" (?P<id>{EXIM_ID}) <= .* for (?P<rcpts>.+)$")


class Exim:
    """Exim 4 from the unpacked package, run with ``-C`` (as root) on a config, spool and log of its own."""

    name = "exim"

    def __init__(self, root: Path, unpacked: Path) -> None:
        self.root = root
        self.unpacked = unpacked
        # Exim re-execs exim_path after dropping to Debian-exim (e.g. -Mc for a delivery): a copy here is
        # reachable by that user, the cache under root's home is not.
        self.binary = root / "bin" / "exim4"
        self.config = root / "exim.conf"
        self.mainlog = root / "log" / "mainlog"

    def start(self) -> None:
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.unpacked, self.binary)
        for sub in ("spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            shutil.chown(self.root / sub, EXIM_USER, EXIM_USER)
        text = EXIM_CONFIG.format(root=self.root, binary=self.binary, sender=SENDER_DOMAIN, **TIMEOUTS)
        self.config.write_text(text)
        self.config.chmod(0o644)  # root-owned and not writable by others, or exim refuses it
        check = subprocess.run(
            [str(self.binary), "-C", str(self.config), "-bV"], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"exim rejects its config: {check.stdout.strip()} {check.stderr.strip()}")

    def deliver(self, recipient: str, timeout: float) -> tuple[float, str]:
        """Submit and deliver in the foreground (-odi): returns once the first attempt is over."""
        started = time.monotonic()
        try:
            done = subprocess.run(
                [str(self.binary), "-C", str(self.config), "-odi", "-oi", "-f", SENDER, recipient],
                input=message(recipient, self.name),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            note = "" if done.returncode == 0 else f"exim exit {done.returncode}: {done.stderr.strip()}"
        except subprocess.TimeoutExpired:
            note = f"exim still running after {timeout:g} s"
        return time.monotonic() - started, note

    def result(self, recipient: str, seconds: float, note: str) -> Result:
        lines = self.mainlog.read_text(errors="replace").splitlines() if self.mainlog.exists() else []
        ids = [
            m["id"] for line in lines if (m := EXIM_RECEIVED.search(line)) and recipient in m["rcpts"].split()
        ]
        result = Result(seconds=seconds)
        if not ids:
            result.key_line = note or f"no <= line for {recipient} in {self.mainlog}"
            return result
        result.log = [line for line in lines if f" {ids[0]} " in line]
        verdicts = {" => ": "delivered", " ** ": "bounced", " == ": "deferred"}
        for marker, outcome in verdicts.items():  # a delivery beats a bounce beats a deferral
            line = next((x for x in result.log if marker in x and recipient in x), None)
            if line is not None:
                result.outcome, result.key_line = outcome, line
                if outcome == "delivered":
                    ip = BRACKETED.search(line)
                    result.delivered_to = ip.group(1) if ip else None
                break
        if result.outcome == "error":
            frozen = next((x for x in result.log if "Frozen" in x), "")
            result.key_line = frozen or note or "no =>, ** or == line for the recipient"
        return result
