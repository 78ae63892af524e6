"""The sync job: discovery → filtering → planning → deletion → creation → update → journal.

``SyncEngine(settings).run(kind, reporter)`` is the job :func:`proxbox.jobs.execute` frames (it emits the
phase and item events; ``RunStarted``/``RunCompleted`` are the framer's). Every event is emitted when the work
it reports happens: discovery progress as Proxmox answers, ``ItemDone`` as each bulk chunk returns.

Run status: ``cancelled`` when a cancel was requested (checked between discovery steps, phases and chunks);
``failed`` when NetBox could not be used at all (unreachable, token refused) or nothing could be discovered;
``partial`` when anything failed (an endpoint or node that could not be read, a rejected object, a conflict
with an unowned object); ``succeeded`` otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from proxbox.config import Settings
from proxbox.errors import NetBoxAuthError, NetBoxConflict, NetBoxError
from proxbox.events import (
    OPERATION_OF_KIND,
    Counts,
    Item,
    ItemDone,
    ItemFailed,
    Note,
    Operation,
    Phase,
    PhaseCompleted,
    PhaseStarted,
    Reporter,
    RunKind,
    RunOutcome,
    RunStatus,
)
from proxbox.heap import full_collections_deferred
from proxbox.logsetup import get_logger
from proxbox.netbox.client import NetBoxClient
from proxbox.proxmox.models import DiscoveryIssue, Inventory
from proxbox.sync.apply import Applier
from proxbox.sync.current import FIELDS, Read, build_current, reads_first, reads_second
from proxbox.sync.mapping import CUSTOM_FIELDS, apply_filters, cluster_complete, desired_state
from proxbox.sync.model import CLUSTER, ENDPOINT, CurrentState, DesiredState
from proxbox.sync.plan import Plan, build_plan

log = get_logger(__name__)

Discover = Callable[..., Awaitable[Inventory]]

JOURNAL_KIND = {"succeeded": "info", "partial": "warning", "failed": "danger", "cancelled": "danger"}
JOURNAL_MAX_ERRORS = 20
CANCEL_POLL_S = 0.1
EMIT_BATCH = 256  # per-item events emitted between two yields to the loop


class _Cancelled(Exception):
    pass


class _NothingDiscovered(Exception):
    """No endpoint could be read (each failure was reported as it happened)."""


async def _default_discover(settings: Settings, **kw: Any) -> Inventory:
    from proxbox.proxmox.discovery import discover_all

    return await discover_all(settings, **kw)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@attrs.define
class SyncEngine:
    """One engine per settings; each :meth:`run` is independent (a fresh NetBox client unless one is given).

    - ``discover``: ``async (settings, on_progress=...) -> Inventory`` (default: the Proxmox discovery);
    - ``client``: a :class:`NetBoxClient` to reuse (left open); otherwise one per run, closed at its end;
    - ``dry_run``: plan only, write nothing; the plan goes to ``on_plan``;
    - ``today``: the date orphans are stamped with and grace periods are measured against (UTC).
    """

    settings: Settings
    discover: Discover = _default_discover
    client: NetBoxClient | None = None
    dry_run: bool = False
    on_plan: Callable[[Plan], None] | None = None
    today: Callable[[], dt.date] = utc_today
    last_plan: Plan | None = attrs.field(default=None, init=False)

    async def aclose(self) -> None:
        """Nothing held between runs (a given ``client`` belongs to the caller)."""

    async def run(self, kind: RunKind, reporter: Reporter) -> RunOutcome:
        run = _Run(engine=self, kind=kind, reporter=reporter, operation=OPERATION_OF_KIND[kind])
        client = self.client or NetBoxClient(self.settings.netbox)
        try:
            # inventory, NetBox state and plan stay alive for the whole run: no full GC pass over them
            with full_collections_deferred():
                return await run.execute(client)
        finally:
            if self.client is None:
                client.close()


@attrs.define
class _Run:
    engine: SyncEngine
    kind: RunKind
    reporter: Reporter
    operation: Operation
    started: float = attrs.Factory(time.monotonic)
    counts: Counts = attrs.Factory(Counts)
    errors: list[str] = attrs.Factory(list)
    problems: Counter[str] = attrs.Factory(Counter)  # cluster -> failures (discovery issues, conflicts)
    problem_lines: dict[str, list[str]] = attrs.Factory(dict)
    applier: Applier | None = None
    cpu: concurrent.futures.ThreadPoolExecutor | None = None

    async def compute(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """Run pure CPU work (mapping, the current state, the plan) in the run's own worker thread.

        For a large estate these take seconds (6,000 guests: ~1.5 s to map, ~1.2 s to plan); on the loop
        that would freeze every watcher's frames and the health checks. In a thread the loop gets the GIL
        back at every switch interval (5 ms). The inputs are immutable values no one else touches meanwhile.
        """
        if self.cpu is None:
            self.cpu = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="proxbox-plan")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu, functools.partial(fn, *args))

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    # ------------------------------------------------------------------------------------------- events

    def emit(self, event: Any) -> None:
        self.reporter.emit(event)

    def note(self, phase: Phase, message: str, done: int | None = None, total: int | None = None) -> None:
        self.emit(Note(operation=self.operation, phase=phase, message=message, done=done, total=total))

    def fail(
        self,
        phase: Phase,
        *,
        error: str,
        error_class: str,
        detail: str,
        retryable: bool = False,
        item: Item | None = None,
        cluster: str | None = None,
    ) -> None:
        self.counts = self.counts.bump("failed")
        line = detail if item is None else f"{item.kind} {item.name}: {detail}"
        self.errors.append(line)
        if cluster:
            self.problems[cluster] += 1
            self.problem_lines.setdefault(cluster, []).append(line)
        self.emit(
            ItemFailed(
                operation=self.operation,
                phase=phase,
                error=error,
                error_class=error_class,
                detail=detail,
                retryable=retryable,
                item=item,
            )
        )

    def check_cancel(self) -> None:
        if self.reporter.cancel_requested:
            raise _Cancelled

    # ------------------------------------------------------------------------------------------- stages

    async def execute(self, client: NetBoxClient) -> RunOutcome:
        try:
            return await self._execute(client)
        finally:
            if self.cpu is not None:
                self.cpu.shutdown(wait=False)

    async def _execute(self, client: NetBoxClient) -> RunOutcome:
        log.info("sync.started", run_id=self.reporter.run_id, kind=self.kind, dry_run=self.engine.dry_run)
        phase: Phase = "discovery"
        try:
            inventory = await self.discovery()
            phase = "filtering"
            self.check_cancel()
            filtered = self.filtering(inventory)
            phase = "planning"
            self.check_cancel()
            desired = await self.compute(desired_state, inventory, filtered, self.settings, self.kind)
            current = await self.read_netbox(client, desired)
            self.check_cancel()
            plan = await self.planning(desired, current)
            if self.engine.dry_run:
                if self.engine.on_plan is not None:
                    self.engine.on_plan(plan)
                return self.outcome(f"dry run: {plan.writes} write(s) planned, nothing written")
            self.check_cancel()
            self.applier = Applier(
                client=client,
                plan=plan,
                reporter=self.reporter,
                operation=self.operation,
                settings=self.settings,
            )
            try:
                await self.applier.run()
            finally:
                self.counts = self.counts + self.applier.counts
                self.errors.extend(self.applier.errors)
            if self.applier.cancelled:
                raise _Cancelled
            phase = "journal"
            await self.journal(client)
            return self.outcome()
        except _NothingDiscovered:
            return RunOutcome(
                status="failed",
                counts=self.counts,
                message="no Proxmox VE endpoint could be read",
                errors=self._errs(),
            )
        except _Cancelled:
            log.info("sync.cancelled", run_id=self.reporter.run_id)
            await self.journal(client, "cancelled")
            return RunOutcome(
                status="cancelled", counts=self.counts, message="run cancelled", errors=self._errs()
            )
        except NetBoxError as exc:
            if self.applier is not None and phase != "journal":
                phase = self.applier.phase
            self.fail(
                phase,
                error=exc.code,
                error_class=type(exc).__name__,
                detail=str(exc),
                retryable=exc.retryable,
            )
            status: RunStatus = "partial" if self.counts.writes else "failed"
            if phase != "journal" and not isinstance(exc, NetBoxAuthError):
                with contextlib.suppress(NetBoxError):  # best effort: NetBox may still be unreachable
                    await self.journal(client, "failed")
            return RunOutcome(
                status=status, counts=self.counts, message=f"NetBox: {exc}", errors=self._errs()
            )

    def _errs(self) -> tuple[str, ...]:
        return tuple(self.errors[:50])

    def outcome(self, message: str = "") -> RunOutcome:
        status = "partial" if self.counts.failed else "succeeded"
        c = self.counts
        summary = (
            f"{self.kind} sync {status}: {c.created} created, {c.updated} updated, {c.deleted} deleted, "
            f"{c.orphaned} orphaned, {c.unchanged} unchanged, {c.failed} failed"
        )
        log.info("sync.finished", run_id=self.reporter.run_id, status=status, **attrs.asdict(c))
        return RunOutcome(
            status=status,  # type: ignore[arg-type]
            counts=self.counts,
            message=message or summary,
            errors=self._errs(),
        )

    async def discovery(self) -> Inventory:
        phase: Phase = "discovery"
        started = time.monotonic()
        self.emit(
            PhaseStarted(
                operation=self.operation,
                phase=phase,
                total=len(self.settings.proxmox),
                message=f"discovering {len(self.settings.proxmox)} Proxmox VE endpoint(s)",
            )
        )
        failed_before = self.counts.failed

        def on_progress(p: Any) -> None:
            if p.kind == "issue" and p.issue is not None:
                self._issue(p.issue)
            elif p.kind == "guest" and p.guest is not None:
                g = p.guest
                self.note(phase, f"{g.cluster}: {g.kind} {g.vmid} {g.name} on {g.node}", p.done, p.total)
            elif p.message:
                self.note(phase, p.message, p.done or None, p.total or None)

        task = asyncio.ensure_future(self.engine.discover(self.settings, on_progress=on_progress))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=CANCEL_POLL_S)
                if self.reporter.cancel_requested and not task.done():
                    task.cancel()
                    raise _Cancelled
            inventory = task.result()
        finally:
            if not task.done():
                task.cancel()
        for issue in inventory.failed_endpoints:
            if not any(e.endswith(issue.detail) for e in self.errors):
                self._issue(issue)
        guests = sum(len(ci.guests) for ci in inventory.clusters)
        nodes = sum(len(ci.nodes) for ci in inventory.clusters)
        failures = self.counts.failed - failed_before
        self.emit(
            PhaseCompleted(
                operation=self.operation,
                phase=phase,
                counts=Counts(failed=failures),
                duration_s=round(time.monotonic() - started, 3),
                message=f"discovered {len(inventory.clusters)} cluster(s), {nodes} node(s), {guests} guests",
            )
        )
        if not inventory.clusters:
            raise _NothingDiscovered
        return inventory

    def _issue(self, issue: DiscoveryIssue) -> None:
        kind = {"cluster": "cluster", "node": "node"}.get(issue.scope, "guest")
        name = (
            issue.node
            if issue.scope == "node"
            else (str(issue.vmid) if issue.vmid is not None else issue.cluster)
        )
        self.fail(
            "discovery",
            error=issue.code,
            error_class="DiscoveryIssue",
            detail=issue.detail,
            retryable=issue.retryable,
            item=Item(kind=kind, name=name or issue.cluster, cluster=issue.cluster, vmid=issue.vmid),
            cluster=issue.cluster,
        )

    def filtering(self, inventory: Inventory) -> Inventory:
        phase: Phase = "filtering"
        started = time.monotonic()
        total = sum(len(ci.guests) for ci in inventory.clusters)
        self.emit(
            PhaseStarted(operation=self.operation, phase=phase, total=total, message="applying filters")
        )
        result = apply_filters(inventory, self.settings.sync)
        for ci in inventory.clusters:
            if not cluster_complete(ci):
                unread = sorted(n.name for n in ci.nodes if n.name not in ci.complete_nodes)
                self.note(
                    phase,
                    f"{ci.cluster.name}: not fully read ({', '.join(unread) or 'cluster status'}); "
                    "nothing in this cluster is orphaned or deleted in this run",
                )
        kept = sum(len(ci.guests) for ci in result.inventory.clusters)
        parts = [f"{kept} of {total} guest(s) selected"]
        if result.skipped_clusters:
            parts.append(f"clusters skipped: {', '.join(result.skipped_clusters)}")
        if result.skipped_nodes:
            parts.append(f"{result.skipped_nodes} node(s) skipped")
        self.emit(
            PhaseCompleted(
                operation=self.operation,
                phase=phase,
                counts=Counts(),
                duration_s=round(time.monotonic() - started, 3),
                message="; ".join(parts),
            )
        )
        return result.inventory

    async def read_netbox(self, client: NetBoxClient, desired: DesiredState) -> CurrentState:
        """Read current NetBox state: once per object type, scoped, with only the needed fields."""
        rows: dict[str, list[dict[str, Any]]] = {}
        first = reads_first(list(CUSTOM_FIELDS), sorted(desired.clusters))
        await self._reads(client, first, rows)
        cluster_ids = [r["id"] for r in rows.get(CLUSTER, [])]
        kinds = set(desired.managed) | {o.kind for o in desired.objects}
        await self._reads(client, reads_second(cluster_ids, frozenset(kinds)), rows)
        read = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in rows.items() if v)
        self.note("planning", f"read from NetBox: {read or 'nothing yet'}")
        current: CurrentState = await self.compute(build_current, rows)
        return current

    async def _reads(
        self, client: NetBoxClient, reads: Sequence[Read], rows: dict[str, list[dict[str, Any]]]
    ) -> None:
        results = await asyncio.gather(
            *(client.list(ENDPOINT[r.kind], fields=FIELDS[r.kind], **dict(r.filters)) for r in reads)
        )
        for r, result in zip(reads, results, strict=True):
            rows[r.kind] = result

    async def planning(self, desired: DesiredState, current: CurrentState) -> Plan:
        phase: Phase = "planning"
        started = time.monotonic()
        self.emit(
            PhaseStarted(
                operation=self.operation,
                phase=phase,
                total=len(desired.objects),
                message=f"comparing {len(desired.objects)} desired object(s) with NetBox",
            )
        )
        plan: Plan = await self.compute(build_plan, desired, current, self.settings.sync, self.engine.today())
        self.engine.last_plan = plan
        for note in plan.notes:
            self.note(phase, note)
        for conflict in plan.conflicts:
            self.fail(
                phase,
                error=NetBoxConflict.code,
                error_class=NetBoxConflict.__name__,
                detail=conflict.detail,
                item=Item(
                    kind=conflict.kind,
                    name=conflict.label,
                    cluster=conflict.cluster,
                    vmid=conflict.vmid,
                    netbox_id=conflict.netbox_id,
                    action="skipped",
                ),
                cluster=conflict.cluster,
            )
        for i, u in enumerate(plan.unchanged, 1):
            if i % EMIT_BATCH == 0:  # a re-sync of a large estate has tens of thousands: let watchers in
                await asyncio.sleep(0)
            self.counts = self.counts.bump("unchanged")
            self.emit(
                ItemDone(
                    operation=self.operation,
                    phase=phase,
                    item=Item(
                        kind=u.kind,
                        name=u.label,
                        cluster=u.cluster,
                        vmid=u.vmid,
                        netbox_id=u.netbox_id,
                        action="unchanged",
                    ),
                    done=i,
                    total=len(plan.unchanged),
                    message=f"unchanged {u.kind.replace('_', ' ')} {u.label}",
                )
            )
        s = plan.summary()
        text = "; ".join(
            f"{op} " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in s[op].items())
            for op in ("delete", "create", "update")
            if s[op]
        )
        self.emit(
            PhaseCompleted(
                operation=self.operation,
                phase=phase,
                counts=Counts(unchanged=len(plan.unchanged), failed=len(plan.conflicts)),
                duration_s=round(time.monotonic() - started, 3),
                message=f"plan: {text or 'nothing to write'}"
                + (f"; {plan.skipped} skipped (depend on a conflict)" if plan.skipped else ""),
            )
        )
        return plan

    async def journal(self, client: NetBoxClient, run_status: str | None = None) -> None:
        """One journal entry on each NetBox cluster this run wrote to or failed on (an unchanged re-sync
        touches nothing and writes nothing). Its kind is ``danger`` for a failed or cancelled run,
        ``warning`` when something of that cluster failed, ``info`` otherwise."""
        if not self.settings.sync.journal or self.applier is None:
            return
        phase: Phase = "journal"
        applier = self.applier
        touched = sorted(set(applier.clusters) | set(self.problems))
        entries = []
        status = run_status or ("partial" if self.counts.failed else "succeeded")
        duration = time.monotonic() - self.started
        for name in touched:
            cluster_id = applier.ids.get((CLUSTER, (name,)))
            if cluster_id is None:
                continue
            tally = applier.clusters.get(name)
            c = tally.counts if tally else Counts()
            errors = (tally.errors if tally else []) + self.problem_lines.get(name, [])
            failed = c.failed + self.problems.get(name, 0)
            kind = (
                JOURNAL_KIND[status] if status in ("failed", "cancelled") else "warning" if failed else "info"
            )
            lines = [
                f"proxbox {self.kind} sync **{status}** (run `{self.reporter.run_id}`, {duration:.1f} s)",
                "",
                f"{c.created} created, {c.updated} updated, {c.deleted} deleted, {c.orphaned} orphaned, "
                f"{failed} failed",
            ]
            if errors:
                lines += ["", "Errors:", *(f"- {e}" for e in errors[:JOURNAL_MAX_ERRORS])]
                if len(errors) > JOURNAL_MAX_ERRORS:
                    lines.append(f"- and {len(errors) - JOURNAL_MAX_ERRORS} more")
            entries.append(
                {
                    "assigned_object_type": "virtualization.cluster",
                    "assigned_object_id": cluster_id,
                    "kind": kind,
                    "comments": "\n".join(lines),
                }
            )
        if not entries:
            return
        started = time.monotonic()
        self.emit(
            PhaseStarted(
                operation=self.operation, phase=phase, total=len(entries), message="writing run record"
            )
        )
        try:
            await client.create("extras.journal-entries", entries)
            self.note(phase, f"journal entry written on {len(entries)} cluster(s)")
        except NetBoxError as exc:
            self.fail(phase, error=exc.code, error_class=type(exc).__name__, detail=f"journal: {exc}")
        self.emit(
            PhaseCompleted(
                operation=self.operation,
                phase=phase,
                counts=Counts(),
                duration_s=round(time.monotonic() - started, 3),
                message=f"journal: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}",
            )
        )
