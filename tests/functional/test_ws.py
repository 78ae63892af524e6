"""The WebSocket endpoints over real sockets, with a scripted job (bus, ordering, joining, auth, limits)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from proxbox.config import Settings
from proxbox.runs import Run, RunObserver
from tests.fixtures.server import API_KEY, ScriptedJob, ServerHandle, next_text, read_frames, wait_until

Start = Callable[..., Awaitable[ServerHandle]]
MakeSettings = Callable[..., Settings]
VALID = ("Full Update Sync", "Sync Nodes", "Sync Virtual Machines")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["seq"] for f in frames]


def run_id_of(text: str) -> str:
    return text.split("run ", 1)[1].split()[0].rstrip(";:")


async def closed(ws: aiohttp.ClientWebSocketResponse, seconds: float = 10.0) -> tuple[int | None, str]:
    """Read until the server closes; returns (close code, reason)."""
    async with asyncio.timeout(seconds):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code, str(msg.extra or "")
            if msg.type == aiohttp.WSMsgType.ERROR:
                return ws.close_code, str(msg.data)


async def command(ws: aiohttp.ClientWebSocketResponse, text: str) -> str:
    await ws.send_str(text)
    return await next_text(ws)


# --------------------------------------------------------------------------------------- shared runs


async def test_three_watchers_and_a_late_joiner_receive_identical_frames_and_one_complete(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=30, delay_s=0.002)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    watchers = [await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers) for _ in range(3)]
    replies = [await command(ws, "Sync Nodes") for ws in watchers]
    assert replies[0].startswith("Sync Nodes: started run ")
    assert all(r.startswith("Sync Nodes: joined run ") for r in replies[1:])
    run_id = run_id_of(replies[0])
    assert {run_id_of(r) for r in replies} == {run_id}

    readers = [asyncio.create_task(read_frames(ws, run_id=run_id)) for ws in watchers]
    job.hold.set()
    run = srv.runs.find(run_id)
    assert run is not None
    await wait_until(lambda: run.last_seq >= 12)
    job.hold.clear()  # paused mid-run: the late joiner arrives while frames are still to come
    at_join = run.last_seq
    late = await session.ws_connect(srv.ws_url(f"/ws/runs/{run_id}"), headers=srv.headers)
    late_reader = asyncio.create_task(read_frames(late, run_id=run_id))
    await wait_until(lambda: run.watchers() == 4)
    job.hold.set()

    results = await asyncio.gather(*readers, late_reader)
    expected = list(range(1, run.last_seq + 1))
    assert run.last_seq > at_join
    for frames in results:
        assert seqs(frames) == expected
        assert [f["type"] for f in frames].count("complete") == 1
        assert frames[-1]["type"] == "complete" and frames[-1]["status"] == "succeeded"
    assert all(frames == results[0] for frames in results)  # the very same frames, byte for byte
    assert await closed(late) == (1000, "run complete")
    assert len(job.calls) == 1
    for ws in watchers:
        await ws.close()


async def test_a_late_joiner_gets_backlog_then_live_with_no_gap_and_no_duplicate(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=200)
    srv = await proxbox_server(job=job)
    run, _ = srv.runs.trigger("vms")
    await wait_until(lambda: run.last_seq >= 50)  # frames keep coming while the joiner connects
    ws = await session.ws_connect(srv.ws_url("/ws/runs/latest"), headers=srv.headers)
    frames = await read_frames(ws, run_id=run.id)
    assert seqs(frames) == list(range(1, run.last_seq + 1))
    assert await closed(ws) == (1000, "run complete")


async def test_watch_command_replays_from_since_then_streams_live(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=10)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    run, _ = srv.runs.trigger("nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    reply = json.loads(await command(ws, json.dumps({"command": "watch", "run_id": run.id, "since": 1})))
    assert (reply["type"], reply["command"], reply["ok"], reply["run"]["id"]) == (
        "reply",
        "watch",
        True,
        run.id,
    )
    job.hold.set()
    frames = await read_frames(ws, run_id=run.id)
    assert seqs(frames) == list(range(2, run.last_seq + 1))
    # the connection stays open: the finished run can be replayed again
    again = json.loads(await command(ws, json.dumps({"command": "watch", "run_id": run.id, "since": 9})))
    assert again["ok"] and again["run"]["state"] == "finished"
    assert seqs(await read_frames(ws, run_id=run.id)) == list(range(10, run.last_seq + 1))
    await ws.close()


async def test_a_second_sync_nodes_while_one_runs_joins_it(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=5)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    first = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    second = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    started = await command(first, "Sync Nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    joined = await command(second, "Sync Nodes")
    assert "started run" in started and "joined run" in joined
    assert run_id_of(started) == run_id_of(joined)
    job.hold.set()
    a, b = await asyncio.gather(read_frames(first), read_frames(second))
    assert seqs(a) == seqs(b)
    assert len(job.calls) == 1
    await first.close()
    await second.close()


async def test_a_kind_the_running_run_does_not_cover_is_queued_and_runs_next(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=3)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    nodes_ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    nodes_id = run_id_of(await command(nodes_ws, "Sync Nodes"))
    await asyncio.wait_for(job.started.wait(), 5)
    vms_ws = await session.ws_connect(srv.ws_url("/ws/virtual-machines"), headers=srv.headers)
    welcome = await next_text(vms_ws)
    vms_id = run_id_of(welcome)
    assert f"queued run {vms_id} behind run {nodes_id} (nodes)" in welcome
    job.hold.set()
    nodes_frames, vms_frames = await asyncio.gather(read_frames(nodes_ws), read_frames(vms_ws))
    assert nodes_frames[-1]["run_id"] == nodes_id and vms_frames[-1]["run_id"] == vms_id
    assert nodes_frames[-1]["ts"] < vms_frames[0]["ts"]  # one after the other, never together
    assert [k for k, _ in job.calls] == ["nodes", "vms"]
    await nodes_ws.close()


async def test_a_command_on_the_same_socket_for_a_run_it_already_watches_does_not_duplicate_frames(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=3)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    await command(ws, "Full Update Sync")
    await asyncio.wait_for(job.started.wait(), 5)
    await ws.send_str("Sync Virtual Machines")  # covered by the full run: joins it
    frames: list[dict[str, Any]] = []
    while True:  # frames of the run may come before the reply
        text = await next_text(ws)
        if not text.startswith("{"):
            assert text.startswith("Sync Virtual Machines: joined run ")
            break
        frames.append(json.loads(text))
    job.hold.set()
    frames += await read_frames(ws)
    assert seqs(frames) == list(range(1, len(frames) + 1))
    await ws.close()


async def test_disconnecting_every_watcher_does_not_stop_the_run(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=20)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    sockets = [await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers) for _ in range(3)]
    run_id = run_id_of(await command(sockets[0], "Sync Nodes"))
    for ws in sockets[1:]:
        await command(ws, "Sync Nodes")
    for ws in sockets:
        await ws.close()
    run = srv.runs.find(run_id)
    assert run is not None
    await wait_until(lambda: run.watchers() == 0)
    job.hold.set()
    await asyncio.wait_for(run.finished.wait(), 10)
    assert run.status == "succeeded" and run.counts.created == 20


async def test_cancel_command_stops_the_run_with_a_cancelled_complete(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=100)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    watcher = await session.ws_connect(srv.ws_url("/ws/virtual-machines"), headers=srv.headers)
    run_id = run_id_of(await next_text(watcher))
    await asyncio.wait_for(job.started.wait(), 5)
    other = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    reply = json.loads(await command(other, json.dumps({"command": "cancel", "run_id": run_id})))
    assert reply["ok"] and reply["run"]["cancel_requested"] is True
    job.hold.set()
    frames = await read_frames(watcher)
    assert frames[-1]["type"] == "complete" and frames[-1]["status"] == "cancelled"
    assert frames[-1]["ok"] is False
    assert await closed(watcher) == (1000, "run complete")
    await other.close()


async def test_cancel_of_an_unknown_run_is_a_reply_not_a_disconnect(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server()
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    reply = json.loads(await command(ws, json.dumps({"command": "cancel", "run_id": "nope"})))
    assert (reply["ok"], reply["error"]) == (False, "run_not_found")
    assert "started run" in await command(ws, "Sync Nodes")
    await ws.close()


# ------------------------------------------------------------------------------------- endpoints


async def test_virtual_machines_endpoint_welcomes_then_streams_a_vm_sync_until_complete(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(job=ScriptedJob(items=4))
    ws = await session.ws_connect(srv.ws_url("/ws/virtual-machines"), headers=srv.headers)
    welcome = await next_text(ws)
    assert welcome.startswith("Welcome to proxbox") and "started run" in welcome
    frames = await read_frames(ws)
    assert {f["operation"] for f in frames} == {"vm_sync"}
    assert frames[0]["status"] == "started" and frames[0]["kind"] == "vms"
    assert frames[-1]["type"] == "complete" and frames[-1]["counts"]["created"] == 4
    assert await closed(ws) == (1000, "run complete")
    assert srv.job.calls[0][0] == "vms"


async def test_root_sends_an_incrementing_counter(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server()
    ws = await session.ws_connect(srv.ws_url("/"), headers=srv.headers)
    assert await next_text(ws) == "1"
    assert await next_text(ws, seconds=5) == "2"
    await ws.close()
    assert srv.job.calls == []


async def test_invalid_commands_get_guidance_and_the_connection_stays_open(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server()
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    for bad in ("Sync Everything", "sync nodes", '{"command": "explode"}'):
        reply = await command(ws, bad)
        assert f"Invalid command {bad!r}" in reply
        assert all(valid in reply for valid in VALID)
    assert "started run" in await command(ws, "Sync Nodes")
    await read_frames(ws)
    await ws.close()


async def test_watching_a_finished_run_replays_from_since_then_closes_1000(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(job=ScriptedJob(items=5))
    run, _ = srv.runs.trigger("nodes")
    await asyncio.wait_for(run.finished.wait(), 10)
    ws = await session.ws_connect(srv.ws_url(f"/ws/runs/{run.id}?since=3"), headers=srv.headers)
    frames = await read_frames(ws)
    assert seqs(frames) == list(range(4, run.last_seq + 1))
    assert await closed(ws) == (1000, "run complete")


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/ws/runs/nope", 4004, "run nope not found"),
        ("/ws/runs/latest", 4004, "run latest not found"),
        ("/ws/runs/latest?since=x", 1008, "since must be a whole number >= 0"),
    ],
)
async def test_watching_an_unknown_run_or_with_a_bad_since_closes_with_a_reason(
    proxbox_server: Start, session: aiohttp.ClientSession, path: str, code: int, reason: str
) -> None:
    srv = await proxbox_server()
    ws = await session.ws_connect(srv.ws_url(path), headers=srv.headers)
    assert await closed(ws) == (code, reason)


async def test_binary_messages_close_1003_and_the_server_keeps_serving(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server()
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    await ws.send_bytes(b"\x00\x01binary")
    code, reason = await closed(ws)
    assert code == 1003 and "binary" in reason
    other = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    assert "started run" in await command(other, "Sync Nodes")
    await other.close()


async def test_oversized_messages_close_1009_and_the_server_keeps_serving(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(max_message_bytes=1024, api_keys=[API_KEY]))
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    await ws.send_str("Sync Nodes" + " " * 5000)
    code, _ = await closed(ws)
    assert code == 1009
    assert srv.job.calls == []
    other = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    assert "started run" in await command(other, "Sync Nodes")
    await other.close()


async def test_idle_clients_are_pinged_and_never_disconnected(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(heartbeat_s=0.1))
    ws = await session.ws_connect(srv.ws_url("/ws"), headers=srv.headers)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.receive(), 1.0)  # ten heartbeats of silence, answered by the client's pongs
    assert not ws.closed
    assert "started run" in await command(ws, "Sync Nodes")
    await ws.close()


# ----------------------------------------------------------------------------------------- auth


async def test_a_wrong_key_in_the_handshake_closes_4001_before_anything_runs(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(api_keys=[API_KEY]))
    for path in ("/ws/virtual-machines", "/ws", "/", "/ws/runs/latest"):
        ws = await session.ws_connect(srv.ws_url(path), headers={"Authorization": "Bearer wrong"})
        assert await closed(ws) == (4001, "invalid API key")
    assert srv.job.calls == []
    assert await srv.runs.list() == []


async def test_without_a_key_the_first_message_must_authenticate(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(api_keys=[API_KEY]))
    ws = await session.ws_connect(srv.ws_url("/ws"))
    code, reason = await closed(await _send(ws, "Sync Nodes"))
    assert code == 4001 and "authentication required" in reason
    ws = await session.ws_connect(srv.ws_url("/ws/virtual-machines"))
    assert await closed(await _send(ws, json.dumps({"api_key": "wrong"}))) == (4001, "invalid API key")
    assert srv.job.calls == []

    ws = await session.ws_connect(srv.ws_url("/ws"))
    reply = json.loads(await command(ws, json.dumps({"api_key": API_KEY})))
    assert (reply["command"], reply["ok"]) == ("auth", True)
    assert "started run" in await command(ws, "Sync Nodes")
    await read_frames(ws)
    await ws.close()


async def _send(ws: aiohttp.ClientWebSocketResponse, text: str) -> aiohttp.ClientWebSocketResponse:
    await ws.send_str(text)
    return ws


async def test_a_client_that_never_authenticates_is_closed_4001_after_the_timeout(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(api_keys=[API_KEY], auth_timeout_s=0.3))
    ws = await session.ws_connect(srv.ws_url("/ws/virtual-machines"))
    code, reason = await closed(ws)
    assert code == 4001 and "timed out" in reason
    assert srv.job.calls == []


async def test_the_api_key_header_also_authenticates(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(api_keys=["other", API_KEY]))
    ws = await session.ws_connect(srv.ws_url("/ws"), headers={"X-Proxbox-API-Key": API_KEY})
    assert "started run" in await command(ws, "Sync Nodes")
    await ws.close()


# ---------------------------------------------------------------------------------- slow watchers


class DropRecorder(RunObserver):
    def __init__(self) -> None:
        self.dropped: list[tuple[str, str]] = []

    def watcher_dropped(self, run_id: str, reason: str) -> None:
        self.dropped.append((run_id, reason))

    def run_started(self, run: Run) -> None:
        pass


async def test_a_watcher_that_never_reads_is_dropped_with_1013_while_the_others_keep_low_latency(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    recorder = DropRecorder()
    job = ScriptedJob(items=2000, delay_s=0.001, pad=4000)  # ~8 MB of frames: more than the socket buffers
    job.hold.clear()
    settings = server_settings(subscriber_buffer=50, close_timeout_s=5.0)
    srv = await proxbox_server(settings, job=job, observers=[recorder])
    run, _ = srv.runs.trigger("vms")
    slow = await session.ws_connect(srv.ws_url(f"/ws/runs/{run.id}"))  # never reads until dropped
    fast = [await session.ws_connect(srv.ws_url(f"/ws/runs/{run.id}")) for _ in range(3)]
    await wait_until(lambda: run.watchers() == 4)

    latencies: list[float] = []

    async def read_fast(ws: aiohttp.ClientWebSocketResponse) -> list[int]:
        got = []
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
            frame = json.loads(msg.data)
            latencies.append(time.time() - datetime.fromisoformat(frame["ts"]).timestamp())
            got.append(frame["seq"])
            if frame["type"] == "complete":
                return got

    readers = [asyncio.create_task(read_fast(ws)) for ws in fast]
    job.hold.set()
    await wait_until(lambda: bool(recorder.dropped), seconds=60)
    assert recorder.dropped[0][0] == run.id and "50 frames behind" in recorder.dropped[0][1]

    # the dropped client reads what the kernel buffered for it, then the 1013 close with the reason
    slow_seqs = []
    async with asyncio.timeout(30):
        while True:
            msg = await slow.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            slow_seqs.append(json.loads(msg.data)["seq"])
    assert slow.close_code == 1013 and "too slow" in str(msg.extra)
    assert slow_seqs == list(range(1, len(slow_seqs) + 1))  # what it got was gapless
    assert slow_seqs[-1] < run.last_seq or not run.finished.is_set()

    results = await asyncio.gather(*readers)
    assert run.status == "succeeded"
    for got in results:
        assert got == list(range(1, run.last_seq + 1))
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=100)[94]
    assert p50 < 0.1 and p95 < 0.1, (p50, p95)
    for ws in fast:
        await ws.close()
