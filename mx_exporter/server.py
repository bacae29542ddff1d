"""The long-running exporter: refresh loop + HTTP server, reload on SIGHUP / POST /-/reload, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from mx_exporter.engine import Watcher
from mx_exporter.loop import loop_name
from mx_exporter.names import split_listen_address
from mx_exporter.selfmetrics import ExporterMetrics
from mx_exporter.settings import (
    FALLBACK_EHLO_NAME,
    ConfigError,
    Settings,
    SettingsLoader,
)
from mx_exporter.web import ExporterWeb, start_site, stop_site

log = logging.getLogger(__name__)

STOP_GRACE = 2.0


class Server:
    def __init__(self, settings: Settings, loader: SettingsLoader) -> None:
        self.loader = loader
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.metrics = ExporterMetrics(self.registry)
        self.watcher = Watcher(settings, self.metrics)
        self.web = ExporterWeb(self.watcher, self.registry, self.reload)
        self._loaded()
        self._reload_lock = asyncio.Lock()

    def _loaded(self) -> None:
        self.metrics.reload_ok.set(1)
        self.metrics.reload_timestamp.set(time.time())

    async def reload(self) -> str | None:
        """Load the settings again; on error keep the old ones and return the message."""
        async with self._reload_lock:
            try:
                settings = self.loader.load()
            except ConfigError as err:
                self.metrics.reload_ok.set(0)
                log.error("reload failed, keeping the previous settings: %s", err)
                return str(err)
            old = self.watcher.settings
            if (settings.listen_address, settings.web) != (old.listen_address, old.web):
                log.warning("listen_address and web settings take effect only after a restart")
            self.watcher.apply(settings)
            self._loaded()
            log.info("settings reloaded: %d domains watched", len(self.watcher.domains))
            return None

    async def run(self) -> int:
        settings = self.watcher.settings
        middlewares: list[Any] = []
        ssl_context = None
        if settings.web.config_file:
            from mx_exporter.webauth import auth_middleware
            from mx_exporter.webconfig import load_web_config

            web_config = load_web_config(settings.web.config_file)
            middlewares.append(auth_middleware(web_config))
            ssl_context = web_config.ssl_context()
        if settings.ehlo_name == FALLBACK_EHLO_NAME:
            log.warning(
                "this host has no FQDN: sending EHLO %s; set ehlo_name to this host's name",
                FALLBACK_EHLO_NAME,
            )
        host, port = split_listen_address(settings.listen_address)
        runner = await start_site(self.web.app(middlewares), host, port, ssl_context)
        log.info(
            "listening on %s (%d domains watched, %s event loop)",
            settings.listen_address,
            len(self.watcher.domains),
            loop_name(),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[str | None]] = set()

        def on_hup() -> None:
            task = asyncio.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        refresher = asyncio.create_task(self.watcher.run(), name="refresh loop")
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self._shutdown(refresher, runner)
        return 0

    async def _shutdown(self, refresher: asyncio.Task[None], runner: Any) -> None:
        refresher.cancel()
        sessions = list(self.watcher.prober.in_flight.values())
        for task in sessions:
            task.cancel()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(refresher, *sessions, return_exceptions=True), STOP_GRACE)
        # A resolver replaced by a reload closes its idle sockets by itself; the current one is closed here.
        await self.watcher.prober.resolver.aclose()
        await stop_site(runner)


# The exporter keeps hundreds of thousands of long-lived objects (reports, cached exposition text) and allocates
# as many per refresh; with CPython's default thresholds (700, 10, 10) the collector walked them so often that it
# took 8.5 s of a 27 s first refresh of 10,000 hosted domains (0.74 s pauses). Refcounting frees almost all of
# it; the cycle collector only needs to run now and then (measured: 0.8 s, refresh 19 s).
GC_THRESHOLDS = (100_000, 50, 100)


async def serve(settings: Settings, loader: SettingsLoader) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        server = Server(settings, loader)
        return await server.run()
    except (ConfigError, ValueError) as err:  # WebConfigError is a ValueError naming the file and key
        log.error("%s", err)
        return 1
    except OSError as err:
        log.error("cannot listen on %s: %s", settings.listen_address, err.strerror or err)
        return 1
