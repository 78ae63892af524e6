"""Drift: targeted ops and seeded batches change the world, the rendered API and the oracle alike."""

from __future__ import annotations

import json

import pytest

from proxbox.sim import dump, generate
from proxbox.sim.drift import BATCH_OPS, DriftError, apply_op, drift_steps
from proxbox.sim.render import ClusterView
from proxbox.sim.render_guest import PveError


@pytest.fixture
def world():
    return generate(seed=1, clusters=2, nodes=3, guests=20)


def _oracle_guest(world, cluster, vmid):
    return next(
        g for c in dump(world)["clusters"] if c["name"] == cluster for g in c["guests"] if g["vmid"] == vmid
    )


def _view(world, cluster="lab-a"):
    c = world.cluster(cluster)
    return ClusterView(world, c, world.epoch)


def test_rename_changes_resources_config_and_oracle(world):
    rev = world.cluster("lab-a").revision
    change = apply_op(world, {"op": "rename", "cluster": "lab-a", "vmid": 100, "name": "renamed"})
    assert change == {
        "op": "rename",
        "cluster": "lab-a",
        "vmid": 100,
        "before": change["before"],
        "after": "renamed",
    }
    assert world.cluster("lab-a").revision == rev + 1
    row = next(r for r in _view(world).resources({"type": "vm"}) if r["vmid"] == 100)
    assert row["name"] == "renamed"
    assert _oracle_guest(world, "lab-a", 100)["name"] == "renamed"
    assert _oracle_guest(world, "lab-b", 100)["name"] != "renamed"


def test_delete_makes_the_config_missing_and_drops_the_guest_from_lists(world):
    g = world.cluster("lab-a").guests[101]
    apply_op(world, {"op": "delete", "cluster": "lab-a", "vmid": 101})
    v = _view(world)
    assert 101 not in {r["vmid"] for r in v.resources({"type": "vm"})}
    with pytest.raises(PveError, match="does not exist"):
        v.guest_config(g.node, g.kind, 101, {})
    assert all(x["vmid"] != 101 for x in dump(world)["clusters"][0]["guests"])


def test_migrate_moves_the_guest_and_the_old_node_says_config_missing(world):
    g = world.cluster("lab-a").guests[102]
    old = g.node
    change = apply_op(world, {"op": "migrate", "cluster": "lab-a", "vmid": 102})
    assert change["before"] == old and change["after"] != old
    v = _view(world)
    assert v.guest_config(change["after"], g.kind, 102, {})
    with pytest.raises(PveError, match=f"nodes/{old}/"):
        v.guest_config(old, g.kind, 102, {})
    assert _oracle_guest(world, "lab-a", 102)["node"] == change["after"]


def test_set_mac_changes_config_and_oracle_mac(world):
    change = apply_op(world, {"op": "set_mac", "cluster": "lab-a", "vmid": 100, "nic": 0})
    assert change["before"] != change["after"]
    g = world.cluster("lab-a").guests[100]
    conf = _view(world).guest_config(g.node, g.kind, 100, {})
    assert change["after"] in conf["net0"]
    assert _oracle_guest(world, "lab-a", 100)["nics"][0]["mac"] == change["after"]
    apply_op(world, {"op": "set_mac", "cluster": "lab-a", "vmid": 100, "mac": "bc:24:11:00:00:01"})
    assert world.cluster("lab-a").guests[100].nics[0].mac == "BC:24:11:00:00:01"


def test_set_ip_moves_the_address_everywhere_it_is_visible(world):
    lxc = next(g for g in world.cluster("lab-a").guests.values() if g.kind == "lxc")
    change = apply_op(world, {"op": "set_ip", "cluster": "lab-a", "vmid": lxc.vmid, "ip": "10.0.250.9/24"})
    assert change["after"] == "10.0.250.9/24"
    oracle = _oracle_guest(world, "lab-a", lxc.vmid)
    assert "10.0.250.9/24" in oracle["nics"][0]["ips"]
    seeded = apply_op(world, {"op": "set_ip", "cluster": "lab-a", "vmid": lxc.vmid})
    assert seeded["after"].startswith("10.0.200.")
    v6 = apply_op(world, {"op": "set_ip", "cluster": "lab-a", "vmid": lxc.vmid, "ip": "fd99::5/64"})
    assert (
        v6["family"] == 6
        and "ip6=fd99::5/64" in _view(world).guest_config(lxc.node, "lxc", lxc.vmid, {})["net0"]
    )


def test_set_vlan_retags_and_readdresses(world):
    g = world.cluster("lab-a").guests[100]
    target = next(v for v in (10, 20, 30, 40) if v not in {n.vlan for n in g.nics})
    change = apply_op(world, {"op": "set_vlan", "cluster": "lab-a", "vmid": 100, "vlan": target})
    assert change["after"] == target
    assert f"tag={target}" in _view(world).guest_config(g.node, g.kind, 100, {})["net0"]
    assert _oracle_guest(world, "lab-a", 100)["nics"][0]["vlan"] == target
    assert change["ip"].startswith(f"10.0.{target}.")


def test_resize_disk_grows_and_refuses_to_shrink(world):
    change = apply_op(world, {"op": "resize_disk", "cluster": "lab-a", "vmid": 100})
    assert change["after"] == change["before"] + 10 * 2**30
    disk = next(d for d in _oracle_guest(world, "lab-a", 100)["disks"] if d["name"] == change["disk"])
    assert disk["size_bytes"] == change["after"]
    with pytest.raises(DriftError, match="only grow"):
        apply_op(world, {"op": "resize_disk", "cluster": "lab-a", "vmid": 100, "size": "1G"})


def test_add_guest_appends_the_next_vmid_with_the_requested_kind(world):
    change = apply_op(world, {"op": "add_guest", "cluster": "lab-b", "kind": "lxc", "name": "fresh"})
    assert change["vmid"] == 120 and change["kind"] == "lxc"
    g = _oracle_guest(world, "lab-b", 120)
    assert g["name"] == "fresh" and g["kind"] == "lxc"
    with pytest.raises(DriftError, match="already has"):
        apply_op(world, {"op": "add_guest", "cluster": "lab-b", "vmid": 120})


def test_status_and_tags_ops(world):
    apply_op(world, {"op": "set_status", "cluster": "lab-a", "vmid": 100, "status": "stopped"})
    assert _oracle_guest(world, "lab-a", 100)["status"] == "stopped"
    apply_op(world, {"op": "set_tags", "cluster": "lab-a", "vmid": 100, "tags": "b;a"})
    assert _oracle_guest(world, "lab-a", 100)["tags"] == ["a", "b"]


def test_bad_ops_raise_drift_errors_naming_the_problem(world):
    with pytest.raises(DriftError, match="op must be one of"):
        apply_op(world, {"op": "explode", "cluster": "lab-a"})
    with pytest.raises(DriftError, match="no cluster"):
        apply_op(world, {"op": "delete", "cluster": "nope", "vmid": 100})
    with pytest.raises(DriftError, match="no guest"):
        apply_op(world, {"op": "delete", "cluster": "lab-a", "vmid": 999})
    with pytest.raises(DriftError, match="no nic"):
        apply_op(world, {"op": "set_mac", "cluster": "lab-a", "vmid": 100, "nic": 9})


def test_a_seeded_batch_applies_every_kind_of_change_reproducibly():
    a, b = generate(seed=5, clusters=2, nodes=3, guests=30), generate(seed=5, clusters=2, nodes=3, guests=30)
    changes_a = drift_steps(a, steps=2, seed=11)
    changes_b = drift_steps(b, steps=2, seed=11)
    assert changes_a == changes_b
    assert json.dumps(dump(a)) == json.dumps(dump(b))
    assert {c["op"] for c in changes_a} == set(BATCH_OPS)
    c = generate(seed=5, clusters=2, nodes=3, guests=30)
    assert drift_steps(c, steps=2, seed=12) != changes_a
