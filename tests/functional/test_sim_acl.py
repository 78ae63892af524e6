"""The simulator's ACL, through proxmoxer as a sync sees it: per-object calls get PVE's 403, lists silently
leave out what may not be seen, and ``/access/permissions`` tells the caller its own privileges."""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer.core import ResourceException

from proxbox.sim import SimThread, generate
from proxbox.sim.acl import parse_acl
from tests.fixtures.sim import token_api


@pytest.fixture
def acl_sim() -> Any:
    with SimThread(generate(seed=5, clusters=1, nodes=2, guests=8)) as sim:
        yield sim


def hidden_and_visible(sim: SimThread) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    guests = sim.dump()["clusters"][0]["guests"]
    return guests[0], guests[1:]


def test_without_an_acl_everything_is_visible(acl_sim: SimThread):
    px = token_api(acl_sim.endpoints[0])
    perms = px.access.permissions.get()
    assert {"Sys.Audit", "VM.Audit", "Datastore.Audit"} <= set(perms["/"])
    assert len(px.cluster.resources.get(type="vm")) == 8


def test_lists_silently_leave_out_a_guest_the_token_may_not_see(acl_sim: SimThread):
    hidden, visible = hidden_and_visible(acl_sim)
    acl_sim.set_acl(f"/=Sys.Audit,Datastore.Audit;/vms=VM.Audit,VM.GuestAgent.Audit;/vms/{hidden['vmid']}=")
    px = token_api(acl_sim.endpoints[0])
    listed = {r["vmid"] for r in px.cluster.resources.get(type="vm")}
    assert listed == {g["vmid"] for g in visible}
    on_node = px.nodes(hidden["node"])
    per_node = {g["vmid"] for g in on_node.qemu.get()} | {g["vmid"] for g in on_node.lxc.get()}
    assert hidden["vmid"] not in per_node
    assert per_node == {g["vmid"] for g in visible if g["node"] == hidden["node"]}
    # nodes are still listed: Sys.Audit reaches them
    assert {r["node"] for r in px.cluster.resources.get(type="node")} == {
        n["name"] for n in acl_sim.dump()["clusters"][0]["nodes"]
    }
    assert px.access.permissions.get()[f"/vms/{hidden['vmid']}"] == {}


def test_a_per_object_call_without_the_privilege_is_pves_403(acl_sim: SimThread):
    hidden, _ = hidden_and_visible(acl_sim)
    acl_sim.set_acl(f"/=Sys.Audit;/vms=VM.Audit;/vms/{hidden['vmid']}=")
    px = token_api(acl_sim.endpoints[0])
    guest = getattr(px.nodes(hidden["node"]), hidden["kind"])(hidden["vmid"])
    with pytest.raises(ResourceException) as exc:
        guest.config.get()
    assert exc.value.status_code == 403
    assert exc.value.content == f"Permission check failed (/vms/{hidden['vmid']}, VM.Audit)"


def test_agent_reads_need_the_guest_agent_privilege(acl_sim: SimThread):
    qemu = next(g for g in acl_sim.dump()["clusters"][0]["guests"] if g["kind"] == "qemu")
    acl_sim.set_acl("/=Sys.Audit;/vms=VM.Audit")
    px = token_api(acl_sim.endpoints[0])
    vm = px.nodes(qemu["node"]).qemu(qemu["vmid"])
    assert vm.config.get()["name"] == qemu["name"]
    with pytest.raises(ResourceException) as exc:
        vm.agent("network-get-interfaces").get()
    assert exc.value.status_code == 403
    assert exc.value.content == f"Permission check failed (/vms/{qemu['vmid']}, VM.GuestAgent.Audit)"


def test_cluster_status_and_node_status_need_sys_audit(acl_sim: SimThread):
    node = acl_sim.dump()["clusters"][0]["nodes"][0]["name"]
    acl_sim.set_acl("/vms=VM.Audit")
    px = token_api(acl_sim.endpoints[0])
    for call in (px.cluster.status.get, px.nodes(node).status.get):
        with pytest.raises(ResourceException) as exc:
            call()
        assert exc.value.status_code == 403
    assert px.cluster.resources.get(type="node") == []  # the node rows are filtered, not refused


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("vms=VM.Audit", "must look like /path=Priv"),
        ("/vms=VM.Audits", "unknown privilege"),
        ("", "at least one entry"),
    ],
)
def test_a_bad_acl_is_refused_with_a_reason(text: str, problem: str):
    with pytest.raises(ValueError, match=problem):
        parse_acl(text)


def test_the_most_specific_entry_wins():
    acl = parse_acl("/=Sys.Audit,VM.Audit;/vms/100=;/nodes/pve2=Datastore.Audit")
    assert acl.allows("/vms/101", "VM.Audit")
    assert not acl.allows("/vms/100", "VM.Audit")
    assert acl.allows("/nodes/pve1", "Sys.Audit")
    assert not acl.allows("/nodes/pve2", "Sys.Audit")
