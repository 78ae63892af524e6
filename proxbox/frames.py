"""The wire format: every event becomes exactly one JSON text frame; every inbound command is parsed here.

Frames (one per :class:`~proxbox.events.Envelope`, see ``docs/protocol.md``):

- ``step``: progress (run started, phase started/completed, one item done, a note);
- ``error``: something failed (one item, a phase, or the whole run); the run goes on unless it cannot;
- ``complete``: the run ended; always the last frame of a run, exactly once.

Every frame carries ``type``, ``run_id``, ``seq`` (gapless per run, from 1), ``ts`` (RFC 3339, UTC),
``operation`` and ``phase``. A :class:`Codec` (built by :func:`make_codec`, never global) turns an envelope
into a :class:`Frame`: the UTF-8 JSON bytes, encoded once and shared by every watcher.

Inbound: the classic text commands (``Full Update Sync``, ``Sync Nodes``, ``Sync Virtual Machines``) and JSON
commands (``{"command": "watch" | "cancel" | "sync", ...}``, ``{"api_key": ...}``) become :data:`Command`
values; anything else raises :class:`~proxbox.errors.InvalidRequest` whose message names the bad command and
lists the valid ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn

from proxbox.errors import InvalidRequest
from proxbox.events import (
    RUN_KINDS,
    Counts,
    Envelope,
    Item,
    ItemDone,
    ItemFailed,
    Note,
    PhaseCompleted,
    PhaseStarted,
    RunCompleted,
    RunKind,
    RunStarted,
)

FrameType = Literal["step", "error", "complete"]

# The classic text commands of the reference API, and the run kind each starts (or joins).
TEXT_COMMANDS: dict[str, RunKind] = {
    "Full Update Sync": "full",
    "Sync Nodes": "nodes",
    "Sync Virtual Machines": "vms",
}
TEXT_COMMAND_OF_KIND: dict[str, str] = {kind: text for text, kind in TEXT_COMMANDS.items()}


# ------------------------------------------------------------------------------------------ wire shapes


@attrs.frozen(kw_only=True)
class Progress:
    done: int
    total: int


@attrs.frozen(kw_only=True)
class Change:
    field: str
    old: str
    new: str


@attrs.frozen(kw_only=True)
class StepFrame:
    """Progress. Optional members are omitted when they do not apply."""

    type: Literal["step"] = "step"
    run_id: str
    seq: int
    ts: str
    operation: str
    phase: str
    # started | created | updated | unchanged | deleted | orphaned | adopted | skipped | info | completed
    status: str
    message: str
    item: Item | None = None
    progress: Progress | None = None
    kind: str | None = None  # run started: full | nodes | vms
    dry_run: bool | None = None  # run started
    endpoints: tuple[str, ...] | None = None  # run started: the Proxmox endpoints in scope
    counts: Counts | None = None  # phase completed
    duration_s: float | None = None  # phase completed
    changes: tuple[Change, ...] | None = None  # item updated: field, old, new


@attrs.frozen(kw_only=True)
class ErrorFrame:
    type: Literal["error"] = "error"
    run_id: str
    seq: int
    ts: str
    operation: str
    phase: str
    status: Literal["failed"] = "failed"
    error: str  # the stable error code (netbox_rejected, proxmox_unavailable, ...)
    error_class: str
    detail: str
    retryable: bool
    item: Item | None


@attrs.frozen(kw_only=True)
class CompleteFrame:
    type: Literal["complete"] = "complete"
    run_id: str
    seq: int
    ts: str
    operation: str
    phase: str
    status: Literal["succeeded", "partial", "failed", "cancelled"]
    ok: bool
    counts: Counts
    duration_s: float
    message: str


WireFrame = StepFrame | ErrorFrame | CompleteFrame
_FRAME_CLASSES: dict[str, type[WireFrame]] = {
    "step": StepFrame,
    "error": ErrorFrame,
    "complete": CompleteFrame,
}


@attrs.frozen(slots=True)
class Frame:
    """One encoded frame: what the bus fans out, the run log keeps and the transports send (as TEXT)."""

    run_id: str
    seq: int
    type: FrameType
    data: bytes  # UTF-8 JSON, no trailing newline

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    @property
    def is_complete(self) -> bool:
        return self.type == "complete"

    def sse(self) -> bytes:
        """The frame as one Server-Sent Event (``id:`` is the seq, for ``Last-Event-ID`` resume)."""
        return b"id: %d\ndata: %s\n\n" % (self.seq, self.data)


# ---------------------------------------------------------------------------------------------- commands


@attrs.frozen(kw_only=True)
class SyncCommand:
    """Start (or join) a run of ``kind``."""

    kind: RunKind
    text: str = ""  # the classic text command it came from, if any


@attrs.frozen(kw_only=True)
class WatchCommand:
    """Stream a run (an id or ``latest``), replaying frames with ``seq > since`` first."""

    run_id: str
    since: int = 0


@attrs.frozen(kw_only=True)
class CancelCommand:
    run_id: str


@attrs.frozen(kw_only=True)
class AuthMessage:
    api_key: str


Command = SyncCommand | WatchCommand | CancelCommand | AuthMessage

VALID_COMMANDS_HELP = (
    "Valid commands: "
    + ", ".join(f'"{c}"' for c in TEXT_COMMANDS)
    + ', or JSON {"command": "sync", "kind": "full|nodes|vms"}'
    + ', {"command": "watch", "run_id": "<id>|latest", "since": N}'
    + ', {"command": "cancel", "run_id": "<id>"}'
)


@attrs.frozen(kw_only=True)
class Reply:
    """The answer to a JSON command (not a run frame: it has no seq). ``run`` is the run's summary."""

    type: Literal["reply"] = "reply"
    command: str
    ok: bool
    run: Mapping[str, Any] | None = None
    joined: bool | None = None
    error: str | None = None
    message: str = ""


# ------------------------------------------------------------------------------------------------- codec


def rfc3339(ts: float) -> str:
    """Unix seconds → ``2026-01-05T12:03:01.123456Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _omit_none(fn: Any) -> Any:
    def unstructure(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in fn(obj).items() if v is not None}

    return unstructure


def make_converter() -> cattrs.Converter:
    """The converter for every wire shape. Built per codec: there is no global converter."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_unstructure_hook(StepFrame, _omit_none(make_dict_unstructure_fn(StepFrame, conv)))
    conv.register_unstructure_hook(Reply, _omit_none(make_dict_unstructure_fn(Reply, conv)))
    return conv


class Codec:
    """Events → frames, bytes ↔ wire shapes, text → commands. Stateless apart from its converter."""

    def __init__(self, converter: cattrs.Converter | None = None) -> None:
        self._conv = converter or make_converter()

    # ---- outbound

    def wire(self, env: Envelope) -> WireFrame:
        """The wire shape of one envelope (exactly one frame per event)."""
        ev = env.event
        base: dict[str, Any] = {
            "run_id": env.run_id,
            "seq": env.seq,
            "ts": rfc3339(env.ts),
            "operation": ev.operation,
            "phase": ev.phase,
        }
        if isinstance(ev, RunCompleted):
            return CompleteFrame(
                **base,
                status=ev.status,
                ok=ev.ok,
                counts=ev.counts,
                duration_s=ev.duration_s,
                message=ev.message,
            )
        if isinstance(ev, ItemFailed):
            return ErrorFrame(
                **base,
                error=ev.error,
                error_class=ev.error_class,
                detail=ev.detail,
                retryable=ev.retryable,
                item=ev.item,
            )
        if isinstance(ev, RunStarted):
            return StepFrame(
                **base,
                status="started",
                message=ev.message,
                kind=ev.kind,
                dry_run=ev.dry_run,
                endpoints=ev.endpoints,
            )
        if isinstance(ev, PhaseStarted):
            return StepFrame(
                **base,
                status="started",
                message=ev.message or f"{ev.phase} started",
                progress=Progress(done=0, total=ev.total),
            )
        if isinstance(ev, ItemDone):
            return StepFrame(
                **base,
                status=ev.item.action or "done",
                message=ev.message,
                item=ev.item,
                progress=Progress(done=ev.done, total=ev.total),
                changes=tuple(Change(field=f, old=o, new=n) for f, o, n in ev.changes) or None,
            )
        if isinstance(ev, Note):
            progress = None
            if ev.done is not None and ev.total is not None:
                progress = Progress(done=ev.done, total=ev.total)
            return StepFrame(**base, status="info", message=ev.message, progress=progress)
        if isinstance(ev, PhaseCompleted):
            return StepFrame(
                **base,
                status="completed",
                message=ev.message or f"{ev.phase} completed",
                counts=ev.counts,
                duration_s=ev.duration_s,
            )
        raise TypeError(f"no frame for event {type(ev).__name__}")  # pragma: no cover - Event is closed

    def encode(self, env: Envelope) -> Frame:
        """Serialize once: the bytes every watcher of this run will receive."""
        wire = self.wire(env)
        return Frame(
            run_id=env.run_id, seq=env.seq, type=wire.type, data=_dumps(self._conv.unstructure(wire))
        )

    def encode_reply(self, reply: Reply) -> str:
        return _dumps(self._conv.unstructure(reply)).decode("utf-8")

    def frame_from_bytes(self, data: bytes | str) -> Frame:
        """A stored frame (history) back into a :class:`Frame`."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        obj = json.loads(raw)
        return Frame(run_id=obj["run_id"], seq=obj["seq"], type=obj["type"], data=raw)

    # ---- inbound (clients, tests, ``proxbox watch``)

    def decode(self, data: bytes | str) -> WireFrame:
        """Parse one frame received from the server into its wire shape."""
        obj = json.loads(data)
        if not isinstance(obj, dict) or obj.get("type") not in _FRAME_CLASSES:
            raise InvalidRequest(
                "not a step/error/complete frame", type=obj.get("type") if isinstance(obj, dict) else None
            )
        return self._conv.structure(obj, _FRAME_CLASSES[obj["type"]])

    def parse_command(self, text: str) -> Command:
        """A client message → a command. Raises InvalidRequest naming the command and listing valid ones."""
        stripped = text.strip()
        if stripped in TEXT_COMMANDS:
            return SyncCommand(kind=TEXT_COMMANDS[stripped], text=stripped)
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                return self._parse_json_command(obj, stripped)
        raise _invalid(stripped)

    def _parse_json_command(self, obj: dict[str, Any], text: str) -> Command:
        if set(obj) == {"api_key"} and isinstance(obj["api_key"], str):
            return AuthMessage(api_key=obj["api_key"])
        name = obj.get("command")
        cls: type[Command] | None = {"sync": SyncCommand, "watch": WatchCommand, "cancel": CancelCommand}.get(
            name if isinstance(name, str) else ""
        )
        if cls is None:
            raise _invalid(text)
        args = {k: v for k, v in obj.items() if k != "command"}
        if cls is SyncCommand and args.get("kind") not in RUN_KINDS:
            raise _invalid(text, why=f"kind must be one of {', '.join(RUN_KINDS)}")
        if (
            cls is WatchCommand
            and "since" in args
            and (isinstance(args["since"], bool) or not isinstance(args["since"], int) or args["since"] < 0)
        ):
            raise _invalid(text, why="since must be a whole number >= 0")
        if "run_id" in args and not isinstance(args["run_id"], str):
            raise _invalid(text, why="run_id must be a string")
        try:
            return self._conv.structure(args, cls)
        except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
            raise _invalid(text, why=_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        msgs = cattrs.transform_error(exc)
        return msgs[0] if msgs else str(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _invalid(text: str, *, why: str = "") -> InvalidRequest:
    shown = text if len(text) <= 80 else text[:77] + "..."
    reason = f" ({why})" if why else ""
    return InvalidRequest(f"Invalid command {shown!r}{reason}. {VALID_COMMANDS_HELP}", command=shown)


def make_codec() -> Codec:
    return Codec(make_converter())
