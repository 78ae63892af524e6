"""What a watcher knows about a run, built from its frames: pure state and formatting, no I/O.

:class:`RunView` accepts decoded frames (the JSON objects of ``docs/protocol.md``), keeps each ``seq`` once
(frames replayed after a reconnect are ignored), notices gaps (frames trimmed from the server's log), and
tracks the phases, the errors and the final ``complete`` frame. The ``format_*`` functions turn frames into
the
lines both renderers print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

EXIT_SUCCEEDED = 0
EXIT_NOT_SUCCEEDED = 1  # partial, failed, cancelled, or the run could not be followed
EXIT_USAGE = 2

COUNT_KEYS = ("created", "updated", "unchanged", "deleted", "orphaned", "failed")

Frame = Mapping[str, Any]


def is_frame(obj: Any) -> bool:
    """A run frame (step / error / complete with a seq), not a reply or a welcome text."""
    return (
        isinstance(obj, Mapping)
        and obj.get("type") in ("step", "error", "complete")
        and isinstance(obj.get("seq"), int)
        and isinstance(obj.get("run_id"), str)
    )


def exit_code(status: str | None) -> int:
    return EXIT_SUCCEEDED if status == "succeeded" else EXIT_NOT_SUCCEEDED


@attrs.define
class PhaseState:
    name: str
    total: int = 0
    done: int = 0
    finished: bool = False
    errors: int = 0
    counts: dict[str, int] = attrs.Factory(dict)
    duration_s: float | None = None
    message: str = ""


@attrs.define
class RunView:
    """A run as seen through its frames. :meth:`accept` returns False for a frame already seen.

    ``last_seq`` starts at the ``since`` the watcher asked for: a first frame after it reveals a gap."""

    run_id: str | None = None
    kind: str | None = None
    operation: str | None = None
    last_seq: int = 0
    phases: dict[str, PhaseState] = attrs.Factory(dict)  # in the order they started
    errors: list[Frame] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    gaps: list[tuple[int, int]] = attrs.Factory(list)  # (first missing seq, last missing seq)
    final: Frame | None = None
    frames: int = 0  # distinct frames accepted

    @property
    def complete(self) -> bool:
        return self.final is not None

    @property
    def status(self) -> str | None:
        return None if self.final is None else str(self.final.get("status"))

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)

    @property
    def current_phase(self) -> PhaseState | None:
        for phase in reversed(self.phases.values()):
            if not phase.finished:
                return phase
        return None

    def accept(self, frame: Frame) -> bool:
        """Apply one frame; False (and nothing changes) if its seq was already seen or it is another run's."""
        seq = frame.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return False
        run_id = frame.get("run_id")
        if self.run_id is None:
            self.run_id = run_id
        elif run_id != self.run_id:
            return False
        if seq > self.last_seq + 1:
            self.gaps.append((self.last_seq + 1, seq - 1))
        self.last_seq = seq
        self.frames += 1
        self.operation = frame.get("operation") or self.operation
        kind = frame.get("type")
        if kind == "complete":
            self.final = frame
            for phase in self.phases.values():
                phase.finished = True
        elif kind == "error":
            self.errors.append(frame)
            name = str(frame.get("phase") or "")
            if name in self.phases:
                self.phases[name].errors += 1
        else:
            self._step(frame)
        return True

    def _step(self, frame: Frame) -> None:
        name = str(frame.get("phase") or "")
        status = frame.get("status")
        if name == "start" and status == "started":
            self.kind = frame.get("kind") or self.kind
            return
        progress = frame.get("progress")
        if status == "started" and isinstance(progress, Mapping):
            self.phases[name] = PhaseState(name=name, total=int(progress.get("total") or 0))
            return
        phase = self.phases.get(name)
        if phase is None and name not in ("start", "finish"):
            phase = self.phases[name] = PhaseState(name=name)
        if status == "info":
            self.notes.append(str(frame.get("message") or ""))
        if phase is None:
            return
        if isinstance(progress, Mapping) and status != "started":
            phase.done = int(progress.get("done") or 0)
            phase.total = max(phase.total, int(progress.get("total") or 0))
        if status == "completed":
            phase.finished = True
            phase.counts = {k: int(v) for k, v in (frame.get("counts") or {}).items() if v}
            phase.duration_s = frame.get("duration_s")
            phase.message = str(frame.get("message") or "")
            if phase.total and phase.done < phase.total:
                phase.done = phase.total


# ---------------------------------------------------------------------------------------------- format


def format_counts(counts: Mapping[str, Any] | None) -> str:
    """``created 3, updated 1, failed 2`` (zeros left out; ``nothing changed`` when all are zero)."""
    parts = [f"{k} {counts[k]}" for k in COUNT_KEYS if counts and counts.get(k)]
    return ", ".join(parts) if parts else "nothing changed"


def format_item(item: Mapping[str, Any] | None) -> str:
    if not item:
        return ""
    text = f"{item.get('kind', 'object')} {item.get('name', '')}".strip()
    where = [str(item[k]) for k in ("cluster",) if item.get(k)]
    if item.get("vmid") is not None:
        where.append(f"vmid {item['vmid']}")
    return f"{text} ({', '.join(where)})" if where else text


def format_error(frame: Frame) -> str:
    """``[creation] netbox_rejected: virtual_machine web-1 (lab-a, vmid 101): name exists (retryable)``."""
    item = format_item(frame.get("item"))
    detail = str(frame.get("detail") or "").strip()
    text = f"[{frame.get('phase', '?')}] {frame.get('error', 'error')}"
    if item:
        text += f": {item}"
    if detail:
        text += f": {detail}"
    if frame.get("retryable"):
        text += " (retryable)"
    return text


def format_step(frame: Frame, *, verbose: bool = False) -> str | None:
    """The plain line for a step frame, or None when plain output skips it (items, unless ``verbose``)."""
    phase = frame.get("phase", "?")
    status = frame.get("status")
    progress = frame.get("progress") or {}
    if phase == "start" and status == "started":
        endpoints = frame.get("endpoints") or ()
        scope = f" on {', '.join(endpoints)}" if endpoints else ""
        dry = " (dry run)" if frame.get("dry_run") else ""
        return f"run {frame.get('run_id')}: {frame.get('kind', '?')} sync started{dry}{scope}"
    if status == "started":
        total = progress.get("total")
        return f"[{phase}] started" + (f" ({total} items)" if total else "")
    if status == "completed":
        duration = frame.get("duration_s")
        took = f" in {duration:.1f}s" if isinstance(duration, int | float) else ""
        return f"[{phase}] completed{took}: {format_counts(frame.get('counts'))}"
    if status == "info":
        if progress and not verbose:  # per-object progress notes ("qemu 101 web on pve1"): the bar's job
            return None
        return f"[{phase}] {frame.get('message', '')}"
    # one item: a log keeps the changes (created, updated, deleted...), not the objects already in sync
    if not verbose and status in ("unchanged", "skipped"):
        return None
    done, total = progress.get("done"), progress.get("total")
    where = f" {done}/{total}" if done is not None and total else ""
    return f"[{phase}]{where} {status} {format_item(frame.get('item'))}".rstrip()


def format_summary(view: RunView) -> list[str]:
    """The final lines: outcome, counts, duration, errors grouped by code."""
    final = view.final
    if final is None:
        return [f"run {view.run_id or '?'}: no final frame received"]
    duration = final.get("duration_s")
    took = f" in {duration:.1f}s" if isinstance(duration, int | float) else ""
    lines = [
        f"run {final.get('run_id', view.run_id)} {final.get('status')}{took}:"
        f" {format_counts(final.get('counts'))}"
    ]
    message = str(final.get("message") or "")
    if message and message != f"{view.kind} sync {final.get('status')}":  # not the default: say it
        lines.append(f"  {message}")
    if view.errors:
        by_code: dict[str, int] = {}
        for err in view.errors:
            code = str(err.get("error") or "error")
            by_code[code] = by_code.get(code, 0) + 1
        lines.append("  errors: " + ", ".join(f"{code} x{n}" for code, n in sorted(by_code.items())))
    if view.gaps:
        missing = sum(b - a + 1 for a, b in view.gaps)
        lines.append(f"  {missing} frame(s) were no longer in the server's log (server.event_log_limit)")
    return lines
