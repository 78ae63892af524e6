"""Prometheus metrics: ``GET /metrics`` from a per-app :class:`~prometheus_client.CollectorRegistry`.

Two kinds of sources, and no global state (``prometheus_client.REGISTRY`` is never touched):

- **Events**, counted as they happen by :class:`Metrics` (a :class:`~proxbox.runs.RunObserver`): runs by kind
  and status, objects by action, run durations, errors by code, the last successful run per cluster, watchers
  cut off for falling behind.
- **State**, read at scrape time by :class:`StateCollector`: the run in progress, queued runs, watchers and
  connections, frames published and dropped by the bus, and the Proxmox / NetBox clients' request statistics
  (``ClientStats`` and ``RequestStats``: requests, retries, failed attempts by kind), found on the sync
  engine.

The sync engine shows its clients by exposing ``metrics_clients()`` (an iterable of ``PveClient`` /
``NetBoxClient``); without it, the engine's attributes (and lists, tuples or dicts in them) are searched for
objects with such a ``stats``. Clients made per run are only visible while they exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from proxbox import __version__
from proxbox.events import Counts
from proxbox.logsetup import get_logger
from proxbox.runs import Run, RunObserver
from proxbox.web.keys import BUS, JOB, RUNS, WATCHERS

log = get_logger(__name__)

NAMESPACE = "proxbox"
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_INTERVAL_S = 0.25
ACTIONS = tuple(
    f.name for f in attrs.fields(Counts)
)  # created, updated, unchanged, deleted, failed, orphaned

_CLUSTER = re.compile(rb'"cluster":("(?:[^"\\]|\\.)*")')
_ERROR_CODE = re.compile(rb'"error":("(?:[^"\\]|\\.)*")')
_PHASE = re.compile(rb'"phase":("(?:[^"\\]|\\.)*")')


def _string(match: re.Match[bytes] | None) -> str | None:
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


@attrs.frozen(kw_only=True)
class RunScan:
    """What a finished run's frame log says per cluster and per error code (see :func:`scan_frames`)."""

    clusters: frozenset[str]
    failed_clusters: frozenset[str]
    errors: Mapping[tuple[str, str], int]  # (code, phase) -> error frames


def scan_frames(frames: Iterable[Any]) -> RunScan:
    """Clusters touched by a run, clusters with an error, and error frames by (code, phase).

    ``frames`` are :class:`~proxbox.frames.Frame` values (``type`` and the JSON ``data`` bytes). Only the
    members needed are pulled out with a regular expression: a run's log is up to ``event_log_limit`` frames
    and this runs on the event loop."""
    clusters: set[str] = set()
    failed: set[str] = set()
    errors: dict[tuple[str, str], int] = {}
    for frame in frames:
        data: bytes = frame.data
        cluster = _string(_CLUSTER.search(data)) if b'"cluster":"' in data else None
        if cluster:
            clusters.add(cluster)
        if frame.type == "error":
            code = _string(_ERROR_CODE.search(data)) or "unknown"
            phase = _string(_PHASE.search(data)) or "unknown"
            errors[(code, phase)] = errors.get((code, phase), 0) + 1
            if cluster:
                failed.add(cluster)
    return RunScan(clusters=frozenset(clusters), failed_clusters=frozenset(failed), errors=errors)


def succeeded_clusters(status: str | None, scan: RunScan) -> frozenset[str]:
    """Clusters a run brought up to date: all of them if it succeeded, those without an error if partial."""
    if status == "succeeded":
        return scan.clusters
    if status == "partial":
        return scan.clusters - scan.failed_clusters
    return frozenset()


class Metrics(RunObserver):
    """The registry and the event-driven metrics. ``bind(...)`` adds the scrape-time state."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "runs",
            "Finished sync runs, by kind and final status",
            ["kind", "status"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.runs_started = Counter(
            "runs_started", "Sync runs started, by kind", ["kind"], namespace=NAMESPACE, registry=r
        )
        self.objects = Counter(
            "objects",
            "NetBox objects handled by finished runs, by action"
            " (created, updated, unchanged, deleted, failed, orphaned)",
            ["action"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.duration = Histogram(
            "run_duration_seconds",
            "Duration of finished sync runs",
            ["kind"],
            buckets=DURATION_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        self.errors = Counter(
            "run_errors",
            "Error frames of finished runs, by stable error code and phase",
            ["code", "phase"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.last_run = Gauge(
            "last_run_timestamp_seconds",
            "When the last run of each kind finished (unix time), by final status",
            ["kind", "status"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.last_success = Gauge(
            "last_successful_sync_timestamp_seconds",
            "When a run last brought each Proxmox cluster up to date without an error (unix time)",
            ["cluster"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.watchers_cut = Counter(
            "watcher_drops",
            "Watchers cut off (close 1013) because they fell server.subscriber_buffer frames behind",
            namespace=NAMESPACE,
            registry=r,
        )
        self.loop_lag = Histogram(
            "event_loop_lag_seconds",
            f"How late the event loop woke a {LAG_INTERVAL_S:g} s timer: time it served no one"
            " (its own work, waiting for the GIL, garbage collection)",
            buckets=LAG_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        info = Gauge("build_info", "proxbox version", ["version"], namespace=NAMESPACE, registry=r)
        info.labels(version=__version__).set(1)
        Gauge(
            "start_time_seconds", "When the server started (unix time)", namespace=NAMESPACE, registry=r
        ).set(clock())
        self._state: StateCollector | None = None

    def bind(
        self,
        *,
        runs: Any = None,
        bus: Any = None,
        connections: Callable[[], int] | None = None,
        clients: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        """Read the run manager, the bus, the connection count and the clients at every scrape."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = StateCollector(runs=runs, bus=bus, connections=connections, clients=clients)
        self.registry.register(self._state)

    def unbind(self) -> None:
        if self._state is not None:
            self.registry.unregister(self._state)
            self._state = None

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics if ``accept`` asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- RunObserver (synchronous, must not raise: RunManager logs and swallows anyway)

    def run_started(self, run: Run) -> None:
        self.runs_started.labels(kind=run.kind).inc()

    def run_finished(self, run: Run) -> None:
        status = run.status or "failed"
        self.runs.labels(kind=run.kind, status=status).inc()
        for action in ACTIONS:
            n = getattr(run.counts, action)
            if n:
                self.objects.labels(action=action).inc(n)
        if run.duration_s is not None:
            self.duration.labels(kind=run.kind).observe(run.duration_s)
        finished = run.finished_at or self._clock()
        self.last_run.labels(kind=run.kind, status=status).set(finished)
        scan = scan_frames(run.frames_since(0))
        for (code, phase), n in scan.errors.items():
            self.errors.labels(code=code, phase=phase).inc(n)
        for cluster in succeeded_clusters(status, scan):
            self.last_success.labels(cluster=cluster).set(finished)

    def watcher_dropped(self, run_id: str, reason: str) -> None:
        self.watchers_cut.inc()


# ---------------------------------------------------------------------------------------- scrape time


@attrs.frozen(kw_only=True)
class ClientSample:
    """One API client's counters, whatever its library."""

    system: str  # proxmox | netbox
    endpoint: str
    requests: Mapping[str, int]  # by HTTP method when known, else {"": n}
    retries: int | None = None
    failures: int | None = None
    relogins: int | None = None
    errors: Mapping[str, int] = attrs.field(factory=dict)  # failed attempts by kind ("500", "timeout", ...)


def sample_client(client: Any) -> ClientSample | None:
    """A ``PveClient`` (``stats`` = ``ClientStats``) or a ``NetBoxClient`` (``stats`` = ``RequestStats``)."""
    stats = getattr(client, "stats", None)
    if stats is None:
        return None
    if callable(getattr(stats, "snapshot", None)):  # NetBox RequestStats: requests by method
        settings = getattr(client, "settings", None)
        return ClientSample(
            system="netbox",
            endpoint=str(getattr(settings, "url", "") or getattr(client, "name", "") or "netbox"),
            requests={str(m): int(n) for m, n in stats.snapshot().items()},
            retries=_int_or_none(getattr(stats, "retries", None)),
            failures=_int_or_none(getattr(stats, "failures", None)),
        )
    if isinstance(getattr(stats, "requests", None), int):  # Proxmox ClientStats
        errors = getattr(stats, "errors", {}) or {}
        return ClientSample(
            system="proxmox",
            endpoint=str(getattr(client, "name", "") or "proxmox"),
            requests={"GET": stats.requests},
            retries=_int_or_none(getattr(stats, "retries", None)),
            failures=_int_or_none(getattr(stats, "failures", None)),
            relogins=_int_or_none(getattr(stats, "relogins", None)),
            errors={str(k): int(v) for k, v in dict(errors).items()},
        )
    return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def clients_of(engine: Any) -> list[Any]:
    """The API clients a sync engine holds: ``engine.metrics_clients()``, else a search of its attributes."""
    if engine is None:
        return []
    explicit = getattr(engine, "metrics_clients", None)
    if callable(explicit):
        return list(explicit())
    found: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if getattr(obj, "stats", None) is not None and sample_client(obj) is not None:
            found.append(obj)
            return
        if depth == 0:
            return
        if isinstance(obj, functools.partial):  # discover=partial(discover_all, clients=[...])
            children: list[Any] = [*obj.args, *obj.keywords.values()]
        elif isinstance(obj, Mapping):
            children = list(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            children = list(obj)
        else:
            return
        for child in children:
            walk(child, depth - 1)

    if attrs.has(type(engine)):  # attrs classes are slotted: no __dict__
        attributes = [getattr(engine, f.name, None) for f in attrs.fields(type(engine))]
    else:
        try:
            attributes = list(vars(engine).values())
        except TypeError:  # __slots__ or a builtin: nothing to search
            return []
    for value in attributes:
        walk(value, 2)
    return found


class StateCollector(Collector):
    """Gauges and counters read from live objects at scrape time."""

    def __init__(
        self,
        *,
        runs: Any = None,
        bus: Any = None,
        connections: Callable[[], int] | None = None,
        clients: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        self._runs = runs
        self._bus = bus
        self._connections = connections
        self._clients = clients

    def describe(self) -> list[Metric]:
        return []  # dynamic: never checked for duplicates at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._run_state()
        yield from self._bus_state()
        try:
            clients = list(self._clients()) if self._clients is not None else []
        except Exception:  # a scrape must never fail because an engine changed shape
            log.exception("metrics.clients_failed")
            clients = []
        yield from client_metrics(sample for c in clients if (sample := sample_client(c)) is not None)

    def _run_state(self) -> Iterator[Metric]:
        runs = self._runs
        if runs is None:
            return
        active = runs.active
        running = GaugeMetricFamily(
            f"{NAMESPACE}_run_in_progress", "1 while a run of this kind executes", labels=["kind"]
        )
        for kind in ("full", "nodes", "vms"):
            running.add_metric([kind], 1.0 if active is not None and active.kind == kind else 0.0)
        yield running
        yield GaugeMetricFamily(
            f"{NAMESPACE}_runs_queued", "Runs waiting for the active run", value=len(runs.queued)
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_watchers",
            "Run streams being sent to watchers (WebSocket and SSE)",
            value=runs.watchers,
        )
        if self._connections is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_connections", "Open WebSocket and SSE connections", value=self._connections()
            )

    def _bus_state(self) -> Iterator[Metric]:
        bus = self._bus
        if bus is None:
            return
        yield CounterMetricFamily(
            f"{NAMESPACE}_frames_published",
            "Frames published on the event bus (each encoded once)",
            value=bus.published,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_frames_dropped",
            "Subscriptions whose buffered frames the bus dropped because the watcher fell behind",
            value=bus.dropped,
        )


def client_metrics(samples: Iterable[ClientSample]) -> Iterator[Metric]:
    samples = list(samples)
    for system in ("proxmox", "netbox"):
        mine = [s for s in samples if s.system == system]
        requests = CounterMetricFamily(
            f"{NAMESPACE}_{system}_requests",
            f"Requests (attempts) sent to the {'Proxmox VE' if system == 'proxmox' else 'NetBox'} API",
            labels=["endpoint", "method"],
        )
        retries = CounterMetricFamily(
            f"{NAMESPACE}_{system}_retries", "Attempts that retried a transient failure", labels=["endpoint"]
        )
        failures = CounterMetricFamily(
            f"{NAMESPACE}_{system}_failures", "Calls that failed after every attempt", labels=["endpoint"]
        )
        errors = CounterMetricFamily(
            f"{NAMESPACE}_{system}_request_errors",
            "Failed attempts by kind (HTTP status, timeout, connection, malformed...)",
            labels=["endpoint", "kind"],
        )
        relogins = CounterMetricFamily(
            f"{NAMESPACE}_{system}_relogins", "Sessions rebuilt after a 401", labels=["endpoint"]
        )
        for s in mine:
            for method, n in sorted(s.requests.items()):
                requests.add_metric([s.endpoint, method], n)
            if s.retries is not None:
                retries.add_metric([s.endpoint], s.retries)
            if s.failures is not None:
                failures.add_metric([s.endpoint], s.failures)
            if s.relogins is not None:
                relogins.add_metric([s.endpoint], s.relogins)
            for kind, n in sorted(s.errors.items()):
                errors.add_metric([s.endpoint, kind], n)
        yield from (requests, retries, failures, errors)
        if system == "proxmox":
            yield relogins


# ------------------------------------------------------------------------------------------- the server

METRICS = web.AppKey("proxbox_metrics", Metrics)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup_ctx placed after the run manager's: observe runs, read the bus, watchers and clients."""
    metrics = Metrics()
    runs = app[RUNS]
    runs.add_observer(metrics)
    metrics.bind(
        runs=runs,
        bus=app[BUS],
        connections=lambda: len(app[WATCHERS]),
        clients=lambda: clients_of(getattr(app[JOB], "__self__", None)),
    )
    app[METRICS] = metrics
    lag = asyncio.create_task(watch_loop_lag(metrics.loop_lag), name="proxbox-loop-lag")
    yield
    lag.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lag
    metrics.unbind()


async def watch_loop_lag(histogram: Histogram, interval_s: float = LAG_INTERVAL_S) -> None:
    """Observe, every ``interval_s``, how much later than asked the loop woke up."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(interval_s)
        histogram.observe(max(0.0, loop.time() - asked - interval_s))


async def handler(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: Prometheus text format (OpenMetrics when the scraper asks for it)."""
    body, content_type = request.app[METRICS].render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


# ------------------------------------------------------------------------------ the engine's clients


def long_lived_clients(settings: Any) -> dict[str, Any]:
    """Keyword arguments for ``SyncEngine``: one NetBox client and one Proxmox client per endpoint for the
    server's lifetime (sessions and tickets reused across runs, and their statistics stay visible to
    :func:`clients_of`). Close them with :func:`close_clients`."""
    from proxbox.netbox.client import NetBoxClient
    from proxbox.proxmox.client import make_clients
    from proxbox.proxmox.discovery import discover_all

    pve = make_clients(settings)
    return {"client": NetBoxClient(settings.netbox), "discover": functools.partial(discover_all, clients=pve)}


async def close_clients(engine: Any) -> None:
    """Close every client :func:`clients_of` finds on ``engine`` (sync or async ``close``)."""
    for client in clients_of(engine):
        closer = getattr(client, "close", None)
        if closer is None:
            continue
        try:
            result = closer()
            if inspect.isawaitable(result):
                await result
        except Exception:  # closing is best effort at shutdown
            log.exception("metrics.client_close_failed", client=type(client).__name__)
