"""sd_notify messages, watchdog settings and the server's status lines (no sockets: a recording notifier)."""

from __future__ import annotations

import os

import pytest

from proxbox.bus import EventBus
from proxbox.events import Counts, RunCompleted
from proxbox.frames import make_codec
from proxbox.runs import Run
from proxbox.sdnotify import Notifier, ServiceNotifier, message, socket_address, watchdog_interval


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__("@recorder")
        self.messages: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.messages.append(data)
        return True

    @property
    def fields(self) -> list[dict[str, str]]:
        return [dict(line.split("=", 1) for line in m.decode().splitlines()) for m in self.messages]


def make_run(run_id: str = "20260105T120301Z-a1b2c3", kind: str = "full") -> Run:
    return Run(run_id=run_id, kind=kind, trigger="api", bus=EventBus(make_codec().encode), log_limit=100)  # type: ignore[arg-type]


def test_abstract_socket_names_start_with_a_nul_byte() -> None:
    assert socket_address("@systemd/notify") == b"\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_message_is_newline_separated_assignments() -> None:
    assert message(ready=1, status="listening") == b"READY=1\nSTATUS=listening"
    assert message(stopping=True, status=None) == b"STOPPING=1"
    assert message(status="two\nlines") == b"STATUS=two lines"  # a newline would start a new assignment


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ],
)
def test_watchdog_interval_follows_watchdog_usec_and_pid(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.sent == 0


def test_ready_reports_idle_then_status_follows_the_runs() -> None:
    rec = Recorder()
    sd = ServiceNotifier(rec, env={})
    sd.ready()
    assert rec.fields[-1]["READY"] == "1"
    assert rec.fields[-1]["STATUS"] == "idle"

    run = make_run()
    sd.run_started(run)
    assert rec.fields[-1] == {"STATUS": "running full sync 20260105T120301Z-a1b2c3"}

    run.emit(
        RunCompleted(
            operation="full_sync", status="partial", counts=Counts(created=3, failed=1), duration_s=1.0
        )
    )
    sd.run_finished(run)
    assert rec.fields[-1] == {
        "STATUS": "idle; last: full sync 20260105T120301Z-a1b2c3 partial"
        " (created 3, updated 0, deleted 0, failed 1)"
    }


def test_stopping_is_announced_and_later_statuses_say_draining() -> None:
    rec = Recorder()
    sd = ServiceNotifier(rec, env={})
    run = make_run(kind="vms")
    sd.run_started(run)
    sd.stopping()
    assert rec.fields[-1]["STOPPING"] == "1"
    run.emit(RunCompleted(operation="vm_sync", status="succeeded", counts=Counts(), duration_s=0.1))
    sd.run_finished(run)
    assert rec.fields[-1]["STATUS"].startswith("draining; last: vms sync")
