"""The application factory: settings in, a ready-to-run ``web.Application`` out; nothing at import time.

Every resource with a lifetime is a ``cleanup_ctx`` (torn down in reverse order): run history (SQLite), the
event bus, the sync job (the real engine unless one is injected), the run manager, the readiness probes'
HTTP session, the periodic sync. :func:`drain` is the graceful stop used by ``proxbox serve`` on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from proxbox.bus import EventBus
from proxbox.config import Settings
from proxbox.errors import ProxboxError
from proxbox.events import Reporter, RunKind, RunOutcome
from proxbox.frames import make_codec
from proxbox.history import History
from proxbox.jobs import Job
from proxbox.logsetup import get_logger
from proxbox.metrics import close_clients, long_lived_clients, metrics_ctx
from proxbox.runs import RunManager, RunObserver
from proxbox.web.auth import make_auth_middleware
from proxbox.web.http import errors_middleware
from proxbox.web.keys import BUS, CODEC, HISTORY, JOB, READINESS, RUNS, SETTINGS, STARTED_AT, WATCHERS
from proxbox.web.ready import Readiness
from proxbox.web.routes import routes
from proxbox.web.watchers import GOING_AWAY, Watchers

log = get_logger(__name__)


class SyncEngineUnavailable(ProxboxError):
    code = "sync_engine_unavailable"


def create_app(
    settings: Settings,
    *,
    job: Job | None = None,
    observers: Iterable[RunObserver] = (),
) -> web.Application:
    """Build the server. ``job`` replaces the sync engine (tests, demos); ``observers`` hear about runs."""
    app = web.Application(middlewares=[errors_middleware, make_auth_middleware(settings.server)])
    app[SETTINGS] = settings
    app[CODEC] = make_codec()
    app[WATCHERS] = Watchers()
    app[STARTED_AT] = time.time()
    app.add_routes(routes())
    app.cleanup_ctx.append(_history_ctx)
    app.cleanup_ctx.append(_bus_ctx)
    app.cleanup_ctx.append(_job_ctx(job))
    app.cleanup_ctx.append(_runs_ctx(tuple(observers)))
    app.cleanup_ctx.append(metrics_ctx)  # after the run manager: it observes the runs
    app.cleanup_ctx.append(_readiness_ctx)
    app.cleanup_ctx.append(_schedule_ctx)
    app.on_shutdown.append(_close_watchers)
    return app


async def drain(app: web.Application, grace_s: float | None = None) -> None:
    """Graceful stop: no new runs; the running run may finish within ``grace_s`` (default
    ``server.drain_grace_s``), then is cancelled; every watcher gets its final frame; sockets close 1001."""
    server = app[SETTINGS].server
    registry = app[WATCHERS]
    registry.draining = True
    await app[RUNS].drain(server.drain_grace_s if grace_s is None else grace_s)
    await registry.flush(server.close_timeout_s)
    await registry.close_all(GOING_AWAY, "server shutting down")


# ------------------------------------------------------------------------------------------- lifetimes


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    server = app[SETTINGS].server
    history = History.in_state_dir(server.state_dir, limit=server.history_limit)
    app[HISTORY] = history
    yield
    await history.close()


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    app[BUS] = EventBus(app[CODEC].encode, default_limit=app[SETTINGS].server.subscriber_buffer)
    yield


def _job_ctx(job: Job | None) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if job is not None:
            app[JOB] = job
            yield
            return
        engine = _build_engine(app[SETTINGS])
        app[JOB] = engine.run if engine is not None else _unavailable
        yield
        if engine is not None:
            await _close_engine(engine)

    return ctx


def _build_engine(settings: Settings) -> Any:
    """The real sync engine, imported here so the server runs before (or without) it."""
    try:
        from proxbox.sync.engine import SyncEngine  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("proxbox.sync"):
            raise
        log.warning("server.sync_engine_missing", module=exc.name)
        return None
    return SyncEngine(settings, **long_lived_clients(settings))  # sessions reused, statistics for /metrics


async def _close_engine(engine: Any) -> None:
    await close_clients(engine)
    for name in ("aclose", "close"):
        closer = getattr(engine, name, None)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
            return


async def _unavailable(kind: RunKind, reporter: Reporter) -> RunOutcome:
    raise SyncEngineUnavailable("the sync engine (proxbox.sync.engine) is not installed")


def _runs_ctx(observers: tuple[RunObserver, ...]) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        server = settings.server
        runs = RunManager(
            app[JOB],
            app[BUS],
            app[HISTORY],
            log_limit=server.event_log_limit,
            subscriber_buffer=server.subscriber_buffer,
            retained_runs=server.retained_runs,
            cancel_grace_s=server.cancel_grace_s,
            endpoints=tuple(px.label for px in settings.proxmox),
        )
        for observer in observers:
            runs.add_observer(observer)
        await runs.start()
        app[RUNS] = runs
        yield
        await runs.close()

    return ctx


async def _readiness_ctx(app: web.Application) -> AsyncIterator[None]:
    readiness = Readiness(app[SETTINGS])
    await readiness.start()
    app[READINESS] = readiness
    yield
    await readiness.close()


async def _schedule_ctx(app: web.Application) -> AsyncIterator[None]:
    interval = app[SETTINGS].sync.interval_s
    task = None
    if interval > 0:
        log.info("server.periodic_sync", interval_s=interval)
        task = asyncio.create_task(app[RUNS].every(interval, "full"), name="proxbox-periodic-sync")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_watchers(app: web.Application) -> None:
    registry = app[WATCHERS]
    registry.draining = True
    await registry.close_all(GOING_AWAY, "server shutting down")
