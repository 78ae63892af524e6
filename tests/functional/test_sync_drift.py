"""Changes in Proxmox after a sync: one run converges, identity survives renames and migrations, a bad
object fails alone, same-name guests in two clusters both exist."""

from __future__ import annotations

from typing import Any

import pytest

from proxbox.events import ItemDone
from tests.fixtures.sync import SyncEnv, expected_from_dump, netbox_snapshot, run_sync
from tests.functional.test_sync_world import diff

pytestmark = pytest.mark.netbox


def guests(env: SyncEnv, cluster_index: int = 0) -> list[dict[str, Any]]:
    return [g for g in env.sim.dump()["clusters"][cluster_index]["guests"] if not g["template"]]


def with_nics(env: SyncEnv, cluster_index: int = 0) -> list[dict[str, Any]]:
    return [g for g in guests(env, cluster_index) if g["nics"] and g["disks"]]


def vm_ids(env: SyncEnv) -> dict[tuple[str, int], int]:
    api = env.netbox.api()
    clusters = {c.id: c.name for c in api.virtualization.clusters.all()}
    return {
        (clusters[vm.cluster.id], vm.custom_fields["proxmox_vmid"]): vm.id
        for vm in api.virtualization.virtual_machines.all()
    }


async def test_one_run_converges_after_rename_delete_migrate_mac_ip_and_disk_changes(sync_env: SyncEnv):
    settings = sync_env.with_sync(primary_ip="always", prune=True, prune_after_days=0)
    assert (await run_sync(settings)).final.status == "succeeded"
    ids_before = vm_ids(sync_env)
    cname = sync_env.sim.dump()["clusters"][0]["name"]
    a, b, c, d, e, f = (g["vmid"] for g in with_nics(sync_env)[:6])
    sim = sync_env.sim
    sim.drift(op="rename", cluster=cname, vmid=a, name="renamed-in-place")
    sim.drift(op="delete", cluster=cname, vmid=b)
    sim.drift(op="migrate", cluster=cname, vmid=c)
    sim.drift(op="set_mac", cluster=cname, vmid=d)
    sim.drift(op="set_ip", cluster=cname, vmid=e)
    sim.drift(op="resize_disk", cluster=cname, vmid=f)
    sim.drift(op="set_tags", cluster=cname, vmid=a, tags="blue;green")

    run = await run_sync(settings)

    assert run.final.status == "succeeded", [x.detail for x in run.failures()]
    assert diff(expected_from_dump(sim.dump()), netbox_snapshot(sync_env.netbox.api())) == []
    ids_after = vm_ids(sync_env)
    for vmid in (a, c, d, e, f):  # updated in place, never re-created
        assert ids_after[(cname, vmid)] == ids_before[(cname, vmid)]
    assert (cname, b) not in ids_after
    assert run.final.counts.deleted >= 1
    again = await run_sync(settings)
    assert again.writes == 0 and again.final.counts.updated == 0


async def test_seeded_drift_batches_converge_in_one_run(sync_env: SyncEnv):
    settings = sync_env.with_sync(primary_ip="always", prune=True, prune_after_days=0)
    assert (await run_sync(settings)).final.status == "succeeded"
    sync_env.sim.drift(steps=2, seed=7)
    run = await run_sync(settings)
    assert run.final.status == "succeeded", [x.detail for x in run.failures()]
    assert diff(expected_from_dump(sync_env.sim.dump()), netbox_snapshot(sync_env.netbox.api())) == []
    assert (await run_sync(settings)).writes == 0


async def test_same_name_guests_in_two_clusters_both_exist(sync_env: SyncEnv):
    dump = sync_env.sim.dump()
    name_a = guests(sync_env, 0)[0]["name"]
    target = guests(sync_env, 1)[0]
    sync_env.sim.drift(op="rename", cluster=dump["clusters"][1]["name"], vmid=target["vmid"], name=name_a)

    run = await run_sync(sync_env.settings)

    assert run.final.status == "succeeded"
    api = sync_env.netbox.api()
    same = [vm for vm in api.virtualization.virtual_machines.filter(name=name_a)]
    assert len(same) == 2
    assert {vm.cluster.name for vm in same} == {dump["clusters"][0]["name"], dump["clusters"][1]["name"]}


async def test_a_vm_netbox_rejects_fails_alone_and_the_rest_lands(sync_env: SyncEnv):
    cname = sync_env.sim.dump()["clusters"][0]["name"]
    bad = with_nics(sync_env)[1]["vmid"]
    # a valid Proxmox name (a DNS name) longer than NetBox's 64-character limit
    long_name = "reporting-worker-with-a-very-long-descriptive-name.analytics.example.internal"
    sync_env.sim.drift(op="rename", cluster=cname, vmid=bad, name=long_name)

    run = await run_sync(sync_env.settings)

    assert run.final.status == "partial"
    (failure,) = run.failures()
    assert (failure.item.kind, failure.item.vmid, failure.error) == (
        "virtual_machine",
        bad,
        "netbox_rejected",
    )
    assert "64" in failure.detail
    assert run.final.counts.failed == 1
    skipped = [e for e in run.done("skipped")]
    assert skipped and all(e.item.vmid == bad for e in skipped)
    expected = expected_from_dump(
        sync_env.sim.dump(), select=lambda g: g["vmid"] != bad or g["name"] != long_name
    )
    actual = netbox_snapshot(sync_env.netbox.api())
    assert diff(expected, actual) == []
    entries = {e.assigned_object_id: e for e in sync_env.netbox.api().extras.journal_entries.all()}
    clusters = {c.name: c.id for c in sync_env.netbox.api().virtualization.clusters.all()}
    assert len(entries) == 2
    hit, other = entries[clusters[cname]], next(e for i, e in entries.items() if i != clusters[cname])
    assert hit.kind.value == "warning" and long_name in hit.comments and "sync **partial**" in hit.comments
    assert other.kind.value == "info"


async def test_unowned_vm_with_the_same_name_is_a_conflict_never_touched(sync_env: SyncEnv):
    first = await run_sync(sync_env.settings)
    assert first.final.status == "succeeded"
    api = sync_env.netbox.api()
    cname = sync_env.sim.dump()["clusters"][0]["name"]
    victim = guests(sync_env)[0]
    vm = api.virtualization.virtual_machines.get(cf_proxmox_vmid=victim["vmid"], cluster=cname)
    vm.tags = []  # someone took it out of proxbox's hands
    vm.description = "hands off"
    vm.save()

    run = await run_sync(sync_env.settings)

    assert run.final.status == "partial"
    (failure,) = run.failures()
    assert failure.error == "netbox_unowned_conflict" and failure.item.vmid == victim["vmid"]
    vm = api.virtualization.virtual_machines.get(vm.id)
    assert vm.description == "hands off" and not vm.tags

    adopted = await run_sync(sync_env.with_sync(adopt_unowned=True))
    assert adopted.final.status == "succeeded"
    assert [e.item.vmid for e in adopted.done("adopted")] == [victim["vmid"]]
    assert "proxbox" in [t.slug for t in api.virtualization.virtual_machines.get(vm.id).tags]


async def test_manual_edits_of_fields_proxbox_does_not_own_survive(sync_env: SyncEnv):
    settings = sync_env.with_sync(overwrite_description=False)
    assert (await run_sync(settings)).final.status == "succeeded"
    api = sync_env.netbox.api()
    vm = next(iter(api.virtualization.virtual_machines.filter(tag="proxbox")))
    vm.comments = "runbook: ask Alice"
    vm.description = "edited by hand"
    vm.serial = "ABC123"
    vm.save()

    run = await run_sync(settings)

    assert run.writes == 0
    vm = api.virtualization.virtual_machines.get(vm.id)
    assert (vm.comments, vm.description, vm.serial) == ("runbook: ask Alice", "edited by hand", "ABC123")
    assert not [e for e in run.events if isinstance(e, ItemDone) and e.item.action == "updated"]
