"""WebSocket endpoints.

- ``/``: a counter every 2 seconds (connectivity check).
- ``/ws/virtual-machines``: a welcome text, then the frames of the VM sync it starts or joins.
- ``/ws``: text commands (``Full Update Sync``, ``Sync Nodes``, ``Sync Virtual Machines``) and JSON commands
  (``sync``, ``watch``, ``cancel``); the connection stays open for more.
- ``/ws/runs/{run_id}`` (or ``latest``), ``?since=N``: any run, live or finished; 1000 after ``complete``.

Every endpoint authenticates first (handshake headers or a first ``{"api_key": ...}`` message), pings every
``heartbeat_s``, never disconnects an idle client, answers binary messages with 1003 and oversized ones with
1009. Frames are TEXT. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from proxbox.errors import InvalidRequest, ProxboxError, RunNotFound, ServerDraining
from proxbox.events import RunKind
from proxbox.frames import AuthMessage, CancelCommand, Reply, SyncCommand, WatchCommand
from proxbox.logsetup import get_logger
from proxbox.runs import Run
from proxbox.web.auth import (
    WS_AUTH_FAILED,
    auth_enabled,
    check_http,
    key_from_headers,
    key_is_valid,
    websocket,
)
from proxbox.web.keys import CODEC, RUNS, SETTINGS, WATCHERS
from proxbox.web.watchers import GOING_AWAY, WsConnection, limit_send_buffer

log = get_logger(__name__)

COUNTER_INTERVAL_S = 2.0
RUN_NOT_FOUND = 4004
POLICY_VIOLATION = int(WSCloseCode.POLICY_VIOLATION)  # 1008: bad parameters
UNSUPPORTED_DATA = int(WSCloseCode.UNSUPPORTED_DATA)  # 1003: binary message
INTERNAL_ERROR = int(WSCloseCode.INTERNAL_ERROR)  # 1011
NO_COMMANDS = "This endpoint takes no commands; send commands on /ws."

Body = Callable[[WsConnection], Awaitable[None]]
OnText = Callable[[WsConnection, str], Awaitable[None]]


async def _serve(request: web.Request, body: Body) -> web.StreamResponse:
    app = request.app
    server = app[SETTINGS].server
    ws = web.WebSocketResponse(
        heartbeat=server.heartbeat_s,
        max_msg_size=server.max_message_bytes,
        compress=False,  # frames are shared bytes: never compress them once per watcher
        timeout=server.close_timeout_s,
    )
    if not ws.can_prepare(request).ok:
        check_http(server, request)
        raise web.HTTPUpgradeRequired(reason="this is a WebSocket endpoint", headers={"Upgrade": "websocket"})
    await ws.prepare(request)
    limit_send_buffer(request, server.send_buffer_bytes)
    registry = app[WATCHERS]
    conn = WsConnection(request, ws, app[RUNS], registry, close_timeout_s=server.close_timeout_s)
    registry.add(conn)
    try:
        if registry.draining:
            await conn.close(GOING_AWAY, "server shutting down")
        elif await _authenticate(conn):
            await body(conn)
    except Exception:
        log.exception("ws.handler_failed", path=request.path)
        await conn.close(INTERNAL_ERROR, "internal error")
    finally:
        registry.discard(conn)
        await conn.finish()  # cancels synchronously first: safe even if the handler itself is being cancelled
    return ws


async def _authenticate(conn: WsConnection) -> bool:
    app = conn.request.app
    server = app[SETTINGS].server
    if not auth_enabled(server):
        return True
    key = key_from_headers(conn.request.headers)
    if key is not None:
        if key_is_valid(server.api_keys, key):
            return True
        log.warning("ws.auth_failed", peer=conn.peer, how="header")
        await conn.close(WS_AUTH_FAILED, "invalid API key")
        return False
    try:
        msg = await conn.ws.receive(timeout=server.auth_timeout_s)
    except TimeoutError:
        log.warning("ws.auth_failed", peer=conn.peer, how="timeout")
        await conn.close(WS_AUTH_FAILED, 'authentication timed out: send {"api_key": "..."} first')
        return False
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return False
    command = None
    if msg.type == WSMsgType.TEXT:
        try:
            command = app[CODEC].parse_command(msg.data)
        except InvalidRequest:
            command = None
    if not isinstance(command, AuthMessage):
        log.warning("ws.auth_failed", peer=conn.peer, how="no key")
        await conn.close(
            WS_AUTH_FAILED, 'authentication required: send {"api_key": "..."} or a Bearer header'
        )
        return False
    if not key_is_valid(server.api_keys, command.api_key):
        log.warning("ws.auth_failed", peer=conn.peer, how="message")
        await conn.close(WS_AUTH_FAILED, "invalid API key")
        return False
    await conn.send_text(app[CODEC].encode_reply(Reply(command="auth", ok=True, message="authenticated")))
    return True


async def _read(conn: WsConnection, on_text: OnText) -> None:
    """The connection's receive loop: until the client closes, breaks the protocol, or we close."""
    async for msg in conn.ws:
        if msg.type == WSMsgType.TEXT:
            await on_text(conn, msg.data)
        elif msg.type == WSMsgType.BINARY:
            await conn.close(UNSUPPORTED_DATA, "binary messages are not supported: send text")
            break
        elif msg.type == WSMsgType.ERROR:  # oversized (aiohttp closed with 1009) or a protocol error
            log.info("ws.receive_error", peer=conn.peer, error=str(msg.data), code=conn.ws.close_code)
            break


async def _no_commands(conn: WsConnection, text: str) -> None:
    await conn.send_text(NO_COMMANDS)


def _describe(active: Run | None, run: Run, joined: bool) -> str:
    """``started run X``, ``joined run X``, ``joined queued run X``, ``queued run X behind run Y (kind)``."""
    if joined:
        return f"joined queued run {run.id}" if run.state == "queued" else f"joined run {run.id}"
    if run.state == "queued" and active is not None and active is not run:
        return f"queued run {run.id} behind run {active.id} ({active.kind})"
    return f"started run {run.id}"


def _trigger(conn: WsConnection, kind: RunKind) -> tuple[Run, bool, str]:
    runs = conn.request.app[RUNS]
    run, joined = runs.trigger(kind, trigger="ws")
    return run, joined, _describe(runs.active, run, joined)


async def _stream_run(conn: WsConnection, run_id: str, since: int, *, close_when_complete: bool) -> None:
    watch = await conn.request.app[RUNS].attach(run_id, since, on_drop=conn.on_drop)
    conn.start_stream(watch, since, close_when_complete=close_when_complete)


# ------------------------------------------------------------------------------------------- endpoints


@websocket
async def counter(request: web.Request) -> web.StreamResponse:
    async def body(conn: WsConnection) -> None:
        async def count() -> None:
            n = 0
            while not conn.closing:
                n += 1
                await conn.send_text(str(n))
                await asyncio.sleep(COUNTER_INTERVAL_S)

        conn.start_worker(count())
        await _read(conn, _no_commands)

    return await _serve(request, body)


@websocket
async def virtual_machines(request: web.Request) -> web.StreamResponse:
    async def body(conn: WsConnection) -> None:
        try:
            run, _, what = _trigger(conn, "vms")
        except ServerDraining:
            await conn.close(GOING_AWAY, "server shutting down")
            return
        await conn.send_text(f"Welcome to proxbox. Virtual machine sync: {what}; its frames follow.")
        await _stream_run(conn, run.id, 0, close_when_complete=True)
        await _read(conn, _no_commands)

    return await _serve(request, body)


@websocket
async def commands(request: web.Request) -> web.StreamResponse:
    return await _serve(request, lambda conn: _read(conn, _command))


async def _command(conn: WsConnection, text: str) -> None:
    app = conn.request.app
    codec = app[CODEC]
    try:
        cmd = codec.parse_command(text)
    except InvalidRequest as exc:
        await conn.send_text(exc.message)
        return

    async def reply(**kw: object) -> None:
        await conn.send_text(codec.encode_reply(Reply(**kw)))  # type: ignore[arg-type]

    runs = app[RUNS]
    try:
        if isinstance(cmd, SyncCommand):
            run, joined, what = _trigger(conn, cmd.kind)
            if cmd.text:
                await conn.send_text(f"{cmd.text}: {what}")
            else:
                await reply(command="sync", ok=True, run=run.summary(), joined=joined, message=what)
            if not conn.watching(run.id):
                await _stream_run(conn, run.id, 0, close_when_complete=False)
        elif isinstance(cmd, WatchCommand):
            if conn.watching(cmd.run_id):
                await reply(
                    command="watch", ok=False, error="invalid_request", message="already watching that run"
                )
                return
            watch = await runs.attach(cmd.run_id, cmd.since, on_drop=conn.on_drop)
            if conn.watching(watch.run_id):  # "latest" resolved to a run this socket already streams
                runs.detach(watch)
                await reply(
                    command="watch", ok=False, error="invalid_request", message="already watching that run"
                )
                return
            await reply(command="watch", ok=True, run=watch.summary)
            conn.start_stream(watch, cmd.since, close_when_complete=False)
        elif isinstance(cmd, CancelCommand):
            summary = await runs.cancel(cmd.run_id)
            await reply(command="cancel", ok=True, run=summary)
        else:  # AuthMessage after authentication
            await reply(command="auth", ok=True, message="already authenticated")
    except ServerDraining as exc:
        if isinstance(cmd, SyncCommand) and cmd.text:
            await conn.send_text(f"{cmd.text}: {exc.message}")
        else:
            await reply(command=_name(cmd), ok=False, error=exc.code, message=exc.message)
    except (RunNotFound, InvalidRequest) as exc:
        await reply(command=_name(cmd), ok=False, error=exc.code, message=exc.message)
    except ProxboxError as exc:
        await reply(command=_name(cmd), ok=False, error=exc.code, message=exc.message)


def _name(cmd: object) -> str:
    return {SyncCommand: "sync", WatchCommand: "watch", CancelCommand: "cancel"}.get(type(cmd), "auth")


@websocket
async def watch_run(request: web.Request) -> web.StreamResponse:
    async def body(conn: WsConnection) -> None:
        raw = request.query.get("since", "0")
        if not raw.isdigit():
            await conn.close(POLICY_VIOLATION, "since must be a whole number >= 0")
            return
        run_id = request.match_info["run_id"]
        try:
            await _stream_run(conn, run_id, int(raw), close_when_complete=True)
        except RunNotFound:
            await conn.close(RUN_NOT_FOUND, f"run {run_id} not found")
            return
        await _read(conn, _no_commands)

    return await _serve(request, body)
