"""The simulator's 2-cluster world synced into a real NetBox: exactly the objects the world dump predicts,
and an immediate second run that writes nothing."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from proxbox.config import NetBoxSettings, Settings
from proxbox.events import ItemDone, PhaseStarted
from proxbox.sim import SimServer, generate
from tests.fixtures.sync import SyncEnv, expected_from_dump, netbox_snapshot, run_sync

pytestmark = pytest.mark.netbox


def diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Readable differences, so a failure names the object and field."""
    out = []
    if expected["clusters"] != actual["clusters"]:
        out.append(f"clusters: {expected['clusters']} != {actual['clusters']}")
    for key in sorted(set(expected["devices"]) | set(actual["devices"]), key=str):
        if expected["devices"].get(key) != actual["devices"].get(key):
            out.append(f"device {key}: {expected['devices'].get(key)} != {actual['devices'].get(key)}")
    for key in sorted(set(expected["vms"]) | set(actual["vms"]), key=str):
        e, a = expected["vms"].get(key), actual["vms"].get(key)
        if e is None or a is None:
            out.append(f"vm {key}: expected {e is not None}, in NetBox {a is not None}")
            continue
        for field in sorted(set(e) | set(a)):
            if e.get(field) != a.get(field):
                out.append(f"vm {key} {field}: {e.get(field)!r} != {a.get(field)!r}")
    return out


async def test_first_sync_creates_exactly_what_the_world_dump_predicts(sync_env: SyncEnv):
    run = await run_sync(sync_env.with_sync(primary_ip="always"))
    assert run.final.status == "succeeded", [f.detail for f in run.failures()]
    expected = expected_from_dump(sync_env.sim.dump())
    actual = netbox_snapshot(sync_env.netbox.api())
    assert diff(expected, actual) == []
    assert len(actual["vms"]) >= 10  # the default world: two clusters of a few nodes and guests
    assert run.final.counts.created == len(run.done("created"))
    assert run.final.counts.failed == 0


async def test_second_run_makes_zero_netbox_writes(sync_env: SyncEnv):
    first = await run_sync(sync_env.settings)
    assert first.final.status == "succeeded"
    changes_before = sync_env.netbox.change_count()

    second = await run_sync(sync_env.settings)

    assert second.final.status == "succeeded"
    c = second.final.counts
    assert (c.created, c.updated, c.deleted, c.orphaned) == (0, 0, 0, 0)
    assert c.unchanged > 0
    assert second.writes == 0, second.requests
    assert set(second.requests) == {"GET"}
    assert sync_env.netbox.change_count() == changes_before
    # reads: once per object type
    assert second.requests["GET"] <= 16


async def test_events_are_emitted_per_phase_with_totals_that_match_the_items(sync_env: SyncEnv):
    run = await run_sync(sync_env.settings)
    starts = {e.phase: e.total for e in run.events if isinstance(e, PhaseStarted)}
    assert list(starts)[:3] == ["discovery", "filtering", "planning"]
    for phase in ("creation", "update"):
        items = [e for e in run.events if isinstance(e, ItemDone) and e.phase == phase]
        assert starts[phase] == len(items)
        assert [e.done for e in items] == list(range(1, len(items) + 1))
    journal = [e for e in run.events if getattr(e, "phase", None) == "journal"]
    assert journal, "a run that wrote something leaves a journal entry"
    entries = list(sync_env.netbox.api().extras.journal_entries.all())
    assert len(entries) == 2 and all(e.kind.value == "info" for e in entries)
    assert all("full sync **succeeded**" in e.comments for e in entries)


async def test_nodes_then_vms_runs_add_up_to_a_full_sync(sync_env: SyncEnv):
    nodes = await run_sync(sync_env.settings, "nodes")
    assert nodes.final.status == "succeeded"
    api = sync_env.netbox.api()
    assert len(list(api.dcim.devices.filter(tag="proxbox"))) == len(sync_env.sim.dump()["clusters"]) * 2
    assert not list(api.virtualization.virtual_machines.all())

    vms = await run_sync(sync_env.settings, "vms")
    assert vms.final.status == "succeeded"
    assert not vms.done("created", "device") and vms.done("created", "virtual_machine")

    full = await run_sync(sync_env.settings, "full")
    assert full.writes == 0


async def test_standalone_node_is_its_own_cluster(netbox: Any):
    world = generate(seed=5, clusters=1, nodes=2, guests=4, standalone=1, standalone_guests=3)
    async with SimServer(world) as sim:
        settings = Settings(
            netbox=NetBoxSettings(url=netbox.url, token=netbox.token), proxmox=tuple(sim.proxmox_settings())
        )
        run = await run_sync(settings)
        assert run.final.status == "succeeded", [f.detail for f in run.failures()]
        expected = expected_from_dump(sim.dump())
    actual = netbox_snapshot(netbox.api())
    assert diff(expected, actual) == []
    standalone = next(c for c in sim.dump()["clusters"] if c["standalone"])
    assert standalone["name"] in actual["clusters"]
    assert (standalone["name"], standalone["nodes"][0]["name"]) in actual["devices"]


async def test_mapping_and_planning_run_off_the_event_loop(
    sync_env: SyncEnv, monkeypatch: pytest.MonkeyPatch
):
    """For a large estate, mapping and planning take seconds of CPU: on the loop they would freeze every
    watcher's frames. They run in the run's own worker thread, which ends with the run."""
    from proxbox.sync import engine

    threads: dict[str, set[str]] = {}

    def recorded(name: str, fn: Any) -> Any:
        def call(*args: Any) -> Any:
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return fn(*args)

        return call

    for name in ("desired_state", "build_current", "build_plan"):
        monkeypatch.setattr(engine, name, recorded(name, getattr(engine, name)))
    run = await run_sync(sync_env.settings, dry_run=True)
    assert run.final.status == "succeeded", run.final.message
    assert set(threads) == {"desired_state", "build_current", "build_plan"}
    names = set().union(*threads.values())
    assert len(names) == 1 and names.pop().startswith("proxbox-plan")
    for thread in [t for t in threading.enumerate() if t.name.startswith("proxbox-plan")]:
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()
