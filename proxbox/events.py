"""The bus vocabulary: what a sync run tells the world, as immutable values (past-tense facts).

The sync engine creates these and hands them to a :class:`Reporter` (``reporter.emit(event)``, which never
awaits). The run that owns the reporter stamps each event with its ``run_id``, a gapless per-run ``seq`` and a
timestamp (:class:`Envelope`), and :mod:`proxbox.frames` turns every envelope into exactly one JSON frame:

==================  ==========  =====================================================================
event               frame type  meaning
==================  ==========  =====================================================================
RunStarted          step        a run began (status ``started``)
PhaseStarted        step        a phase began, with the number of items it will process
ItemDone            step        one object was created / updated / unchanged / deleted / orphaned...
Note                step        free-form progress ("cluster lab-a: 3 nodes, 48 guests")
ItemFailed          error       one object (or a whole phase) failed; the run goes on
PhaseCompleted      step        a phase ended, with its counts
RunCompleted        complete    the run ended: status, counts, duration. Always the last frame of a run.
==================  ==========  =====================================================================
"""

from __future__ import annotations

from typing import Literal, Protocol

import attrs

RunKind = Literal["full", "nodes", "vms"]
RUN_KINDS: tuple[RunKind, ...] = ("full", "nodes", "vms")

Operation = Literal["full_sync", "device_sync", "vm_sync"]
OPERATION_OF_KIND: dict[str, Operation] = {"full": "full_sync", "nodes": "device_sync", "vms": "vm_sync"}

# Phases a run goes through. ``start`` and ``finish`` belong to the run itself.
Phase = Literal[
    "start",
    "discovery",
    "filtering",
    "planning",
    "creation",
    "update",
    "deletion",
    "validation",
    "journal",
    "finish",
]

Action = Literal["created", "updated", "unchanged", "deleted", "orphaned", "adopted", "skipped"]
RunStatus = Literal["succeeded", "partial", "failed", "cancelled"]


@attrs.frozen(kw_only=True)
class Item:
    """The object an event is about. ``kind`` is the NetBox model (``virtual_machine``, ``device``,
    ``interface``, ``ip_address``, ``mac_address``, ``virtual_disk``, ``cluster``...) or ``guest``/``node``
    for
    Proxmox-side objects."""

    kind: str
    name: str
    cluster: str | None = None
    vmid: int | None = None
    netbox_id: int | None = None
    action: Action | None = None


@attrs.frozen(kw_only=True)
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    orphaned: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in attrs.fields(Counts)}
        )

    def bump(self, action: str, n: int = 1) -> Counts:
        """A copy with ``action`` (created/updated/...) incremented; unknown actions are ignored."""
        if action in attrs.fields_dict(Counts):
            return attrs.evolve(self, **{action: getattr(self, action) + n})
        return self

    @property
    def writes(self) -> int:
        return self.created + self.updated + self.deleted + self.orphaned


@attrs.frozen(kw_only=True)
class RunStarted:
    operation: Operation
    kind: RunKind
    dry_run: bool = False
    endpoints: tuple[str, ...] = ()
    phase: Phase = "start"
    message: str = ""


@attrs.frozen(kw_only=True)
class PhaseStarted:
    operation: Operation
    phase: Phase
    total: int
    message: str = ""


@attrs.frozen(kw_only=True)
class ItemDone:
    operation: Operation
    phase: Phase
    item: Item
    done: int
    total: int
    message: str = ""
    # field -> (old, new) as strings, for updates
    changes: tuple[tuple[str, str, str], ...] = ()


@attrs.frozen(kw_only=True)
class Note:
    operation: Operation
    phase: Phase
    message: str
    done: int | None = None
    total: int | None = None


@attrs.frozen(kw_only=True)
class ItemFailed:
    operation: Operation
    phase: Phase
    error: str  # stable code, e.g. netbox_rejected, proxmox_unavailable
    error_class: str  # exception class name
    detail: str
    retryable: bool = False
    item: Item | None = None


@attrs.frozen(kw_only=True)
class PhaseCompleted:
    operation: Operation
    phase: Phase
    counts: Counts
    duration_s: float
    message: str = ""


@attrs.frozen(kw_only=True)
class RunCompleted:
    operation: Operation
    status: RunStatus
    counts: Counts
    duration_s: float
    phase: Phase = "finish"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


Event = RunStarted | PhaseStarted | ItemDone | Note | ItemFailed | PhaseCompleted | RunCompleted


@attrs.frozen(kw_only=True)
class Envelope:
    """An event as published: stamped by its run."""

    run_id: str
    seq: int
    ts: float  # unix time, seconds
    event: Event


@attrs.frozen(kw_only=True)
class RunOutcome:
    """What a sync job returns to whoever runs it; the run turns it into the final RunCompleted."""

    status: RunStatus
    counts: Counts
    message: str = ""
    errors: tuple[str, ...] = ()  # short human lines, for the NetBox journal and the CLI summary


class Reporter(Protocol):
    """Where a job sends its events. ``emit`` never awaits and never blocks on a consumer."""

    @property
    def run_id(self) -> str: ...

    @property
    def cancel_requested(self) -> bool: ...

    def emit(self, event: Event) -> None: ...
