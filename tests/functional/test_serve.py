"""``proxbox serve``: real SIGTERM, graceful drain, the loopback rule, and the subcommand as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from proxbox.config import Settings
from proxbox.errors import ConfigError
from proxbox.history import History
from proxbox.web.auth import check_bind
from proxbox.web.keys import RUNS
from proxbox.web.serve import serve
from tests.fixtures.server import ScriptedJob, next_text, read_frames, wait_until

MakeSettings = Callable[..., Settings]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@attrs.define
class Served:
    task: asyncio.Task[None]
    app: web.Application
    base: str

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://")


async def start_serving(settings: Settings, job: ScriptedJob) -> Served:
    ready: asyncio.Future[web.Application] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, job=job, on_ready=ready.set_result))
    app = await asyncio.wait_for(ready, 10)
    return Served(task=task, app=app, base=f"http://127.0.0.1:{settings.server.port}")


async def closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    async with asyncio.timeout(15):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, str(msg.extra or "")


async def test_sigterm_during_a_run_lets_it_finish_sends_final_frames_and_closes_1001(
    server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    settings = server_settings(port=unused_port(), drain_grace_s=30.0)
    job = ScriptedJob(items=40, delay_s=0.02)
    served = await start_serving(settings, job)
    watchers = [await session.ws_connect(f"{served.ws}/ws/virtual-machines") for _ in range(2)]
    for ws in watchers:
        await next_text(ws)  # welcome
    idle = await session.ws_connect(f"{served.ws}/ws")
    counter = await session.ws_connect(f"{served.ws}/")
    readers = [asyncio.create_task(read_frames(ws)) for ws in watchers]
    run = served.app[RUNS].active
    assert run is not None
    await wait_until(lambda: run.last_seq >= 5)

    os.kill(os.getpid(), signal.SIGTERM)
    await wait_until(lambda: served.app[RUNS].draining)
    with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
        await session.get(f"{served.base}/health")

    for frames in await asyncio.gather(*readers):
        assert frames[-1]["type"] == "complete" and frames[-1]["status"] == "succeeded"
        assert [f["seq"] for f in frames] == list(range(1, run.last_seq + 1))
    for ws in (*watchers, idle, counter):
        assert await closed(ws) == (1001, "server shutting down")
    await asyncio.wait_for(served.task, 15)
    assert run.counts.created == 40


async def test_sigterm_cancels_the_run_after_the_grace_and_watchers_still_get_complete(
    server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    settings = server_settings(port=unused_port(), drain_grace_s=0.2, cancel_grace_s=5.0)
    job = ScriptedJob(items=100000, delay_s=0.01)
    served = await start_serving(settings, job)
    ws = await session.ws_connect(f"{served.ws}/ws")
    await ws.send_str("Full Update Sync")
    await next_text(ws)
    reader = asyncio.create_task(read_frames(ws))
    await asyncio.wait_for(job.started.wait(), 5)
    os.kill(os.getpid(), signal.SIGTERM)
    frames = await reader
    assert frames[-1]["type"] == "complete" and frames[-1]["status"] == "cancelled"
    assert await closed(ws) == (1001, "server shutting down")
    await asyncio.wait_for(served.task, 15)
    history = History.in_state_dir(settings.server.state_dir, limit=10)  # what the next start will see
    await history.open()
    (record,) = await history.list()
    assert (record.status, record.state) == ("cancelled", "finished")
    await history.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", ""])
def test_without_api_keys_only_loopback_may_be_bound(server_settings: MakeSettings, host: str) -> None:
    settings = server_settings(host=host)
    with pytest.raises(ConfigError) as info:
        check_bind(settings.server)
    assert info.value.key == "server.host"
    check_bind(server_settings(host=host, api_keys=["k"]).server)
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.53"):
        check_bind(server_settings(host=loopback).server)


def write_config(tmp_path: Path, **server: Any) -> Path:
    lines = ["[netbox]", 'url = "http://127.0.0.1:9"', f'token = "{"0" * 40}"', "", "[server]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in {"state_dir": str(tmp_path / "state"), **server}.items()]
    path = tmp_path / "proxbox.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path, host="0.0.0.0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxbox", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"server.host" in err and b"api_keys" in err


async def test_serve_process_drains_on_sigterm_and_exits_0(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    port = unused_port()
    config = write_config(tmp_path, port=port, api_keys=["proc-key"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxbox", "--log-format", "json", "serve", "--config", str(config),
        "--host", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while b"server.listening" not in await proc.stdout.readline():
                pass
        headers = {"Authorization": "Bearer proc-key"}
        assert (await session.get(f"http://127.0.0.1:{port}/health")).status == 200
        assert (await session.get(f"http://127.0.0.1:{port}/runs")).status == 401
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws", headers=headers)
        await ws.send_str("Sync Nodes")  # the real engine may be absent: the run still frames and completes
        await next_text(ws)
        frames = await read_frames(ws, seconds=60)
        assert frames[-1]["type"] == "complete"
        proc.send_signal(signal.SIGTERM)
        assert await closed(ws) == (1001, "server shutting down")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith(b"{")]
        assert "server.stopping" in events and events[-1] == "server.stopped"
        assert b"proc-key" not in out + err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
