"""Pure planning: desired vs current → ordered create / update / delete actions."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs

from proxbox.sync.mapping import map_inventory
from proxbox.sync.model import (
    CF_ORPHANED,
    DEVICE,
    DISK,
    INTERFACE,
    IP,
    LEVEL,
    MAC,
    MIRROR_MARK,
    ORPHAN_TAG,
    OWNER_TAG,
    TAG,
    VM,
    Current,
    CurrentState,
    Key,
    Ref,
    Unknown,
)
from proxbox.sync.plan import Plan, build_plan, merge_tags
from tests.fixtures.sync import as_current, cluster, guest, inventory, ip, make_settings, nic, node

TODAY = dt.date(2026, 12, 1)


def plan_for(inv: Any, current: CurrentState | None = None, kind: str = "full", **sync: Any) -> Plan:
    settings = make_settings(**sync)
    desired = map_inventory(inv, settings, kind)  # type: ignore[arg-type]
    return build_plan(desired, current or CurrentState(objects=()), settings.sync, TODAY)


def synced(inv: Any, **sync: Any) -> CurrentState:
    return as_current(map_inventory(inv, make_settings(**sync)))


def change(current: CurrentState, kind: str, key: Key, **fields: Any) -> CurrentState:
    out = []
    for c in current.objects:
        if c.kind == kind and c.key == key:
            values = c.field_map
            for name, value in fields.items():
                values[name.replace("__", ".")] = value
            c = attrs.evolve(c, fields=values)
        out.append(c)
    return attrs.evolve(current, objects=tuple(out))


def without(current: CurrentState, kind: str, key: Key) -> CurrentState:
    return attrs.evolve(
        current, objects=tuple(c for c in current.objects if not (c.kind == kind and c.key == key))
    )


def add(current: CurrentState, *objs: Current) -> CurrentState:
    return attrs.evolve(current, objects=(*current.objects, *objs))


def ops(plan: Plan) -> list[tuple[str, str, Key]]:
    return [(a.op, a.kind, a.key) for a in plan.actions]


def owned_vm(id_: int, cluster_name: str, vmid: int, name: str, **fields: Any) -> Current:
    values = {
        "name": name,
        "tags": frozenset({OWNER_TAG}),
        f"cf.{CF_ORPHANED}": None,
        "cluster": Ref("cluster", (cluster_name,)),
        **fields,
    }
    return Current(
        kind=VM,
        id=id_,
        key=(cluster_name, vmid),
        owned=True,
        label=name,
        alt_key=(cluster_name, name.lower()),
        fields=values,
    )


INV = inventory(
    cluster(guests=[guest(100, "web", nics=(nic(0), nic(1)), ips=(ip("10.0.0.10/24"),)), guest(101, "db")])
)


def test_empty_netbox_plans_creates_parents_before_children():
    plan = plan_for(INV)
    assert not plan.deletions
    levels = [LEVEL[a.kind] for a in plan.creations]
    assert levels == sorted(levels)
    kinds = {a.kind for a in plan.creations}
    assert {TAG, "custom_field", "site", "cluster", DEVICE, VM, INTERFACE, MAC, IP, DISK} <= kinds


def test_references_to_objects_created_later_become_a_follow_up_update():
    plan = plan_for(INV, primary_ip="always")
    vm_create = next(a for a in plan.creations if a.kind == VM and a.key == ("lab-a", 100))
    assert "primary_ip4" not in dict(vm_create.fields)
    follow = next(a for a in plan.updates if a.kind == VM and a.key == ("lab-a", 100))
    assert follow.netbox_id is None
    assert dict(follow.fields) == {"primary_ip4": Ref(IP, ("lab-a", 100, "net0", "10.0.0.10/24"))}
    iface = next(a for a in plan.updates if a.kind == INTERFACE and a.key == ("lab-a", 100, "net0"))
    assert dict(iface.fields) == {"primary_mac_address": Ref(MAC, ("lab-a", 100, "net0"))}


def test_netbox_already_in_sync_plans_nothing():
    plan = plan_for(INV, synced(INV))
    assert plan.actions == ()
    assert {u.kind for u in plan.unchanged} == {"cluster", DEVICE, VM}
    assert dict(plan.unchanged_counts)[IP] == 2  # one per guest


def test_changed_field_is_an_update_with_old_and_new():
    current = change(synced(INV), VM, ("lab-a", 100), memory=1024, vcpus="4.00")
    plan = plan_for(INV, current)
    (action,) = plan.actions
    assert (action.op, action.kind, action.key, action.event) == ("update", VM, ("lab-a", 100), "updated")
    assert {(c.field, c.old, c.new) for c in action.changes} == {
        ("memory", 1024, 2048),
        ("vcpus", "4.00", "2.00"),
    }
    assert action.netbox_id is not None


def test_renamed_guest_is_updated_in_place():
    current = change(synced(INV), VM, ("lab-a", 100), name="old-name")
    (action,) = plan_for(INV, current).actions
    assert (action.op, action.key, dict(action.fields)) == ("update", ("lab-a", 100), {"name": "web"})


def test_migrated_guest_updates_its_device():
    moved = inventory(
        cluster(guests=[guest(100, "web", node="pve2", nics=(nic(0), nic(1))), guest(101, "db")])
    )
    (action,) = plan_for(moved, synced(INV)).actions
    assert dict(action.fields) == {"device": Ref(DEVICE, ("lab-a", "pve2"))}


def test_user_tags_are_kept_and_tags_proxbox_mirrored_are_removed_when_gone():
    tagged = inventory(cluster(guests=[guest(100, "web", tags=("prod",))]))
    current = synced(tagged)
    current = change(current, VM, ("lab-a", 100), tags=frozenset({OWNER_TAG, "prod", "mine"}))
    untagged = inventory(cluster(guests=[guest(100, "web")]))
    (action,) = plan_for(untagged, current).actions
    assert dict(action.fields)["tags"] == frozenset({OWNER_TAG, "mine"})


def test_merge_tags_with_mirrors_create_only_touches_only_ownership_tags():
    have = frozenset({OWNER_TAG, ORPHAN_TAG, "prod", "mine"})
    want = frozenset({OWNER_TAG, "web"})
    managed = frozenset({OWNER_TAG, ORPHAN_TAG, "prod", "web"})
    assert merge_tags(have, want, managed, mirrors_create_only=False) == {OWNER_TAG, "mine", "web"}
    assert merge_tags(have, want, managed, mirrors_create_only=True) == {OWNER_TAG, "prod", "mine"}


def test_create_only_field_is_written_when_empty_and_never_changed_once_set():
    current = change(synced(INV), VM, ("lab-a", 100), description="set by hand")
    assert plan_for(INV, current, overwrite_description=False).actions == ()
    inv = inventory(cluster(guests=[guest(100, "web", description="from proxmox")]))
    current = change(synced(inv), VM, ("lab-a", 100), description="")
    (action,) = plan_for(inv, current, overwrite_description=False).actions
    assert dict(action.fields) == {"description": "from proxmox"}


def test_primary_ip_when_undefined_keeps_a_set_value_and_fills_an_empty_one():
    current = synced(INV, primary_ip="always")
    other = Unknown(IP, 999)
    kept = change(current, VM, ("lab-a", 100), primary_ip4=other)
    assert plan_for(INV, kept, primary_ip="when-undefined").actions == ()
    changed = plan_for(INV, kept, primary_ip="always").actions
    assert [a.key for a in changed] == [("lab-a", 100)]
    empty = change(current, VM, ("lab-a", 100), primary_ip4=None)
    (action,) = plan_for(INV, empty, primary_ip="when-undefined").actions
    assert dict(action.fields) == {"primary_ip4": Ref(IP, ("lab-a", 100, "net0", "10.0.0.10/24"))}


def test_unowned_vm_in_the_way_is_a_conflict_and_its_children_are_skipped():
    current = synced(INV)
    current = attrs.evolve(
        current,
        objects=tuple(
            attrs.evolve(c, owned=False, key=None) if c.kind == VM and c.key == ("lab-a", 100) else c
            for c in current.objects
            if not (c.kind in (INTERFACE, MAC, IP, DISK) and c.key[:2] == ("lab-a", 100))
        ),
    )
    plan = plan_for(INV, current)
    assert [(c.kind, c.key) for c in plan.conflicts] == [(VM, ("lab-a", 100))]
    assert "adopt_unowned" in plan.conflicts[0].detail
    assert not [a for a in plan.actions if a.key[:2] == ("lab-a", 100)]
    assert plan.skipped > 0


def test_adopt_unowned_takes_the_object_over_with_the_ownership_tag():
    current = change(synced(INV), VM, ("lab-a", 100), tags=frozenset({"mine"}))
    current = attrs.evolve(
        current,
        objects=tuple(
            attrs.evolve(c, owned=False) if c.kind == VM and c.key == ("lab-a", 100) else c
            for c in current.objects
        ),
    )
    (action,) = plan_for(INV, current, adopt_unowned=True).actions
    assert action.event == "adopted"
    assert dict(action.fields)["tags"] == frozenset({OWNER_TAG, "mine"})


def test_unowned_cluster_with_the_right_name_is_used_as_it_is():
    current = synced(INV)
    current = attrs.evolve(
        current,
        objects=tuple(
            attrs.evolve(c, owned=False, fields={"name": "lab-a", "status": "planned"})
            if c.kind == "cluster"
            else c
            for c in current.objects
        ),
    )
    assert plan_for(INV, current).actions == ()


def test_reference_objects_are_matched_by_name_when_the_slug_differs():
    current = synced(INV)
    current = attrs.evolve(
        current,
        objects=tuple(attrs.evolve(c, key=("pve-site",)) if c.kind == "site" else c for c in current.objects),
    )
    current = attrs.evolve(
        current,
        objects=tuple(
            attrs.evolve(c, fields={**c.field_map, "scope_id": Ref("site", ("pve-site",))})
            if c.kind == "cluster"
            else c
            for c in current.objects
        ),
    )
    plan = plan_for(INV, current)
    assert plan.actions == ()


def test_removed_nic_deletes_its_interface_and_nothing_below_it():
    smaller = inventory(
        cluster(guests=[guest(100, "web", nics=(nic(0),), ips=(ip("10.0.0.10/24"),)), guest(101, "db")])
    )
    plan = plan_for(smaller, synced(INV))
    assert ops(plan) == [("delete", INTERFACE, ("lab-a", 100, "net1"))]


def test_changed_ip_creates_the_new_address_and_deletes_the_old_one_first():
    changed = inventory(
        cluster(
            guests=[guest(100, "web", nics=(nic(0), nic(1)), ips=(ip("10.0.0.99/24"),)), guest(101, "db")]
        )
    )
    plan = plan_for(changed, synced(INV, primary_ip="always"), primary_ip="always")
    assert ops(plan)[0] == ("delete", IP, ("lab-a", 100, "net0", "10.0.0.10/24"))
    assert ("create", IP, ("lab-a", 100, "net0", "10.0.0.99/24")) in ops(plan)
    vm_update = next(a for a in plan.updates if a.kind == VM)
    # the old primary is gone with its address: the change is from empty
    assert [(c.field, c.old) for c in vm_update.changes] == [("primary_ip4", None)]


def test_changed_mac_updates_the_mac_object_in_place():
    nics = (nic(0, mac="BC:24:11:FF:FF:FF"), nic(1))
    changed = inventory(
        cluster(guests=[guest(100, "web", nics=nics, ips=(ip("10.0.0.10/24"),)), guest(101, "db")])
    )
    (action,) = plan_for(changed, synced(INV)).actions
    assert (action.op, action.kind, dict(action.fields)) == (
        "update",
        MAC,
        {"mac_address": "BC:24:11:FF:FF:FF"},
    )


def test_children_of_a_guest_with_unreadable_config_are_left_alone():
    unread = inventory(
        cluster(guests=[guest(100, "web", config_complete=False, nics=(), ips=()), guest(101, "db")])
    )
    plan = plan_for(unread, synced(INV))
    assert not plan.deletions


def test_addresses_of_a_guest_whose_agent_failed_are_not_removed():
    no_ips = inventory(
        cluster(
            guests=[guest(100, "web", nics=(nic(0), nic(1)), ips=(), ips_complete=False), guest(101, "db")]
        )
    )
    assert not plan_for(no_ips, synced(INV)).deletions


def test_absent_vm_in_a_fully_read_cluster_is_tagged_orphan_with_the_date():
    current = add(synced(INV), owned_vm(900, "lab-a", 150, "gone", tags=frozenset({OWNER_TAG, "mine"})))
    (action,) = plan_for(INV, current).actions
    assert (action.op, action.event, action.netbox_id) == ("update", "orphaned", 900)
    assert dict(action.fields) == {
        "tags": frozenset({OWNER_TAG, ORPHAN_TAG, "mine"}),
        f"cf.{CF_ORPHANED}": "2026-12-01",
    }


def test_already_tagged_orphan_is_not_written_again():
    gone = owned_vm(
        900,
        "lab-a",
        150,
        "gone",
        tags=frozenset({OWNER_TAG, ORPHAN_TAG}),
        **{f"cf.{CF_ORPHANED}": "2026-11-30"},
    )
    assert plan_for(INV, add(synced(INV), gone)).actions == ()


def test_nothing_is_orphaned_while_a_node_of_the_cluster_was_not_read():
    partial = inventory(cluster(guests=INV.clusters[0].guests, complete_nodes=["pve1"]))
    current = add(synced(INV), owned_vm(900, "lab-a", 150, "gone"))
    plan = plan_for(partial, current, prune=True, prune_after_days=0)
    assert plan.actions == ()
    assert any("not fully discovered" in n for n in plan.notes)


def test_guest_hidden_by_a_filter_is_never_an_orphan():
    current = synced(INV)
    plan = plan_for(INV, current, exclude_guests=("db",), prune=True, prune_after_days=0)
    assert not plan.actions


def test_vm_of_a_cluster_out_of_scope_is_never_touched():
    current = add(synced(INV), owned_vm(900, "elsewhere", 100, "x"))
    assert plan_for(INV, current, prune=True, prune_after_days=0).actions == ()


def test_orphan_is_deleted_only_with_prune_after_the_grace_period():
    since = (TODAY - dt.timedelta(days=3)).isoformat()
    gone = owned_vm(
        900, "lab-a", 150, "gone", tags=frozenset({OWNER_TAG, ORPHAN_TAG}), **{f"cf.{CF_ORPHANED}": since}
    )
    current = add(synced(INV), gone)
    assert plan_for(INV, current, prune=False).actions == ()
    assert plan_for(INV, current, prune=True, prune_after_days=7).actions == ()
    (action,) = plan_for(INV, current, prune=True, prune_after_days=3).actions
    assert (action.op, action.netbox_id) == ("delete", 900)


def test_deletes_are_capped_per_run_oldest_first():
    olds = [
        owned_vm(
            900 + i,
            "lab-a",
            150 + i,
            f"gone{i}",
            tags=frozenset({OWNER_TAG, ORPHAN_TAG}),
            **{f"cf.{CF_ORPHANED}": (TODAY - dt.timedelta(days=10 + i)).isoformat()},
        )
        for i in range(4)
    ]
    plan = plan_for(INV, add(synced(INV), *olds), prune=True, prune_after_days=1, max_deletes_per_run=2)
    assert sorted(a.netbox_id for a in plan.deletions) == [902, 903]
    assert any("max_deletes_per_run" in n for n in plan.notes)


def test_deleted_vm_takes_its_children_with_it():
    current = synced(INV)
    gone_inv = inventory(cluster(guests=[guest(101, "db")]))
    plan = plan_for(gone_inv, current, prune=True, prune_after_days=0)
    assert ops(plan) == [("delete", VM, ("lab-a", 100))]


def test_vm_that_reappears_loses_the_orphan_tag_and_date():
    current = change(
        synced(INV),
        VM,
        ("lab-a", 100),
        tags=frozenset({OWNER_TAG, ORPHAN_TAG}),
        **{f"cf__{CF_ORPHANED}": "2026-11-20"},
    )
    (action,) = plan_for(INV, current).actions
    assert dict(action.fields) == {"tags": frozenset({OWNER_TAG}), f"cf.{CF_ORPHANED}": None}


def test_new_vm_whose_name_a_stale_owned_vm_still_holds_gets_a_qualified_name():
    current = add(synced(INV), owned_vm(900, "lab-a", 150, "api"))
    inv = inventory(cluster(guests=[*INV.clusters[0].guests, guest(160, "api")]))
    plan = plan_for(inv, current)
    create = next(a for a in plan.creations if a.kind == VM)
    assert dict(create.fields)["name"] == "api (160)"


def test_absent_node_is_orphaned_like_a_vm():
    inv = inventory(cluster(nodes=[node("pve1")], guests=[guest(101, "db")]))
    current = synced(inventory(cluster(guests=[guest(101, "db")])))
    plan = plan_for(inv, current)
    (action,) = plan.actions
    assert (action.kind, action.event, action.key) == (DEVICE, "orphaned", ("lab-a", "pve2"))


def test_vms_run_creates_a_missing_device_but_does_not_update_devices():
    current = without(synced(INV), DEVICE, ("lab-a", "pve2"))
    current = change(current, DEVICE, ("lab-a", "pve1"), status="offline")
    plan = plan_for(INV, current, kind="vms")
    assert [(a.op, a.kind) for a in plan.actions if a.kind == DEVICE] == [("create", DEVICE)]


def test_mirrored_tag_objects_are_created_once_and_never_updated():
    inv = inventory(cluster(guests=[guest(100, tags=("prod",)), guest(101, tags=("prod",))]))
    plan = plan_for(inv)
    creates = [a for a in plan.creations if a.kind == TAG and a.key == ("prod",)]
    assert len(creates) == 1 and dict(creates[0].fields)["description"] == MIRROR_MARK


def test_plan_json_lists_every_action_with_its_changes():
    current = change(synced(INV), VM, ("lab-a", 100), memory=1)
    data = json.loads(json.dumps(plan_for(INV, current).as_json()))
    assert data["summary"]["update"] == {VM: 1}
    (action,) = data["actions"]
    assert action["changes"] == [{"field": "memory", "old": 1, "new": 2048}]
    assert action["key"] == ["lab-a", 100] and action["cluster"] == "lab-a" and action["vmid"] == 100
