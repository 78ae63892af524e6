"""Every fault action, observed from a raw aiohttp client over TLS."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.fixtures.sim import token_headers


async def _get(http, ep, path="/nodes", total_s=5.0):
    async with http.get(
        ep.url + path, headers=token_headers(ep), timeout=aiohttp.ClientTimeout(total=total_s)
    ) as r:
        return r.status, r.reason, dict(r.headers), await r.read()


async def test_latency_with_jitter_delays_the_answer(sim, sim_http):
    ep = sim.endpoints[0]
    sim.add_fault(path="/nodes", action="latency", latency_ms=150, jitter_ms=50)
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, *_ = await _get(sim_http, ep)
    assert status == 200 and loop.time() - start >= 0.14


@pytest.mark.parametrize(
    ("status", "message", "reason", "empty"),
    [
        (500, "QEMU guest agent is not running", "QEMU guest agent is not running", False),
        (502, None, "Bad Gateway", False),
        (503, "service busy\nretry later", "service busy", False),
        (
            403,
            "Permission check failed (/vms/100, VM.Audit)",
            "Permission check failed (/vms/100, VM.Audit)",
            False,
        ),
        (401, None, "authentication failure", True),
        (595, None, "No route to host", True),
        (596, None, "TLS handshake failed", True),
    ],
)
async def test_status_faults_use_pve_framing(sim, sim_http, status, message, reason, empty):
    ep = sim.endpoints[0]
    sim.add_fault(path="/nodes", status=status, message=message)
    got, got_reason, headers, body = await _get(sim_http, ep)
    assert (got, got_reason) == (status, reason)
    assert headers["Connection"] == "close"
    if empty:
        assert body == b""
    else:
        doc = json.loads(body)
        assert doc["data"] is None and doc["message"].endswith("\n") and doc["message"].startswith(reason)


async def test_hang_sleeps_then_closes_without_an_answer(sim, sim_http):
    ep = sim.endpoints[0]
    sim.add_fault(path="/nodes", action="hang", hang_s=0.3)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _get(sim_http, ep)
    sim.clear_faults()
    sim.add_fault(path="/nodes", action="hang", hang_s=30)
    with pytest.raises(asyncio.TimeoutError):
        await _get(sim_http, ep, total_s=0.3)


async def test_drop_closes_before_any_byte(sim, sim_http, sim_ssl):
    ep = sim.endpoints[0]
    sim.add_fault(path="/nodes", action="drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _get(sim_http, ep)
    reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=sim_ssl)
    auth = token_headers(ep)["Authorization"]
    writer.write(f"GET /api2/json/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    sim.clear_faults()
    assert (await _get(sim_http, ep))[0] == 200


async def test_reset_mid_body_sends_half_of_the_announced_length(sim, sim_http):
    ep = sim.endpoints[0]
    sim.add_fault(path="/cluster/resources", action="reset_mid_body")
    with pytest.raises(aiohttp.ClientPayloadError):
        await _get(sim_http, ep, "/cluster/resources")


async def test_malformed_json_is_a_200_with_truncated_json(sim, sim_http):
    ep = sim.endpoints[0]
    sim.add_fault(path="/nodes", action="malformed_json")
    status, _, _, body = await _get(sim_http, ep)
    assert status == 200 and body.startswith(b'{"data":[')
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


@pytest.mark.parametrize("html_status", [502, 200])
async def test_html_is_a_proxy_error_page(sim, sim_http, html_status):
    ep = sim.endpoints[0]
    sim.add_fault(path="/nodes", action="html", html_status=html_status)
    status, _, headers, body = await _get(sim_http, ep)
    assert status == html_status and headers["Content-Type"].startswith("text/html")
    assert body.startswith(b"<!DOCTYPE html>")


async def test_wrong_shape_no_envelope_and_empty_data(sim, sim_http):
    ep = sim.endpoints[0]
    normal = json.loads((await _get(sim_http, ep))[3])["data"]
    assert isinstance(normal, list)
    rule = sim.add_fault(path="/nodes", action="wrong_shape")
    assert isinstance(json.loads((await _get(sim_http, ep))[3])["data"], dict)
    sim.remove_fault(rule)
    rule = sim.add_fault(path="/nodes", action="no_envelope")
    assert json.loads((await _get(sim_http, ep))[3]) == normal
    sim.remove_fault(rule)
    sim.add_fault(path="/nodes", action="empty_data")
    assert (await _get(sim_http, ep))[3] == b'{"data":null}'


async def test_slow_body_drips_the_full_answer(sim, sim_http):
    ep = sim.endpoints[0]
    normal = (await _get(sim_http, ep, "/version"))[3]
    sim.add_fault(path="/version", action="slow_body", chunk_bytes=16, chunk_delay_ms=30)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await _get(sim_http, ep, "/version"))[3] == normal
    chunks = -(-len(normal) // 16)
    assert loop.time() - start >= 0.03 * (chunks - 1) * 0.9


async def test_faults_match_cluster_node_and_auth_kind(sim, sim_http):
    a, b = sim.endpoints
    sim.add_fault(path="/nodes/*/status", cluster="lab-b", node="pve-b2", auth="token", status=503)
    assert (await _get(sim_http, a, "/nodes/pve-a2/status"))[0] == 200
    assert (await _get(sim_http, b, "/nodes/pve-b1/status"))[0] == 200
    assert (await _get(sim_http, b, "/nodes/pve-b2/status"))[0] == 503


async def test_every_kth_request_fails_and_the_rule_reports_its_counts(sim, sim_http):
    ep = sim.endpoints[0]
    sim.add_fault(path="/version", every=2, status=500)
    statuses = [(await _get(sim_http, ep, "/version"))[0] for _ in range(4)]
    assert statuses == [200, 500, 200, 500]
    assert sim.faults()[0]["matched"] == 4 and sim.faults()[0]["fired"] == 2
