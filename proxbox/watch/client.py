"""Following one run over ``/ws/runs/{id}?since=N``, reconnecting and resuming until its ``complete`` frame.

A dropped connection (network error, server restart: 1001/1006/1012, a watcher cut off for being slow: 1013)
is retried with exponential backoff (aiohttp-retry's :class:`~aiohttp_retry.ExponentialRetry` schedule, with
jitter) and resumed with ``since=<last seq seen>``; :class:`~proxbox.watch.view.RunView` drops any frame it
has
already seen, so the renderer sees every frame once. ``latest`` is resolved by the server on the first
connection and pinned to that run's id afterwards. The backoff counter resets whenever a connection delivers
new frames. Stops retrying on 4001 (API key refused), 4004 (no such run) and 1008 (bad request).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import attrs
from aiohttp import WSMsgType
from aiohttp_retry import ExponentialRetry, RetryClient
from yarl import URL

from proxbox.errors import InvalidRequest, RunNotFound, ServerUnreachable, Unauthorized
from proxbox.logsetup import get_logger
from proxbox.watch.render import Renderer
from proxbox.watch.view import RunView, is_frame

log = get_logger(__name__)

WS_AUTH_FAILED = 4001
WS_RUN_NOT_FOUND = 4004
WS_POLICY_VIOLATION = 1008
DEFAULT_URL = "http://127.0.0.1:8800"


def base_url(text: str) -> URL:
    """The server's base URL as http(s); ``ws://`` and ``wss://`` are accepted too. Raises InvalidRequest."""
    url = URL(text.strip())
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    if scheme not in ("http", "https") or not url.host:
        raise InvalidRequest(f"not a proxbox server URL: {text!r} (use http://host:port)", url=text)
    return url.with_scheme(scheme).with_query(None).with_fragment(None)


def _join(base: URL, path: str) -> URL:
    return base.with_path(base.path.rstrip("/") + path, encoded=True)


def run_ws_url(base: URL, run_id: str, since: int) -> URL:
    url = _join(base, f"/ws/runs/{quote(run_id, safe='')}").with_query(since=str(since))
    return url.with_scheme("wss" if base.scheme == "https" else "ws")


def run_http_url(base: URL, run_id: str) -> URL:
    return _join(base, f"/runs/{quote(run_id, safe='')}")


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait before reconnect attempt ``n`` (0-based), and how many attempts in a row."""

    attempts: int = 10
    start_s: float = 0.5
    max_s: float = 10.0
    rng: random.Random = attrs.field(factory=random.Random, eq=False)

    def delay(self, attempt: int) -> float:
        schedule = ExponentialRetry(
            attempts=self.attempts, start_timeout=self.start_s, max_timeout=self.max_s
        )
        return schedule.get_timeout(attempt) * self.rng.uniform(0.5, 1.0)


@attrs.frozen
class _Ended:
    code: int | None  # WebSocket close code, None when the connection broke
    reason: str
    progressed: bool  # new frames arrived on this connection


class RunWatcher:
    """Follow one run (``run`` is an id or ``latest``) to its end; :meth:`follow` returns the final view."""

    def __init__(
        self,
        base: URL | str,
        run: str = "latest",
        *,
        renderer: Renderer,
        api_key: str | None = None,
        since: int = 0,
        backoff: Backoff | None = None,
        heartbeat_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base = base if isinstance(base, URL) else base_url(base)
        self.run = run
        self.renderer = renderer
        self.view = RunView(last_seq=since)
        self._api_key = api_key
        self._backoff = backoff or Backoff()
        self._heartbeat_s = heartbeat_s
        self._session = session
        self._sleep = sleep
        self.connections = 0  # successful WebSocket handshakes (1 + reconnects)

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def follow(self) -> RunView:
        owned = self._session is None
        session = self._session or aiohttp.ClientSession()
        try:
            self.renderer.start(f"run {self.run} on {self.base}")
            await self._follow(session)
        finally:
            if owned:
                await session.close()
        self.renderer.finish(self.view)
        return self.view

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        failures = 0
        while True:
            run_id = self.view.run_id or self.run
            since = self.view.last_seq
            try:
                ended = await self._connect_once(session, run_id, since)
            except aiohttp.WSServerHandshakeError as exc:
                self._refused(exc.status, exc.message, run_id)
                ended = _Ended(None, f"handshake failed: HTTP {exc.status} {exc.message}", False)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                ended = _Ended(None, f"{type(exc).__name__}: {exc}".rstrip(": "), False)
            if self.view.complete:
                return
            if ended.code == WS_AUTH_FAILED:
                raise Unauthorized(f"the server refused the API key: {ended.reason or 'unauthorized'}")
            if ended.code == WS_RUN_NOT_FOUND:
                raise RunNotFound(ended.reason or f"no run {run_id!r}", run_id=run_id)
            if ended.code == WS_POLICY_VIOLATION:
                raise InvalidRequest(ended.reason or "the server rejected the request")
            if ended.code == 1000 and await self._finished_without_frame(session, run_id):
                return
            failures = 1 if ended.progressed else failures + 1
            if failures > self._backoff.attempts:
                raise ServerUnreachable(
                    f"gave up after {self._backoff.attempts} attempts to reach {self.base}: {ended.reason}",
                    url=str(self.base),
                )
            delay = self._backoff.delay(failures - 1)
            where = f", resuming after seq {self.view.last_seq}" if self.view.last_seq else ""
            why = f"closed {ended.code}" if ended.code is not None else ended.reason
            if ended.code is not None and ended.reason:
                why += f" ({ended.reason})"
            self.renderer.notice(f"connection lost: {why}; reconnecting in {delay:.1f}s{where}")
            log.info("watch.reconnecting", run_id=run_id, delay_s=round(delay, 2), since=self.view.last_seq)
            await self._sleep(delay)

    def _refused(self, status: int, message: str, run_id: str) -> None:
        if status in (401, 403):
            raise Unauthorized(f"the server refused the API key (HTTP {status})")
        if status == 404:
            raise InvalidRequest(
                f"{self.base} has no /ws/runs endpoint: is it a proxbox server?", url=str(self.base)
            )
        if 400 <= status < 500:
            raise InvalidRequest(f"the server refused to stream run {run_id!r}: HTTP {status} {message}")

    async def _connect_once(self, session: aiohttp.ClientSession, run_id: str, since: int) -> _Ended:
        url = run_ws_url(self.base, run_id, since)
        progressed = False
        async with session.ws_connect(url, headers=self._headers, heartbeat=self._heartbeat_s) as ws:
            self.connections += 1
            if self.connections > 1:
                self.renderer.notice(f"reconnected; resuming run {run_id} after seq {since}")
            while True:
                msg = await ws.receive()
                if msg.type == WSMsgType.TEXT:
                    try:
                        obj = json.loads(msg.data)
                    except ValueError:
                        continue  # a plain-text message (welcome, notice): not a frame
                    if is_frame(obj) and self.view.accept(obj):
                        progressed = True
                        self.renderer.frame(self.view, obj)
                        if self.view.complete:
                            await ws.close()
                            return _Ended(1000, "run complete", True)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    reason = msg.extra if isinstance(msg.extra, str) else ""
                    return _Ended(ws.close_code, reason, progressed)
                elif msg.type == WSMsgType.ERROR:
                    return _Ended(None, f"{type(msg.data).__name__}: {msg.data}", progressed)

    async def _finished_without_frame(self, session: aiohttp.ClientSession, run_id: str) -> bool:
        """The server closed normally without a ``complete`` frame: a finished run whose frames are gone
        (e.g. interrupted by a restart). Take its outcome from ``GET /runs/{id}``."""
        summary = await self.summary(session, run_id)
        if summary.get("state") != "finished":
            return False
        final: dict[str, Any] = {
            "type": "complete",
            "run_id": summary.get("id", run_id),
            "seq": max(int(summary.get("last_seq") or 0), self.view.last_seq + 1),
            "operation": self.view.operation or "",
            "phase": "finish",
            "status": summary.get("status") or "failed",
            "ok": summary.get("status") == "succeeded",
            "counts": summary.get("counts") or {},
            "duration_s": summary.get("duration_s"),
            "message": summary.get("message") or "",
        }
        if self.view.accept(final):
            self.renderer.frame(self.view, final)
        return True

    async def summary(self, session: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
        """``GET /runs/{id}`` (``latest`` too), retried with backoff on connection errors and 5xx."""
        retry = ExponentialRetry(
            attempts=3,
            start_timeout=self._backoff.start_s,
            max_timeout=self._backoff.max_s,
            exceptions={aiohttp.ClientConnectionError, asyncio.TimeoutError},
        )
        client = RetryClient(client_session=session, retry_options=retry)
        async with client.get(run_http_url(self.base, run_id), headers=self._headers) as resp:
            if resp.status in (401, 403):
                raise Unauthorized(f"the server refused the API key (HTTP {resp.status})")
            if resp.status == 404:
                raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
            if resp.status != 200:
                raise ServerUnreachable(f"GET {resp.url.path}: HTTP {resp.status}", url=str(self.base))
            body = await resp.json(content_type=None)
        run = body.get("run") if isinstance(body, dict) else None
        return run if isinstance(run, dict) else {}
