"""The real proxmoxer library against the simulator (in its own thread), in both auth modes, verifying TLS."""

from __future__ import annotations

import time

import pytest
import requests
from proxmoxer import AuthenticationError, ProxmoxAPI
from proxmoxer.core import ResourceException

from proxbox.sim import SimThread, generate
from tests.fixtures.sim import token_api


def _ticket_api(ep, **kw):
    return ProxmoxAPI(ep.host, port=ep.port, user=ep.user, password=ep.password, verify_ssl=ep.ca_path, **kw)


def test_token_auth_walks_the_inventory_and_matches_the_oracle(sim_thread):
    oracle = {c["name"]: c for c in sim_thread.dump()["clusters"]}
    for ep in sim_thread.endpoints:
        px = token_api(ep)
        status = px.cluster.status.get()
        assert status[0]["name"] == ep.name
        vms = px.cluster.resources.get(type="vm")
        expected = {(g["vmid"], g["name"], g["node"]) for g in oracle[ep.name]["guests"]}
        assert {(v["vmid"], v["name"], v["node"]) for v in vms} == expected
        for node in px.nodes.get():
            listed = {g["vmid"] for g in px.nodes(node["node"]).qemu.get()} | {
                g["vmid"] for g in px.nodes(node["node"]).lxc.get()
            }
            assert listed == {g["vmid"] for g in oracle[ep.name]["guests"] if g["node"] == node["node"]}
        g = oracle[ep.name]["guests"][0]
        conf = px.nodes(g["node"]).__getattr__(g["kind"])(g["vmid"]).config.get()
        assert g["nics"][0]["mac"] in conf["net0"]


def test_ticket_auth_logs_in_and_sends_csrf_on_post(sim_thread):
    ep = sim_thread.endpoints[0]
    px = _ticket_api(ep)
    assert px.version.get()["release"] == "9.1"
    g = next(g for g in sim_thread.dump()["clusters"][0]["guests"] if g["kind"] == "qemu")
    try:
        px.nodes(g["node"]).qemu(g["vmid"]).agent.ping.post()
    except ResourceException as exc:  # past auth and CSRF: the agent answered why it cannot
        assert exc.status_code == 500
    counts = sim_thread.requests()[ep.name]["routes"]
    assert counts["POST /access/ticket"]["total"] == 1
    assert counts["POST /nodes/{node}/qemu/{vmid}/agent/ping"]["ticket"] == 1


def test_wrong_token_raises_401_with_an_empty_body(sim_thread):
    ep = sim_thread.endpoints[0]
    px = ProxmoxAPI(
        ep.host,
        port=ep.port,
        user=ep.user,
        token_name=ep.token_name,
        token_value="wrong",
        verify_ssl=ep.ca_path,
    )
    with pytest.raises(ResourceException) as exc:
        px.version.get()
    assert exc.value.status_code == 401
    assert exc.value.errors == {"errors": b""}


def test_wrong_password_fails_the_constructor(sim_thread):
    ep = sim_thread.endpoints[0]
    with pytest.raises(AuthenticationError):
        ProxmoxAPI(ep.host, port=ep.port, user=ep.user, password="wrong", verify_ssl=ep.ca_path)


def test_tls_is_not_trusted_without_the_simulators_ca(sim_thread):
    ep = sim_thread.endpoints[0]
    px = ProxmoxAPI(
        ep.host,
        port=ep.port,
        user=ep.user,
        token_name=ep.token_name,
        token_value=ep.token_secret,
        verify_ssl=True,
    )
    with pytest.raises(requests.exceptions.SSLError):
        px.version.get()


def test_pve_errors_surface_as_resource_exceptions(sim_thread):
    ep = sim_thread.endpoints[0]
    px = token_api(ep)
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve-a1").bogus.get()
    assert exc.value.status_code == 501 and "not implemented" in exc.value.content
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve-a1").qemu(99999).config.get()
    assert exc.value.status_code == 500 and "does not exist" in exc.value.content
    sim_thread.node_offline(ep.name, "pve-a2")
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve-a2").status.get()
    assert exc.value.status_code == 595


def test_injected_faults_reach_proxmoxer(sim_thread):
    ep = sim_thread.endpoints[0]
    px = token_api(ep)
    sim_thread.add_fault(path="/nodes", action="malformed_json", times=1)
    assert isinstance(px.nodes.get(), dict)  # proxmoxer hands back {'errors': b'...'} for a non-JSON 200
    sim_thread.add_fault(path="/version", action="drop", times=3)
    with pytest.raises(requests.exceptions.ConnectionError):
        px.version.get()


def test_expired_ticket_gets_401_and_renewal_by_ticket_works():
    with SimThread(generate(seed=2, clusters=1, nodes=1, guests=2), ticket_ttl_s=1.0) as sim:
        ep = sim.endpoints[0]
        login = requests.post(
            f"{ep.url}/access/ticket",
            data={"username": ep.user, "password": ep.password},
            verify=ep.ca_path,
            timeout=5,
        ).json()["data"]
        renewed = requests.post(
            f"{ep.url}/access/ticket",
            data={"username": ep.user, "password": login["ticket"]},
            verify=ep.ca_path,
            timeout=5,
        )
        assert renewed.status_code == 200 and renewed.json()["data"]["ticket"].startswith("PVE:root@pam:")
        time.sleep(1.2)
        stale = requests.get(
            f"{ep.url}/version", cookies={"PVEAuthCookie": login["ticket"]}, verify=ep.ca_path, timeout=5
        )
        assert (stale.status_code, stale.content) == (401, b"")


def test_proxmox_settings_describe_each_endpoint(sim_thread):
    token = sim_thread.proxmox_settings()
    ticket = sim_thread.proxmox_settings(auth="ticket", timeout=3.0)
    assert [s.name for s in token] == [ep.name for ep in sim_thread.endpoints]
    first = token[0]
    assert first.uses_token and first.verify_ssl == sim_thread.ca_path and first.token_name == "proxbox"
    assert not ticket[0].uses_token and ticket[0].password and ticket[0].timeout == 3.0
    px = ProxmoxAPI(
        first.host,
        port=first.port,
        user=first.user,
        token_name=first.token_name,
        token_value=first.token_value,
        verify_ssl=first.verify_ssl,
    )
    assert px.version.get()["version"] == "9.1.2"
