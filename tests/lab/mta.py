"""Two real sending MTAs for the conformance lab: a private Postfix instance and an unpacked Exim 4.

Both are configured as plain internet senders (MX lookup, fall back to A, try the next exchange on failure)
with their own queue, spool and log under a work directory, short timeouts so a scenario takes seconds, and
nothing listening on the network. What a scenario's message did is read from each MTA's own log, never
inferred: the first delivery attempt's verdict (delivered / deferred / bounced), the peer address it went to,
and the log lines of that message.

Postfix is here, Exim (which conflicts with it as a Debian package, so is unpacked, never installed) in
tests/lab/mta_exim.py; both share ``Result``, the message and the timeouts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.conformance_netns import LabUnavailable
from tests.lab.conformance_scenarios import SENDER_DOMAIN

SENDER = f"lab@{SENDER_DOMAIN}"
POSTFIX = "/usr/sbin/postfix"
POSTFIX_SENDMAIL = "/usr/sbin/sendmail"
TIMEOUTS = {"connect": 3, "greeting": 5, "command": 5}  # seconds, the same for both MTAs and the exporter


@dataclass
class Result:
    """One message's first delivery attempt, as its MTA logged it."""

    outcome: str = "error"  # delivered | deferred | bounced | error
    delivered_to: str | None = None  # the peer address that took it
    key_line: str = ""  # the log line the verdict comes from
    log: list[str] = field(default_factory=list)
    seconds: float | None = None  # submission to verdict

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "delivered_to": self.delivered_to,
            "key_line": self.key_line,
            "log": self.log,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
        }


def message(recipient: str, mta: str) -> str:
    return (
        f"From: <{SENDER}>\nTo: <{recipient}>\nSubject: conformance {recipient} via {mta}\n"
        f"Message-ID: <{recipient.replace('@', '.')}.{mta}@{SENDER_DOMAIN}>\n\nOne test message.\n"
    )


# --- Postfix

POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
meta_directory = /etc/postfix
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = postfix.{sender}
mydomain = {sender}
myorigin = {sender}
mydestination =
relayhost =
relay_domains =
inet_interfaces = loopback-only
inet_protocols = ipv4
smtp_address_preference = ipv4
smtp_host_lookup = dns
disable_dns_lookups = no
alias_maps =
alias_database =
local_recipient_maps =
notify_classes =
biff = no
# Bounces go to the lab's sender domain: discarded, never sent anywhere.
transport_maps = inline:{{{sender}=discard:}}
smtp_tls_security_level = none
smtp_connection_cache_on_demand = no
smtp_connect_timeout = {connect}s
smtp_helo_timeout = {greeting}s
smtp_mail_timeout = {command}s
smtp_rcpt_timeout = {command}s
smtp_data_init_timeout = {command}s
smtp_data_xfer_timeout = {command}s
smtp_data_done_timeout = {command}s
smtp_quit_timeout = {command}s
# One attempt per run: a deferred message waits an hour, far beyond the run.
minimal_backoff_time = 1h
maximal_backoff_time = 2h
queue_run_delay = 1h
"""

# No chroot (column 5 "n") so the daemons read the namespace's /etc/resolv.conf; no smtpd at all.
POSTFIX_MASTER = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_LINE = re.compile(
    r"postfix/(?P<daemon>[\w-]+)\[(?P<pid>\d+)\]: (?:(?P<qid>[0-9A-F]{8,}|[0-9A-Za-z]{12,}): )?"
)
POSTFIX_STATUS = re.compile(
    r"to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]*),.* status=(?P<status>\w+)"
)
BRACKETED = re.compile(r"\[(\d+\.\d+\.\d+\.\d+)\]")


class Postfix:
    """A Postfix instance of its own (``postfix -c DIR``), with every file under ``root``."""

    name = "postfix"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "etc"
        self.maillog = root / "maillog"
        self.submitted: dict[str, float] = {}
        self.started = False

    def start(self) -> None:
        if not Path(POSTFIX).exists():
            raise LabUnavailable("postfix not installed (Debian package postfix)")
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", "postfix")
        main = POSTFIX_MAIN.format(root=self.root, sender=SENDER_DOMAIN, **TIMEOUTS)
        (self.config / "main.cf").write_text(main)
        (self.config / "master.cf").write_text(POSTFIX_MASTER)
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config), "start"], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr.strip()}\n{self._log_text()[-2000:]}")
        self.started = True

    def submit(self, recipient: str) -> None:
        """Hand one message to the local queue (sendmail -> postdrop -> pickup), as a local program would."""
        env = {**os.environ, "MAIL_CONFIG": str(self.config)}
        done = subprocess.run(
            [POSTFIX_SENDMAIL, "-i", "-f", SENDER, recipient],
            input=message(recipient, self.name),
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix sendmail {recipient}: {done.stderr.strip()}")
        self.submitted[recipient] = time.monotonic()

    def _log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def results(self, recipients: list[str], timeout: float) -> dict[str, Result]:
        """Wait (bounded) until each recipient's first attempt has a status= line, then read them all."""
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        while True:
            text = self._log_text()
            for line in text.splitlines():
                found = POSTFIX_STATUS.search(line)
                if found and found["rcpt"] in recipients and found["rcpt"] not in seen:
                    seen[found["rcpt"]] = time.monotonic()
            if len(seen) == len(recipients) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return {r: self._parse(text.splitlines(), r, seen.get(r)) for r in recipients}

    def _parse(self, lines: list[str], recipient: str, when: float | None) -> Result:
        qid = next((m["qid"] for line in lines if (m := POSTFIX_LINE.search(line)) and m["qid"]
                    and f"to=<{recipient}>" in line), None)  # fmt: skip
        result = Result()
        if qid is None:
            result.key_line = f"no status line for {recipient} in {self.maillog}"
            return result
        # Connect errors carry no queue id: take the delivery agent's own lines since its previous verdict.
        pending: dict[str, list[str]] = {}
        for line in lines:
            m = POSTFIX_LINE.search(line)
            if m is None:
                continue
            if m["qid"] is None:
                pending.setdefault(m["pid"], []).append(line)
                continue
            if m["qid"] != qid:
                if "status=" in line:
                    pending.pop(m["pid"], None)
                continue
            if "status=" in line:
                result.log.extend(pending.pop(m["pid"], []))
            result.log.append(line)
            status = POSTFIX_STATUS.search(line)
            if status and result.outcome == "error":
                result.key_line = line
                result.outcome = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}.get(
                    status["status"], "error"
                )
                if result.outcome == "delivered":
                    ip = BRACKETED.search(status["relay"])
                    result.delivered_to = ip.group(1) if ip else status["relay"]
        if when is not None and recipient in self.submitted:
            result.seconds = when - self.submitted[recipient]
        return result

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config), "stop"], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            subprocess.run([POSTFIX, "-c", str(self.config), "abort"], capture_output=True, timeout=30)
