"""The HTTP face: /metrics, /probe, the status page, /config, health, readiness and reload.

Scrapes of /metrics only read finished reports (the refresh loop runs beside them), so a scrape answers at once
even while a refresh is stuck on silent peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mx_exporter import __version__
from mx_exporter.engine import Watcher
from mx_exporter.exposition import GzipHead, Renderer, gzip_finish, gzip_head
from mx_exporter.probe_endpoint import (
    SCRAPE_TIMEOUT_HEADER,
    ProbeRejected,
    ProbeService,
    debug_text,
    probe_budget,
    render_probe,
    validate_target,
)
from mx_exporter.settings import Settings
from mx_exporter.statuspage import render_status_page

log = logging.getLogger(__name__)

ReloadFn = Callable[[], Awaitable[str | None]]
SECRET_WORDS = ("password", "secret", "token", "key")


def redact(value: Any) -> Any:
    """Settings as shown on /config: values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if any(w in k.lower() for w in SECRET_WORDS) and v else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class DomainExposition:
    """The watched domains' part of /metrics, rendered off the event loop and only where reports changed.

    The renderer re-formats only changed domains and exchanges (``exposition.Renderer``); the render and the
    gzip head run in a worker thread from a snapshot of the reports, so probes keep running during a scrape,
    and between refreshes every scrape reuses the same bytes.
    """

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.renderer = Renderer()
        self.version = -1
        self.chunks: tuple[bytes, ...] = ()
        self.gzip: GzipHead | None = None
        self.lock = asyncio.Lock()

    async def render(self, gzip: bool = False) -> tuple[tuple[bytes, ...], GzipHead | None]:
        """The plain body in chunks, and (when asked) the gzip head of it, for the reports as they are now."""
        async with self.lock:
            loop = asyncio.get_running_loop()
            version = self.watcher.version
            if version != self.version:
                snapshot = list(self.watcher.reports.values())
                chunks = await loop.run_in_executor(None, self.renderer.render_chunks, snapshot)
                self.chunks, self.version, self.gzip = tuple(chunks), version, None
            if gzip and self.gzip is None:
                self.gzip = await loop.run_in_executor(None, gzip_head, self.chunks)
            return self.chunks, self.gzip if gzip else None


class ExporterWeb:
    """Handlers bound to the live watcher and settings; ``reload`` is provided by the server."""

    def __init__(self, watcher: Watcher, registry: CollectorRegistry, reload: ReloadFn) -> None:
        self.watcher = watcher
        self.registry = registry
        self.reload_fn = reload
        self.domain_exposition = DomainExposition(watcher)
        self.probes = ProbeService(
            prober=lambda: watcher.prober,
            watched=lambda: watcher.reports,
            config=lambda: watcher.configured,
        )

    @property
    def settings(self) -> Settings:
        return self.watcher.settings

    def app(self, middlewares: list[Any] | None = None) -> web.Application:
        app = web.Application(middlewares=middlewares or [], client_max_size=64 * 1024)
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/metrics", self.metrics),
                web.get("/probe", self.probe),
                web.get("/config", self.config),
                web.get("/-/healthy", self.healthy),
                web.get("/-/ready", self.ready),
                web.post("/-/reload", self.reload),
            ]
        )
        return app

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        chunks, head = await self.domain_exposition.render(gzip)
        own = generate_latest(self.registry)
        headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
        if head is not None:
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=gzip_finish(head, own), headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = sum(map(len, chunks)) + len(own)
        await response.prepare(request)
        for chunk in (*chunks, own):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def probe(self, request: web.Request) -> web.Response:
        try:
            domain = validate_target(request.query.get("target"))
            budget = probe_budget(self.settings, request.headers.get(SCRAPE_TIMEOUT_HEADER))
            report = self.probes.reusable(domain, self.settings.probe.reuse_max_age)
            reused = report is not None
            if report is None:
                report = await self.probes.probe(domain, budget, self.settings.probe.max_concurrent)
        except ProbeRejected as err:
            return web.Response(status=err.status, text=err.reason + "\n")
        except TimeoutError:
            return web.Response(status=504, text=f"probe of {domain} did not finish in {budget:.1f}s\n")
        if request.query.get("debug", "").lower() in ("1", "true", "yes"):
            return web.Response(text=debug_text(report, self.settings, reused), content_type="text/plain")
        return web.Response(body=render_probe(report), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(self, request: web.Request) -> web.Response:
        names = [d.name for d in self.watcher.domains]
        reports = [self.watcher.reports[n] for n in names if n in self.watcher.reports]
        example = names[0] if names else "example.org"
        q, state = request.query.get("q"), request.query.get("state")  # checked by the page, never an error
        egress, suspected = self.watcher.egress, self.watcher.egress_suspected
        no_route = self.watcher.ipv6_no_route

        def render() -> str:
            return render_status_page(
                reports,
                watched=names,
                version=__version__,
                now=time.time(),
                probe_example=example,
                q=q,
                state=state,
                egress=egress,
                egress_suspected=suspected,
                ipv6_no_route=no_route,
            )

        # A page of 10,000 domains takes a while to build: a worker thread keeps probes and scrapes answering.
        html = await asyncio.get_running_loop().run_in_executor(None, render)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def config(self, request: web.Request) -> web.Response:
        shown = redact(self.settings.model_dump(mode="json"))
        return web.Response(text=yaml.safe_dump(shown, sort_keys=False), content_type="text/plain")

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, request: web.Request) -> web.Response:
        if self.watcher.ready.is_set():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="waiting for the first full refresh\n")

    async def reload(self, request: web.Request) -> web.Response:
        error = await self.reload_fn()
        if error is not None:
            return web.Response(status=500, text=f"reload failed, keeping the previous settings:\n{error}\n")
        return web.Response(text="reloaded\n")


async def start_site(app: web.Application, host: str, port: int, ssl_context: Any) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    return runner


async def stop_site(runner: web.AppRunner) -> None:
    try:
        await asyncio.wait_for(runner.cleanup(), 3.0)
    except TimeoutError:
        log.warning("HTTP shutdown took longer than 3 s; closing anyway")
