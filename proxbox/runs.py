"""Runs shared by many watchers: start, join, queue, cancel, watch, drain and remember sync runs.

The :class:`RunManager` owns one worker task that executes queued runs **one at a time** (at most one run
writes to NetBox at any moment) through :func:`proxbox.jobs.execute`. A trigger whose kind is covered by the
active run (same kind, or the active run is ``full``) *joins* it; otherwise it joins a queued run that covers
it, or queues a new one (at most one pending run per kind).

A :class:`Run` is the job's :class:`~proxbox.events.Reporter`: ``emit`` stamps the event (gapless ``seq``
from 1, wall-clock ``ts``), publishes it to the bus (encoded once, never awaiting a watcher) and appends the
frame to the run's bounded log. Watchers come and go through :meth:`RunManager.attach`, which subscribes and
snapshots the log with no ``await`` in between, so a late joiner gets the backlog then live frames with no gap
and no duplicate. A run never depends on its watchers; cancellation is explicit and cooperative
(``cancel_requested``; the job stops between items and returns ``cancelled``).

Observers (:class:`RunObserver`) hear about runs starting and finishing, watcher counts and dropped watchers:
the hooks for metrics, sd_notify status and a status page.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog

from proxbox.bus import EventBus, Subscription
from proxbox.errors import ProxboxError, RunNotFound, ServerDraining
from proxbox.events import Counts, Envelope, Event, Reporter, RunCompleted, RunKind, RunOutcome, RunStatus
from proxbox.frames import Frame, make_codec
from proxbox.history import History, RunRecord, RunState
from proxbox.jobs import Job, execute
from proxbox.logsetup import get_logger

log = get_logger(__name__)

LATEST = "latest"


def covers(active: RunKind, wanted: RunKind) -> bool:
    """Does a run of kind ``active`` do the work a trigger for ``wanted`` asks for?"""
    return active == wanted or active == "full"


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: ``20260105T120301Z-a1b2c3``."""
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunObserver:
    """Override what you need; every hook is called synchronously, must not block, and must not raise."""

    def run_queued(self, run: Run) -> None:
        pass

    def run_started(self, run: Run) -> None:
        pass

    def run_finished(self, run: Run) -> None:
        pass

    def watchers_changed(self, watchers: int) -> None:
        pass

    def watcher_dropped(self, run_id: str, reason: str) -> None:
        pass


class Run:
    """One sync run and its bounded frame log; the job's reporter."""

    def __init__(
        self,
        *,
        run_id: str,
        kind: RunKind,
        trigger: str,
        bus: EventBus,
        log_limit: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = run_id
        self.kind: RunKind = kind
        self.trigger = trigger
        self._bus = bus
        self._clock = clock
        self._log: deque[Frame] = deque(maxlen=log_limit)
        self._seq = 0
        self._cancel = False
        self.state: RunState = "queued"
        self.status: RunStatus | None = None
        self.counts = Counts()
        self.message = ""
        self.created_at = clock()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.duration_s: float | None = None
        self.final: Frame | None = None
        self.task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.kind} {self.state} seq={self._seq}>"

    # -- Reporter protocol

    @property
    def run_id(self) -> str:
        return self.id

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    def emit(self, event: Event) -> None:
        """Stamp, publish (never awaits), log. The ``complete`` frame ends the run's stream."""
        if self.final is not None:
            log.warning("run.event_after_complete", run_id=self.id, event=type(event).__name__)
            return
        self._seq += 1
        frame = self._bus.publish(Envelope(run_id=self.id, seq=self._seq, ts=self._clock(), event=event))
        self._log.append(frame)
        if isinstance(event, RunCompleted):
            self.final = frame
            self.status = event.status
            self.counts = event.counts
            self.message = event.message
            self.duration_s = event.duration_s
            self.state = "finished"
            self.finished_at = self._clock()
            self._bus.end(self.id)
            self.finished.set()

    # -- the rest

    def request_cancel(self) -> None:
        self._cancel = True

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def log_first_seq(self) -> int:
        return self._log[0].seq if self._log else self._seq + 1

    def frames_since(self, since: int) -> list[Frame]:
        """Frames with ``seq > since`` still in the log (oldest may have been trimmed: event_log_limit)."""
        if not self._log:
            return []
        start = max(0, since - self._log[0].seq + 1)
        return list(itertools.islice(self._log, start, None))

    def watchers(self) -> int:
        return self._bus.subscribers(self.id)

    def record(self) -> RunRecord:
        return RunRecord(
            id=self.id,
            kind=self.kind,
            trigger=self.trigger,
            state=self.state,
            status=self.status,
            counts=self.counts,
            message=self.message,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration_s=self.duration_s,
            last_seq=self._seq,
            final_frame=self.final.data if self.final else None,
        )

    def summary(self) -> dict[str, Any]:
        out = summarize(self.record())
        out["watchers"] = self.watchers()
        out["cancel_requested"] = self._cancel
        return out


def summarize(rec: RunRecord) -> dict[str, Any]:
    """The JSON shape of a run (HTTP bodies, replies)."""
    return {
        "id": rec.id,
        "kind": rec.kind,
        "trigger": rec.trigger,
        "state": rec.state,
        "status": rec.status,
        "counts": attrs.asdict(rec.counts),
        "message": rec.message,
        "created_at": _iso(rec.created_at),
        "started_at": _iso(rec.started_at),
        "finished_at": _iso(rec.finished_at),
        "duration_s": rec.duration_s,
        "last_seq": rec.last_seq,
        "watchers": 0,
        "cancel_requested": False,
    }


@attrs.define
class Watch:
    """What :meth:`RunManager.attach` gives a watcher: the backlog, then (live runs) a subscription."""

    run_id: str
    summary: dict[str, Any]
    backlog: list[Frame]
    subscription: Subscription | None = None

    @property
    def live(self) -> bool:
        return self.subscription is not None


async def _cancelled_before_start(kind: RunKind, reporter: Reporter) -> RunOutcome:
    return RunOutcome(status="cancelled", counts=Counts(), message=f"{kind} sync cancelled before it started")


class RunManager:
    """Start / join / queue / cancel / watch runs; one run executes at a time."""

    def __init__(
        self,
        job: Job,
        bus: EventBus,
        history: History,
        *,
        log_limit: int = 50000,
        subscriber_buffer: int = 2000,
        retained_runs: int = 10,
        cancel_grace_s: float = 10.0,
        endpoints: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._job = job
        self._bus = bus
        self._history = history
        self._log_limit = log_limit
        self._subscriber_buffer = subscriber_buffer
        self._retained = retained_runs
        self._cancel_grace_s = cancel_grace_s
        self._endpoints = endpoints
        self._clock = clock
        self._queue: deque[Run] = deque()
        self._pending: dict[RunKind, Run] = {}
        self._active: Run | None = None
        self._recent: OrderedDict[str, Run] = OrderedDict()  # finished runs kept in memory, newest last
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._observers: list[RunObserver] = []
        self._draining = False

    # -- lifecycle

    async def start(self) -> None:
        await self._history.open()
        self._worker = asyncio.create_task(self._work(), name="proxbox-run-worker")

    async def close(self) -> None:
        """Stop now: queued runs end ``cancelled``, the active run is interrupted (it still gets its
        ``complete``), history is flushed. Use :meth:`drain` first for a graceful stop."""
        self._draining = True
        for run in list(self._queue):
            await self._cancel_queued(run)
        active = self._active
        if active is not None and active.task is not None and not active.task.done():
            active.task.cancel()
            await asyncio.wait({active.task})
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
        await self._history.flush()

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: refuse new triggers, cancel queued runs, let the active run finish for ``grace_s``,
        then ask it to cancel, and interrupt it if it has not stopped ``cancel_grace_s`` later."""
        self._draining = True
        for run in list(self._queue):
            await self._cancel_queued(run)
        active = self._active
        if active is None or active.task is None:
            return
        log.info("runs.draining", run_id=active.id, grace_s=grace_s)
        if await _wait(active.task, grace_s):
            return
        log.warning("runs.drain_cancelling", run_id=active.id)
        active.request_cancel()
        if await _wait(active.task, self._cancel_grace_s):
            return
        log.warning("runs.drain_interrupting", run_id=active.id)
        active.task.cancel()
        await asyncio.wait({active.task})

    @property
    def draining(self) -> bool:
        return self._draining

    def add_observer(self, observer: RunObserver) -> None:
        self._observers.append(observer)

    def _notify(self, hook: str, *args: Any) -> None:
        for obs in self._observers:
            try:
                getattr(obs, hook)(*args)
            except Exception:
                log.exception("runs.observer_failed", hook=hook, observer=type(obs).__name__)

    # -- queries

    @property
    def active(self) -> Run | None:
        return self._active

    @property
    def queued(self) -> tuple[Run, ...]:
        return tuple(self._queue)

    @property
    def watchers(self) -> int:
        return self._bus.subscribers()

    def find(self, run_id: str) -> Run | None:
        """A run still in memory (active, queued, or recently finished); ``latest`` resolves here too."""
        if run_id == LATEST:
            return self._latest_in_memory()
        if self._active is not None and self._active.id == run_id:
            return self._active
        for run in self._queue:
            if run.id == run_id:
                return run
        return self._recent.get(run_id)

    def _latest_in_memory(self) -> Run | None:
        if self._active is not None:
            return self._active
        candidates = [*self._queue, *self._recent.values()]
        return max(candidates, key=lambda r: (r.created_at, r.id), default=None)

    async def lookup(self, run_id: str) -> dict[str, Any]:
        """The summary of any run, live or from history. Raises RunNotFound."""
        run = self.find(run_id)
        if run is not None:
            return run.summary()
        rec = await self._record(run_id)
        return summarize(rec)

    async def _record(self, run_id: str) -> RunRecord:
        if run_id == LATEST:
            recs = await self._history.list(limit=1)
            if recs:
                return recs[0]
        else:
            rec = await self._history.get(run_id)
            if rec is not None:
                return rec
        raise RunNotFound(f"no run {run_id!r}", run_id=run_id)

    async def list(self, limit: int = 50, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest first: history, with the live fields of runs still in memory."""
        out = []
        for rec in await self._history.list(limit=limit, kind=kind):
            run = self.find(rec.id)
            out.append(run.summary() if run is not None else summarize(rec))
        return out

    # -- triggering

    def trigger(self, kind: RunKind, *, trigger: str = "api") -> tuple[Run, bool]:
        """Start or join a run of ``kind``. Returns ``(run, joined)``. Never awaits."""
        if self._draining:
            raise ServerDraining("the server is shutting down; no new runs are started")
        active = self._active
        if (
            active is not None
            and active.final is None
            and not active.cancel_requested
            and covers(active.kind, kind)
        ):
            log.info("runs.joined", run_id=active.id, kind=kind, trigger=trigger)
            return active, True
        for candidate in (self._pending.get(kind), self._pending.get("full")):
            if candidate is not None:
                log.info("runs.joined_queued", run_id=candidate.id, kind=kind, trigger=trigger)
                return candidate, True
        now = self._clock()
        run = Run(
            run_id=new_run_id(now),
            kind=kind,
            trigger=trigger,
            bus=self._bus,
            log_limit=self._log_limit,
            clock=self._clock,
        )
        self._pending[kind] = run
        self._queue.append(run)
        self._history.save(run.record())
        log.info("runs.queued", run_id=run.id, kind=kind, trigger=trigger, position=len(self._queue))
        self._notify("run_queued", run)
        self._wakeup.set()
        return run, False

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask a run to stop. A queued run ends at once (``complete`` with status ``cancelled``); a running
        run stops at its next item. Cancelling a finished run changes nothing. Returns the summary."""
        run = self.find(run_id)
        if run is None:
            return summarize(await self._record(run_id))  # finished long ago (or RunNotFound)
        if run.state == "queued":
            await self._cancel_queued(run)
        elif run.state == "running":
            log.info("runs.cancel_requested", run_id=run.id)
            run.request_cancel()
        return run.summary()

    async def _cancel_queued(self, run: Run) -> None:
        try:
            self._queue.remove(run)
        except ValueError:
            return
        if self._pending.get(run.kind) is run:
            del self._pending[run.kind]
        run.request_cancel()
        run.state = "running"
        run.started_at = self._clock()
        await execute(_cancelled_before_start, run.kind, run, endpoints=self._endpoints)
        self._retire(run)

    # -- watching

    async def attach(
        self,
        run_id: str,
        since: int = 0,
        *,
        on_drop: Callable[[Subscription, str], None] | None = None,
        limit: int | None = None,
    ) -> Watch:
        """Backlog (frames with ``seq > since``) plus, for a live run, a subscription for what follows.

        For a run in memory, subscribing and taking the snapshot happen with no ``await`` in between, so the
        backlog and the live frames meet exactly: no gap, no duplicate. A run known only from history gives
        its ``complete`` frame (if ``since`` is before it) and no subscription. Raises RunNotFound.
        """
        run = self.find(run_id)
        if run is not None:
            sub = None
            if run.final is None:
                sub = self._bus.subscribe(
                    run.id, limit=limit or self._subscriber_buffer, on_drop=self._dropped(on_drop)
                )
            backlog = run.frames_since(since)
            watch = Watch(run_id=run.id, summary=run.summary(), backlog=backlog, subscription=sub)
            if sub is not None:
                self._notify("watchers_changed", self._bus.subscribers())
            return watch
        rec = await self._record(run_id)
        backlog = []
        if rec.final_frame is not None and rec.last_seq > since:
            backlog = [make_codec().frame_from_bytes(rec.final_frame)]
        return Watch(run_id=rec.id, summary=summarize(rec), backlog=backlog)

    def detach(self, watch: Watch) -> None:
        if watch.subscription is not None:
            watch.subscription.close()
            watch.subscription = None
            self._notify("watchers_changed", self._bus.subscribers())

    def _dropped(
        self, on_drop: Callable[[Subscription, str], None] | None
    ) -> Callable[[Subscription, str], None]:
        def dropped(sub: Subscription, reason: str) -> None:
            self._notify("watcher_dropped", sub.topic, reason)
            self._notify("watchers_changed", self._bus.subscribers())
            if on_drop is not None:
                on_drop(sub, reason)

        return dropped

    # -- the worker

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            run = self._queue.popleft()
            if self._pending.get(run.kind) is run:
                del self._pending[run.kind]
            await self._execute(run)

    async def _execute(self, run: Run) -> None:
        run.state = "running"
        run.started_at = self._clock()
        self._active = run
        self._history.save(run.record())
        log.info("runs.started", run_id=run.id, kind=run.kind, trigger=run.trigger)
        self._notify("run_started", run)
        run.task = asyncio.create_task(self._run_job(run), name=f"proxbox-run-{run.id}")
        try:
            await asyncio.wait({run.task})
        finally:
            self._active = None
            self._retire(run)

    async def _run_job(self, run: Run) -> None:
        structlog.contextvars.bind_contextvars(run_id=run.id)
        try:
            await execute(self._job, run.kind, run, endpoints=self._endpoints)
        except asyncio.CancelledError:
            log.warning("runs.interrupted", run_id=run.id)  # execute already sent `complete` (cancelled)
        except Exception:  # execute reports job errors itself; this is a bug in framing or publishing
            log.exception("runs.execute_failed", run_id=run.id)

    def _retire(self, run: Run) -> None:
        if run.final is None:  # only when framing itself broke: never leave a run "running" forever
            run.state = "finished"
            run.status = "failed"
            run.finished_at = self._clock()
            self._bus.end(run.id)
            run.finished.set()
        self._history.save(run.record())
        self._recent[run.id] = run
        while len(self._recent) > self._retained:
            self._recent.popitem(last=False)
        log.info("runs.finished", run_id=run.id, kind=run.kind, status=run.status, **attrs.asdict(run.counts))
        self._notify("run_finished", run)

    # -- schedules

    async def every(self, interval_s: float, kind: RunKind = "full") -> None:
        """Trigger ``kind`` now and then every ``interval_s`` seconds (``[sync].interval_s``)."""
        while True:
            try:
                self.trigger(kind, trigger="schedule")
            except ProxboxError as exc:
                log.warning("runs.schedule_skipped", error=exc.code)
            await asyncio.sleep(interval_s)


async def _wait(task: asyncio.Task[Any], seconds: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return bool(done)
