"""Command line: ``mx-exporter`` serves; ``mx-exporter check DOMAIN…`` answers once; ``--config.check`` validates.

Every settings key is also a flag (``--smtp.port 2525``); values are read as YAML scalars or lists, so
``--smtp.address_families '[ipv4]'`` works. Flags beat ``MX_EXPORTER_*`` environment, which beats the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from mx_exporter import __version__
from mx_exporter.egress import BLOCKED_TEXT, Egress, check_egress
from mx_exporter.engine import CycleCache, Prober, smtp_policy
from mx_exporter.loop import run_event_loop
from mx_exporter.model import DomainReport
from mx_exporter.names import normalize_domain, parse_canary
from mx_exporter.settings import ConfigError, Settings, SettingsLoader, leaf_keys

EXIT_CONFIG_ERROR = 3
ALIASES = {
    "listen_address": "--web.listen-address",
    "web.config_file": "--web.config.file",
    "log_level": "--log.level",
}
LIST_KEYS = {"domains"}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="PATH", help="YAML settings file")
    group = parser.add_argument_group("settings (each key of the settings file; flags win over env and file)")
    for key in leaf_keys():
        if key in LIST_KEYS:
            continue
        names = [f"--{key}"] + ([ALIASES[key]] if key in ALIASES else [])
        group.add_argument(*names, dest=f"set:{key}", metavar="VALUE")
    group.add_argument(
        "--domain",
        dest="domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="watch this domain (repeatable; added to the file's domains)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mx-exporter",
        description="Prometheus exporter for MX health: resolves MX like a sender and probes every tier's SMTP.",
        epilog="One-shot check: mx-exporter check [flags] DOMAIN [DOMAIN ...]",
    )
    parser.add_argument("--version", action="version", version=f"mx-exporter {__version__}")
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the settings, print the problem if any, exit 0 or 1",
    )
    _add_settings_flags(parser)
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mx-exporter check",
        description="Resolve and probe domains once, print their MX health (problem domains first, then a "
        "summary line when there are several). Exit status: 0 deliverable with "
        "primary up (or null MX by design), 1 primary down but deliverable, 2 undeliverable, 3 DNS or config "
        "error; with several domains, the worst.",
    )
    parser.add_argument("domains", nargs="+", metavar="DOMAIN")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    _add_settings_flags(parser)
    return parser


def overrides_from(ns: argparse.Namespace) -> dict[str, Any]:
    """Nested settings overrides from the flags that were given."""
    overrides: dict[str, Any] = {}
    for dest, raw in vars(ns).items():
        if not dest.startswith("set:") or raw is None:
            continue
        node = overrides
        *parents, leaf = dest[4:].split(".")
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[leaf] = raw
    return overrides


def _loader(ns: argparse.Namespace, extra_domains: Sequence[str]) -> SettingsLoader:
    return SettingsLoader(ns.config_file, overrides_from(ns), tuple(extra_domains))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


async def _check(settings: Settings, domains: list[str]) -> tuple[Egress | None, list[DomainReport]]:
    """The egress canaries first (when configured): while none can be reached no domain is judged."""
    prober = Prober(settings)
    canaries = [parse_canary(c) for c in settings.egress.canaries]
    if canaries:
        egress = await check_egress(
            canaries, prober.resolver, settings.resolver.timeout, smtp_policy(settings)
        )
        if not egress.up:
            return egress, []
    cache = CycleCache()
    config = {d.name: d for d in settings.domains}
    reports = list(await asyncio.gather(*(prober.probe(d, cache, config.get(d)) for d in domains)))
    return (egress if canaries else None), reports


def run_check(argv: Sequence[str]) -> int:
    from mx_exporter.report_text import render_run, to_json
    from mx_exporter.verdicts import exit_code, worst_exit_code

    ns = _check_parser().parse_args(argv)
    try:
        domains = list(dict.fromkeys(normalize_domain(d) for d in ns.domains))
        settings = _loader(ns, []).load()
    except (ConfigError, ValueError) as err:
        print(f"mx-exporter check: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    _setup_logging("warning" if settings.log_level == "info" else settings.log_level)
    egress, reports = run_event_loop(_check(settings, domains))
    if egress is not None and not egress.up:
        said = {"state": egress.state.value, "detail": egress.detail}
        if ns.output == "json":
            print(json.dumps({"domains": [], "exit_code": EXIT_CONFIG_ERROR, "egress": said}, indent=2))
        else:
            print(f"{BLOCKED_TEXT} ({egress.state.value}: {egress.detail})")
            print(
                f"Not judged: {', '.join(domains)}. Fix outbound port 25 (see the README runbook), then retry."
            )
        return EXIT_CONFIG_ERROR  # 3: nothing can be said about the domains from here
    codes = [exit_code(r) for r in reports]
    worst = worst_exit_code(codes)
    if ns.output == "json":
        document: dict[str, object] = {"domains": [to_json(r) for r in reports], "exit_code": worst}
        if egress is not None:
            document["egress"] = {"state": egress.state.value, "detail": egress.detail}
        print(json.dumps(document, indent=2))
    else:
        color = ns.color == "always" or (ns.color == "auto" and sys.stdout.isatty())
        print(render_run(reports, color=color))  # problems first, then a summary line
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "check":
        return run_check(args[1:])
    ns = _parser().parse_args(args)
    loader = _loader(ns, ns.domain)
    try:
        settings = loader.load()
    except (ConfigError, ValueError) as err:
        print(f"mx-exporter: configuration error:\n{err}", file=sys.stderr)
        return 1
    if ns.config_check:
        if settings.web.config_file:
            from mx_exporter.webconfig import load_web_config

            try:
                load_web_config(settings.web.config_file)
            except ValueError as err:
                print(f"mx-exporter: web configuration error:\n{err}", file=sys.stderr)
                return 1
        print(f"configuration OK: {len(settings.domains)} domains")
        return 0
    _setup_logging(settings.log_level)
    from mx_exporter.server import serve

    try:
        return run_event_loop(serve(settings, loader))
    except KeyboardInterrupt:
        return 0
