"""Connected watchers: one WebSocket or SSE client streaming one or more runs, and the registry of them all.

A stream sends a :class:`~proxbox.runs.Watch`'s backlog, then its live frames, skipping any ``seq`` it has
already sent, until the run's ``complete``. Frames go out as TEXT, the same bytes for every watcher. If the
bus drops the subscription (the client fell ``subscriber_buffer`` frames behind), the stream is stopped and
the socket closed with 1013 and the reason; a close the client does not answer within ``close_timeout_s``
cuts the TCP connection, so a client that never reads cannot hold server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.client_exceptions import ClientConnectionResetError

from proxbox.bus import SubscriberDropped, Subscription
from proxbox.frames import Frame
from proxbox.logsetup import get_logger
from proxbox.runs import RunManager, Watch

log = get_logger(__name__)

GOING_AWAY = int(WSCloseCode.GOING_AWAY)  # 1001: server shutting down
TRY_AGAIN_LATER = int(WSCloseCode.TRY_AGAIN_LATER)  # 1013: the watcher fell behind
_SEND_ERRORS = (ConnectionError, ClientConnectionResetError, RuntimeError)


def _reason(text: str) -> bytes:
    """A close reason: at most 123 bytes of UTF-8."""
    data = text.encode("utf-8")
    if len(data) <= 123:
        return data
    return data[:120].decode("utf-8", "ignore").encode("utf-8") + b"..."


def limit_send_buffer(request: web.Request, nbytes: int) -> None:
    """Cap the kernel send buffer of a streaming client's socket (``server.send_buffer_bytes``).

    Without a cap, Linux autotunes it up to megabytes: a client that stops reading would hold that much
    kernel memory and take that long to be noticed (and dropped) by the bus."""
    if nbytes <= 0 or request.transport is None:
        return
    sock = request.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)


class Watcher(Protocol):
    @property
    def streaming(self) -> bool: ...

    async def close(self, code: int, reason: str) -> None: ...


class Watchers:
    """Every connected watcher, so shutdown can flush and close them."""

    def __init__(self) -> None:
        self._all: set[Watcher] = set()
        self.draining = False

    def add(self, w: Watcher) -> None:
        self._all.add(w)

    def discard(self, w: Watcher) -> None:
        self._all.discard(w)

    def __len__(self) -> int:
        return len(self._all)

    async def flush(self, seconds: float) -> None:
        """Wait (bounded) until no watcher is still sending a run's frames."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while any(w.streaming for w in self._all) and loop.time() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.05)

    async def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        watchers = list(self._all)
        if watchers:
            log.info("watchers.closing", count=len(watchers), code=code)
            await asyncio.gather(*(w.close(code, reason) for w in watchers), return_exceptions=True)


class WsConnection:
    """One WebSocket client: its socket, its streams (one task per watched run) and its closing."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        runs: RunManager,
        registry: Watchers,
        *,
        close_timeout_s: float,
    ) -> None:
        self.request = request
        self.ws = ws
        self._runs = runs
        self._registry = registry
        self._transport = request.transport
        self._close_timeout_s = close_timeout_s
        self._streams: dict[str, asyncio.Task[None]] = {}  # run id -> the task sending its frames
        self._workers: set[asyncio.Task[Any]] = set()  # other per-connection work (the counter)
        self._tasks: set[asyncio.Task[Any]] = set()  # closes in progress
        self._closing = False
        self.peer = request.remote

    @property
    def streaming(self) -> bool:
        return any(not t.done() for t in self._streams.values())

    @property
    def closing(self) -> bool:
        return self._closing or self.ws.closed

    def watching(self, run_id: str) -> bool:
        task = self._streams.get(run_id)
        return task is not None and not task.done()

    # -- sending

    async def send_text(self, text: str) -> None:
        await self.ws.send_frame(text.encode("utf-8"), WSMsgType.TEXT)

    async def send(self, frame: Frame) -> None:
        await self.ws.send_frame(frame.data, WSMsgType.TEXT)

    # -- streams

    def on_drop(self, sub: Subscription, reason: str) -> None:
        """Bus callback (scheduled by the loop, never inside publish): cut this watcher off with 1013."""
        task = self._streams.get(sub.topic)
        if task is not None:
            task.cancel()
        self.spawn(self.close(TRY_AGAIN_LATER, f"too slow: {reason}; resume with since=<last seq>"))

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_worker(self, coro: Awaitable[Any]) -> None:
        """Background work that ends with the connection (cancelled on close)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    def start_stream(self, watch: Watch, since: int, *, close_when_complete: bool) -> None:
        task = asyncio.create_task(self._stream(watch, since, close_when_complete))
        self._streams[watch.run_id] = task

    async def _stream(self, watch: Watch, since: int, close_when_complete: bool) -> None:
        last = since
        complete = False
        try:
            for frame in watch.backlog:
                await self.send(frame)
                last = frame.seq
                complete = frame.is_complete
            sub = watch.subscription
            if sub is not None and not complete:
                while not complete:
                    batch = await sub.get()
                    if not batch:  # the run ended and everything was delivered
                        break
                    for frame in batch:
                        if frame.seq <= last:
                            continue
                        await self.send(frame)
                        last = frame.seq
                        complete = frame.is_complete
        except SubscriberDropped:
            return  # on_drop closes the socket with 1013
        except _SEND_ERRORS:
            return  # the client went away
        finally:
            self._runs.detach(watch)
        if close_when_complete and not self.closing:
            code = GOING_AWAY if self._registry.draining else int(WSCloseCode.OK)
            await self.close(code, "server shutting down" if code == GOING_AWAY else "run complete")

    # -- closing

    async def close(self, code: int, reason: str) -> None:
        """Close once: stop the streams, send the close frame, cut the socket if the client stays silent."""
        if self._closing:
            return
        self._closing = True
        me = asyncio.current_task()
        for task in (*self._streams.values(), *self._workers):
            if task is not me:
                task.cancel()
        if not self.ws.closed:
            level = log.debug if code in (1000, GOING_AWAY) else log.info  # a thousand watchers close at once
            level("ws.closing", peer=self.peer, code=code, reason=reason)
            try:
                await asyncio.wait_for(
                    self.ws.close(code=code, message=_reason(reason)), self._close_timeout_s
                )
            except (TimeoutError, *_SEND_ERRORS):
                # the client did not take the close frame (or answer it) in time: cut the connection, so a
                # client that never reads cannot keep the frames buffered for it alive
                if self._transport is not None:
                    self._transport.abort()

    async def finish(self) -> None:
        """The handler is returning: stop every stream and background task of this connection."""
        for task in list(self._workers):
            task.cancel()
        if not self._closing:  # the client left (or broke the protocol): its streams have no one to serve
            for task in self._streams.values():
                task.cancel()
        pending = [t for t in (*self._streams.values(), *self._workers, *self._tasks) if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._close_timeout_s + 1)


class SseConnection:
    """One Server-Sent Events client (``GET /runs/{id}/events``)."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self._transport = request.transport
        self._sub: Subscription | None = None
        self._done = False
        self.dropped: str | None = None

    @property
    def streaming(self) -> bool:
        return not self._done

    def on_drop(self, sub: Subscription, reason: str) -> None:
        self.dropped = reason
        if self._transport is not None:
            self._transport.abort()

    async def close(self, code: int, reason: str) -> None:
        if self._sub is not None:
            self._sub.close()  # the stream loop sees the end and finishes the response
        self._done = True

    async def stream(self, watch: Watch, since: int, *, heartbeat_s: float, runs: RunManager) -> None:
        self._sub = watch.subscription
        last = since
        complete = False
        write: Callable[[bytes], Awaitable[None]] = self.response.write
        try:
            for frame in watch.backlog:
                await write(frame.sse())
                last = frame.seq
                complete = frame.is_complete
            sub = watch.subscription
            while sub is not None and not complete and not self._done:
                try:
                    batch = await asyncio.wait_for(sub.get(), heartbeat_s)
                except TimeoutError:
                    await write(b": keep-alive\n\n")
                    continue
                if not batch:
                    break
                for frame in batch:
                    if frame.seq <= last:
                        continue
                    await write(frame.sse())
                    last = frame.seq
                    complete = frame.is_complete
        except (SubscriberDropped, *_SEND_ERRORS):
            pass
        finally:
            self._done = True
            runs.detach(watch)
