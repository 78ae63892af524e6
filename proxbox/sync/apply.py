"""Apply a :class:`~proxbox.sync.plan.Plan` to NetBox: bulk writes in chunks, bounded concurrency, live
events.

Phases run in the plan's order (deletion → creation → update); inside a phase, level by level (parents
before children), and inside a level every kind's chunks (``netbox.bulk_chunk`` objects each) run
concurrently, at most ``netbox.concurrency`` at a time. Each chunk's ``ItemDone`` events are emitted the
moment that chunk's request returns.

A rejected chunk is isolated: items NetBox named in its per-item error list fail at once (``ItemFailed``), the
rest are sent again as one bulk request, and if that is rejected too, one by one, so one bad object fails
alone. Objects that depend on a failed one (a VM's interfaces, an interface's addresses) are reported as
``skipped``. Cancellation is checked before every chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from proxbox.config import Settings
from proxbox.errors import NetBoxAuthError, NetBoxError, NetBoxRejected
from proxbox.events import (
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
)
from proxbox.logsetup import get_logger
from proxbox.netbox.client import NetBoxClient, item_errors
from proxbox.sync.model import (
    CF_NODE,
    CF_VMID,
    CLUSTER,
    CUSTOM_FIELD,
    DEVICE,
    DEVICE_TYPE,
    DISK,
    ENDPOINT,
    INTERFACE,
    IP,
    LEVEL,
    MAC,
    OPTIONAL_REFS,
    OWNER_TAG,
    TAG,
    VM,
    Key,
    Ref,
)
from proxbox.sync.plan import Action, Plan

log = get_logger(__name__)


class Skip(Exception):
    """The action cannot be written because an object it needs is missing (failed or skipped)."""

    def __init__(self, missing: Ref) -> None:
        super().__init__(str(missing))
        self.missing = missing


@attrs.define
class ClusterTally:
    counts: Counts = attrs.Factory(Counts)
    errors: list[str] = attrs.Factory(list)


@attrs.define
class Applier:
    client: NetBoxClient
    plan: Plan
    reporter: Reporter
    operation: Operation
    settings: Settings
    ids: dict[tuple[str, Key], int] = attrs.Factory(dict)
    failed: set[tuple[str, Key]] = attrs.Factory(set)
    counts: Counts = attrs.Factory(Counts)
    errors: list[str] = attrs.Factory(list)
    clusters: dict[str, ClusterTally] = attrs.Factory(lambda: defaultdict(ClusterTally))
    cancelled: bool = False
    phase: Phase = "deletion"
    _done: int = 0
    _total: int = 0
    _slots: asyncio.Semaphore = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.ids.update(self.plan.id_map())
        self._slots = asyncio.Semaphore(max(1, self.settings.netbox.concurrency))

    # ------------------------------------------------------------------------------------------- phases

    async def run(self) -> None:
        for phase, actions in (
            ("deletion", self.plan.deletions),
            ("creation", self.plan.creations),
            ("update", self.plan.updates),
        ):
            if self.cancelled or self.reporter.cancel_requested:
                self.cancelled = True
                return
            await self.run_phase(phase, actions)  # type: ignore[arg-type]

    async def run_phase(self, phase: Phase, actions: Sequence[Action]) -> None:
        self.phase = phase
        started = time.monotonic()
        before = self.counts
        self.reporter.emit(
            PhaseStarted(
                operation=self.operation,
                phase=phase,
                total=len(actions),
                message=_phase_message(phase, actions),
            )
        )
        self._done = 0
        self._total = len(actions)
        levels: dict[int, list[Action]] = defaultdict(list)
        for action in actions:
            levels[LEVEL[action.kind]].append(action)
        for level in sorted(levels, reverse=(phase == "deletion")):
            by_kind: dict[str, list[Action]] = defaultdict(list)
            for action in levels[level]:
                by_kind[action.kind].append(action)
            chunk = max(1, self.settings.netbox.bulk_chunk)
            jobs = [
                (kind, group[i : i + chunk])
                for kind, group in by_kind.items()
                for i in range(0, len(group), chunk)
            ]
            await asyncio.gather(*(self._chunk(phase, kind, items) for kind, items in jobs))
            if self.cancelled:
                break
        delta = _minus(self.counts, before)
        self.reporter.emit(
            PhaseCompleted(
                operation=self.operation,
                phase=phase,
                counts=delta,
                duration_s=round(time.monotonic() - started, 3),
                message=f"{phase}: {_counts_text(delta)}" + (" (cancelled)" if self.cancelled else ""),
            )
        )

    async def _chunk(self, phase: Phase, kind: str, actions: list[Action]) -> None:
        async with self._slots:
            if self.cancelled or self.reporter.cancel_requested:
                self.cancelled = True
                return
            op = actions[0].op
            ready: list[tuple[Action, dict[str, Any]]] = []
            for action in actions:
                try:
                    payload = self._payload(action)
                except Skip as skip:
                    self._skipped(phase, action, f"needs {skip.missing}, which failed")
                    continue
                if op == "update" and not payload:
                    self._skipped(phase, action, "nothing left to write")
                    continue
                ready.append((action, payload))
            if ready:
                await self._write(phase, kind, op, ready, isolate=True)

    async def _write(
        self, phase: Phase, kind: str, op: str, items: list[tuple[Action, dict[str, Any]]], *, isolate: bool
    ) -> None:
        endpoint = ENDPOINT[kind]
        try:
            if op == "create":
                rows = await self.client.create(
                    endpoint, [p for _, p in items], lookups=[_lookup(kind, p) for _, p in items]
                )
                for (action, _), row in zip(items, rows, strict=True):
                    new_id: int = row["id"]
                    self.ids[(kind, action.key)] = new_id
                    self._done_item(phase, action, new_id)
            elif op == "update":
                await self.client.update(endpoint, [p for _, p in items])
                for action, payload in items:
                    self._done_item(phase, action, payload["id"])
            else:
                await self.client.delete(endpoint, [a.netbox_id for a, _ in items if a.netbox_id is not None])
                for action, _ in items:
                    self._done_item(phase, action, action.netbox_id)
        except NetBoxAuthError:
            raise
        except NetBoxError as exc:
            isolatable = isinstance(exc, NetBoxRejected) or exc.context.get("status") == 500
            if not isolatable:
                raise  # NetBox is unreachable: the run stops (the engine reports it)
            if len(items) == 1:
                self._failed(phase, items[0][0], exc)
            elif isolate:
                await self._isolate(phase, kind, op, items, exc)
            else:
                await self._one_by_one(phase, kind, op, items)

    async def _one_by_one(
        self, phase: Phase, kind: str, op: str, items: list[tuple[Action, dict[str, Any]]]
    ) -> None:
        log.info("sync.bulk_rejected_one_by_one", kind=kind, op=op, items=len(items))
        for one in items:
            if self.reporter.cancel_requested:
                self.cancelled = True
                return
            await self._write(phase, kind, op, [one], isolate=False)

    async def _isolate(
        self, phase: Phase, kind: str, op: str, items: list[tuple[Action, dict[str, Any]]], exc: NetBoxError
    ) -> None:
        """One bulk request was rejected: fail the items NetBox named, retry the rest as one request, and
        if that is rejected too, one by one."""
        errors = item_errors(getattr(exc, "body", None))
        bad: dict[int, str] = {}
        for by, value, message in errors:
            for pos, (action, payload) in enumerate(items):
                if (by == "index" and pos == value) or (
                    by == "id" and payload.get("id", action.netbox_id) == value
                ):
                    bad[pos] = message
        if bad:
            for pos, message in sorted(bad.items()):
                rejected = NetBoxRejected(f"NetBox rejected it: {message}", status=400)
                self._failed(phase, items[pos][0], rejected)
            good = [item for pos, item in enumerate(items) if pos not in bad]
            if good:
                await self._write(phase, kind, op, good, isolate=False)
            return
        await self._one_by_one(phase, kind, op, items)

    # --------------------------------------------------------------------------------------- payloads

    def _id(self, ref: Ref) -> int:
        id_ = self.ids.get((ref.kind, ref.key))
        if id_ is None or (ref.kind, ref.key) in self.failed:
            raise Skip(ref)
        return id_

    def _payload(self, action: Action) -> dict[str, Any]:
        if action.op == "delete":
            return {}
        if action.parent is not None and (action.parent.kind, action.parent.key) in self.failed:
            raise Skip(action.parent)
        out: dict[str, Any] = {}
        if action.op == "update":
            if action.netbox_id is None:
                action_id = self.ids.get((action.kind, action.key))
                if action_id is None or (action.kind, action.key) in self.failed:
                    raise Skip(Ref(action.kind, action.key))
            else:
                action_id = action.netbox_id
            out["id"] = action_id
        for name, value in action.fields:
            if isinstance(value, Ref):
                try:
                    value = self._id(value)
                except Skip:
                    if name in OPTIONAL_REFS:
                        continue
                    raise
            if name.startswith("cf."):
                out.setdefault("custom_fields", {})[name[3:]] = value
            elif name == "tags":
                out["tags"] = [{"slug": s} for s in sorted(value)]
            elif name == "mode" and value is None:
                out["mode"] = ""
            elif isinstance(value, tuple):
                out[name] = list(value)
            else:
                out[name] = value
        if action.op == "update" and len(out) == 1:
            return {}
        return out

    # ----------------------------------------------------------------------------------------- events

    def _item(self, action: Action, netbox_id: int | None, what: str) -> Item:
        return Item(
            kind=action.kind,
            name=action.label,
            cluster=action.cluster,
            vmid=action.vmid,
            netbox_id=netbox_id,
            action=what,  # type: ignore[arg-type]
        )

    def _done_item(self, phase: Phase, action: Action, netbox_id: int | None) -> None:
        self._done += 1
        event = "updated" if action.event == "adopted" else action.event
        self.counts = self.counts.bump(event)
        if action.cluster:
            tally = self.clusters[action.cluster]
            tally.counts = tally.counts.bump(event)
        where = f" ({action.cluster}/{action.vmid})" if action.vmid is not None else ""
        self.reporter.emit(
            ItemDone(
                operation=self.operation,
                phase=phase,
                item=self._item(action, netbox_id, action.event),
                done=self._done,
                total=self._total,
                message=f"{action.event} {action.kind.replace('_', ' ')} {action.label}{where}",
                changes=tuple(c.as_strings() for c in action.changes),
            )
        )

    def _skipped(self, phase: Phase, action: Action, why: str) -> None:
        self._done += 1
        if action.op == "create":
            self.failed.add((action.kind, action.key))
        self.reporter.emit(
            ItemDone(
                operation=self.operation,
                phase=phase,
                item=self._item(action, action.netbox_id, "skipped"),
                done=self._done,
                total=self._total,
                message=f"skipped {action.kind.replace('_', ' ')} {action.label}: {why}",
            )
        )

    def _failed(self, phase: Phase, action: Action, exc: NetBoxError) -> None:
        self._done += 1
        self.failed.add((action.kind, action.key))
        self.counts = self.counts.bump("failed")
        line = f"{action.op} {action.kind} {action.label}: {exc}"
        self.errors.append(line)
        if action.cluster:
            tally = self.clusters[action.cluster]
            tally.counts = tally.counts.bump("failed")
            tally.errors.append(line)
        log.warning("sync.item_failed", kind=action.kind, key=list(action.key), op=action.op, error=exc.code)
        self.reporter.emit(
            ItemFailed(
                operation=self.operation,
                phase=phase,
                error=exc.code,
                error_class=type(exc).__name__,
                detail=str(exc),
                retryable=exc.retryable,
                item=self._item(action, action.netbox_id, "skipped"),
            )
        )


# ------------------------------------------------------------------------------------------------ helpers


def _lookup(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Filters that find what ``payload`` would create (used only after a failed, maybe-landed create)."""
    cf = payload.get("custom_fields") or {}
    if kind == TAG:
        return {"slug": payload["slug"]}
    if kind == CUSTOM_FIELD:
        return {"name": payload["name"]}
    if kind == DEVICE_TYPE:
        return {"slug": payload["slug"], "manufacturer_id": payload["manufacturer"]}
    if kind == CLUSTER:
        return {"name": payload["name"]}
    if kind == DEVICE:
        return {"cluster_id": payload["cluster"], f"cf_{CF_NODE}": cf.get(CF_NODE), "tag": OWNER_TAG}
    if kind == VM:
        return {"cluster_id": payload["cluster"], f"cf_{CF_VMID}": cf.get(CF_VMID), "tag": OWNER_TAG}
    if kind in (INTERFACE, DISK):
        return {"virtual_machine_id": payload["virtual_machine"], "name": payload["name"]}
    if kind == MAC:
        return {
            "vminterface_id": payload["assigned_object_id"],
            "mac_address": payload["mac_address"],
            "tag": OWNER_TAG,
        }
    if kind == IP:
        return {
            "vminterface_id": payload["assigned_object_id"],
            "address": payload["address"],
            "tag": OWNER_TAG,
        }
    return {"slug": payload["slug"]}


def _minus(a: Counts, b: Counts) -> Counts:
    return Counts(**{f.name: getattr(a, f.name) - getattr(b, f.name) for f in attrs.fields(Counts)})


def _counts_text(c: Counts) -> str:
    parts = [f"{getattr(c, f.name)} {f.name}" for f in attrs.fields(Counts) if getattr(c, f.name)]
    return ", ".join(parts) or "nothing to do"


def _phase_message(phase: Phase, actions: Iterable[Action]) -> str:
    kinds = Counter(a.kind for a in actions)
    if not kinds:
        return f"{phase}: nothing to do"
    return f"{phase}: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))


def note(reporter: Reporter, operation: Operation, phase: Phase, message: str) -> None:
    reporter.emit(Note(operation=operation, phase=phase, message=message))
