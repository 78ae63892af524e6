"""``proxbox sync [full|nodes|vms] [--dry-run] [--plan-out FILE|-]``: one sync run from the command line.

Progress bars on a terminal (rich), structured log lines otherwise. Ctrl-C asks the run to cancel (a second
Ctrl-C interrupts). Exit status: 0 only when the run succeeded (cli.py maps the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any, TextIO

from proxbox.config import load_settings
from proxbox.events import (
    RUN_KINDS,
    Event,
    ItemDone,
    ItemFailed,
    Note,
    PhaseCompleted,
    PhaseStarted,
    RunCompleted,
    RunStarted,
)
from proxbox.heap import freeze_startup
from proxbox.jobs import ListReporter, execute
from proxbox.logsetup import configure_logging, get_logger
from proxbox.sync.engine import SyncEngine
from proxbox.sync.plan import Plan

log = get_logger("proxbox.sync")

HELP = "sync Proxmox VE into NetBox once: full, nodes or vms (--dry-run: plan only)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", nargs="?", choices=RUN_KINDS, default="full", help="what to sync (default: full)"
    )
    parser.add_argument("--dry-run", action="store_true", help="compute the plan, write nothing to NetBox")
    parser.add_argument("--plan-out", metavar="FILE", help="write the plan as JSON to FILE ('-': stdout)")
    parser.add_argument(
        "--progress",
        choices=["auto", "bars", "log"],
        default="auto",
        help="progress bars on a terminal, log lines otherwise (default: auto)",
    )


def write_plan(plan: Plan, target: str, stdout: TextIO | None = None) -> None:
    text = json.dumps(plan.as_json(), indent=2) + "\n"
    if target == "-":
        (stdout or sys.stdout).write(text)
    else:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)


class LogProgress:
    """Structured log lines: phases and writes at info, unchanged items and discovery steps at debug."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, PhaseStarted):
            log.info("sync.phase_started", phase=event.phase, total=event.total, message=event.message)
        elif isinstance(event, PhaseCompleted):
            log.info(
                "sync.phase_completed", phase=event.phase, duration_s=event.duration_s, message=event.message
            )
        elif isinstance(event, ItemDone):
            item = event.item
            level = log.debug if item.action in ("unchanged", None) else log.info
            level(
                "sync.item",
                action=item.action,
                kind=item.kind,
                name=item.name,
                cluster=item.cluster,
                vmid=item.vmid,
                netbox_id=item.netbox_id,
                done=event.done,
                total=event.total,
                changes=[f"{f}: {o!r} -> {n!r}" for f, o, n in event.changes] or None,
            )
        elif isinstance(event, ItemFailed):
            failed = event.item
            log.warning(
                "sync.item_failed",
                phase=event.phase,
                error=event.error,
                detail=event.detail,
                kind=failed.kind if failed else None,
                name=failed.name if failed else None,
                cluster=failed.cluster if failed else None,
                vmid=failed.vmid if failed else None,
            )
        elif isinstance(event, Note):
            (log.debug if event.phase == "discovery" else log.info)(
                "sync.note", phase=event.phase, message=event.message
            )
        elif isinstance(event, RunStarted):
            log.info("sync.run_started", kind=event.kind, dry_run=event.dry_run)
        elif isinstance(event, RunCompleted):
            log.info(
                "sync.run_completed", status=event.status, duration_s=event.duration_s, message=event.message
            )

    def close(self) -> None:
        pass


class BarProgress:
    """rich progress bars: one per phase, failures printed above them as they happen."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream)
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def _task(self, phase: str, total: int | None) -> Any:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total or None, info="")
        elif total:
            self.progress.update(self.tasks[phase], total=total)
        return self.tasks[phase]

    def __call__(self, event: Event) -> None:
        if isinstance(event, PhaseStarted):
            self._task(event.phase, event.total if event.phase != "discovery" else None)
        elif isinstance(event, PhaseCompleted):
            task = self._task(event.phase, None)
            total = self.progress.tasks[task].total
            self.progress.update(task, completed=total or 1, total=total or 1, info=event.message[:60])
        elif isinstance(event, ItemDone):
            task = self._task(event.phase, event.total)
            self.progress.update(
                task, completed=event.done, info=f"{event.item.action} {event.item.name}"[:40]
            )
        elif isinstance(event, Note) and event.done is not None:
            self.progress.update(
                self._task(event.phase, event.total), completed=event.done, info=event.message[:40]
            )
        elif isinstance(event, ItemFailed):
            where = f"{event.item.kind} {event.item.name}: " if event.item else ""
            self.console.print(
                f"[red]✗[/red] {event.phase}: {where}{event.detail}", markup=True, highlight=False
            )
        elif isinstance(event, RunCompleted):
            self.progress.stop()
            color = (
                "green" if event.status == "succeeded" else "yellow" if event.status == "partial" else "red"
            )
            self.console.print(f"[{color}]{event.message}[/{color}] ({event.duration_s:.1f} s)")

    def close(self) -> None:
        self.progress.stop()


def run(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None), os.environ)
    plan_to_stdout = args.plan_out == "-"
    stream = sys.stderr if plan_to_stdout else sys.stdout
    configure_logging(
        getattr(args, "log_level", None) or settings.logging.level,
        getattr(args, "log_format", None) or settings.logging.format,
        stream=stream,
    )
    bars = args.progress == "bars" or (args.progress == "auto" and stream.isatty())
    progress: LogProgress | BarProgress = BarProgress(stream) if bars else LogProgress()
    plans: list[Plan] = []
    engine = SyncEngine(settings, dry_run=args.dry_run, on_plan=plans.append)
    reporter = ListReporter(run_id="cli", on_event=progress)
    freeze_startup()  # what is loaded now lives until exit: out of every GC pass of the run (proxbox.heap)
    try:
        final = asyncio.run(_main(engine, args.kind, reporter, args.dry_run))
    except asyncio.CancelledError:
        return 130
    finally:
        progress.close()
    plan = plans[-1] if plans else engine.last_plan
    if args.plan_out and plan is not None:
        write_plan(plan, args.plan_out)
    return 0 if final.status == "succeeded" else 1


async def _main(engine: SyncEngine, kind: Any, reporter: ListReporter, dry_run: bool) -> RunCompleted:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_sigint() -> None:
        if reporter.cancel_requested and task is not None:
            task.cancel()  # second Ctrl-C: stop now
        else:
            log.warning("sync.cancel_requested", hint="press Ctrl-C again to interrupt")
            reporter.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / platform
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    endpoints = tuple(px.label for px in engine.settings.proxmox)
    try:
        return await execute(engine.run, kind, reporter, dry_run=dry_run, endpoints=endpoints)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
