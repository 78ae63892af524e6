"""``PveClient``: one Proxmox VE endpoint, read in a bounded pool of worker threads.

Each client starts ``settings.concurrency`` worker threads named ``pve-<endpoint>_<i>`` when it is made (never
the loop's default executor; a thread started later, while the others compete for the GIL, would stall the
event loop in ``Thread.start()``). Each worker keeps its own keep-alive HTTPS connection to the endpoint
(:class:`_Connection`, plain ``http.client``: about a third of the CPU of requests per call, which matters
because every call's CPU is spent under the one GIL the event loop also needs). In ticket mode the worker
logs in through proxmoxer (a blocking POST) and sends the ticket cookie; with an API token it sends the
token header. Proxy (``HTTPS_PROXY``/``NO_PROXY``, ``http://`` proxies) and CA bundle
(``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) environment variables are read once per client, as requests
would.

Every call is one attempt in the pool, guarded on the loop (connect + read + 2 s; twice the request part in
ticket mode, where an attempt may include a login). An attempt only enters the pool when a worker is free,
so time spent waiting for a slot never counts against the guard; a slot is released when its thread really
finishes, so a hung request keeps its slot and the pool never over-commits. A ``limiter`` shared by several
clients (see :func:`~proxbox.proxmox.discovery.discover_all`) bounds the attempts in flight across
endpoints the same way.

The worker does all CPU work of an attempt: request, JSON, shape check, classification of a failure and the
caller's ``then`` (e.g. parsing a guest); the loop only does the bookkeeping. Finished attempts wake the
loop once per batch, not once per attempt.

Failures are classified by :mod:`proxbox.proxmox.retry`: transient ones are retried with exponential
backoff and full jitter (``settings.retries`` attempts, first delay up to ``settings.backoff_s``; sleeping
happens on the event loop, not in a worker); a 401 bumps a generation counter so every worker builds a new
connection (re-login), once per call; known "no data" answers return None. Everything else becomes a
:class:`~proxbox.errors.ProxmoxError` subclass whose context holds endpoint, path, status and attempts (never
a secret).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import http.client
import json
import os
import queue
import random
import select
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import requests
from proxmoxer import ProxmoxAPI

from proxbox.config import ProxmoxSettings
from proxbox.errors import ProxmoxError, ProxmoxUnavailable
from proxbox.logsetup import get_logger
from proxbox.proxmox.retry import (
    Failure,
    HttpStatusError,
    MalformedPayload,
    Shape,
    backoff_delay,
    check_shape,
    classify,
    expected_shape,
)

log = get_logger(__name__)

GUARD_SLACK_S = 2.0
TICKET_RENEW_S = 3600.0  # PVE tickets live 2 h; log in again after one (as proxmoxer does)
IDLE_CHECK_S = 1.0  # a connection idle longer than this is checked for a close by the server before reuse


@attrs.define
class ClientStats:
    """Counters for metrics and benchmarks. Only touched on the event loop thread."""

    requests: int = 0  # attempts sent to the API (logins not counted)
    retries: int = 0  # attempts that were a retry after a transient failure
    relogins: int = 0  # 401 → every worker builds a new connection (and logs in again)
    absent: int = 0  # known "no data" answers (agent not running, config gone...)
    failures: int = 0  # calls that ended in an error after all attempts
    connections: int = 0  # TCP + TLS connections opened (PVE closes the connection after any error answer)
    # failed attempts by kind: "500", "595", "timeout", "connection", "malformed", "401"...
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    busy_s: float = 0.0  # summed wall time of attempts in the pool

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "relogins": self.relogins,
            "absent": self.absent,
            "failures": self.failures,
            "connections": self.connections,
            "errors": dict(self.errors),
        }


@attrs.frozen
class _Attempt:
    """What one attempt gave: ``payload`` (after ``then``), or ``error`` and its meaning ``failure``.

    ``failure`` without ``error`` is a known "no data" answer (``payload`` is then ``then(None)``); ``error``
    without ``failure`` was raised by ``then`` itself and reaches the caller as it is.
    """

    payload: Any = None
    error: BaseException | None = None
    failure: Failure | None = None
    generation: int = -1
    elapsed_s: float = 0.0
    connects: int = 0


def _failed(error: BaseException, elapsed_s: float = 0.0) -> _Attempt:
    return _Attempt(error=error, failure=classify(error), elapsed_s=elapsed_s)


_CLOSED = _failed(ProxmoxUnavailable("client closed"))


@attrs.define(eq=False)
class _Job:
    """One attempt handed to a worker. ``waiter`` belongs to the loop; the worker only fills ``result``."""

    fn: Callable[[], _Attempt]
    waiter: asyncio.Future[_Attempt]
    limiter: asyncio.Semaphore | None
    result: _Attempt = _CLOSED


class _Api(Protocol):
    """What a worker needs from its connection (tests substitute a fake through ``PveClient._build``)."""

    def get(self, *parts: str, **params: Any) -> Any: ...

    def close(self) -> None: ...


class PveClient:
    """An async, retrying reader of one Proxmox VE API endpoint. Use ``async with`` or call :meth:`close`."""

    def __init__(self, settings: ProxmoxSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.name = settings.label
        self.stats = ClientStats()
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[_Job] = collections.deque()
        self._drain_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0
        self._apis: list[_Api] = []  # every connection built, so close() can close them
        self._inflight: set[_Job] = set()  # handed to the workers, not finished yet
        self._idle: asyncio.Future[None] | None = None  # close() waits on it for _inflight to empty
        self._closed = False
        self._proxies, self._verify = _from_environment(settings)
        self._context: ssl.SSLContext | None = None
        request_s = settings.connect_timeout + settings.timeout
        self.guard_s = request_s * (1 if settings.uses_token else 2) + GUARD_SLACK_S
        self._threads = [
            threading.Thread(target=self._work, name=f"pve-{self.name}_{i}", daemon=True)
            for i in range(settings.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    async def __aenter__(self) -> PveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------ public API

    async def get(self, *path_parts: str | int, **params: Any) -> Any:
        """``GET /api2/json/<path>`` with query ``params``; the ``data`` payload, or None for a known
        "no data" answer (agent not configured/running, guest not running, config file gone).

        ``await client.get("nodes", "pve1", "qemu", 100, "config", current=1)``; a part may also hold
        slashes (``client.get("nodes/pve1/qemu")``).
        """
        return await self.fetch(path_parts, params)

    async def fetch(
        self,
        path: Sequence[str | int],
        params: Mapping[str, Any] | None = None,
        *,
        then: Callable[[Any], Any] | None = None,
        limiter: asyncio.Semaphore | None = None,
    ) -> Any:
        """Like :meth:`get` (``path`` holds the parts), plus:

        - ``then(payload)`` runs in the worker thread on the answer (None for a "no data" answer) and its
          result is returned: CPU work on the payload, such as parsing, stays off the event loop. ``then``
          must be pure: it runs again if the call is retried, and what it raises reaches the caller unchanged
          (never retried);
        - ``limiter``, a semaphore shared with other clients' calls, is held (with this client's own slot)
          while an attempt runs in a worker: it bounds the calls in flight across endpoints, as
          :func:`~proxbox.proxmox.discovery.discover_all` does.
        """
        parts = tuple(seg for part in path for seg in str(part).split("/") if seg)
        shape = expected_shape(parts)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = 0
        transient = 0
        relogged = False
        while True:
            attempts += 1
            self.stats.requests += 1
            attempt = await self._attempt(parts, query, shape, then, limiter)
            self.stats.busy_s += attempt.elapsed_s
            self.stats.connections += attempt.connects
            failure = attempt.failure
            if attempt.error is None:
                if failure is not None:  # a known "no data" answer
                    self.stats.absent += 1
                    log.debug("pve.absent", endpoint=self.name, path=_path(parts), reason=failure.reason)
                return attempt.payload
            if failure is None:  # raised by ``then``: a bug, not an API failure
                raise attempt.error
            self.stats.errors[failure.kind] += 1
            if failure.relogin and not relogged:
                relogged = True
                self.stats.relogins += 1
                self._invalidate(attempt.generation)
                log.info("pve.relogin", endpoint=self.name, path=_path(parts))
                continue
            transient += 1
            if not failure.retry or transient >= self.settings.retries or self._closed:
                self.stats.failures += 1
                raise self._error(failure, _path(parts), attempts)
            delay = backoff_delay(transient, self.settings.backoff_s, self._rng)
            self.stats.retries += 1
            log.debug(
                "pve.retry",
                endpoint=self.name,
                path=_path(parts),
                kind=failure.kind,
                attempt=attempts,
                delay_s=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def version(self) -> dict[str, Any]:
        """``GET /version``: ``{"version": "9.1.2", "release": "9.1", "repoid": "…"}``."""
        payload: dict[str, Any] = await self.get("version")
        return payload

    async def close(self) -> None:
        """Stop the workers, fail attempts not started yet, wait (bounded by the guard) for attempts still
        running, close every connection."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job)
        for _ in self._threads:
            self._jobs.put(None)
        if self._inflight:
            self._idle = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._idle), self.guard_s)
        with self._lock:
            apis, self._apis = self._apis, []
        for api in apis:
            _close_quietly(api)

    # ------------------------------------------------------------------------------- loop side internals

    def _error(self, failure: Failure, path: str, attempts: int) -> ProxmoxError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return failure.error(
            f"GET {path} on {self.name}: {failure.reason}{tries}",
            endpoint=self.name,
            path=path,
            status=failure.status,
            attempts=attempts,
            kind=failure.kind,
        )

    async def _attempt(
        self,
        parts: tuple[str, ...],
        query: dict[str, Any],
        shape: Shape,
        then: Callable[[Any], Any] | None,
        limiter: asyncio.Semaphore | None,
    ) -> _Attempt:
        """One call in the pool, once a worker (and the shared limiter) is free; a guard timeout becomes a
        TimeoutError attempt."""
        if self._closed:
            return _CLOSED
        await self._slots.acquire()
        if limiter is not None:
            try:
                await limiter.acquire()
            except BaseException:
                self._slots.release()
                raise
        if self._closed:
            self._release(limiter)
            return _CLOSED
        loop = self._loop = asyncio.get_running_loop()
        job = _Job(
            fn=lambda: self._call(parts, query, shape, then), waiter=loop.create_future(), limiter=limiter
        )
        self._inflight.add(job)
        self._jobs.put(job)
        guard = loop.call_later(self.guard_s, _expire, job.waiter, time.monotonic())
        try:
            return await job.waiter
        finally:
            guard.cancel()

    def _drain(self) -> None:
        """Release the slots of finished attempts and wake their callers."""
        self._drain_scheduled = False  # before popping: a job appended after this line schedules a new drain
        done = self._done
        while done:
            self._finish(done.popleft())

    def _finish(self, job: _Job) -> None:
        self._inflight.discard(job)
        self._release(job.limiter)
        if not job.waiter.done():
            job.waiter.set_result(job.result)
        if self._idle is not None and not self._inflight and not self._idle.done():
            self._idle.set_result(None)

    def _release(self, limiter: asyncio.Semaphore | None) -> None:
        self._slots.release()
        if limiter is not None:
            limiter.release()

    # ----------------------------------------------------------------------------- worker side internals

    def _work(self) -> None:
        """A worker thread: run attempts until the ``None`` sentinel."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.result = job.fn()
            except BaseException as exc:  # _call never raises; this is a last resort, not a path
                job.result = _Attempt(error=exc)
            self._completed(job)

    def _completed(self, job: _Job) -> None:
        """Hand a finished attempt to the loop. Only the first one since the last drain wakes the loop (one
        self-pipe write), however many workers finish meanwhile."""
        self._done.append(job)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to release
                    loop.call_soon_threadsafe(self._drain)

    def _call(
        self,
        parts: tuple[str, ...],
        query: dict[str, Any],
        shape: Shape,
        then: Callable[[Any], Any] | None,
    ) -> _Attempt:
        """Runs in a worker thread: never raises; the payload, the error and what it means."""
        started = time.monotonic()
        generation = -1
        connects = 0
        absent: Failure | None = None
        try:
            api, generation = self._thread_api()
            opened = getattr(api, "connects", 0)
            try:
                payload = api.get(*parts, **query)
            finally:
                connects = getattr(api, "connects", 0) - opened
            problem = check_shape(payload, shape)
            if problem is not None:
                raise MalformedPayload(problem)
        except Exception as exc:
            failure = classify(exc)
            if not failure.absent:
                return _Attempt(
                    error=exc,
                    failure=failure,
                    generation=generation,
                    elapsed_s=time.monotonic() - started,
                    connects=connects,
                )
            payload, absent = None, failure
        if then is not None:
            try:
                payload = then(payload)
            except Exception as exc:
                return _Attempt(error=exc, generation=generation, connects=connects)
        return _Attempt(
            payload=payload,
            failure=absent,
            generation=generation,
            elapsed_s=time.monotonic() - started,
            connects=connects,
        )

    def _thread_api(self) -> tuple[_Api, int]:
        """This worker's connection, (re)built when missing, older than the current generation, or (ticket
        mode) holding a ticket older than ``TICKET_RENEW_S``."""
        with self._lock:
            generation = self._generation
        local = self._local
        api: _Api | None = getattr(local, "api", None)
        fresh = self.settings.uses_token or time.monotonic() - getattr(local, "born", 0.0) < TICKET_RENEW_S
        if api is not None and local.generation == generation and fresh:
            return api, generation
        if api is not None:
            _close_quietly(api)
            with self._lock:
                if api in self._apis:
                    self._apis.remove(api)
            local.api = None
        api = self._build()  # a ticket login happens here (blocking POST /access/ticket)
        with self._lock:
            self._apis.append(api)
        local.api, local.generation, local.born = api, generation, time.monotonic()
        return api, generation

    def _build(self) -> _Api:
        s = self.settings
        if s.uses_token:
            auth = {"Authorization": f"PVEAPIToken={s.user}!{s.token_name}={s.token_value}"}
        else:
            auth = {"Cookie": f"PVEAuthCookie={self._login()}"}
        return _Connection(s, self._ssl_context(), _proxy_of(self._proxies), auth)

    def _login(self) -> str:
        """A fresh ticket, through proxmoxer (``POST /access/ticket``); its session is not kept."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "password": s.password,
            "verify_ssl": self._verify,
            "timeout": (s.connect_timeout, s.timeout),
        }
        if self._proxies:
            kwargs["proxies"] = self._proxies
        api = ProxmoxAPI(backend="https", service="PVE", **kwargs)
        try:
            ticket, _csrf = api.get_tokens()  # CSRF is only needed for writes
        finally:
            session = getattr(api, "_store", {}).get("session")  # proxmoxer has no public close
            if isinstance(session, requests.Session):
                session.close()
        return str(ticket)

    def _ssl_context(self) -> ssl.SSLContext:
        """One TLS context per client, shared by its workers, made on first use."""
        with self._lock:
            if self._context is None:
                self._context = _ssl_context(self._verify)
            return self._context

    def _invalidate(self, generation: int) -> None:
        """After a 401: every worker builds a new connection (once, however many workers saw the 401)."""
        with self._lock:
            if generation in (-1, self._generation):
                self._generation += 1


class _Https(http.client.HTTPSConnection):
    """``http.client``'s HTTPS connection with requests' two timeouts: ``timeout`` bounds the connect and
    TLS handshake, ``read_timeout`` every later socket operation. Counts its connects."""

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext, connect_timeout: float, read_timeout: float
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout, context=context)
        self.read_timeout = read_timeout
        self.connects = 0

    def connect(self) -> None:
        self.connects += 1
        super().connect()
        self.sock.settimeout(self.read_timeout)


class _Connection:
    """One worker's keep-alive HTTPS connection to the endpoint, for ``GET /api2/json/...`` only.

    Not thread-safe: each worker has its own. A connection the server closed (PVE closes it after every
    error answer) is reopened on the next request by ``http.client``; one idle for ``IDLE_CHECK_S`` is checked
    for a close first, so a stale keep-alive connection never costs a failed attempt.
    """

    def __init__(
        self,
        settings: ProxmoxSettings,
        context: ssl.SSLContext,
        proxy: tuple[str, int, dict[str, str]] | None,
        auth: Mapping[str, str],
    ) -> None:
        host, port = settings.host, settings.port
        if proxy is not None:
            host, port, proxy_headers = proxy
        self._conn = _Https(
            host,
            port,
            context=context,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.timeout,
        )
        if proxy is not None:
            self._conn.set_tunnel(settings.host, settings.port, headers=proxy_headers)
        self._headers = {"Accept": "application/json", "User-Agent": "proxbox", **auth}
        self._last_used = 0.0

    @property
    def connects(self) -> int:
        return self._conn.connects

    def get(self, *parts: str, **params: Any) -> Any:
        """The ``data`` of ``GET /api2/json/<parts>?<params>``; raises :class:`HttpStatusError` for a
        non-2xx answer, ``json.JSONDecodeError``/``KeyError``/``TypeError`` for a body that is not PVE's JSON
        envelope, and ``OSError``/``http.client.HTTPException`` for a broken exchange."""
        target = "/api2/json/" + "/".join(urllib.parse.quote(p, safe=":@!$'()*+,;=") for p in parts)
        if params:
            target += "?" + urllib.parse.urlencode(params, doseq=True)
        conn = self._conn
        idle = time.monotonic() - self._last_used > IDLE_CHECK_S
        if conn.sock is not None and idle and _dropped(conn.sock):
            conn.close()
        try:
            conn.request("GET", target, headers=self._headers)
            response = conn.getresponse()
            body = response.read()
        except BaseException:
            conn.close()  # whatever was half sent or half read, the next request starts on a new connection
            raise
        self._last_used = time.monotonic()
        if not 200 <= response.status <= 299:
            raise HttpStatusError(response.status, response.reason, body)
        return json.loads(body)["data"]

    def close(self) -> None:
        self._conn.close()


def _dropped(sock: Any) -> bool:
    """Whether the server closed an idle keep-alive connection: readable with no request pending means an
    EOF (or garbage), either way the connection is done."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _path(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


def _expire(waiter: asyncio.Future[_Attempt], started: float) -> None:
    """The outer guard: the caller gets a timeout; the worker keeps its slot until it really finishes."""
    if not waiter.done():
        waiter.set_result(_failed(TimeoutError(), time.monotonic() - started))


def _from_environment(settings: ProxmoxSettings) -> tuple[dict[str, str], bool | str]:
    """What requests would read from the environment on every request, resolved once per client: the
    proxies (``HTTPS_PROXY``/``NO_PROXY``) and, when ``verify_ssl`` is true, ``REQUESTS_CA_BUNDLE`` or
    ``CURL_CA_BUNDLE``."""
    proxies = requests.utils.get_environ_proxies(f"https://{settings.host}:{settings.port}/api2/json")
    verify: bool | str = settings.verify_ssl
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return dict(proxies), verify


def _proxy_of(proxies: Mapping[str, str]) -> tuple[str, int, dict[str, str]] | None:
    """``(host, port, CONNECT headers)`` of the HTTPS proxy, or None. Only ``http://`` proxies (a CONNECT
    tunnel) are supported."""
    url = proxies.get("https") or proxies.get("all")
    if not url:
        return None
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parsed.scheme != "http" or not parsed.hostname:
        raise ProxmoxUnavailable(f"unsupported HTTPS proxy {parsed.scheme}://{parsed.hostname or ''}")
    headers: dict[str, str] = {}
    if parsed.username:
        user = urllib.parse.unquote(parsed.username)
        password = urllib.parse.unquote(parsed.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    return parsed.hostname, parsed.port or 8080, headers


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context requests would use: no verification, the given CA bundle (file or directory), or
    certifi's bundle (requests' default)."""
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    try:
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ProxmoxUnavailable(f"TLS CA bundle {bundle} is unusable: {exc}") from None


def _close_quietly(api: _Api) -> None:
    """Release a connection's socket now rather than at garbage collection."""
    try:
        api.close()
    except Exception:  # closing is best effort; the GC closes what is left
        log.debug("pve.connection_close_failed", exc_info=True)
