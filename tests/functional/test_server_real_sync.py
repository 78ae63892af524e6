"""The server with the real sync engine: simulator (Proxmox VE) → a real NetBox, watched over real sockets.

These are the issue's "Done when" checks: the three classic endpoints against a real run; three watchers and a
late joiner on one real run with identical ``seq`` sequences and one ``complete`` each; auth failures that
cause zero requests at the simulator and zero NetBox changes; SIGTERM during a real run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from proxbox.config import Settings
from proxbox.sim import SimServer, World, generate
from proxbox.web.keys import RUNS
from proxbox.web.serve import serve
from tests.fixtures.netbox import NetBoxEnv
from tests.fixtures.server import API_KEY, ServerHandle, next_text, read_frames, wait_until

pytestmark = pytest.mark.netbox

Start = Callable[..., Awaitable[ServerHandle]]
MakeSettings = Callable[..., Settings]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def sim_world() -> Callable[..., World]:
    """Small worlds: NetBox writes are the floor of every sync (tens of objects per second on 2 cores)."""

    def make(seed: int | str = 5, clusters: int = 1, nodes: int = 2, guests: int = 4, **kw: Any) -> World:
        return generate(seed=seed, clusters=clusters, nodes=nodes, guests=guests, **kw)

    return make


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def real_settings(server_settings: MakeSettings, netbox: NetBoxEnv, sim: SimServer) -> MakeSettings:
    def make(**server: Any) -> Settings:
        server.setdefault("api_keys", [API_KEY])
        base = server_settings(netbox_url=netbox.url, netbox_token=netbox.token, **server)
        return attrs.evolve(base, proxmox=tuple(sim.proxmox_settings(retries=2, backoff_s=0.05)))

    return make


def sim_requests(sim: SimServer) -> int:
    return sum(c["total"] for c in sim.requests().values())


def slow_discovery(sim: SimServer, ms: int = 150) -> None:
    """Every guest config read takes ``ms``: a run stays in discovery long enough to join it mid-way."""
    sim.add_fault(path="/nodes/*/*/*/config", action="latency", latency_ms=ms)


def netbox_vm_names(netbox: NetBoxEnv) -> set[str]:
    return {vm.name for vm in netbox.api().virtualization.virtual_machines.all()}


def created_vm_names(frames: list[dict[str, Any]]) -> set[str]:
    return {
        f["item"]["name"]
        for f in frames
        if f["type"] == "step"
        and f.get("item", {}).get("kind") == "virtual_machine"
        and f["status"] == "created"
    }


async def closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, str(msg.extra or "")


async def test_the_classic_endpoints_against_a_real_run(
    proxbox_server: Start,
    real_settings: MakeSettings,
    session: aiohttp.ClientSession,
    netbox: NetBoxEnv,
    sim: SimServer,
) -> None:
    srv = await proxbox_server(real_settings(), real_engine=True)

    counter = await session.ws_connect(srv.ws_url("/"), headers=AUTH)
    assert await next_text(counter) == "1"
    await counter.close()

    vms = await session.ws_connect(srv.ws_url("/ws/virtual-machines"), headers=AUTH)
    welcome = await next_text(vms)
    assert welcome.startswith("Welcome to proxbox") and "started run" in welcome
    frames = await read_frames(vms, seconds=240)
    assert {f["operation"] for f in frames} == {"vm_sync"}
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    phases = [f["phase"] for f in frames]
    assert "discovery" in phases and "creation" in phases
    complete = frames[-1]
    assert complete["type"] == "complete" and complete["status"] == "succeeded", complete
    assert await closed(vms) == (1000, "run complete")
    created = created_vm_names(frames)
    assert created and created == netbox_vm_names(netbox)
    assert complete["counts"]["created"] >= len(created)

    ws = await session.ws_connect(srv.ws_url("/ws"), headers=AUTH)
    await ws.send_str("Sync Everything")
    guidance = await next_text(ws)
    assert "Invalid command 'Sync Everything'" in guidance and "Sync Nodes" in guidance
    await ws.send_str("Sync Nodes")
    assert (await next_text(ws)).startswith("Sync Nodes: started run ")
    nodes = await read_frames(ws, seconds=240)
    assert {f["operation"] for f in nodes} == {"device_sync"} and nodes[-1]["status"] == "succeeded"
    await ws.send_str("Full Update Sync")
    assert (await next_text(ws)).startswith("Full Update Sync: started run ")
    full = await read_frames(ws, seconds=240)
    assert full[-1]["status"] == "succeeded"
    assert full[-1]["counts"]["created"] == 0  # everything is already in NetBox
    await ws.send_str("Sync Virtual Machines")
    assert (await next_text(ws)).startswith("Sync Virtual Machines: started run ")
    again = await read_frames(ws, seconds=240)
    assert again[-1]["status"] == "succeeded" and again[-1]["counts"]["created"] == 0
    assert netbox_vm_names(netbox) == created
    await ws.close()


async def test_three_watchers_and_a_late_joiner_on_one_real_run_see_identical_seqs(
    proxbox_server: Start,
    real_settings: MakeSettings,
    session: aiohttp.ClientSession,
    netbox: NetBoxEnv,
    sim: SimServer,
) -> None:
    slow_discovery(sim)
    srv = await proxbox_server(real_settings(), real_engine=True)
    watchers = [await session.ws_connect(srv.ws_url("/ws"), headers=AUTH) for _ in range(3)]
    replies = []
    for ws in watchers:
        await ws.send_str("Full Update Sync")
        replies.append(await next_text(ws))
    run_id = replies[0].split("run ", 1)[1].strip()
    assert all(r.endswith(f"run {run_id}") for r in replies) and "started" in replies[0]
    readers = [asyncio.create_task(read_frames(ws, run_id=run_id, seconds=240)) for ws in watchers]
    run = srv.runs.find(run_id)
    assert run is not None
    await wait_until(lambda: run.last_seq >= 4, seconds=60)
    assert run.final is None  # still running: this one really is late
    late = await session.ws_connect(srv.ws_url("/ws/runs/latest"), headers=AUTH)
    sim.clear_faults()
    results = await asyncio.gather(*readers, read_frames(late, run_id=run_id, seconds=240))
    for frames in results:
        assert [f["seq"] for f in frames] == list(range(1, run.last_seq + 1))
        assert [f["type"] for f in frames].count("complete") == 1
    assert all(frames == results[0] for frames in results)
    assert results[0][-1]["status"] == "succeeded"
    assert await closed(late) == (1000, "run complete")
    for ws in watchers:
        await ws.close()


async def test_a_real_run_outlives_its_watchers_and_can_be_cancelled(
    proxbox_server: Start,
    real_settings: MakeSettings,
    session: aiohttp.ClientSession,
    netbox: NetBoxEnv,
    sim: SimServer,
) -> None:
    slow_discovery(sim, ms=50)
    srv = await proxbox_server(real_settings(), real_engine=True)
    ws = await session.ws_connect(srv.ws_url("/ws/virtual-machines"), headers=AUTH)
    run_id = (await next_text(ws)).split("run ", 1)[1].split(";")[0]
    await ws.close()  # nobody watches any more
    run = srv.runs.find(run_id)
    assert run is not None
    await asyncio.wait_for(run.finished.wait(), 240)
    assert run.status == "succeeded" and run.watchers() == 0
    assert run.counts.created > 0 and netbox_vm_names(netbox)  # the work was done with no one watching

    slow_discovery(sim, ms=300)
    started = await (await session.post(srv.url("/sync/full"), headers=AUTH)).json()
    second = srv.runs.find(started["run"]["id"])
    assert second is not None
    await wait_until(lambda: second.last_seq >= 2, seconds=60)
    resp = await session.post(srv.url(f"/runs/{second.id}/cancel"), headers=AUTH)
    assert resp.status == 202
    watcher = await session.ws_connect(srv.ws_url(f"/ws/runs/{second.id}"), headers=AUTH)
    frames = await read_frames(watcher, seconds=120)
    assert frames[-1]["status"] == "cancelled"


async def test_auth_failures_cause_zero_simulator_requests_and_zero_netbox_changes(
    proxbox_server: Start,
    real_settings: MakeSettings,
    session: aiohttp.ClientSession,
    netbox: NetBoxEnv,
    sim: SimServer,
) -> None:
    srv = await proxbox_server(real_settings(auth_timeout_s=0.3), real_engine=True)
    sim.reset_requests()
    changes = netbox.change_count()
    for method, path in [("POST", "/sync/full"), ("GET", "/ready"), ("POST", "/sync/vms")]:
        assert (await session.request(method, srv.url(path))).status == 401
    attempts: list[tuple[str, dict[str, str], str | None]] = [
        ("/ws", {"Authorization": "Bearer wrong"}, None),
        ("/ws", {}, "Full Update Sync"),
        ("/ws", {}, json.dumps({"api_key": "wrong"})),
        ("/ws/virtual-machines", {}, None),
        ("/ws/virtual-machines", {"X-Proxbox-API-Key": "wrong"}, None),
    ]
    for path, headers, first in attempts:
        ws = await session.ws_connect(srv.ws_url(path), headers=headers)
        if first is not None:
            await ws.send_str(first)
        code, _ = await closed(ws)
        assert code == 4001
    await asyncio.sleep(0.5)
    assert sim_requests(sim) == 0
    assert netbox.change_count() == changes
    assert await srv.runs.list() == []


async def test_sigterm_during_a_real_run_sends_complete_and_closes_1001(
    real_settings: MakeSettings, session: aiohttp.ClientSession, netbox: NetBoxEnv, sim: SimServer
) -> None:
    slow_discovery(sim, ms=300)
    settings = real_settings(port=unused_port(), drain_grace_s=0.5, cancel_grace_s=30.0)
    ready: asyncio.Future[web.Application] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, on_ready=ready.set_result))
    app = await asyncio.wait_for(ready, 30)
    ws = await session.ws_connect(f"ws://127.0.0.1:{settings.server.port}/ws/virtual-machines", headers=AUTH)
    await next_text(ws)
    reader = asyncio.create_task(read_frames(ws, seconds=120))
    run = app[RUNS].active
    assert run is not None
    await wait_until(lambda: run.last_seq >= 2, seconds=60)
    os.kill(os.getpid(), signal.SIGTERM)
    frames = await reader
    assert frames[-1]["type"] == "complete" and frames[-1]["status"] == "cancelled"
    assert await closed(ws) == (1001, "server shutting down")
    await asyncio.wait_for(task, 60)
