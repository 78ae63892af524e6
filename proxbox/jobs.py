"""Running one sync job and framing it: the single place that emits RunStarted and RunCompleted.

A *job* is ``async (kind, reporter) -> RunOutcome`` (the sync engine's ``run``). :func:`execute` wraps it so
that every run, whoever starts it (the server's RunManager, ``proxbox sync``, a test), begins with exactly one
``RunStarted`` and ends with exactly one ``RunCompleted`` whose counts are the job's, even when the job raises
or is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import attrs

from proxbox.errors import ProxboxError
from proxbox.events import (
    OPERATION_OF_KIND,
    Counts,
    Event,
    ItemFailed,
    Reporter,
    RunCompleted,
    RunKind,
    RunOutcome,
    RunStarted,
)
from proxbox.logsetup import get_logger

Job = Callable[[RunKind, Reporter], Awaitable[RunOutcome]]

log = get_logger(__name__)


async def execute(
    job: Job,
    kind: RunKind,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    endpoints: tuple[str, ...] = (),
) -> RunCompleted:
    operation = OPERATION_OF_KIND[kind]
    started = time.monotonic()
    reporter.emit(
        RunStarted(
            operation=operation,
            kind=kind,
            dry_run=dry_run,
            endpoints=endpoints,
            message=f"{'dry run of ' if dry_run else ''}{kind} sync started",
        )
    )
    try:
        outcome = await job(kind, reporter)
    except asyncio.CancelledError:
        final = RunCompleted(
            operation=operation,
            status="cancelled",
            counts=Counts(),
            duration_s=round(time.monotonic() - started, 3),
            message="run cancelled",
        )
        reporter.emit(final)
        raise
    except (
        Exception
    ) as exc:  # the job's own bug or an unexpected library error: report, never crash the server
        log.exception("run.job_crashed", run_id=reporter.run_id, kind=kind)
        code = exc.code if isinstance(exc, ProxboxError) else "internal_error"
        retryable = exc.retryable if isinstance(exc, ProxboxError) else False
        reporter.emit(
            ItemFailed(
                operation=operation,
                phase="finish",
                error=code,
                error_class=type(exc).__name__,
                detail=str(exc) or repr(exc),
                retryable=retryable,
            )
        )
        outcome = RunOutcome(status="failed", counts=Counts(), message=f"run failed: {exc}")
    final = RunCompleted(
        operation=operation,
        status=outcome.status,
        counts=outcome.counts,
        duration_s=round(time.monotonic() - started, 3),
        message=outcome.message or f"{kind} sync {outcome.status}",
    )
    reporter.emit(final)
    return final


@attrs.define
class ListReporter:
    """A reporter that keeps every event in memory (CLI runs, tests). Cancellation via :meth:`cancel`."""

    run_id: str = "local"
    events: list[Event] = attrs.Factory(list)
    on_event: Callable[[Event], None] | None = None
    _cancel: bool = False

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    def cancel(self) -> None:
        self._cancel = True

    def emit(self, event: Event) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
