"""HTTP endpoints: trigger, list, inspect, stream (SSE) and cancel runs; health, readiness, version.

No GET changes anything. Errors are JSON problem bodies
``{"error": <code>, "message": ..., "retryable": ...}`` (see :func:`errors_middleware`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs
from aiohttp import web

from proxbox import __version__
from proxbox.errors import InvalidRequest, ProxboxError, Unauthorized
from proxbox.events import RUN_KINDS
from proxbox.logsetup import get_logger
from proxbox.web.auth import public
from proxbox.web.keys import READINESS, RUNS, SETTINGS, STARTED_AT, WATCHERS
from proxbox.web.watchers import SseConnection, limit_send_buffer

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ------------------------------------------------------------------------------------------- middleware


def _http_code(status: int, reason: str) -> str:
    return {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        426: "upgrade_required",
    }.get(status, reason.lower().replace(" ", "_") or "http_error")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ProxboxError → its JSON problem body and status; aiohttp's HTTP errors → the same shape."""
    try:
        return await handler(request)
    except ProxboxError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="proxbox"'} if isinstance(exc, Unauthorized) else None
        if exc.http_status >= 500:
            log.warning("http.error", path=request.path, error=exc.code, message=exc.message)
        return web.json_response(exc.as_dict(), status=exc.http_status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {"error": _http_code(exc.status, exc.reason), "message": exc.reason, "retryable": False}
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        return web.json_response(body, status=exc.status, headers=headers)
    except Exception:
        log.exception("http.internal_error", path=request.path)
        body = {"error": "internal_error", "message": "internal server error", "retryable": True}
        return web.json_response(body, status=500)


# ------------------------------------------------------------------------------------------------ runs


def _kind(request: web.Request) -> Any:
    kind = request.match_info["kind"]
    if kind not in RUN_KINDS:
        raise InvalidRequest(f"unknown sync kind {kind!r}: use one of {', '.join(RUN_KINDS)}", kind=kind)
    return kind


def _int_param(raw: str | None, name: str, default: int, *, lo: int = 0, hi: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < lo or (hi is not None and int(raw) > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise InvalidRequest(f"{name} must be a whole number {bounds}, got {raw!r}", parameter=name)
    return int(raw)


async def start_sync(request: web.Request) -> web.StreamResponse:
    """``POST /sync/{kind}`` → 202 ``{"run": {...}, "joined": bool}``."""
    run, joined = request.app[RUNS].trigger(_kind(request), trigger="http")
    return web.json_response({"run": run.summary(), "joined": joined}, status=202)


async def list_runs(request: web.Request) -> web.StreamResponse:
    limit = _int_param(request.query.get("limit"), "limit", 50, lo=1, hi=1000)
    kind = request.query.get("kind")
    if kind is not None and kind not in RUN_KINDS:
        raise InvalidRequest(f"unknown kind {kind!r}: use one of {', '.join(RUN_KINDS)}", parameter="kind")
    runs = await request.app[RUNS].list(limit=limit, kind=kind)
    return web.json_response({"runs": runs})


async def get_run(request: web.Request) -> web.StreamResponse:
    return web.json_response({"run": await request.app[RUNS].lookup(request.match_info["run_id"])})


async def cancel_run(request: web.Request) -> web.StreamResponse:
    """``POST /runs/{id}/cancel`` → 202 with the run (a finished run is returned unchanged, 200)."""
    summary = await request.app[RUNS].cancel(request.match_info["run_id"])
    return web.json_response({"run": summary}, status=200 if summary["state"] == "finished" else 202)


async def run_events(request: web.Request) -> web.StreamResponse:
    """``GET /runs/{id}/events``: Server-Sent Events of the run's frames; ``id:`` is the seq, so a client
    resumes with ``Last-Event-ID`` (or ``?since=N``). Ends after the ``complete`` frame."""
    app = request.app
    server = app[SETTINGS].server
    since = _int_param(
        request.headers.get("Last-Event-ID") or request.query.get("since"), "Last-Event-ID/since", 0
    )
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    conn = SseConnection(request, resp)
    watch = await app[RUNS].attach(request.match_info["run_id"], since, on_drop=conn.on_drop)
    registry = app[WATCHERS]
    registry.add(conn)
    try:
        await resp.prepare(request)
        limit_send_buffer(request, server.send_buffer_bytes)
        await resp.write(b"retry: 2000\n\n")
        await conn.stream(watch, since, heartbeat_s=server.heartbeat_s, runs=app[RUNS])
        transport = request.transport
        if conn.dropped is None and transport is not None and not transport.is_closing():
            await resp.write_eof()
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        pass
    finally:
        app[RUNS].detach(watch)
        registry.discard(conn)
    return resp


# ------------------------------------------------------------------------------------------------ misc


@public
async def health(request: web.Request) -> web.StreamResponse:
    """Process alive (no authentication, touches nothing)."""
    started = request.app[STARTED_AT]
    return web.json_response({"status": "ok", "uptime_s": round(time.time() - started, 1)})


async def ready(request: web.Request) -> web.StreamResponse:
    """NetBox and every Proxmox endpoint reachable: 200, else 503, with one check per target."""
    checks = await request.app[READINESS].check()
    ok = all(c.ok for c in checks)
    body = {"ready": ok, "checks": [attrs.asdict(c) for c in checks]}
    return web.json_response(body, status=200 if ok else 503)


async def version(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"version": __version__, "python": platform.python_version(), "aiohttp": aiohttp.__version__}
    )
