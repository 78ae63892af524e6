"""``PveClient``: one Proxmox VE endpoint, read through proxmoxer in a bounded thread pool.

proxmoxer is blocking (requests underneath). Each client owns ``settings.concurrency`` worker threads named
``pve-<endpoint>_<i>`` (never the loop's default executor), started with the client, and one ``ProxmoxAPI``
per worker thread (``threading.local``), built lazily *inside* the worker because a ticket login is a
blocking POST. A ``requests.Session`` is not shared between threads.

The loop side is kept as light as the GIL allows, because every worker's requests/TLS/JSON work competes with
the event loop for it: threads are started up front (starting one later would block the loop until the new
thread gets the GIL), and finished attempts wake the loop once per batch (one self-pipe write however many
workers finish before the loop runs), not once per attempt.

Every call is one attempt in a worker, guarded by a timer on the loop (connect + read + 2 s; twice the request
part in ticket mode, where an attempt may include a login). An attempt is only handed to the workers when one
is free, so time spent waiting for a slot never counts against the guard; a slot is released when its worker
really finishes, so a hung request keeps its slot and the client never over-commits.

Failures are classified by :mod:`proxbox.proxmox.retry`: transient ones are retried with exponential
backoff and full jitter (``settings.retries`` attempts, first delay up to ``settings.backoff_s``; sleeping
happens on the event loop, not in a worker); a 401 bumps a generation counter so every worker rebuilds its
``ProxmoxAPI`` (re-login), once per call; known "no data" answers return None. Everything else becomes a
:class:`~proxbox.errors.ProxmoxError` subclass whose context holds endpoint, path, status and attempts (never
a secret).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs
import requests
from proxmoxer import ProxmoxAPI

from proxbox.config import ProxmoxSettings, Settings
from proxbox.errors import ProxmoxError, ProxmoxUnavailable
from proxbox.logsetup import get_logger
from proxbox.proxmox.retry import (
    Failure,
    MalformedPayload,
    backoff_delay,
    check_shape,
    classify,
    expected_shape,
)

log = get_logger(__name__)

GUARD_SLACK_S = 2.0


@attrs.define
class ClientStats:
    """Counters for metrics and benchmarks. Only touched on the event loop thread."""

    requests: int = 0  # attempts sent to the API (logins not counted)
    retries: int = 0  # attempts that were a retry after a transient failure
    relogins: int = 0  # 401 → rebuild every worker's session
    absent: int = 0  # known "no data" answers (agent not running, config gone...)
    failures: int = 0  # calls that ended in an error after all attempts
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
            "errors": dict(self.errors),
        }


@attrs.frozen
class _Attempt:
    payload: Any
    error: BaseException | None
    generation: int
    elapsed_s: float


_CLOSED = _Attempt(payload=None, error=ProxmoxUnavailable("client closed"), generation=-1, elapsed_s=0.0)


@attrs.define(eq=False)
class _Job:
    """One attempt handed to a worker. ``waiter`` and ``limiter`` belong to the loop; the worker only fills
    ``result``."""

    parts: tuple[str, ...]
    query: dict[str, Any]
    waiter: asyncio.Future[_Attempt]
    limiter: asyncio.Semaphore | None
    result: _Attempt = _CLOSED


class PveClient:
    """An async, retrying reader of one Proxmox VE API endpoint. Use ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        settings: ProxmoxSettings,
        *,
        rng: random.Random | None = None,
        limiter: asyncio.Semaphore | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.label
        self.stats = ClientStats()
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(settings.concurrency)
        # shared by every client of a process (see make_clients): bounds the worker threads that compete with
        # the event loop for the GIL, however many endpoints are configured
        self._limiter = limiter
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0
        self._apis: list[ProxmoxAPI] = []  # every API built, so close() can close their sessions
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[_Job] = collections.deque()  # finished, not yet seen by the loop
        self._drain_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[_Job] = set()  # handed to the workers, not finished yet
        self._idle: asyncio.Future[None] | None = None  # close() waits on it for _inflight to empty
        self._closed = False
        self._proxies, self._verify = _from_environment(settings)
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
        parts = tuple(seg for part in path_parts for seg in str(part).split("/") if seg)
        path = "/" + "/".join(parts)
        shape = expected_shape(parts)
        query = {k: v for k, v in params.items() if v is not None}
        attempts = 0
        transient = 0
        relogged = False
        while True:
            attempts += 1
            self.stats.requests += 1
            attempt = await self._attempt(parts, query)
            self.stats.busy_s += attempt.elapsed_s
            error = attempt.error
            if error is None:
                problem = check_shape(attempt.payload, shape)
                if problem is None:
                    return attempt.payload
                error = MalformedPayload(problem)
            failure = classify(error)
            if failure.absent:
                self.stats.absent += 1
                log.debug("pve.absent", endpoint=self.name, path=path, reason=failure.reason)
                return None
            self.stats.errors[failure.kind] += 1
            if failure.relogin and not relogged:
                relogged = True
                self.stats.relogins += 1
                self._invalidate(attempt.generation)
                log.info("pve.relogin", endpoint=self.name, path=path)
                continue
            transient += 1
            if not failure.retry or transient >= self.settings.retries or self._closed:
                self.stats.failures += 1
                raise self._error(failure, path, attempts)
            delay = backoff_delay(transient, self.settings.backoff_s, self._rng)
            self.stats.retries += 1
            log.debug(
                "pve.retry",
                endpoint=self.name,
                path=path,
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
        """Stop the workers (queued attempts end as "client closed"), wait (bounded by the guard) for attempts
        still running, close every session."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        if self._inflight:
            self._idle = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._idle), self.guard_s)
        with self._lock:
            apis, self._apis = self._apis, []
        for api in apis:
            _close_session(api)

    # ------------------------------------------------------------------------------------------- internals

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

    async def _attempt(self, parts: tuple[str, ...], query: Mapping[str, Any]) -> _Attempt:
        """One call in a worker, once one is free; a guard timeout becomes a TimeoutError attempt."""
        if self._closed:
            return _CLOSED
        await self._slots.acquire()
        limiter = self._limiter
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
        job = _Job(parts=parts, query=dict(query), waiter=loop.create_future(), limiter=limiter)
        self._inflight.add(job)
        self._jobs.put(job)
        guard = loop.call_later(self.guard_s, _expire, job.waiter, time.monotonic())
        try:
            # the waiter is shielded: a cancelled caller leaves the job to finish and free its slot
            return await asyncio.shield(job.waiter)
        finally:
            guard.cancel()

    def _drain(self) -> None:
        """On the loop: release the slots of finished attempts and wake their callers."""
        self._drain_scheduled = False  # before popping: a job appended after this line schedules a new drain
        done = self._done
        while done:
            job = done.popleft()
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

    # ------------------------------------------------------------------------------- worker-side internals

    def _work(self) -> None:
        """A worker thread: run attempts until the ``None`` sentinel (queued ones end as "client closed")."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not self._closed:
                job.result = self._call(job.parts, job.query)
            self._completed(job)

    def _completed(self, job: _Job) -> None:
        """Hand a finished attempt to the loop. Only the first one since the last drain wakes the loop (one
        self-pipe write); workers finishing before the loop runs just queue behind it."""
        self._done.append(job)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to release
                    loop.call_soon_threadsafe(self._drain)

    def _call(self, parts: tuple[str, ...], query: dict[str, Any]) -> _Attempt:
        """Runs in a worker thread: never raises, returns the payload or the exception."""
        started = time.monotonic()
        generation = -1
        try:
            api, generation = self._thread_api()
            payload = api.get(*parts, **query)
            return _Attempt(
                payload=payload, error=None, generation=generation, elapsed_s=time.monotonic() - started
            )
        except Exception as exc:
            return _Attempt(
                payload=None, error=exc, generation=generation, elapsed_s=time.monotonic() - started
            )

    def _thread_api(self) -> tuple[ProxmoxAPI, int]:
        """This worker's ProxmoxAPI, (re)built when missing or older than the current generation."""
        with self._lock:
            generation = self._generation
        local = self._local
        api: ProxmoxAPI | None = getattr(local, "api", None)
        if api is not None and local.generation == generation:
            return api, generation
        if api is not None:
            _close_session(api)
            with self._lock:
                if api in self._apis:
                    self._apis.remove(api)
            local.api = None
        api = self._build()  # a ticket login happens here (blocking POST /access/ticket)
        with self._lock:
            self._apis.append(api)
        local.api, local.generation = api, generation
        return api, generation

    def _build(self) -> ProxmoxAPI:
        s = self.settings
        kwargs: dict[str, Any] = {
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "verify_ssl": self._verify,
            "timeout": (s.connect_timeout, s.timeout),
        }
        if self._proxies:
            kwargs["proxies"] = self._proxies
        if s.uses_token:
            kwargs.update(token_name=s.token_name, token_value=s.token_value)
        else:
            kwargs["password"] = s.password
        api = ProxmoxAPI(backend="https", service="PVE", **kwargs)
        session = _session_of(api)
        if session is not None:
            # the environment was read once (_from_environment); re-reading it per request costs ~15% CPU
            session.trust_env = False
        return api

    def _invalidate(self, generation: int) -> None:
        """After a 401: every worker rebuilds its API (once, however many workers saw the 401)."""
        with self._lock:
            if generation in (-1, self._generation):
                self._generation += 1


def _expire(waiter: asyncio.Future[_Attempt], started: float) -> None:
    """The guard: the caller gets a TimeoutError attempt; the worker keeps its slot until it really ends."""
    if not waiter.done():
        error = TimeoutError(f"no answer within {time.monotonic() - started:.1f} s")
        waiter.set_result(
            _Attempt(payload=None, error=error, generation=-1, elapsed_s=time.monotonic() - started)
        )


def _from_environment(settings: ProxmoxSettings) -> tuple[dict[str, str], bool | str]:
    """What requests would read from the environment on every request, resolved once per client: the
    proxies (``HTTPS_PROXY``/``NO_PROXY``) and, when ``verify_ssl`` is true, ``REQUESTS_CA_BUNDLE`` or
    ``CURL_CA_BUNDLE``."""
    proxies = requests.utils.get_environ_proxies(f"https://{settings.host}:{settings.port}/api2/json")
    verify: bool | str = settings.verify_ssl
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return dict(proxies), verify


def _session_of(api: ProxmoxAPI) -> requests.Session | None:
    # proxmoxer keeps its requests.Session in the private _store (no public accessor)
    session = getattr(api, "_store", {}).get("session")
    return session if isinstance(session, requests.Session) else None


def _close_session(api: ProxmoxAPI) -> None:
    """Release pooled sockets now rather than at garbage collection."""
    session = _session_of(api)
    if session is not None:
        try:
            session.close()
        except Exception:  # closing is best effort; the GC closes what is left
            log.debug("pve.session_close_failed", exc_info=True)


def make_clients(settings: Settings) -> list[PveClient]:
    """One client per configured endpoint, sharing one bound on Proxmox calls in flight
    (``[sync].proxmox_max_in_flight``): proxmoxer's requests/TLS/JSON work runs under the GIL, and more busy
    worker threads than that starve the event loop (lag) without making discovery faster."""
    limiter = asyncio.Semaphore(settings.sync.proxmox_max_in_flight)
    return [PveClient(px, limiter=limiter) for px in settings.proxmox]
