"""systemd service notifications (``Type=notify``) over the ``$NOTIFY_SOCKET`` datagram socket, no dependency.

The protocol (sd_notify(3)): newline-separated ``KEY=VALUE`` assignments in one datagram sent to the
AF_UNIX socket named by ``NOTIFY_SOCKET``; a name starting with ``@`` is in the abstract namespace (the ``@``
becomes a NUL byte). Without ``NOTIFY_SOCKET`` (not started by systemd) every call is a no-op.

- :class:`Notifier`: the socket. ``ready()``, ``status(text)``, ``stopping()``, ``watchdog()``,
  ``extend_timeout(seconds)``. Sending never raises: a notification is best effort and must not stop the
  server.
- :func:`watchdog_interval`: ``WatchdogSec=`` as seen by the service (``WATCHDOG_USEC`` / ``WATCHDOG_PID``).
- :class:`ServiceNotifier`: the server integration. ``READY=1`` once the socket listens (settings were
  validated before the app was built), ``STATUS=`` lines following the runs (it is a
  :class:`~proxbox.runs.RunObserver`), ``WATCHDOG=1`` every half ``WatchdogSec`` while the event loop is
  alive, ``STOPPING=1`` when the drain starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from typing import Any

from proxbox.logsetup import get_logger
from proxbox.runs import Run, RunObserver

log = get_logger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"


def socket_address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` → the address for ``sendto``: ``@name`` is abstract (leading NUL)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode("utf-8")
    return name


def message(**fields: Any) -> bytes:
    """``READY=1\\nSTATUS=...`` from keyword arguments (keys upper-cased; newlines in values flattened)."""
    lines = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        text = str(value).replace("\n", " ")
        lines.append(f"{key.upper()}={text}")
    return "\n".join(lines).encode("utf-8")


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings systemd expects (``WatchdogSec=``), or None if not enabled.

    ``WATCHDOG_PID``, when set, must be this process: a child that inherited the environment stays quiet."""
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(raw) / 1_000_000


class Notifier:
    """The notification socket (or nothing, when not under systemd)."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self.sent = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get(SOCKET_ENV))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, data: bytes) -> bool:
        """One datagram. Returns whether it was sent; never raises."""
        if self.address is None or not data:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, socket_address(self.address))
        except OSError as exc:
            log.warning("sdnotify.send_failed", socket=self.address, error=exc.strerror or str(exc))
            return False
        self.sent += 1
        return True

    def notify(self, **fields: Any) -> bool:
        return self.send(message(**fields))

    def ready(self, status: str | None = None) -> bool:
        return self.notify(ready=1, status=status, mainpid=os.getpid())

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(stopping=1, status=status)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start-up or shutdown step (``EXTEND_TIMEOUT_USEC``)."""
        return self.notify(extend_timeout_usec=int(seconds * 1_000_000))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _listening(app: Any) -> str:
    if app is None:
        return ""
    from proxbox.web.keys import SETTINGS  # the web package imports the run manager, not the reverse

    server = app[SETTINGS].server
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{host}:{server.port}"


def describe(run: Run) -> str:
    """A run as a one-line status: ``full sync 20260105T120301Z-a1b2c3 running``."""
    return f"{run.kind} sync {run.id}"


class ServiceNotifier(RunObserver):
    """Wires a :class:`Notifier` to the server: pass ``ready``/``stopping`` as ``serve()``'s ``on_ready`` and
    ``on_stopping`` hooks and the notifier itself as a run observer."""

    def __init__(self, notifier: Notifier | None = None, *, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.notifier = notifier or Notifier.from_env(env)
        self.watchdog_s = watchdog_interval(env)
        self._task: asyncio.Task[None] | None = None
        self._listening = ""
        self._last = ""
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    # -- serve() hooks

    def ready(self, app: Any = None) -> None:
        """The socket listens and the settings were valid: READY=1, and start the watchdog pings."""
        self._listening = _listening(app)
        self.notifier.ready(self._idle())
        if self.watchdog_s and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pings(), name="proxbox-sd-watchdog")
        log.debug("sdnotify.ready", notify=self.enabled, watchdog_s=self.watchdog_s)

    def stopping(self, app: Any = None) -> None:
        """The drain begins. The watchdog keeps pinging: a long drain is not a hang."""
        self._stopping = True
        self.notifier.stopping("draining: finishing the current run, closing watchers")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.notifier.close()

    async def _pings(self) -> None:
        assert self.watchdog_s
        # half the timeout, as sd_watchdog_enabled(3) recommends; a blocked loop misses pings and is restarted
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.watchdog_s / 2)

    def _idle(self) -> str:
        text = "idle"
        if self._last:
            text += f"; last: {self._last}"
        if self._listening:
            text = f"listening on {self._listening}; {text}"
        return text

    # -- RunObserver

    def run_queued(self, run: Run) -> None:
        pass

    def run_started(self, run: Run) -> None:
        if not self._stopping:
            self.notifier.status(f"running {describe(run)}")

    def run_finished(self, run: Run) -> None:
        counts = run.counts
        self._last = (
            f"{describe(run)} {run.status or 'finished'}"
            f" (created {counts.created}, updated {counts.updated}, deleted {counts.deleted},"
            f" failed {counts.failed})"
        )
        if self._stopping:
            self.notifier.status(f"draining; last: {self._last}")
        else:
            self.notifier.status(self._idle())
