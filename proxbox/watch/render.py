"""Showing a run in a terminal: live progress bars on a TTY (rich), plain lines otherwise.

A renderer is told about each new frame (after :class:`~proxbox.watch.view.RunView` accepted it), about
connection notices (reconnecting, resumed) and about the end. It never sees a frame twice.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from proxbox.watch.view import Frame, RunView, format_counts, format_error, format_step, format_summary


class Renderer(Protocol):
    def start(self, target: str) -> None: ...

    def frame(self, view: RunView, frame: Frame) -> None: ...

    def notice(self, text: str) -> None: ...

    def finish(self, view: RunView) -> None: ...


class PlainRenderer:
    """One line per event worth a log line: run and phase starts and ends, changes, notes, errors, summary."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False) -> None:
        self._out = stream or sys.stdout
        self._verbose = verbose

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def start(self, target: str) -> None:
        self._print(f"watching {target}")

    def frame(self, view: RunView, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "error":
            self._print("ERROR " + format_error(frame))
        elif kind == "step":
            line = format_step(frame, verbose=self._verbose)
            if line is not None:
                self._print(line)

    def notice(self, text: str) -> None:
        self._print(f"-- {text}")

    def finish(self, view: RunView) -> None:
        for line in format_summary(view):
            self._print(line)


_STATUS_STYLE = {
    "succeeded": "bold green",
    "partial": "bold yellow",
    "failed": "bold red",
    "cancelled": "bold yellow",
}


class RichRenderer:
    """Per-phase progress bars; errors and notes scroll above them as they happen; a summary at the end."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self.console = console or Console()
        self._verbose = verbose
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("[bold]{task.description:<11}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}", style="dim"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            expand=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started = False

    def _ensure_started(self) -> None:
        if not self._started:
            self._progress.start()
            self._started = True

    def start(self, target: str) -> None:
        self.console.print(Text(f"watching {target}", style="dim"))

    def frame(self, view: RunView, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "error":
            self._progress.console.print(Text("✗ " + format_error(frame), style="red"))
            return
        if kind == "complete":
            return
        phase = str(frame.get("phase") or "")
        status = frame.get("status")
        if phase == "start" and status == "started":
            line = format_step(frame)
            if line:
                self._progress.console.print(Text(line, style="bold"))
            return
        if status == "info" and (self._verbose or not frame.get("progress")):
            self._progress.console.print(Text(f"  {phase}: {frame.get('message', '')}", style="cyan"))
        if status == "info" and not frame.get("progress"):
            return
        state = view.phases.get(phase)
        if state is None:
            return
        self._ensure_started()
        task = self._tasks.get(phase)
        if task is None or status == "started":  # a phase that starts again gets a new bar
            task = self._progress.add_task(phase, total=state.total or None, counts="")
            self._tasks[phase] = task
        if self._verbose and status not in ("started", "completed", "unchanged", "info"):
            self._progress.console.print(Text(format_step(frame, verbose=True) or "", style="dim"))
        if status == "completed":
            total = state.total or max(state.done, 1)
            self._progress.update(task, total=total, completed=total, counts=format_counts(state.counts))
        else:
            self._progress.update(task, total=state.total or None, completed=state.done)

    def notice(self, text: str) -> None:
        self._progress.console.print(Text(f"⟳ {text}", style="yellow"))

    def finish(self, view: RunView) -> None:
        if self._started:
            self._progress.stop()
            self._started = False
        lines = format_summary(view)
        style = _STATUS_STYLE.get(view.status or "", "bold red")
        self.console.print(Text(lines[0], style=style))
        for line in lines[1:]:
            self.console.print(line)


def make_renderer(*, plain: bool | None = None, stream: TextIO | None = None, verbose: bool = False) -> Any:
    """Rich bars on a terminal, plain lines when ``plain`` or when the stream is not a TTY."""
    stream = stream or sys.stdout
    if plain is None:
        plain = not stream.isatty()
    if plain:
        return PlainRenderer(stream, verbose=verbose)
    return RichRenderer(Console(file=stream), verbose=verbose)
