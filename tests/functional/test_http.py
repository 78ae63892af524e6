"""The HTTP API over real sockets: runs, SSE, cancel, health/ready/version, errors, auth, history."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from proxbox.config import Settings
from proxbox.runs import RunObserver
from proxbox.sim.server import SimServer
from tests.fixtures.server import API_KEY, ScriptedJob, ServerHandle, read_frames, wait_until

Start = Callable[..., Awaitable[ServerHandle]]
MakeSettings = Callable[..., Settings]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@attrs.define
class FakeNetBox:
    """Just enough NetBox for readiness: ``GET /api/status/``; counts every request it gets."""

    url: str = ""
    requests: int = 0
    fail_first: int = 0  # answer 503 this many times first (a transient outage)


@pytest.fixture
async def fake_netbox(aiohttp_server: Any) -> FakeNetBox:
    nb = FakeNetBox()

    async def status(request: web.Request) -> web.Response:
        nb.requests += 1
        if nb.fail_first > 0:
            nb.fail_first -= 1
            return web.json_response({"detail": "busy"}, status=503)
        if request.headers.get("Authorization") != "Token 0123456789abcdef0123456789abcdef01234567":
            return web.json_response({"detail": "Invalid token"}, status=403)
        return web.json_response({"netbox-version": "4.7.3"})

    async def anything(request: web.Request) -> web.Response:
        nb.requests += 1
        return web.json_response({}, status=404)

    app = web.Application()
    app.router.add_get("/api/status/", status)
    app.router.add_route("*", "/{tail:.*}", anything)
    server = await aiohttp_server(app)
    nb.url = str(server.make_url("")).rstrip("/")
    return nb


def sim_total(sim: SimServer) -> int:
    return sum(c["total"] for c in sim.requests().values())


# ------------------------------------------------------------------------------------------- runs


async def test_post_sync_returns_202_with_the_run_and_a_second_post_joins_it(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=3)
    job.hold.clear()
    srv = await proxbox_server(server_settings(api_keys=[API_KEY]), job=job)
    first = await session.post(srv.url("/sync/nodes"), headers=AUTH)
    assert first.status == 202
    body = await first.json()
    assert body["joined"] is False and body["run"]["kind"] == "nodes" and body["run"]["trigger"] == "http"
    await asyncio.wait_for(job.started.wait(), 5)
    second = await (await session.post(srv.url("/sync/nodes"), headers=AUTH)).json()
    assert second["joined"] is True and second["run"]["id"] == body["run"]["id"]
    assert second["run"]["state"] == "running"
    job.hold.set()


async def test_an_unknown_sync_kind_is_a_400_problem(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server()
    resp = await session.post(srv.url("/sync/everything"))
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_request" and "full, nodes, vms" in body["message"]
    assert srv.job.calls == []


async def test_runs_can_be_listed_and_inspected(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(job=ScriptedJob(items=2))
    ids = []
    for kind in ("nodes", "vms"):
        run_id = (await (await session.post(srv.url(f"/sync/{kind}"))).json())["run"]["id"]
        ids.append(run_id)
        run = srv.runs.find(run_id)
        assert run is not None
        await asyncio.wait_for(run.finished.wait(), 10)
    listed = (await (await session.get(srv.url("/runs"))).json())["runs"]
    assert [r["id"] for r in listed] == ids[::-1]
    assert [r["id"] for r in (await (await session.get(srv.url("/runs?kind=nodes"))).json())["runs"]] == ids[
        :1
    ]
    one = (await (await session.get(srv.url(f"/runs/{ids[0]}"))).json())["run"]
    assert one["status"] == "succeeded" and one["counts"]["created"] == 2 and one["state"] == "finished"
    assert one["finished_at"].endswith("Z")
    latest = (await (await session.get(srv.url("/runs/latest"))).json())["run"]
    assert latest["id"] == ids[1]


async def test_unknown_runs_and_routes_are_json_problems(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server()
    resp = await session.get(srv.url("/runs/nope"))
    assert resp.status == 404 and (await resp.json())["error"] == "run_not_found"
    resp = await session.get(srv.url("/nowhere"))
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await session.get(srv.url("/sync/nodes"))
    assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"
    resp = await session.get(srv.url("/runs?limit=zero"))
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
    resp = await session.get(srv.url("/ws"))
    assert resp.status == 426 and (await resp.json())["error"] == "upgrade_required"


async def test_cancel_stops_a_running_run_and_leaves_a_finished_one_alone(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=50)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    run_id = (await (await session.post(srv.url("/sync/full"))).json())["run"]["id"]
    await asyncio.wait_for(job.started.wait(), 5)
    resp = await session.post(srv.url(f"/runs/{run_id}/cancel"))
    assert resp.status == 202 and (await resp.json())["run"]["cancel_requested"] is True
    job.hold.set()
    run = srv.runs.find(run_id)
    assert run is not None
    await asyncio.wait_for(run.finished.wait(), 10)
    assert run.status == "cancelled"
    again = await session.post(srv.url(f"/runs/{run_id}/cancel"))
    assert again.status == 200 and (await again.json())["run"]["status"] == "cancelled"


# -------------------------------------------------------------------------------------------- SSE


def parse_sse(text: str) -> list[tuple[int, str]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "data" in fields:
            events.append((int(fields["id"]), fields["data"]))
    return events


async def test_sse_sends_the_same_frames_as_websocket_with_seq_ids_and_ends_after_complete(
    proxbox_server: Start, session: aiohttp.ClientSession
) -> None:
    job = ScriptedJob(items=5)
    job.hold.clear()
    srv = await proxbox_server(job=job)
    run, _ = srv.runs.trigger("vms")
    ws = await session.ws_connect(srv.ws_url(f"/ws/runs/{run.id}"))
    ws_frames = asyncio.create_task(read_frames(ws))
    resp = await session.get(srv.url(f"/runs/{run.id}/events"))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    await wait_until(lambda: run.watchers() == 2)
    job.hold.set()
    events = parse_sse(await asyncio.wait_for(resp.text(), 10))  # the response ends after `complete`
    assert [seq for seq, _ in events] == list(range(1, run.last_seq + 1))
    assert [json.loads(data) for _, data in events] == await ws_frames
    assert json.loads(events[-1][1])["type"] == "complete"


async def test_sse_resumes_after_last_event_id(proxbox_server: Start, session: aiohttp.ClientSession) -> None:
    srv = await proxbox_server(job=ScriptedJob(items=6))
    run, _ = srv.runs.trigger("nodes")
    await asyncio.wait_for(run.finished.wait(), 10)
    full = parse_sse(await (await session.get(srv.url(f"/runs/{run.id}/events"))).text())
    resumed = parse_sse(
        await (await session.get(srv.url(f"/runs/{run.id}/events"), headers={"Last-Event-ID": "4"})).text()
    )
    assert resumed == full[4:]
    by_query = parse_sse(await (await session.get(srv.url(f"/runs/{run.id}/events?since=7"))).text())
    assert by_query == full[7:]


async def test_sse_of_an_unknown_run_is_404(proxbox_server: Start, session: aiohttp.ClientSession) -> None:
    srv = await proxbox_server()
    resp = await session.get(srv.url("/runs/nope/events"))
    assert resp.status == 404 and (await resp.json())["error"] == "run_not_found"


# ------------------------------------------------------------------------------- health and ready


async def test_health_needs_no_key_and_everything_else_does(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(api_keys=[API_KEY]))
    health = await session.get(srv.url("/health"))
    assert health.status == 200 and (await health.json())["status"] == "ok"
    for method, path in [("GET", "/runs"), ("GET", "/version"), ("GET", "/ready"), ("POST", "/sync/full")]:
        resp = await session.request(method, srv.url(path))
        assert resp.status == 401, path
        assert (await resp.json())["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await session.request(method, srv.url(path), headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
    assert (await session.get(srv.url("/version"), headers={"X-Proxbox-API-Key": API_KEY})).status == 200
    assert (await session.get(srv.url("/runs"), headers=AUTH)).status == 200
    assert srv.job.calls == []


async def test_version_names_the_release(proxbox_server: Start, session: aiohttp.ClientSession) -> None:
    srv = await proxbox_server()
    body = await (await session.get(srv.url("/version"))).json()
    assert body["version"] and body["aiohttp"] and body["python"].startswith("3.")


@pytest.mark.parametrize("auth", ["token", "ticket"])
async def test_ready_when_netbox_and_every_proxmox_endpoint_answer(
    proxbox_server: Start,
    server_settings: MakeSettings,
    session: aiohttp.ClientSession,
    fake_netbox: FakeNetBox,
    sim: SimServer,
    auth: str,
) -> None:
    settings = server_settings(netbox_url=fake_netbox.url)
    settings = attrs.evolve(settings, proxmox=tuple(sim.proxmox_settings(auth=auth)))  # type: ignore[arg-type]
    srv = await proxbox_server(settings)
    resp = await session.get(srv.url("/ready"))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["ready"] is True
    names = [c["name"] for c in body["checks"]]
    assert names == ["netbox", *(f"proxmox:{ep.name}" for ep in sim.endpoints)]
    assert body["checks"][0]["detail"] == "NetBox 4.7.3"
    assert all(c["detail"].startswith("Proxmox VE ") for c in body["checks"][1:])
    assert not any("secret" in json.dumps(c).lower() for c in body["checks"])


async def test_not_ready_names_what_is_unreachable(
    proxbox_server: Start,
    server_settings: MakeSettings,
    session: aiohttp.ClientSession,
    fake_netbox: FakeNetBox,
    sim: SimServer,
) -> None:
    settings = attrs.evolve(
        server_settings(netbox_url=fake_netbox.url), proxmox=tuple(sim.proxmox_settings(retries=1))
    )
    srv = await proxbox_server(settings)
    down = sim.endpoints[1].name
    await sim.cluster_down(down)
    resp = await session.get(srv.url("/ready"))
    body = await resp.json()
    assert resp.status == 503 and body["ready"] is False
    by_name = {c["name"]: c for c in body["checks"]}
    assert by_name["netbox"]["ok"] and by_name[f"proxmox:{sim.endpoints[0].name}"]["ok"]
    assert not by_name[f"proxmox:{down}"]["ok"] and by_name[f"proxmox:{down}"]["detail"]


async def test_ready_retries_transient_netbox_errors_with_backoff(
    proxbox_server: Start,
    server_settings: MakeSettings,
    session: aiohttp.ClientSession,
    fake_netbox: FakeNetBox,
) -> None:
    fake_netbox.fail_first = 2
    srv = await proxbox_server(server_settings(netbox_url=fake_netbox.url))
    resp = await session.get(srv.url("/ready"))
    assert resp.status == 200, await resp.text()
    assert fake_netbox.requests == 3


async def test_ready_reports_a_refused_netbox_token(
    proxbox_server: Start,
    server_settings: MakeSettings,
    session: aiohttp.ClientSession,
    fake_netbox: FakeNetBox,
) -> None:
    srv = await proxbox_server(server_settings(netbox_url=fake_netbox.url, netbox_token="f" * 40))
    resp = await session.get(srv.url("/ready"))
    body = await resp.json()
    assert resp.status == 503 and body["checks"][0]["status"] == 403
    assert fake_netbox.requests == 1  # a 4xx is an answer, not a transient error: no retry


async def test_unauthenticated_requests_cause_zero_proxmox_and_netbox_requests(
    proxbox_server: Start,
    server_settings: MakeSettings,
    session: aiohttp.ClientSession,
    fake_netbox: FakeNetBox,
    sim: SimServer,
) -> None:
    settings = attrs.evolve(
        server_settings(netbox_url=fake_netbox.url, api_keys=[API_KEY], auth_timeout_s=0.3),
        proxmox=tuple(sim.proxmox_settings()),
    )
    srv = await proxbox_server(settings)
    sim.reset_requests()
    for method, path in [("GET", "/ready"), ("POST", "/sync/full"), ("POST", "/sync/vms"), ("GET", "/runs")]:
        assert (
            await session.request(method, srv.url(path), headers={"Authorization": "Bearer x"})
        ).status == 401
    for path, first in [("/ws", "Full Update Sync"), ("/ws/virtual-machines", None), ("/", None)]:
        ws = await session.ws_connect(srv.ws_url(path))
        if first:
            await ws.send_str(first)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001
    assert sim_total(sim) == 0
    assert fake_netbox.requests == 0
    assert srv.job.calls == []
    # the same requests with the key do reach them
    assert (await session.get(srv.url("/ready"), headers=AUTH)).status == 200
    assert sim_total(sim) > 0 and fake_netbox.requests > 0


# ------------------------------------------------------------------------------------ invariants


async def test_no_get_changes_anything(proxbox_server: Start, session: aiohttp.ClientSession) -> None:
    srv = await proxbox_server(job=ScriptedJob(items=1))
    run, _ = srv.runs.trigger("nodes")
    await asyncio.wait_for(run.finished.wait(), 10)
    before = await (await session.get(srv.url("/runs"))).json()
    for path in (
        "/runs",
        f"/runs/{run.id}",
        "/runs/latest",
        f"/runs/{run.id}/events",
        "/health",
        "/version",
        "/sync/full",
        f"/runs/{run.id}/cancel",
    ):
        await (await session.get(srv.url(path))).read()
    assert await (await session.get(srv.url("/runs"))).json() == before
    assert len(srv.job.calls) == 1


async def test_run_history_survives_a_restart(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    settings = server_settings()
    first = await proxbox_server(settings, job=ScriptedJob(items=3))
    run, _ = first.runs.trigger("vms")
    await asyncio.wait_for(run.finished.wait(), 10)
    await first.server.close()

    second = await proxbox_server(settings)
    body = await (await session.get(second.url(f"/runs/{run.id}"))).json()
    assert (body["run"]["status"], body["run"]["counts"]["created"], body["run"]["kind"]) == (
        "succeeded",
        3,
        "vms",
    )
    ws = await session.ws_connect(second.ws_url(f"/ws/runs/{run.id}"))
    frames = await read_frames(ws)
    assert [f["type"] for f in frames] == ["complete"] and frames[0]["seq"] == run.last_seq
    msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000


async def test_a_periodic_full_sync_runs_when_an_interval_is_configured(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    srv = await proxbox_server(server_settings(sync={"interval_s": 0.2}), job=ScriptedJob(items=1))
    await wait_until(lambda: len(srv.job.calls) >= 2)
    runs = (await (await session.get(srv.url("/runs"))).json())["runs"]
    assert {r["trigger"] for r in runs} == {"schedule"} and {r["kind"] for r in runs} == {"full"}


async def test_an_sse_client_that_never_reads_is_dropped_and_the_others_get_everything(
    proxbox_server: Start, server_settings: MakeSettings, session: aiohttp.ClientSession
) -> None:
    dropped: list[str] = []

    class Recorder(RunObserver):
        def watcher_dropped(self, run_id: str, reason: str) -> None:
            dropped.append(reason)

    job = ScriptedJob(items=1500, delay_s=0.001, pad=4000)
    job.hold.clear()
    srv = await proxbox_server(server_settings(subscriber_buffer=20), job=job, observers=[Recorder()])
    run, _ = srv.runs.trigger("full")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stuck, (srv.server.host, srv.server.port))
    await loop.sock_sendall(stuck, f"GET /runs/{run.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    reader = await session.get(srv.url(f"/runs/{run.id}/events"))
    await wait_until(lambda: run.watchers() == 2)
    job.hold.set()
    events = parse_sse(await asyncio.wait_for(reader.text(), 60))
    assert [seq for seq, _ in events] == list(range(1, run.last_seq + 1))
    assert dropped and "20 frames behind" in dropped[0]
    stuck.close()
