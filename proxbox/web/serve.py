"""``proxbox serve``: run the server until SIGTERM/SIGINT, then drain gracefully.

Draining: stop accepting connections; refuse new runs; let the running run finish for
``server.drain_grace_s``, then ask it to cancel (and interrupt it ``server.cancel_grace_s`` later); let every
watcher receive its final frame; close every WebSocket with 1001; tear the resources down in reverse order.

Hooks for service integration (sd_notify, metrics, a status page): :func:`serve` takes ``on_ready(app)``
(called once the socket listens) and ``on_stopping(app)`` (called when the drain starts), and
:func:`proxbox.web.app.create_app` takes run observers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable, Iterable

import attrs
from aiohttp import web

from proxbox.config import Settings, load_settings
from proxbox.heap import freeze_startup
from proxbox.jobs import Job
from proxbox.logsetup import configure_logging, get_logger
from proxbox.runs import RunObserver
from proxbox.web.app import create_app, drain
from proxbox.web.auth import auth_enabled, check_bind
from proxbox.web.keys import SETTINGS

log = get_logger(__name__)

HELP = "run the server: WebSocket + HTTP API; every sync is one run shared by all its watchers"

Hook = Callable[[web.Application], None]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (overrides [server].host)")
    parser.add_argument("--port", type=int, help="TCP port (overrides [server].port)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None), os.environ)
    server = settings.server
    if args.host is not None:
        server = attrs.evolve(server, host=args.host)
    if args.port is not None:
        server = attrs.evolve(server, port=args.port)
    settings = attrs.evolve(settings, server=server)
    configure_logging(
        getattr(args, "log_level", None) or settings.logging.level,
        getattr(args, "log_format", None) or settings.logging.format,
    )
    check_bind(settings.server)
    from proxbox.sdnotify import ServiceNotifier  # systemd Type=notify: READY, STATUS, WATCHDOG, STOPPING

    notifier = ServiceNotifier()

    def ready(app: web.Application) -> None:
        freeze_startup()  # start-up's objects live as long as the process: out of every later GC pass
        notifier.ready(app)

    asyncio.run(serve(settings, observers=[notifier], on_ready=ready, on_stopping=notifier.stopping))
    return 0


async def serve(
    settings: Settings,
    *,
    job: Job | None = None,
    observers: Iterable[RunObserver] = (),
    on_ready: Hook | None = None,
    on_stopping: Hook | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT arrives), then drain."""
    check_bind(settings.server)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop_on_signal, stop, sig)
    app = create_app(settings, job=job, observers=observers)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.server.close_timeout_s)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        log.info(
            "server.listening",
            addresses=[_address(s) for s in runner.addresses],
            auth=auth_enabled(settings.server),
            config=settings.source,
        )
        if on_ready is not None:
            on_ready(app)
        await stop.wait()
        log.info("server.stopping", grace_s=settings.server.drain_grace_s)
        if on_stopping is not None:
            on_stopping(app)
        await site.stop()  # no new connections
        await drain(app, app[SETTINGS].server.drain_grace_s)
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("server.stopped")


def _stop_on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("server.signal", signal=sig.name)
    stop.set()


def _address(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)
