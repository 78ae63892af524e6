"""Discovery's decisions with a scripted in-memory client (no sockets): what is kept, what is complete,
which issues are raised. Against the real simulator: tests/functional/test_discovery_world.py."""

from __future__ import annotations

from typing import Any

import pytest

from proxbox.config import ProxmoxSettings
from proxbox.errors import ProxmoxPermissionError, ProxmoxUnavailable
from proxbox.proxmox.client import ClientStats
from proxbox.proxmox.discovery import DiscoveryProgress, discover, visibility_gaps

CLUSTER_STATUS = [
    {"type": "cluster", "id": "cluster", "name": "lab-a", "nodes": 2, "quorate": 1, "version": 3},
    {
        "type": "node",
        "id": "node/pve1",
        "name": "pve1",
        "nodeid": 1,
        "ip": "10.0.0.1",
        "online": 1,
        "local": 1,
    },
    {
        "type": "node",
        "id": "node/pve2",
        "name": "pve2",
        "nodeid": 2,
        "ip": "10.0.0.2",
        "online": 1,
        "local": 0,
    },
]


def vm(vmid: int, node: str, kind: str = "qemu", status: str = "running", **kw: Any) -> dict[str, Any]:
    return {
        "id": f"{kind}/{vmid}",
        "type": kind,
        "vmid": vmid,
        "name": f"g{vmid}",
        "node": node,
        "status": status,
        **kw,
    }


RESOURCES = [
    {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online"},
    {"id": "node/pve2", "type": "node", "node": "pve2", "status": "online"},
    vm(100, "pve1"),
    vm(101, "pve1", status="stopped"),
    vm(200, "pve2", kind="lxc"),
    {"id": "storage/pve1/local", "type": "storage", "node": "pve1", "storage": "local"},
]


# GET /access/permissions of a token with the audit role on / (privilege → propagate)
AUDIT_PRIVS = {"Sys.Audit": 1, "VM.Audit": 1, "VM.GuestAgent.Audit": 1, "Datastore.Audit": 1}
AUDITOR = {"/": AUDIT_PRIVS}


def qemu_config(vmid: int, agent: str = "1") -> dict[str, Any]:
    return {
        "name": f"g{vmid}",
        "cores": 1,
        "memory": "1024",
        "agent": agent,
        "net0": f"virtio=BC:24:11:00:00:{vmid % 100:02X},bridge=vmbr0",
    }


class FakeClient:
    """Answers ``get`` from a dict of path → payload or exception; records every call."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.name = "ep"
        self.settings = ProxmoxSettings(name="ep", user="netbox@pve", token_name="sync", token_value="secret")
        self.stats = ClientStats()
        self.answers = answers
        self.calls: list[str] = []

    async def get(self, *parts: Any, **params: Any) -> Any:
        path = "/" + "/".join(str(p) for p in parts)
        self.calls.append(path)
        answer = self.answers.get(path, KeyError(path))
        if isinstance(answer, KeyError):
            raise AssertionError(f"unexpected call {path}")
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def version(self) -> Any:
        return await self.get("version")


def world(**overrides: Any) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "/version": {"version": "9.1.2"},
        "/access/permissions": AUDITOR,
        "/cluster/status": CLUSTER_STATUS,
        "/cluster/resources": RESOURCES,
        "/nodes/pve1/qemu": [vm(100, "pve1"), vm(101, "pve1", status="stopped")],
        "/nodes/pve1/lxc": [],
        "/nodes/pve1/status": {"cpuinfo": {"cpus": 8}},
        "/nodes/pve1/network": [],
        "/nodes/pve2/qemu": [],
        "/nodes/pve2/lxc": [vm(200, "pve2", kind="lxc")],
        "/nodes/pve2/status": {"cpuinfo": {"cpus": 16}},
        "/nodes/pve2/network": [],
        "/nodes/pve1/qemu/100/config": qemu_config(100),
        "/nodes/pve1/qemu/100/agent/network-get-interfaces": {"result": []},
        "/nodes/pve1/qemu/101/config": qemu_config(101),
        "/nodes/pve2/lxc/200/config": {"hostname": "g200", "rootfs": "local:vm-200-disk-0,size=8G"},
        "/nodes/pve2/lxc/200/interfaces": [],
    }
    answers.update(overrides)
    return answers


def down(path: str) -> ProxmoxUnavailable:
    return ProxmoxUnavailable(f"GET {path}: HTTP 595", path=path)


async def test_a_healthy_cluster_is_complete_without_issues():
    client = FakeClient(world())
    inv = await discover(client)  # type: ignore[arg-type]
    assert inv.cluster.name == "lab-a"
    assert [g.vmid for g in inv.guests] == [100, 101, 200]
    assert inv.complete_nodes == frozenset({"pve1", "pve2"})
    assert inv.issues == ()
    assert [n.cpus for n in inv.nodes] == [8, 16]


async def test_runtime_views_are_read_only_for_running_guests():
    client = FakeClient(world())
    await discover(client)  # type: ignore[arg-type]
    assert "/nodes/pve1/qemu/101/agent/network-get-interfaces" not in client.calls  # stopped
    assert "/nodes/pve2/lxc/200/interfaces" in client.calls


async def test_the_agent_is_not_asked_when_the_config_disables_it():
    client = FakeClient(world(**{"/nodes/pve1/qemu/100/config": qemu_config(100, agent="enabled=0")}))
    await discover(client)  # type: ignore[arg-type]
    assert not any("agent" in call for call in client.calls)


async def test_unreadable_cluster_status_fails_the_endpoint():
    client = FakeClient(world(**{"/cluster/status": down("/cluster/status")}))
    with pytest.raises(ProxmoxUnavailable):
        await discover(client)  # type: ignore[arg-type]


async def test_unreadable_resources_and_version_are_issues_not_failures():
    client = FakeClient(
        world(**{"/cluster/resources": down("/cluster/resources"), "/version": down("/version")})
    )
    inv = await discover(client)  # type: ignore[arg-type]
    assert [g.vmid for g in inv.guests] == [100, 101, 200]
    assert inv.complete
    assert inv.cluster.version is None
    assert [(i.scope, i.code) for i in inv.issues] == [("cluster", "proxmox_unavailable")] * 2


async def test_a_failed_listing_keeps_the_nodes_guests_from_resources_as_incomplete():
    client = FakeClient(world(**{"/nodes/pve1/qemu": down("/nodes/pve1/qemu")}))
    inv = await discover(client)  # type: ignore[arg-type]
    assert inv.complete_nodes == frozenset({"pve2"})
    kept = {g.vmid: g for g in inv.guests}
    assert sorted(kept) == [100, 101, 200]
    assert not kept[100].config_complete and not kept[101].config_complete
    assert kept[101].status == "stopped"
    assert "/nodes/pve1/qemu/100/config" not in client.calls


async def test_an_offline_node_is_not_called_and_its_guests_are_kept():
    status = [dict(row) for row in CLUSTER_STATUS]
    status[1]["online"] = 0
    client = FakeClient(world(**{"/cluster/status": status}))
    inv = await discover(client)  # type: ignore[arg-type]
    assert not any(call.startswith("/nodes/pve1") for call in client.calls)
    assert inv.complete_nodes == frozenset({"pve2"})
    assert {g.vmid: g.config_complete for g in inv.guests} == {100: False, 101: False, 200: True}


async def test_a_guest_whose_config_vanished_is_dropped():
    client = FakeClient(world(**{"/nodes/pve1/qemu/101/config": None}))
    inv = await discover(client)  # type: ignore[arg-type]
    assert [g.vmid for g in inv.guests] == [100, 200]
    assert inv.issues == ()
    assert inv.complete


async def test_a_failed_config_keeps_the_guest_and_raises_one_issue():
    client = FakeClient(world(**{"/nodes/pve1/qemu/100/config": ProxmoxPermissionError("403")}))
    inv = await discover(client)  # type: ignore[arg-type]
    guest = next(g for g in inv.guests if g.vmid == 100)
    assert (guest.config_complete, guest.name, guest.status) == (False, "g100", "running")
    assert [(i.scope, i.node, i.vmid, i.code, i.retryable) for i in inv.issues] == [
        ("guest", "pve1", 100, "proxmox_permission_denied", False)
    ]
    assert inv.complete  # the node's listing was read: nothing on it may be orphaned wrongly


async def test_a_failed_agent_read_marks_addresses_incomplete():
    client = FakeClient(world(**{"/nodes/pve1/qemu/100/agent/network-get-interfaces": down("agent")}))
    inv = await discover(client)  # type: ignore[arg-type]
    guest = next(g for g in inv.guests if g.vmid == 100)
    assert guest.config_complete and not guest.ips_complete
    assert [i.vmid for i in inv.issues] == [100]


async def test_a_guest_listed_on_two_nodes_mid_migration_is_returned_once():
    client = FakeClient(
        world(
            **{
                "/nodes/pve2/qemu": [vm(101, "pve2", status="stopped")],
                "/nodes/pve2/qemu/101/config": None,  # already gone from the target's view
            }
        )
    )
    inv = await discover(client)  # type: ignore[arg-type]
    assert [(g.vmid, g.node) for g in inv.guests] == [(100, "pve1"), (101, "pve1"), (200, "pve2")]


async def test_standalone_node_without_cluster_row():
    status = [{"type": "node", "id": "node/solo", "name": "solo", "online": 1, "local": 1, "ip": "10.9.0.1"}]
    answers = {
        "/version": {"version": "8.4.1"},
        "/access/permissions": AUDITOR,
        "/cluster/status": status,
        "/cluster/resources": [],
        "/nodes/solo/qemu": [],
        "/nodes/solo/lxc": [],
        "/nodes/solo/status": {},
        "/nodes/solo/network": [],
    }
    inv = await discover(FakeClient(answers))  # type: ignore[arg-type]
    assert (inv.cluster.name, inv.cluster.standalone, inv.cluster.version) == ("solo", True, "8.4.1")
    assert inv.complete_nodes == frozenset({"solo"})


async def test_progress_counts_every_guest_and_reports_issues():
    seen: list[DiscoveryProgress] = []
    client = FakeClient(world(**{"/nodes/pve1/network": ProxmoxPermissionError("403")}))
    inv = await discover(client, on_progress=seen.append)  # type: ignore[arg-type]
    kinds = [p.kind for p in seen]
    assert kinds[0] == "cluster" and seen[0].total == 3
    assert kinds.count("node") == 2
    assert kinds.count("guest") == 3
    assert [p.issue for p in seen if p.kind == "issue"] == list(inv.issues)
    last = [p for p in seen if p.kind == "guest"][-1]
    assert (last.done, last.total) == (3, 3)


# ----------------------------------------------------------------------------- what the credentials see


@pytest.mark.parametrize(
    ("permissions", "gaps"),
    [
        (AUDITOR, []),
        ({"/": AUDIT_PRIVS, "/vms": {"VM.Audit": 1}, "/nodes": {"Sys.Audit": 1}}, []),
        ({"/": {"Sys.Audit": 1}}, ["VM.Audit on /vms"]),
        ({"/": {"Sys.Audit": 0, "VM.Audit": 1}}, ["Sys.Audit on /nodes"]),  # granted on / only, not below
        ({"/vms": {"VM.Audit": 1}}, ["Sys.Audit on /nodes"]),
        ({"/": AUDIT_PRIVS, "/vms/105": {}}, ["VM.Audit on /vms/105"]),
        ({"/": AUDIT_PRIVS, "/nodes/pve2": {"Datastore.Audit": 1}}, ["Sys.Audit on /nodes/pve2"]),
        ({"/pool/web": {"VM.Audit": 1}}, ["VM.Audit on /vms", "Sys.Audit on /nodes"]),
        ({}, ["VM.Audit on /vms", "Sys.Audit on /nodes"]),
    ],
)
def test_visibility_gaps_name_what_the_credentials_cannot_see(permissions: Any, gaps: list[str]):
    assert visibility_gaps(permissions) == gaps


async def test_credentials_that_cannot_see_every_guest_leave_no_node_complete():
    """PVE's lists silently leave out what the caller may not see: a hidden guest would look deleted."""
    hidden = {"/": AUDIT_PRIVS, "/vms/101": {}}
    client = FakeClient(world(**{"/access/permissions": hidden}))
    inv = await discover(client)  # type: ignore[arg-type]
    assert [g.vmid for g in inv.guests] == [100, 101, 200]  # what was listed is still returned
    assert inv.complete_nodes == frozenset()
    [issue] = inv.issues
    assert (issue.scope, issue.code, issue.retryable) == ("cluster", "proxmox_permission_denied", False)
    assert "VM.Audit on /vms/101" in issue.detail and "netbox@pve!sync" in issue.detail
    assert "nothing in cluster lab-a is orphaned or deleted" in issue.detail


async def test_unreadable_permissions_leave_no_node_complete():
    client = FakeClient(world(**{"/access/permissions": down("/access/permissions")}))
    inv = await discover(client)  # type: ignore[arg-type]
    assert len(inv.guests) == 3
    assert inv.complete_nodes == frozenset()
    [issue] = inv.issues
    assert issue.code == "proxmox_unavailable"
    assert "nothing in cluster lab-a is orphaned or deleted" in issue.detail
