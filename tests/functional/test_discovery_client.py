"""PveClient through real proxmoxer against the simulator over TLS: both auth modes, every fault type.

Each fault is injected once (``times: 1``) to show it is retried and recovered from, and persistently to show
it ends as a typed error after the configured attempts, within the time the settings allow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from proxbox.config import ProxmoxSettings
from proxbox.errors import (
    ProxmoxAuthError,
    ProxmoxBadRequest,
    ProxmoxMalformedResponse,
    ProxmoxNotFound,
    ProxmoxPermissionError,
    ProxmoxUnavailable,
)
from proxbox.proxmox.client import PveClient
from proxbox.sim import SimServer, generate

RETRIES = 3
BACKOFF_S = 0.01
TIMEOUT_S = 0.5


@pytest.fixture
async def sim1() -> AsyncIterator[SimServer]:
    """One small cluster (2 nodes, 6 guests)."""
    async with SimServer(generate(seed=11, clusters=1, nodes=2, guests=6), control=True) as server:
        yield server


def settings_for(sim: SimServer, auth: str = "token", **kw: Any) -> ProxmoxSettings:
    base: dict[str, Any] = {
        "retries": RETRIES,
        "backoff_s": BACKOFF_S,
        "timeout": TIMEOUT_S,
        "connect_timeout": TIMEOUT_S,
        "concurrency": 2,
    }
    base.update(kw)
    return sim.proxmox_settings(auth, **base)[0]


def worst_case_s(client: PveClient, attempts: int) -> float:
    """The longest a call may take under the client's own settings: every attempt hits the guard, every
    backoff its ceiling."""
    s = client.settings
    backoff = sum(s.backoff_s * 2**i for i in range(attempts))
    return attempts * client.guard_s + backoff


def first_running_qemu_with_agent(sim: SimServer) -> tuple[str, int]:
    for g in sim.dump()["clusters"][0]["guests"]:
        if g["kind"] == "qemu" and g["status"] == "running" and g["agent"]["answering"]:
            return g["node"], g["vmid"]
    raise AssertionError("the world has no running qemu guest with an answering agent")


# ------------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("auth", ["token", "ticket"])
async def test_client_reads_the_api_in_both_auth_modes(sim1: SimServer, auth: str):
    async with PveClient(settings_for(sim1, auth)) as client:
        version = await client.version()
        status = await client.get("cluster", "status")
    assert version["version"] == "9.1.2"
    assert [row["name"] for row in status if row["type"] == "cluster"] == ["lab-a"]
    routes = sim1.requests()["lab-a"]["routes"]
    assert routes["GET /version"][auth] == 1


async def test_ticket_mode_logs_in_once_per_worker_thread(sim1: SimServer):
    async with PveClient(settings_for(sim1, "ticket", concurrency=2)) as client:
        await asyncio.gather(*(client.get("nodes") for _ in range(20)))
    logins = sim1.requests()["lab-a"]["routes"]["POST /access/ticket"]["total"]
    assert 1 <= logins <= 2


async def test_revoked_tickets_are_renewed_by_one_relogin(sim1: SimServer):
    async with PveClient(settings_for(sim1, "ticket", concurrency=1)) as client:
        await client.get("version")
        sim1.revoke_tickets()
        assert (await client.version())["version"] == "9.1.2"
        assert client.stats.relogins == 1
        assert client.stats.errors == {"401": 1}


async def test_a_rotated_token_fails_as_an_auth_error_after_one_retry(sim1: SimServer):
    async with PveClient(settings_for(sim1, "token")) as client:
        await client.get("version")
        sim1.rotate_token()
        with pytest.raises(ProxmoxAuthError) as info:
            await client.get("version")
    assert info.value.context["attempts"] == 2
    assert info.value.context["status"] == 401


async def test_a_wrong_password_is_an_auth_error_without_retries(sim1: SimServer):
    s = attrs.evolve(settings_for(sim1, "ticket"), password="wrong")
    async with PveClient(s) as client:
        with pytest.raises(ProxmoxAuthError):
            await client.get("version")
        assert client.stats.requests == 1
    assert "wrong" not in str(client.stats.as_dict())


async def test_secrets_never_appear_in_errors(sim1: SimServer):
    s = settings_for(sim1, "token")
    sim1.add_fault(path="/version", action="status", status=503)
    async with PveClient(s) as client:
        with pytest.raises(ProxmoxUnavailable) as info:
            await client.get("version")
    text = f"{info.value} {info.value.as_dict()}"
    assert s.token_value not in text
    assert s.token_name in s.token_name and "PVEAPIToken" not in text


# -------------------------------------------------------------------------------------------------- TLS


async def test_tls_is_verified_against_the_configured_ca(sim1: SimServer):
    async with PveClient(settings_for(sim1, verify_ssl=True)) as client:  # system CAs: the sim CA is unknown
        with pytest.raises(ProxmoxUnavailable) as info:
            await client.get("version")
        assert client.stats.requests == 1  # a certificate problem is not retried
    assert info.value.context["kind"] == "tls_verify"


async def test_tls_verification_can_be_disabled(sim1: SimServer):
    async with PveClient(settings_for(sim1, verify_ssl=False)) as client:
        assert (await client.version())["release"] == "9.1"


# ----------------------------------------------------------------------------------------------- faults

ONE_SHOT_FAULTS: list[dict[str, Any]] = [
    {"action": "status", "status": 500, "message": "internal error"},
    {"action": "status", "status": 502},
    {"action": "status", "status": 503},
    {"action": "status", "status": 595},
    {"action": "status", "status": 596},
    {"action": "drop"},
    {"action": "reset_mid_body"},
    {"action": "malformed_json"},
    {"action": "html", "html_status": 200},
    {"action": "html", "html_status": 502},
    {"action": "wrong_shape"},
    {"action": "no_envelope"},
    {"action": "empty_data"},
    {"action": "hang", "hang_s": 1.5},
]


@pytest.mark.parametrize("fault", ONE_SHOT_FAULTS, ids=lambda f: f"{f['action']}-{f.get('status', '')}")
async def test_a_single_fault_is_retried_and_recovered(sim1: SimServer, fault: dict[str, Any]):
    async with PveClient(settings_for(sim1)) as client:
        expected = await client.get("cluster", "resources")
        sim1.add_fault(path="/cluster/resources", times=1, **fault)
        assert await client.get("cluster", "resources") == expected
        assert client.stats.retries == 1
        assert client.stats.failures == 0


PERSISTENT_FAULTS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"action": "status", "status": 503}, ProxmoxUnavailable),
    ({"action": "status", "status": 595}, ProxmoxUnavailable),
    ({"action": "drop"}, ProxmoxUnavailable),
    ({"action": "reset_mid_body"}, ProxmoxUnavailable),
    ({"action": "hang", "hang_s": 1.0}, ProxmoxUnavailable),
    ({"action": "malformed_json"}, ProxmoxMalformedResponse),
    ({"action": "html", "html_status": 200}, ProxmoxMalformedResponse),
    ({"action": "wrong_shape"}, ProxmoxMalformedResponse),
    ({"action": "no_envelope"}, ProxmoxMalformedResponse),
    ({"action": "empty_data"}, ProxmoxMalformedResponse),
]


@pytest.mark.parametrize(
    ("fault", "error"), PERSISTENT_FAULTS, ids=lambda p: p["action"] if isinstance(p, dict) else p.__name__
)
async def test_a_persistent_fault_becomes_a_typed_error_after_all_attempts(
    sim1: SimServer, fault: dict[str, Any], error: type[Exception]
):
    sim1.add_fault(path="/cluster/resources", **fault)
    async with PveClient(settings_for(sim1)) as client:
        started = time.monotonic()
        with pytest.raises(error) as info:
            await client.get("cluster", "resources")
        elapsed = time.monotonic() - started
        assert elapsed < worst_case_s(client, RETRIES)
    assert info.value.context["attempts"] == RETRIES
    assert info.value.context["path"] == "/cluster/resources"
    assert info.value.context["endpoint"] == "lab-a"


async def test_a_slow_body_beyond_the_guard_is_retried(sim1: SimServer):
    sim1.add_fault(path="/cluster/resources", times=1, action="slow_body", chunk_bytes=16, chunk_delay_ms=100)
    async with PveClient(settings_for(sim1)) as client:
        client.guard_s = 0.5  # the guard, not requests' per-read timeout, is what bounds a drip-fed body
        resources = await client.get("cluster", "resources")
        assert client.stats.errors == {"timeout": 1}
    assert isinstance(resources, list) and resources


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ProxmoxBadRequest), (403, ProxmoxPermissionError), (501, ProxmoxNotFound)],
)
async def test_client_errors_are_not_retried(sim1: SimServer, status: int, error: type[Exception]):
    sim1.add_fault(path="/cluster/resources", action="status", status=status)
    async with PveClient(settings_for(sim1)) as client:
        with pytest.raises(error):
            await client.get("cluster", "resources")
        assert client.stats.requests == 1


async def test_an_unknown_path_is_not_found(sim1: SimServer):
    async with PveClient(settings_for(sim1)) as client:
        with pytest.raises(ProxmoxNotFound) as info:
            await client.get("cluster", "no-such-thing")
    assert info.value.context["status"] == 501


async def test_agent_and_guest_no_data_answers_are_absent(sim1: SimServer):
    world = sim1.dump()["clusters"][0]["guests"]
    # stopped, agent not configured, or configured but not answering: PVE answers 500 "no data"
    quiet = [
        g for g in world if g["kind"] == "qemu" and not (g["status"] == "running" and g["agent"]["answering"])
    ]
    assert quiet, "the world has no qemu guest without a running agent"
    guest = quiet[0]
    async with PveClient(settings_for(sim1)) as client:
        agent = ("nodes", guest["node"], "qemu", guest["vmid"], "agent", "network-get-interfaces")
        assert await client.get(*agent) is None
        assert await client.get("nodes", guest["node"], "qemu", 99999, "config") is None
        assert client.stats.absent == 2
        assert client.stats.requests == 2


async def test_a_running_agent_answers(sim1: SimServer):
    node, vmid = first_running_qemu_with_agent(sim1)
    async with PveClient(settings_for(sim1)) as client:
        answer = await client.get("nodes", node, "qemu", vmid, "agent", "network-get-interfaces")
    assert isinstance(answer["result"], list) and answer["result"]


async def test_an_offline_node_is_unavailable_after_retries(sim1: SimServer):
    sim1.node_offline("lab-a", "pve-a2")
    async with PveClient(settings_for(sim1)) as client:
        with pytest.raises(ProxmoxUnavailable) as info:
            await client.get("nodes", "pve-a2", "qemu")
    assert info.value.context["status"] == 595
    assert info.value.context["attempts"] == RETRIES


async def test_a_refused_connection_is_unavailable(sim1: SimServer):
    await sim1.cluster_down("lab-a")
    async with PveClient(settings_for(sim1)) as client:
        with pytest.raises(ProxmoxUnavailable) as info:
            await client.get("version")
    assert info.value.context["kind"] == "connection"


async def test_concurrency_toward_the_endpoint_is_bounded(sim1: SimServer):
    sim1.add_fault(path="/nodes", action="latency", latency_ms=20)
    async with PveClient(settings_for(sim1, concurrency=3)) as client:
        await asyncio.gather(*(client.get("nodes") for _ in range(30)))
    counters = sim1.requests()["lab-a"]
    assert counters["max_in_flight"] == 3


# ----------------------------------------------------------------------------------------- environment


async def test_proxy_environment_is_honoured(sim1: SimServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with PveClient(settings_for(sim1, retries=1)) as client:
        with pytest.raises(ProxmoxUnavailable):
            await client.get("version")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with PveClient(settings_for(sim1)) as client:
        assert (await client.version())["version"] == "9.1.2"


async def test_ca_bundle_from_the_environment_is_used_when_verify_is_true(
    sim1: SimServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim1.ca_path)
    async with PveClient(settings_for(sim1, verify_ssl=True)) as client:
        assert (await client.version())["version"] == "9.1.2"
