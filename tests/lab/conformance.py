"""Sender conformance: what real Postfix and Exim do with each scenario, next to what ``mx-exporter check`` says.

    python -m tests.lab.conformance --json OUT.json [--only 1,2,3] [--keep-workdir DIR]

The runner downloads Exim if needed (tests/lab/mta.py), then re-execs itself as PID 1 of private network, mount
and PID namespaces (tests/lab/conformance_netns.py), where it serves the scenarios' zones from NSD on port 53,
points /etc/resolv.conf at it, starts the scripted peers on port 25 (tests/lab/conformance_peers.py), then runs
every scenario at once: one message through Postfix, one through Exim, and one ``check`` by the exporter, all
against the same DNS and peers. The MTAs' verdicts come from their logs; the exporter's JSON is stored raw (not
interpreted here). Exit status 77 when this machine cannot run the lab (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from tests.lab.conformance_netns import (
    UNAVAILABLE,
    LabNsd,
    LabUnavailable,
    enter_namespaces,
    private_etc,
    setup_network,
)
from tests.lab.conformance_peers import PeerLab
from tests.lab.conformance_scenarios import (
    LAB_NETWORKS,
    LAB_ZONE,
    NSD_ADDRESS,
    SENDER_DOMAIN,
    Scenario,
    addresses,
    lab_zone,
    root_zone,
    scenarios,
)
from tests.lab.mta import TIMEOUTS, Postfix, Result
from tests.lab.mta_exim import Exim, exim_binary

MODULE = "tests.lab.conformance"
REPO = Path(__file__).resolve().parents[2]
EXIM_BINARY_ENV = "MX_CONFORMANCE_EXIM"  # the unpacked binary, found before entering the namespace
MTA_TIMEOUT = 90.0  # seconds for every scenario's first attempt, per MTA
EXPORTER_TIMEOUT = 90.0
EXPORTER_WORKERS = 4  # each check is a Python start-up: bounded so the 2 cores still serve the MTAs and peers


def exporter_config() -> dict[str, Any]:
    """The exporter's settings for the lab: the lab NSD, port 25, the lab ranges allowed, the MTAs' timeouts."""
    return {
        "ehlo_name": f"probe.{SENDER_DOMAIN}",
        "resolver": {"nameservers": [f"{NSD_ADDRESS}:53"], "timeout": 3},
        "smtp": {
            "port": 25,
            "connect_timeout": TIMEOUTS["connect"],
            "greeting_timeout": TIMEOUTS["greeting"],
            "ehlo_timeout": TIMEOUTS["command"],
            "session_timeout": 20,
            "address_families": ["ipv4"],
        },
        "allow_networks": list(LAB_NETWORKS),
    }


def run_check(config: Path, domain: str) -> dict[str, Any]:
    """``python -m mx_exporter check --output json`` for one domain; its document unparsed-into-meaning."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MX_EXPORTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    argv = [
        sys.executable,
        "-m",
        "mx_exporter",
        "check",
        "--output",
        "json",
        "--config.file",
        str(config),
        domain,
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=EXPORTER_TIMEOUT, env=env, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return {"document": None, "exit_code": None, "error": f"timed out after {EXPORTER_TIMEOUT:g} s"}
    run: dict[str, Any] = {"exit_code": done.returncode, "seconds": round(time.monotonic() - started, 2)}
    try:
        run["document"] = json.loads(done.stdout)
    except json.JSONDecodeError:
        run["document"] = None
        run["error"] = f"no JSON on stdout: {done.stdout[-500:]!r}"
    if done.stderr.strip():
        run["stderr"] = done.stderr[-2000:]
    return run


def zones(chosen: list[Scenario]) -> dict[str, str | None]:
    served: dict[str, str | None] = {".": root_zone(), LAB_ZONE: lab_zone(chosen)}
    for scenario in chosen:
        served.update(dict.fromkeys(scenario.broken_zones))
    return served


def run_lab(chosen: list[Scenario], workdir: Path, binary: Path) -> dict[str, Any]:
    """Inside the namespaces: build the world, run every scenario at once, stop everything, return the report."""
    started = time.monotonic()
    local, hole = addresses(chosen)
    blackhole = setup_network(local, hole)
    peers = {a: b for s in chosen for a, b in s.peers.items()}
    with private_etc(workdir), LabNsd(zones(chosen), LAB_ZONE), PeerLab(peers) as peer_lab:
        postfix, exim = Postfix(workdir / "postfix"), Exim(workdir / "exim", binary)
        config = workdir / "exporter.yml"
        config.write_text(yaml.safe_dump(exporter_config()))
        try:
            postfix.start()
            exim.start()
            setup = time.monotonic() - started
            with (
                ThreadPoolExecutor(len(chosen)) as mta_pool,
                ThreadPoolExecutor(EXPORTER_WORKERS) as exporter_pool,
            ):
                for scenario in chosen:
                    postfix.submit(scenario.recipient)
                exim_runs = {s.n: mta_pool.submit(exim.deliver, s.recipient, MTA_TIMEOUT) for s in chosen}
                checks = {s.n: exporter_pool.submit(run_check, config, s.domain) for s in chosen}
                postfix_results = postfix.results([s.recipient for s in chosen], MTA_TIMEOUT)
                reports = [
                    _report(
                        s,
                        postfix_results[s.recipient],
                        exim.result(s.recipient, *exim_runs[s.n].result()),
                        checks[s.n],
                    )
                    for s in chosen
                ]
            snapshot = peer_lab.snapshot()
        finally:
            postfix.stop()
    for report in reports:
        report["peer_log"] = {a: snapshot[a] for a in report["peers"]}
    return {
        "blackhole": blackhole,
        "versions": _versions(binary),
        "timeouts": TIMEOUTS,
        "exporter_config": exporter_config(),
        "timings": {"setup_seconds": round(setup, 2), "total_seconds": round(time.monotonic() - started, 2)},
        "scenarios": reports,
    }


def _report(
    scenario: Scenario, postfix: Result, exim: Result, check: Future[dict[str, Any]]
) -> dict[str, Any]:
    run = check.result()
    return {
        "name": scenario.name,
        "number": scenario.n,
        "domain": scenario.domain,
        "description": scenario.description,
        "records": list(scenario.records),
        "peers": scenario.peers,
        "postfix": postfix.as_json(),
        "exim": exim.as_json(),
        "exporter": run.pop("document"),
        "exporter_run": run,
    }


def _versions(binary: Path) -> dict[str, str]:
    postconf = subprocess.run(
        ["postconf", "-dh", "mail_version"], capture_output=True, text=True, check=False, timeout=30
    )
    version_file = binary.parents[2] / "VERSION"
    exim = version_file.read_text().strip() if version_file.exists() else "unknown"
    return {"postfix": postconf.stdout.strip(), "exim": exim}


def summary(report: dict[str, Any]) -> str:
    """One line per scenario: what each MTA did, for the terminal."""
    lines = []
    for s in report["scenarios"]:
        cells = [f"{s['name']}"]
        for mta in ("postfix", "exim"):
            r = s[mta]
            cells.append(f"{mta}={r['outcome']}" + (f"@{r['delivered_to']}" if r["delivered_to"] else ""))
        cells.append(f"exporter_exit={s['exporter_run'].get('exit_code')}")
        lines.append("  ".join(cells) + f"  # {s['description']}")
    lines.append(f"total {report['timings']['total_seconds']} s")
    return "\n".join(lines)


def _where(result: dict[str, Any]) -> str:
    return result["outcome"] + (f" to {result['delivered_to']}" if result["delivered_to"] else "")


def _key(line: str) -> str:
    """The log line without its timestamp and host fields, pipes escaped for a Markdown table."""
    if " postfix/" in line:
        line = line[line.index(" postfix/") + 1 :]
    elif len(line) > 20 and line[4] == "-" and line[13] == ":":
        line = line[20:]
    return line.replace("|", "\\|")


def markdown(report: dict[str, Any]) -> str:
    """The observed table: scenario, each MTA's outcome and where, and the log line the verdict comes from."""
    rows = [
        "| scenario | postfix | exim | postfix key log line | exim key log line |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in report["scenarios"]:
        p, e = s["postfix"], s["exim"]
        rows.append(
            f"| {s['name']}: {s['description']} | {_where(p)} | {_where(e)} "
            f"| `{_key(p['key_line'])}` | `{_key(e['key_line'])}` |"
        )
    return "\n".join(rows) + "\n"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write the report here")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers (default: all)")
    parser.add_argument("--markdown", type=Path, help="also write the observed table here (Markdown)")
    parser.add_argument("--keep-workdir", type=Path, help="put queues, spools and logs here and keep them")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = _parse(args_list)
    chosen = scenarios([int(n) for n in args.only.split(",") if n.strip()])
    try:
        if os.geteuid() != 0:
            raise LabUnavailable(
                "the sender-conformance lab needs root (namespaces, ports 25 and 53, Exim's -C)"
            )
        if not os.environ.get(EXIM_BINARY_ENV):
            os.environ[EXIM_BINARY_ENV] = str(
                exim_binary()
            )  # needs the package registry: before the namespace
        enter_namespaces(MODULE, args_list)
        if args.keep_workdir is not None:
            if args.keep_workdir.exists() and any(args.keep_workdir.iterdir()):
                raise SystemExit(
                    f"--keep-workdir {args.keep_workdir} must be new or empty (old queues would run)"
                )
            args.keep_workdir.mkdir(parents=True, exist_ok=True)
            report = run_lab(chosen, args.keep_workdir.resolve(), Path(os.environ[EXIM_BINARY_ENV]))
        else:
            with tempfile.TemporaryDirectory(prefix="mx-conformance-") as tmp:
                os.chmod(tmp, 0o755)  # Postfix and Exim daemons run as their own users below it
                report = run_lab(chosen, Path(tmp), Path(os.environ[EXIM_BINARY_ENV]))
    except LabUnavailable as err:
        print(f"sender-conformance lab unavailable: {err}", file=sys.stderr)
        return UNAVAILABLE
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown(report))
    print(summary(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
