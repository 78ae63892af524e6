"""The simulator over real TLS sockets: envelope, auth modes, PVE error framing, outages, control API."""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest

from proxbox.sim import SimServer, generate
from tests.fixtures.sim import token_headers


def _url(ep, path):
    return f"{ep.url}{path}"


async def _get(http, ep, path, **kw):
    kw.setdefault("headers", token_headers(ep))
    async with http.get(_url(ep, path), **kw) as resp:
        return resp.status, resp.reason, dict(resp.headers), await resp.read()


async def test_token_auth_answers_in_the_pve_envelope(sim, sim_http):
    ep = sim.endpoints[0]
    status, _, headers, body = await _get(sim_http, ep, "/version")
    assert status == 200
    assert json.loads(body) == {"data": {"version": "9.1.2", "release": "9.1", "repoid": "c2a4b9e1"}}
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Server"] == "pve-api-daemon/3.0"


async def test_each_cluster_has_its_own_port_and_its_own_world(sim, sim_http):
    assert len({ep.port for ep in sim.endpoints}) == len(sim.endpoints) == 2
    names = []
    for ep in sim.endpoints:
        _, _, _, body = await _get(sim_http, ep, "/cluster/status")
        names.append(json.loads(body)["data"][0]["name"])
    assert names == ["lab-a", "lab-b"]


async def test_wrong_token_is_401_with_empty_body_reason_and_connection_close(sim, sim_http):
    ep = sim.endpoints[0]
    status, reason, headers, body = await _get(
        sim_http, ep, "/version", headers={"Authorization": f"PVEAPIToken={ep.token_id}=wrong"}
    )
    assert (status, body) == (401, b"")
    assert reason == "invalid token value!"
    assert headers["Connection"] == "close"
    status, reason, _, body = await _get(sim_http, ep, "/version", headers={})
    assert (status, reason, body) == (401, "No ticket", b"")


async def test_unknown_paths_are_501_only_after_auth(sim, sim_http):
    ep = sim.endpoints[0]
    status, reason, headers, body = await _get(sim_http, ep, "/nodes/pve-a1/bogus")
    assert status == 501
    assert reason == "Method 'GET /nodes/pve-a1/bogus' not implemented"
    assert json.loads(body) == {"data": None, "message": "Method 'GET /nodes/pve-a1/bogus' not implemented\n"}
    assert headers["Connection"] == "close"
    status, _, _, _ = await _get(sim_http, ep, "/nodes/pve-a1/bogus", headers={})
    assert status == 401
    async with sim_http.post(_url(ep, "/version"), headers=token_headers(ep)) as resp:
        assert resp.status == 501 and resp.reason == "Method 'POST /version' not implemented"


async def test_pve_500s_carry_the_message_as_reason_and_body(sim, sim_http):
    ep = sim.endpoints[0]
    g = next(g for g in sim.world.cluster(ep.name).guests.values() if g.kind == "qemu" and not g.running)
    status, reason, headers, body = await _get(sim_http, ep, f"/nodes/{g.node}/qemu/{g.vmid}/config")
    assert status == 200
    other = next(n.name for n in sim.world.cluster(ep.name).nodes if n.name != g.node)
    status, reason, headers, body = await _get(sim_http, ep, f"/nodes/{other}/qemu/{g.vmid}/config")
    message = f"Configuration file 'nodes/{other}/qemu-server/{g.vmid}.conf' does not exist"
    assert (status, reason) == (500, message)
    assert body == json.dumps({"data": None, "message": message + "\n"}, separators=(",", ":")).encode()
    assert headers["Connection"] == "close"


async def test_bad_parameters_are_400_with_errors(sim, sim_http):
    ep = sim.endpoints[0]
    status, reason, _, body = await _get(sim_http, ep, "/nodes/pve-a1/qemu/abc/config")
    assert (status, reason) == (400, "Parameter verification failed.")
    assert json.loads(body)["errors"] == {"vmid": "type check ('integer') failed - got 'abc'"}


async def test_ticket_login_cookie_and_csrf_on_non_get(sim, sim_http):
    ep = sim.endpoints[0]
    async with sim_http.post(
        _url(ep, "/access/ticket"), data={"username": ep.user, "password": ep.password}
    ) as r:
        assert r.status == 200
        data = (await r.json())["data"]
    assert data["username"] == ep.user and data["clustername"] == "lab-a"
    cookie = {"Cookie": f"PVEAuthCookie={data['ticket']}"}
    status, _, _, _ = await _get(sim_http, ep, "/nodes", headers=cookie)
    assert status == 200
    g = next(g for g in sim.world.cluster(ep.name).guests.values() if g.kind == "qemu")
    ping = _url(ep, f"/nodes/{g.node}/qemu/{g.vmid}/agent/ping")
    async with sim_http.post(ping, headers=cookie) as r:
        assert (r.status, r.reason, await r.read()) == (401, "Permission denied - invalid csrf token", b"")
    async with sim_http.post(
        ping, headers={**cookie, "CSRFPreventionToken": data["CSRFPreventionToken"]}
    ) as r:
        assert r.status in (200, 500)  # past auth: the agent answers or says why not


async def test_a_ticket_from_one_cluster_is_refused_by_another(sim, sim_http):
    east, west = sim.endpoints[:2]
    async with sim_http.post(
        _url(east, "/access/ticket"), data={"username": east.user, "password": east.password}
    ) as r:
        data = (await r.json())["data"]
    cookie = {"Cookie": f"PVEAuthCookie={data['ticket']}"}
    assert (await _get(sim_http, east, "/version", headers=cookie))[0] == 200
    status, reason, _, body = await _get(sim_http, west, "/version", headers=cookie)
    assert (status, reason, body) == (401, "invalid PVE ticket", b"")
    # renewing with the other cluster's ticket as the password fails like a wrong password
    async with sim_http.post(
        _url(west, "/access/ticket"), data={"username": west.user, "password": data["ticket"]}
    ) as r:
        assert r.status == 401


async def test_failed_login_is_an_ordinary_json_401(sim, sim_http):
    ep = sim.endpoints[0]
    async with sim_http.post(_url(ep, "/access/ticket"), data={"username": ep.user, "password": "nope"}) as r:
        assert (r.status, r.reason) == (401, "authentication failure")
        assert await r.json() == {"data": None, "message": "authentication failure\n"}
    async with sim_http.post(_url(ep, "/access/ticket"), data={"username": ep.user}) as r:
        assert r.status == 400 and "password" in (await r.json())["errors"]


async def test_unauthenticated_calls_are_delayed_when_configured(sim_world, sim_http):
    async with SimServer(sim_world(clusters=1), unauth_delay_s=0.3) as server:
        ep = server.endpoints[0]
        ctx = ssl.create_default_context(cafile=server.ca_path)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with aiohttp.ClientSession() as http, http.get(_url(ep, "/version"), ssl=ctx) as r:
            assert r.status == 401
        assert loop.time() - start >= 0.25


async def test_same_seed_gives_byte_identical_answers_over_http(sim_world):
    bodies = []
    for _ in range(2):
        async with SimServer(sim_world(seed=77, clusters=1, nodes=2, guests=6)) as server:
            ep = server.endpoints[0]
            ctx = ssl.create_default_context(cafile=server.ca_path)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
                out = []
                for path in (
                    "/cluster/resources",
                    "/nodes/pve-a1/qemu",
                    "/nodes/pve-a2/lxc",
                    "/nodes/pve-a1/status",
                ):
                    out.append((await _get(http, ep, path))[3])
                for g in sorted(server.world.clusters[0].guests.values(), key=lambda g: g.vmid):
                    out.append((await _get(http, ep, f"/nodes/{g.node}/{g.kind}/{g.vmid}/config"))[3])
                bodies.append(out)
    assert bodies[0] == bodies[1]


async def test_node_offline_gives_595_and_shows_offline_everywhere(sim, sim_http):
    ep = sim.endpoints[0]
    sim.node_offline("lab-a", "pve-a2")
    status, reason, headers, body = await _get(sim_http, ep, "/nodes/pve-a2/qemu")
    assert (status, reason, body) == (595, "No route to host", b"")
    assert headers["Connection"] == "close"
    _, _, _, body = await _get(sim_http, ep, "/cluster/status")
    assert {r["name"]: r["online"] for r in json.loads(body)["data"] if r["type"] == "node"}["pve-a2"] == 0
    _, _, _, body = await _get(sim_http, ep, "/cluster/resources?type=vm")
    assert {r["status"] for r in json.loads(body)["data"] if r["node"] == "pve-a2"} == {"unknown"}
    sim.node_online("lab-a", "pve-a2")
    status, _, _, _ = await _get(sim_http, ep, "/nodes/pve-a2/qemu")
    assert status == 200


async def test_cluster_down_refuses_connections_until_it_comes_back(sim, sim_ssl):
    ep = sim.endpoints[1]
    await sim.cluster_down(ep.name)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=sim_ssl)) as http:
        with pytest.raises(aiohttp.ClientConnectorError) as exc:
            await _get(http, ep, "/version")
        assert isinstance(exc.value.os_error, ConnectionRefusedError)
        status, _, _, _ = await _get(http, sim.endpoints[0], "/version")
        assert status == 200
    await sim.cluster_up(ep.name)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=sim_ssl)) as http:
        assert (await _get(http, ep, "/version"))[0] == 200


async def test_cluster_down_closes_kept_alive_connections(sim, sim_http):
    ep = sim.endpoints[1]
    assert (await _get(sim_http, ep, "/version"))[0] == 200  # pooled keep-alive connection
    await sim.cluster_down(ep.name)
    with pytest.raises(aiohttp.ClientError):
        await _get(sim_http, ep, "/version")


async def test_request_counters_count_routes_auth_kinds_statuses_and_in_flight(sim, sim_http):
    ep = sim.endpoints[0]
    sim.reset_requests()
    for _ in range(3):
        await _get(sim_http, ep, "/nodes/pve-a1/qemu")
    await _get(sim_http, ep, "/nodes/pve-a1/qemu/100/config")
    await _get(sim_http, ep, "/nope")
    await _get(sim_http, ep, "/version", headers={})
    sim.add_fault(path="/cluster/resources", action="latency", latency_ms=200)
    await asyncio.gather(*(_get(sim_http, ep, "/cluster/resources") for _ in range(3)))
    counts = sim.requests()["lab-a"]
    assert counts["routes"]["GET /nodes/{node}/qemu"] == {"total": 3, "token": 3}
    assert counts["routes"]["GET /nodes/{node}/qemu/{vmid}/config"]["total"] == 1
    assert counts["routes"]["GET *"]["total"] == 1
    assert counts["routes"]["GET /version"] == {"total": 1, "none": 1}
    assert counts["statuses"]["401"] == 1 and counts["statuses"]["501"] == 1
    assert counts["total"] == 9 and counts["in_flight"] == 0
    assert counts["max_in_flight"] == 3
    assert sim.requests()["lab-b"]["total"] == 0
    sim.reset_requests()
    assert sim.requests()["lab-a"]["total"] == 0


async def test_answers_are_served_from_cache_until_the_world_changes(sim, sim_http):
    ep = sim.endpoints[0]
    first = (await _get(sim_http, ep, "/cluster/resources?type=vm"))[3]
    assert (await _get(sim_http, ep, "/cluster/resources?type=vm"))[3] == first
    sim.drift(op="rename", cluster="lab-a", vmid=100, name="changed")
    after = json.loads((await _get(sim_http, ep, "/cluster/resources?type=vm"))[3])["data"]
    assert next(r for r in after if r["vmid"] == 100)["name"] == "changed"


async def test_live_clock_moves_uptimes(sim_world):
    async with SimServer(sim_world(clusters=1), live_clock=True) as server:
        ep = server.endpoints[0]
        ctx = ssl.create_default_context(cafile=server.ca_path)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            before = json.loads((await _get(http, ep, "/nodes/pve-a1/status"))[3])["data"]["uptime"]
            await asyncio.sleep(1.1)
            after = json.loads((await _get(http, ep, "/nodes/pve-a1/status"))[3])["data"]["uptime"]
    assert after > before


async def test_world_out_file_follows_changes(sim_world, tmp_path):
    out = tmp_path / "world.json"
    async with SimServer(sim_world(clusters=1), world_out=str(out)) as server:
        assert json.loads(out.read_text())["summary"] == {"lab-a": {"nodes": 2, "guests": 8}}
        server.drift(op="delete", cluster="lab-a", vmid=100)
        assert json.loads(out.read_text())["summary"] == {"lab-a": {"nodes": 2, "guests": 7}}


async def test_standalone_endpoint_is_served_without_a_cluster_row():
    async with SimServer(generate(seed=1, clusters=1, nodes=1, guests=2, standalone=1)) as server:
        ep = server.endpoint("pve-s1")
        assert ep.standalone
        ctx = ssl.create_default_context(cafile=server.ca_path)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            rows = json.loads((await _get(http, ep, "/cluster/status"))[3])["data"]
    assert [r["type"] for r in rows] == ["node"]


# ------------------------------------------------------------------------------------------ control API


async def _control(http, sim, method, path, body=None, headers=None, port=None):
    ep = sim.endpoints[0]
    url = f"https://{ep.host}:{port or sim.control_port}/_sim/{path}"
    async with http.request(
        method, url, json=body, headers=token_headers(ep) if headers is None else headers
    ) as r:
        return r.status, await r.json()


async def test_control_api_needs_credentials(sim, sim_http):
    status, body = await _control(sim_http, sim, "GET", "faults", headers={})
    assert status == 401 and "unauthorized" in body["error"]


async def test_control_api_is_absent_without_control(sim_world):
    async with SimServer(sim_world(clusters=1)) as server:
        assert server.control_port is None
        ep = server.endpoints[0]
        ctx = ssl.create_default_context(cafile=server.ca_path)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"https://{ep.host}:{ep.port}/_sim/faults", headers=token_headers(ep), ssl=ctx) as r,
        ):
            assert r.status == 404


async def test_control_api_faults_round_trip(sim, sim_http):
    status, body = await _control(
        sim_http, sim, "POST", "faults", {"path": "/version", "status": 503, "times": 1}
    )
    assert status == 200 and body["ids"] == [1]
    ep = sim.endpoints[0]
    assert (await _get(sim_http, ep, "/version"))[0] == 503
    assert (await _get(sim_http, ep, "/version"))[0] == 200
    _, listed = await _control(sim_http, sim, "GET", "faults")
    assert listed["faults"][0]["fired"] == 1
    status, body = await _control(sim_http, sim, "POST", "faults", {"action": "explode"})
    assert status == 400 and "action" in body["error"]
    assert (await _control(sim_http, sim, "DELETE", "faults/1"))[0] == 200
    assert (await _control(sim_http, sim, "DELETE", "faults/1"))[0] == 404
    await _control(sim_http, sim, "POST", "faults", [{"action": "drop"}, {"action": "html"}])
    assert len(sim.faults()) == 2
    await _control(sim_http, sim, "DELETE", "faults")
    assert sim.faults() == []


async def test_control_api_drift_and_world_dump(sim, sim_http):
    status, body = await _control(
        sim_http, sim, "POST", "drift", {"op": "rename", "cluster": "lab-b", "vmid": 101, "name": "via-http"}
    )
    assert status == 200 and body["changes"][0]["after"] == "via-http"
    _, world = await _control(sim_http, sim, "GET", "world")
    assert next(g for g in world["clusters"][1]["guests"] if g["vmid"] == 101)["name"] == "via-http"
    _, body = await _control(sim_http, sim, "POST", "drift", {"steps": 1, "seed": 3})
    assert len(body["changes"]) >= 5
    status, body = await _control(
        sim_http, sim, "POST", "drift", {"op": "delete", "cluster": "lab-a", "vmid": 9999}
    )
    assert status == 400 and "no guest" in body["error"]


async def test_control_api_outages_requests_and_auth_switches(sim, sim_http):
    ep = sim.endpoints[0]
    await _control(sim_http, sim, "POST", "node_offline", {"cluster": "lab-a", "node": "pve-a1"})
    assert (await _get(sim_http, ep, "/nodes/pve-a1/status"))[0] == 595
    await _control(sim_http, sim, "POST", "node_online", {"cluster": "lab-a", "node": "pve-a1"})
    # a cluster can be taken down through its own port: the call is answered, then the port refuses
    status, _ = await _control(sim_http, sim, "POST", "cluster_down", {"cluster": "lab-a"}, port=ep.port)
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectorError):
        await _get(sim_http, ep, "/version")
    await _control(sim_http, sim, "POST", "cluster_up", {"cluster": "lab-a"})
    assert (await _get(sim_http, ep, "/version"))[0] == 200
    _, counts = await _control(sim_http, sim, "GET", "requests")
    assert counts["lab-a"]["total"] >= 2
    await _control(sim_http, sim, "DELETE", "requests")
    assert sim.requests()["lab-a"]["total"] == 0
    _, rotated = await _control(sim_http, sim, "POST", "auth/rotate_token", {"secret": "fresh"})
    assert rotated["token_secret"] == "fresh"
    assert (await _get(sim_http, ep, "/version"))[0] == 401
    assert (await _get(sim_http, sim.endpoints[0], "/version"))[0] == 200
    _, info = await _control(sim_http, sim, "GET", "endpoints", headers=token_headers(sim.endpoints[0]))
    assert info["credentials"]["token_secret"] == "fresh"


async def test_start_precomputes_what_a_sync_reads_and_rewarms_after_changes(sim, sim_http):
    from proxbox.sim.app import warm

    assert await warm(sim.state, "lab-a") == 0  # start rendered everything already
    sim.drift(op="rename", cluster="lab-a", vmid=100, name="rewarmed")
    assert await warm(sim.state, "lab-a") > 0
    ep = sim.endpoints[0]
    g = sim.world.cluster("lab-a").guests[100]
    _, _, _, body = await _get(sim_http, ep, f"/nodes/{g.node}/{g.kind}/100/config")
    conf = json.loads(body)["data"]
    assert conf.get("name", conf.get("hostname")) == "rewarmed"


async def test_base_latency_delays_api_answers_and_pve_exact_delays_401s(sim_world):
    async with SimServer(sim_world(clusters=1), latency_ms=200) as server:
        ep = server.endpoints[0]
        ctx = ssl.create_default_context(cafile=server.ca_path)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            await _get(http, ep, "/version")  # connect first
            start = loop.time()
            assert (await _get(http, ep, "/version"))[0] == 200
            assert loop.time() - start >= 0.19
    assert SimServer(sim_world(clusters=1), pve_exact=True).state.unauth_delay_s == 3.0
    assert SimServer(sim_world(clusters=1)).state.unauth_delay_s == 0.0
