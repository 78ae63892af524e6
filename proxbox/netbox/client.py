"""The NetBox sink: blocking pynetbox behind a bounded executor, bulk writes, typed errors, safe retries.

This is the only module that imports pynetbox (and the only one that talks HTTP to NetBox).

- **Threads.** Every call runs in this client's own ``ThreadPoolExecutor`` (``netbox.concurrency`` workers),
  never the loop's default executor. Each worker thread has its own ``pynetbox.api`` and ``requests.Session``
  (a Session is not guaranteed thread-safe), built lazily inside the thread. The executor *is* the bound on
  parallel NetBox requests.
- **Reads** are list calls with NetBox's ``fields=`` parameter (only the fields the caller needs), paged at
  ``MAX_PAGE_SIZE`` (1000): the first page gives the count, the remaining pages are fetched in parallel.
- **Writes** are bulk: a list POSTed / PATCHed / DELETEd to the list endpoint (NetBox runs each as one
  transaction). Single writes are a list of one.
- **Errors** are translated here into :mod:`proxbox.errors` (nothing above matches exception text):
  400/409 → :class:`NetBoxRejected` (with NetBox's per-item error list when it sent one), 401/403 →
  :class:`NetBoxAuthError`, 404 → :class:`NetBoxNotFound`, connection errors, timeouts, 429, 5xx and non-JSON
  answers → :class:`NetBoxUnavailable` (retryable).
- **Retries** (``netbox.retries`` attempts, exponential backoff from ``netbox.backoff_s``, full jitter) only
  for retryable errors and only for safe operations: reads, PATCH (idempotent), DELETE (a 404 on a retry means
  the first attempt landed). A POST is retried only after :meth:`NetBoxClient.create` checked, with the
  caller's lookup, that the failed attempt did not land.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pynetbox
import requests
from pynetbox.core.query import AllocationError, ContentError, Request, RequestError
from requests.adapters import HTTPAdapter

from proxbox.config import NetBoxSettings
from proxbox.errors import (
    NetBoxAuthError,
    NetBoxError,
    NetBoxNotFound,
    NetBoxRejected,
    NetBoxUnavailable,
)
from proxbox.logsetup import get_logger

log = get_logger(__name__)

T = TypeVar("T")
Row = dict[str, Any]

PAGE_SIZE = 1000  # NetBox's default MAX_PAGE_SIZE


class RequestStats:
    """Requests sent to NetBox, by HTTP method (thread-safe). Used by the benchmark and the tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_method: Counter[str] = Counter()

    def record(self, method: str) -> None:
        with self._lock:
            self._by_method[method.upper()] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_method)

    @property
    def writes(self) -> int:
        snap = self.snapshot()
        return sum(n for m, n in snap.items() if m in ("POST", "PUT", "PATCH", "DELETE"))

    @property
    def total(self) -> int:
        return sum(self.snapshot().values())


class _Session(requests.Session):
    """A Session with a default timeout (requests has none) that counts what it sends."""

    def __init__(self, timeout: float, verify: bool | str, stats: RequestStats, pool: int) -> None:
        super().__init__()
        self._timeout = timeout
        self._stats = stats
        self.verify = verify
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        self._stats.record(method.decode() if isinstance(method, bytes) else str(method))
        return super().request(method, url, *args, **kwargs)


def _error_body(exc: RequestError) -> Any:
    try:
        return exc.req.json()
    except ValueError:
        return (exc.req.text or "")[:500]


def _field_errors(errors: Any) -> str:
    """``{"name": ["This field is required."], "__all__": [...]}`` → one line."""
    if isinstance(errors, dict):
        parts = []
        for key, value in errors.items():
            text = (
                " ".join(_field_errors(v) for v in value) if isinstance(value, list) else _field_errors(value)
            )
            parts.append(text if key in ("detail", "non_field_errors", "__all__") else f"{key}: {text}")
        return "; ".join(parts)
    if isinstance(errors, list):
        return " ".join(_field_errors(v) for v in errors)
    return str(errors)


def item_errors(body: Any) -> list[tuple[str, int, str]]:
    """NetBox's per-object errors of a rejected bulk write: ``(by, value, message)`` with ``by`` = ``index``
    (creates: position in the request) or ``id`` (updates, deletes)."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        out = []
        for entry in body["errors"]:
            if not isinstance(entry, dict):
                continue
            for by in ("index", "id"):
                if isinstance(entry.get(by), int):
                    out.append((by, entry[by], _field_errors(entry.get("errors"))))
                    break
        return out
    if isinstance(body, list):  # older NetBox: one error dict per item, empty for the valid ones
        return [("index", i, _field_errors(e)) for i, e in enumerate(body) if e]
    return []


def _summarise(body: Any) -> str:
    """A short human line from NetBox's error body."""
    per_item = item_errors(body)
    if per_item:
        return "; ".join(dict.fromkeys(msg for _, _, msg in per_item))
    if isinstance(body, dict | list):
        return _field_errors(body)
    return str(body)


def translate(exc: BaseException, *, what: str = "") -> NetBoxError:
    """A library exception → the typed error (never matched by text above this module)."""
    where = f" ({what})" if what else ""
    if isinstance(exc, NetBoxError):
        return exc
    if isinstance(exc, AllocationError):
        return NetBoxRejected(f"NetBox refused the request{where}: conflict", status=409)
    if isinstance(exc, RequestError):
        status = exc.req.status_code
        body = _error_body(exc)
        if status in (400, 409, 422):
            err: NetBoxError = NetBoxRejected(
                f"NetBox rejected the write{where}: {_summarise(body)}", status=status
            )
            err.body = body  # type: ignore[attr-defined]
            return err
        if status in (401, 403):
            return NetBoxAuthError(f"NetBox refused the token{where} (HTTP {status})", status=status)
        if status == 404:
            return NetBoxNotFound(f"not found in NetBox{where}", status=status)
        return NetBoxUnavailable(f"NetBox answered HTTP {status}{where}", status=status)
    if isinstance(exc, ContentError):
        return NetBoxUnavailable(f"NetBox sent a non-JSON answer{where}")
    if isinstance(exc, requests.Timeout):
        return NetBoxUnavailable(f"NetBox timed out{where}")
    if isinstance(exc, requests.ConnectionError):
        return NetBoxUnavailable(f"cannot connect to NetBox{where}: {type(exc).__name__}")
    if isinstance(exc, requests.RequestException):
        return NetBoxUnavailable(f"NetBox request failed{where}: {type(exc).__name__}")
    raise exc


class NetBoxClient:
    """Async facade over pynetbox. Endpoints are named ``app.endpoint`` (``virtualization.virtual-machines``).

    ``async with NetBoxClient(settings) as nb: ...`` or call :meth:`close`.
    """

    def __init__(
        self,
        settings: NetBoxSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.stats = RequestStats()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="netbox")
        self._closed = False

    async def __aenter__(self) -> NetBoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------ plumbing

    def _api(self) -> pynetbox.api:
        api = getattr(self._local, "api", None)
        if api is None:
            api = pynetbox.api(self.settings.url, token=self.settings.token)
            api.http_session = _Session(
                self.settings.timeout, self.settings.verify_ssl, self.stats, self.settings.concurrency
            )
            self._local.api = api
        return api

    def _endpoint(self, name: str) -> Any:
        app, _, endpoint = name.partition(".")
        return getattr(getattr(self._api(), app), endpoint.replace("-", "_"))

    async def _run(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` in a worker thread; library errors come back typed."""
        loop = asyncio.get_running_loop()

        def call() -> T:
            try:
                return fn()
            except (RequestError, ContentError, AllocationError, requests.RequestException) as exc:
                raise translate(exc, what=what) from None

        guard = self.settings.timeout * 2 + 5
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, call), guard)
        except TimeoutError:
            raise NetBoxUnavailable(f"NetBox did not answer within {guard:.0f}s ({what})") from None

    async def _retrying(self, fn: Callable[[], T], what: str) -> T:
        attempts = max(1, self.settings.retries)
        for attempt in range(1, attempts + 1):
            try:
                return await self._run(fn, what)
            except NetBoxError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                delay = self._rng.uniform(0, self.settings.backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "netbox.retry", what=what, attempt=attempt, error=exc.code, delay_s=round(delay, 3)
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------------------------- reads

    async def status(self) -> Row:
        """``GET /api/status/``: checks that NetBox answers and accepts the token."""
        api_version = await self._retrying(lambda: self._api().version, "status")
        # /api/status/ is readable anonymously; a token problem shows on an authenticated list
        await self._retrying(
            lambda: list(self._endpoint("extras.tags").filter(limit=1, offset=0)), "auth check"
        )
        return {"api_version": api_version}

    def _page(
        self, endpoint: str, params: Mapping[str, Any], offset: int, size: int
    ) -> tuple[list[Row], int]:
        ep = self._endpoint(endpoint)
        req = Request(
            base=ep.url,
            http_session=self._api().http_session,
            token=self.settings.token,
            filters=dict(params),
            limit=size,
            offset=offset,
        )
        rows = list(req.get())
        return rows, int(getattr(req, "count", len(rows)) or 0)

    async def list(
        self, endpoint: str, *, fields: Sequence[str] = (), page_size: int = PAGE_SIZE, **filters: Any
    ) -> builtins.list[Row]:
        """All objects of ``endpoint`` matching ``filters`` (lists: repeated parameters), as plain dicts.

        ``fields`` limits what NetBox serializes (``?fields=id,name``); nested objects come brief.
        """
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        params["ordering"] = "id"
        if fields:
            params["fields"] = ",".join(fields)
        what = f"GET {endpoint}"
        first, count = await self._retrying(lambda: self._page(endpoint, params, 0, page_size), what)
        if count <= len(first):
            return first
        offsets = range(page_size, count, page_size)
        pages = await asyncio.gather(
            *(self._retrying(lambda o=o: self._page(endpoint, params, o, page_size), what) for o in offsets)  # type: ignore[misc]
        )
        rows = list(first)
        for page, _ in pages:
            rows.extend(page)
        # objects may be added between pages; keep each id once
        seen: set[int] = set()
        unique = []
        for row in rows:
            if row.get("id") not in seen:
                seen.add(row.get("id"))  # type: ignore[arg-type]
                unique.append(row)
        return unique

    async def count(self, endpoint: str, **filters: Any) -> int:
        params = {k: v for k, v in filters.items() if v is not None}
        params["brief"] = 1

        def call() -> int:
            ep = self._endpoint(endpoint)
            req = Request(
                base=ep.url,
                http_session=self._api().http_session,
                token=self.settings.token,
                filters=params,
                limit=1,
                offset=0,
            )
            list(req.get())
            return int(req.count or 0)

        return await self._retrying(call, f"COUNT {endpoint}")

    # ------------------------------------------------------------------------------------ writes

    async def create(
        self,
        endpoint: str,
        items: Sequence[Mapping[str, Any]],
        *,
        lookups: Sequence[Mapping[str, Any]] | None = None,
    ) -> builtins.list[Row]:
        """Bulk-create ``items`` (one transaction); returns NetBox's rows in the same order.

        A transient failure is retried only after checking it did not land: ``lookups`` holds one filter per
        item that finds it if it exists (e.g. ``{"cluster_id": 3, "cf_proxmox_vmid": 100}``). Because a bulk
        create is one transaction, the first item tells for the whole batch; if it landed, the rows are
        fetched instead of creating them again. Without lookups a transient failure is not retried.
        """
        payload = [dict(i) for i in items]
        what = f"POST {endpoint} x{len(payload)}"

        def post() -> builtins.list[Row]:
            ep = self._endpoint(endpoint)
            result = Request(
                base=ep.url, http_session=self._api().http_session, token=self.settings.token
            ).post(payload)
            return result if isinstance(result, list) else [result]

        attempts = max(1, self.settings.retries)
        for attempt in range(1, attempts + 1):
            try:
                return await self._run(post, what)
            except NetBoxError as exc:
                if not exc.retryable or not lookups or attempt == attempts:
                    if exc.retryable and lookups:
                        landed = await self._find_landed(endpoint, lookups)
                        if landed is not None:
                            return landed
                    raise
                landed = await self._find_landed(endpoint, lookups)
                if landed is not None:
                    log.info("netbox.create_landed", endpoint=endpoint, items=len(payload))
                    return landed
                delay = self._rng.uniform(0, self.settings.backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "netbox.retry", what=what, attempt=attempt, error=exc.code, delay_s=round(delay, 3)
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _find_landed(
        self, endpoint: str, lookups: Sequence[Mapping[str, Any]]
    ) -> builtins.list[Row] | None:
        """The rows of a batch whose create answer was lost, or None when it did not land."""
        first = await self.list(endpoint, fields=("id",), **lookups[0])
        if not first:
            return None
        rows = [first[0]]
        for lookup in lookups[1:]:
            found = await self.list(endpoint, fields=("id",), **lookup)
            if not found:  # cannot happen for one transaction; be explicit rather than guess
                raise NetBoxUnavailable(f"a bulk create on {endpoint} landed only in part")
            rows.append(found[0])
        return rows

    async def update(self, endpoint: str, items: Sequence[Mapping[str, Any]]) -> builtins.list[Row]:
        """Bulk PATCH; each item carries its ``id``. Idempotent, so transient failures are retried."""
        payload = [dict(i) for i in items]

        def patch() -> builtins.list[Row]:
            ep = self._endpoint(endpoint)
            result = Request(
                base=ep.url, http_session=self._api().http_session, token=self.settings.token
            ).patch(payload)
            return result if isinstance(result, list) else [result]

        return await self._retrying(patch, f"PATCH {endpoint} x{len(payload)}")

    async def delete(self, endpoint: str, ids: Sequence[int]) -> None:
        """Bulk DELETE by id. A 404 on a retry means the earlier attempt landed."""
        payload = [{"id": i} for i in ids]
        what = f"DELETE {endpoint} x{len(payload)}"

        def delete() -> None:
            ep = self._endpoint(endpoint)
            Request(base=ep.url, http_session=self._api().http_session, token=self.settings.token).delete(
                payload
            )

        attempts = max(1, self.settings.retries)
        for attempt in range(1, attempts + 1):
            try:
                await self._run(delete, what)
                return
            except NetBoxNotFound:
                if attempt > 1:
                    return
                raise
            except NetBoxError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                delay = self._rng.uniform(0, self.settings.backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "netbox.retry", what=what, attempt=attempt, error=exc.code, delay_s=round(delay, 3)
                )
                await self._sleep(delay)
