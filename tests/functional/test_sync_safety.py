"""What a sync must never do: orphan or delete what it could not see, write during a dry run, or do
something other than what its plan said."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

import pytest

from proxbox.events import ItemDone, Note
from proxbox.jobs import ListReporter, execute
from proxbox.netbox.client import NetBoxClient
from proxbox.sync.engine import SyncEngine
from proxbox.sync.plan import Plan
from tests.fixtures.sync import SyncEnv, run_sync

pytestmark = pytest.mark.netbox

DAY0 = dt.date(2026, 12, 1)


def owned_vms(env: SyncEnv) -> dict[tuple[str, int], Any]:
    api = env.netbox.api()
    return {
        (vm.cluster.name, vm.custom_fields["proxmox_vmid"]): vm
        for vm in api.virtualization.virtual_machines.filter(tag="proxbox")
    }


def first_cluster(env: SyncEnv) -> dict[str, Any]:
    return env.sim.dump()["clusters"][0]


async def test_node_offline_none_of_its_vms_is_orphaned_or_deleted(sync_env: SyncEnv):
    settings = sync_env.with_sync(prune=True, prune_after_days=0)
    assert (await run_sync(settings)).final.status == "succeeded"
    c = first_cluster(sync_env)
    offline = c["nodes"][0]["name"]
    on_offline = {g["vmid"] for g in c["guests"] if g["node"] == offline and not g["template"]}
    elsewhere = next(g for g in c["guests"] if g["node"] != offline and not g["template"])
    assert on_offline
    before = owned_vms(sync_env)
    sync_env.sim.node_offline(c["name"], offline)
    sync_env.sim.drift(
        op="delete", cluster=c["name"], vmid=elsewhere["vmid"]
    )  # really gone, but not provable

    run = await run_sync(settings)

    notes = [e.message for e in run.events if isinstance(e, Note)]
    assert any(c["name"] in n and offline in n and "nothing in this cluster is orphaned" in n for n in notes)
    assert run.final.counts.deleted == 0 and run.final.counts.orphaned == 0
    after = owned_vms(sync_env)
    assert set(after) == set(before)
    for vmid in on_offline:
        vm = after[(c["name"], vmid)]
        assert "proxbox-orphan" not in [t.slug for t in vm.tags]
        assert vm.id == before[(c["name"], vmid)].id
    device = sync_env.netbox.api().dcim.devices.get(cf_proxmox_node=offline, cluster=c["name"])
    assert device.status.value == "offline"

    sync_env.sim.node_online(c["name"], offline)
    back = await run_sync(settings)
    assert back.final.status == "succeeded"
    assert [e.item.vmid for e in back.done("deleted")] == [elsewhere["vmid"]]


async def test_a_guest_hidden_by_permissions_is_never_orphaned_or_deleted(sync_env: SyncEnv):
    """Proxmox leaves out of its lists what the token may not see: the guest looks deleted, but is not."""
    settings = sync_env.with_sync(prune=True, prune_after_days=0)
    assert (await run_sync(settings)).final.status == "succeeded"
    c = first_cluster(sync_env)
    hidden = next(g for g in c["guests"] if not g["template"])
    before = owned_vms(sync_env)
    sync_env.sim.set_acl(
        f"/=Sys.Audit,Datastore.Audit;/vms=VM.Audit,VM.GuestAgent.Audit;/vms/{hidden['vmid']}="
    )

    run = await run_sync(settings)

    assert run.final.status == "partial"
    errors = [f for f in run.failures() if f.error == "proxmox_permission_denied"]
    assert errors and f"VM.Audit on /vms/{hidden['vmid']}" in errors[0].detail
    assert run.final.counts.deleted == 0 and run.final.counts.orphaned == 0
    after = owned_vms(sync_env)
    assert set(after) == set(before)
    vm = after[(c["name"], hidden["vmid"])]
    assert vm.id == before[(c["name"], hidden["vmid"])].id
    assert "proxbox-orphan" not in [t.slug for t in vm.tags]

    sync_env.sim.set_acl(None)
    assert (await run_sync(settings)).final.status == "succeeded"


async def test_absent_vm_is_tagged_orphan_then_pruned_after_the_grace_period(sync_env: SyncEnv):
    settings = sync_env.with_sync(prune=True, prune_after_days=7)
    assert (await run_sync(settings, today=lambda: DAY0)).final.status == "succeeded"
    c = first_cluster(sync_env)
    gone = next(g for g in c["guests"] if not g["template"])
    sync_env.sim.drift(op="delete", cluster=c["name"], vmid=gone["vmid"])

    tagged = await run_sync(settings, today=lambda: DAY0)
    assert [e.item.vmid for e in tagged.done("orphaned")] == [gone["vmid"]]
    vm = owned_vms(sync_env)[(c["name"], gone["vmid"])]
    assert "proxbox-orphan" in [t.slug for t in vm.tags]
    assert vm.custom_fields["proxbox_orphaned_since"] == "2026-12-01"

    waiting = await run_sync(settings, today=lambda: DAY0 + dt.timedelta(days=6))
    assert waiting.writes == 0

    pruned = await run_sync(settings, today=lambda: DAY0 + dt.timedelta(days=7))
    assert [e.item.vmid for e in pruned.done("deleted")] == [gone["vmid"]]
    assert (c["name"], gone["vmid"]) not in owned_vms(sync_env)
    # its interfaces, addresses and disks went with it
    api = sync_env.netbox.api()
    assert not [i for i in api.virtualization.interfaces.all() if i.virtual_machine.id == vm.id]
    assert not [d for d in api.virtualization.virtual_disks.all() if d.virtual_machine.id == vm.id]


async def test_vm_that_reappears_loses_the_orphan_tag(sync_env: SyncEnv):
    assert (await run_sync(sync_env.settings, today=lambda: DAY0)).final.status == "succeeded"
    c = first_cluster(sync_env)
    g = next(g for g in c["guests"] if not g["template"])
    sync_env.sim.drift(op="delete", cluster=c["name"], vmid=g["vmid"])
    assert (await run_sync(sync_env.settings)).final.counts.orphaned == 1
    sync_env.sim.drift(op="add_guest", cluster=c["name"], vmid=g["vmid"])

    back = await run_sync(sync_env.settings)

    vm = owned_vms(sync_env)[(c["name"], g["vmid"])]
    assert "proxbox-orphan" not in [t.slug for t in vm.tags]
    assert vm.custom_fields["proxbox_orphaned_since"] is None
    assert back.final.counts.orphaned == 0


async def test_deletes_are_capped_per_run(sync_env: SyncEnv):
    settings = sync_env.with_sync(prune=True, prune_after_days=0, max_deletes_per_run=1)
    assert (await run_sync(settings)).final.status == "succeeded"
    c = first_cluster(sync_env)
    victims = [g["vmid"] for g in c["guests"] if not g["template"]][:3]
    for vmid in victims:
        sync_env.sim.drift(op="delete", cluster=c["name"], vmid=vmid)
    run = await run_sync(settings)
    assert run.final.counts.deleted == 1
    assert run.final.counts.orphaned == 2  # the others are tagged and wait for the next run
    assert sum(1 for vmid in victims if (c["name"], vmid) in owned_vms(sync_env)) == 2


def planned(plan: Plan) -> Counter[tuple[str, str, str | None, int | None]]:
    data = json.loads(json.dumps(plan.as_json()))
    return Counter((a["event"], a["kind"], a.get("cluster"), a.get("vmid")) for a in data["actions"])


async def test_dry_run_writes_nothing_and_its_plan_is_what_the_real_run_does(sync_env: SyncEnv):
    settings = sync_env.with_sync(primary_ip="always", prune=True, prune_after_days=0)
    assert (await run_sync(settings)).final.status == "succeeded"
    sync_env.sim.drift(steps=1, seed=3)
    changes_before = sync_env.netbox.change_count()
    plans: list[Plan] = []

    dry = await run_sync(settings, dry_run=True, on_plan=plans.append)

    assert dry.final.status == "succeeded"
    assert dry.writes == 0 and set(dry.requests) == {"GET"}
    assert sync_env.netbox.change_count() == changes_before
    (plan,) = plans
    assert plan.writes > 0

    real = await run_sync(settings)

    done = Counter(
        (e.item.action, e.item.kind, e.item.cluster, e.item.vmid)
        for e in real.done()
        if e.item.action in ("created", "updated", "deleted", "orphaned", "adopted")
    )
    assert done == planned(plan)


async def test_cancel_stops_the_run_promptly_and_the_next_run_completes_the_work(sync_env: SyncEnv):
    client = NetBoxClient(sync_env.settings.netbox)
    reporter = ListReporter()

    def cancel_on_first_vm(event: Any) -> None:
        if isinstance(event, ItemDone) and event.item.kind == "virtual_machine":
            reporter.cancel()

    reporter.on_event = cancel_on_first_vm
    try:
        final = await execute(SyncEngine(sync_env.settings, client=client).run, "full", reporter)
    finally:
        client.close()
    assert final.status == "cancelled"
    assert not any(isinstance(e, ItemDone) and e.item.kind == "interface" for e in reporter.events)
    assert final.counts.created == sum(
        1 for e in reporter.events if isinstance(e, ItemDone) and e.item.action == "created"
    )
    rest = await run_sync(sync_env.settings)
    assert rest.final.status == "succeeded" and rest.final.counts.created > 0
    assert (await run_sync(sync_env.settings)).writes == 0
