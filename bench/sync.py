"""Benchmark: a first full sync and an unchanged re-sync of a simulated world into a real NetBox.

    python bench/sync.py                      # 3 clusters x 8 nodes x 2,000 guests per cluster (6,000 guests)
    python bench/sync.py --guests 100         # a quick check (300 guests)
    python bench/sync.py --json result.json   # also write the numbers as JSON

Every guest has 2 NICs with one IPv4 address each and 2 disks (qemu: scsi0 + scsi1, LXC: rootfs + mp0), and
runs (qemu guests with an answering guest agent), so discovery sees every address.

It starts its own NetBox from the harness (proxbox/devnetbox.py: own database, cleaned with a template
re-clone) and its own simulator (in a thread), then measures:

1. **floor**: NetBox's own bulk-write time for the same objects, on a clean NetBox: the first sync's plan is
   computed beforehand (not timed), then exactly its objects (same payloads: tags, custom fields,
   references) are sent as bulk requests of the same size with the same concurrency, level by level, with no
   discovery, no reads and no logic in between;
   ``--bare-floor`` also measures the same volume as minimal objects (no tags, custom fields or references);
2. **first sync** on a clean NetBox: wall time, NetBox requests by method, objects written per second;
3. **re-sync** right after: wall time, requests by method (it must write nothing).

The ratio is first-sync wall time / floor time: how much the sync costs on top of what NetBox itself needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from looplag import LoopLag  # bench/ is on sys.path: this script's own folder

from proxbox.config import NetBoxSettings, Settings, SyncSettings
from proxbox.devnetbox import NetBoxHarness
from proxbox.events import ItemDone, PhaseCompleted
from proxbox.jobs import ListReporter, execute
from proxbox.logsetup import configure_logging
from proxbox.netbox.client import NetBoxClient
from proxbox.sim import Profile, SimThread, generate
from proxbox.sim.model import GiB, SimDisk, SimNic, World, pool_address
from proxbox.sync.apply import Applier
from proxbox.sync.engine import SyncEngine
from proxbox.sync.model import ENDPOINT, LEVEL
from proxbox.sync.plan import Action, Plan

NIC_VLANS = (10, 20)


def bench_world(clusters: int, nodes: int, guests: int, seed: int = 42) -> World:
    """A generated world reshaped so every guest has exactly 2 NICs, 2 IPv4 addresses and 2 disks."""
    profile = Profile(
        template=0.0,
        running=1.0,
        windows=0.0,
        agent=1.0,
        agent_answering=1.0,
        ipv6=0.0,
        multi_nic=0.0,
        agent_noise=0.0,
        cloudinit=0.0,
    )
    world = generate(seed=seed, clusters=clusters, nodes=nodes, guests=guests, profile=profile)
    for c in world.clusters:
        for g in c.guests.values():
            g.status = "running"
            g.uptime_s = g.uptime_s or 3600
            if g.kind == "qemu":
                g.agent, g.agent_config = "answering", "1"
                g.disks = [d for d in g.disks if d.media == "cdrom"] + [
                    SimDisk(key="scsi0", volume=f"local-lvm:vm-{g.vmid}-disk-0", size_bytes=32 * GiB),
                    SimDisk(key="scsi1", volume=f"local-lvm:vm-{g.vmid}-disk-1", size_bytes=100 * GiB),
                ]
            else:
                g.disks = [
                    SimDisk(key="rootfs", volume=f"local-lvm:vm-{g.vmid}-disk-0", size_bytes=8 * GiB),
                    SimDisk(
                        key="mp0",
                        volume=f"local-lvm:vm-{g.vmid}-disk-1",
                        size_bytes=50 * GiB,
                        mountpoint="/srv",
                    ),
                ]
            first = g.nics[0]
            g.nics = []
            for j, vlan in enumerate(NIC_VLANS):
                address, gateway = pool_address(c.index, vlan, g.index)
                g.nics.append(
                    SimNic(
                        index=j,
                        model=first.model if g.kind == "qemu" else "veth",
                        mac=first.mac if j == 0 else world.unique_mac(c.name, g.vmid, j),
                        ifname=f"eth{j}",
                        bridge="vmbr0",
                        vlan=vlan,
                        ip4=address,
                        gw4=gateway if j == 0 else None,
                        mode4="static",
                    )
                )
        c.touch()
    return world


def settings_for(url: str, token: str, sim: SimThread, chunk: int, concurrency: int) -> Settings:
    return Settings(
        netbox=NetBoxSettings(url=url, token=token, bulk_chunk=chunk, concurrency=concurrency, timeout=300),
        proxmox=tuple(sim.server.proxmox_settings(concurrency=4)),
        sync=SyncSettings(primary_ip="always", journal=True, node_concurrency=8),
    )


async def timed_sync(settings: Settings) -> dict[str, Any]:
    client = NetBoxClient(settings.netbox)
    reporter = ListReporter()
    try:
        started = time.monotonic()
        async with LoopLag() as lag:
            final = await execute(SyncEngine(settings, client=client).run, "full", reporter)
        wall = time.monotonic() - started
    finally:
        client.close()
    phases = {e.phase: e.duration_s for e in reporter.events if isinstance(e, PhaseCompleted)}
    c = final.counts
    written = c.created + c.updated + c.deleted + c.orphaned
    return {
        "status": final.status,
        "wall_s": round(wall, 2),
        "phases_s": phases,
        "requests": client.stats.snapshot(),
        "created": c.created,
        "updated": c.updated,
        "unchanged": c.unchanged,
        "deleted": c.deleted,
        "failed": c.failed,
        "written": written,
        "objects_per_s": round(written / wall, 1) if wall else 0.0,
        "events": len(reporter.events),
        "item_events": sum(1 for e in reporter.events if isinstance(e, ItemDone)),
        # the simulator runs in this process (a thread): its work competes for the same GIL
        "max_loop_lag_ms": round(lag.max_s * 1000, 1),
    }


async def bare_floor(settings: Settings, guests: int, clusters: int) -> dict[str, Any]:
    """The same write volume as the first sync's guests, as minimal objects (no tags, custom fields or
    references beyond the parent), sent as plain bulk requests."""
    nb = settings.netbox
    client = NetBoxClient(nb)
    sem = asyncio.Semaphore(nb.concurrency)
    total = guests * clusters
    chunk = nb.bulk_chunk

    async def bulk(method: str, endpoint: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async def one(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
            async with sem:
                if method == "POST":
                    return await client.create(endpoint, part)
                return await client.update(endpoint, part)

        parts = await asyncio.gather(*(one(items[i : i + chunk]) for i in range(0, len(items), chunk)))
        return [row for part in parts for row in part]

    try:
        # scaffolding, not timed: a site, a cluster type, a cluster
        (site,) = await client.create("dcim.sites", [{"name": "floor", "slug": "floor"}])
        (ctype,) = await client.create("virtualization.cluster-types", [{"name": "floor", "slug": "floor"}])
        (cluster,) = await client.create(
            "virtualization.clusters",
            [{"name": "floor", "type": ctype["id"], "scope_type": "dcim.site", "scope_id": site["id"]}],
        )
        started = time.monotonic()
        vms = await bulk(
            "POST",
            "virtualization.virtual-machines",
            [
                {
                    "name": f"floor-{i}",
                    "cluster": cluster["id"],
                    "status": "active",
                    "vcpus": "2.00",
                    "memory": 2048,
                }
                for i in range(total)
            ],
        )
        ifaces = await bulk(
            "POST",
            "virtualization.interfaces",
            [{"virtual_machine": vm["id"], "name": f"net{j}"} for vm in vms for j in range(2)],
        )
        disks = await bulk(
            "POST",
            "virtualization.virtual-disks",
            [
                {"virtual_machine": vm["id"], "name": f"scsi{j}", "size": 1024 * (j + 1)}
                for vm in vms
                for j in range(2)
            ],
        )
        macs = await bulk(
            "POST",
            "dcim.mac-addresses",
            [
                {
                    "mac_address": f"02:00:{i >> 16 & 255:02X}:{i >> 8 & 255:02X}:{i & 255:02X}:00",
                    "assigned_object_type": "virtualization.vminterface",
                    "assigned_object_id": iface["id"],
                }
                for i, iface in enumerate(ifaces)
            ],
        )
        ips = await bulk(
            "POST",
            "ipam.ip-addresses",
            [
                {
                    "address": f"172.{16 + (i >> 16)}.{i >> 8 & 255}.{i & 255}/32",
                    "status": "active",
                    "assigned_object_type": "virtualization.vminterface",
                    "assigned_object_id": iface["id"],
                }
                for i, iface in enumerate(ifaces)
            ],
        )
        await bulk(
            "PATCH",
            "virtualization.interfaces",
            [
                {"id": iface["id"], "primary_mac_address": mac["id"]}
                for iface, mac in zip(ifaces, macs, strict=True)
            ],
        )
        await bulk(
            "PATCH",
            "virtualization.virtual-machines",
            [{"id": vm["id"], "primary_ip4": ips[2 * n]["id"]} for n, vm in enumerate(vms)],
        )
        wall = time.monotonic() - started
    finally:
        client.close()
    written = len(vms) + len(ifaces) + len(disks) + len(macs) + len(ips) + len(ifaces) + len(vms)
    return {
        "wall_s": round(wall, 2),
        "written": written,
        "objects_per_s": round(written / wall, 1),
        "requests": client.stats.snapshot(),
    }


async def replay_floor(settings: Settings) -> dict[str, Any]:
    """The first sync's own writes, replayed: the plan is computed first (not timed), then exactly its
    objects are sent to the clean NetBox as bulk requests of the same size and concurrency, level by level,
    with nothing in between but looking up the ids of the objects created a level before."""
    client = NetBoxClient(settings.netbox)
    plans: list[Plan] = []
    try:
        engine = SyncEngine(settings, client=client, dry_run=True, on_plan=plans.append)
        await execute(engine.run, "full", ListReporter())
        (plan,) = plans
        encoder = Applier(
            client=client, plan=plan, reporter=ListReporter(), operation="full_sync", settings=settings
        )
        sem = asyncio.Semaphore(settings.netbox.concurrency)
        chunk = settings.netbox.bulk_chunk
        before = client.stats.snapshot()

        async def send(kind: str, actions: list[Action]) -> None:
            payloads = [encoder._payload(a) for a in actions]
            async with sem:
                if actions[0].op == "create":
                    rows = await client.create(ENDPOINT[kind], payloads)
                    for action, row in zip(actions, rows, strict=True):
                        encoder.ids[(kind, action.key)] = row["id"]
                else:
                    await client.update(ENDPOINT[kind], payloads)

        started = time.monotonic()
        for actions in (plan.creations, plan.updates):
            for level in sorted({LEVEL[a.kind] for a in actions}):
                by_kind: dict[str, list[Action]] = {}
                for a in actions:
                    if LEVEL[a.kind] == level:
                        by_kind.setdefault(a.kind, []).append(a)
                await asyncio.gather(
                    *(
                        send(k, group[i : i + chunk])
                        for k, group in by_kind.items()
                        for i in range(0, len(group), chunk)
                    )
                )
        wall = time.monotonic() - started
        after = client.stats.snapshot()
    finally:
        client.close()
    written = plan.writes
    return {
        "wall_s": round(wall, 2),
        "written": written,
        "objects_per_s": round(written / wall, 1),
        "requests": {
            m: after.get(m, 0) - before.get(m, 0) for m in after if after.get(m, 0) - before.get(m, 0)
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=8, help="nodes per cluster")
    parser.add_argument("--guests", type=int, default=2000, help="guests per cluster")
    parser.add_argument("--chunk", type=int, default=100, help="objects per bulk request (netbox.bulk_chunk)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel NetBox requests")
    parser.add_argument("--workers", type=int, default=3, help="NetBox gunicorn workers")
    parser.add_argument("--skip-floor", action="store_true", help="do not measure the floor")
    parser.add_argument(
        "--bare-floor",
        action="store_true",
        help="also measure the floor with minimal objects (no tags, no refs)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    configure_logging("warning", "console", stream=sys.stderr)

    print(f"world: {args.clusters} clusters x {args.nodes} nodes x {args.guests} guests", flush=True)
    world = bench_world(args.clusters, args.nodes, args.guests)
    harness = NetBoxHarness()
    harness.prepare()
    instance = harness.start_instance(workers=args.workers)
    results: dict[str, Any] = {
        "world": {"clusters": args.clusters, "nodes": args.nodes, "guests_per_cluster": args.guests},
        "netbox": {"chunk": args.chunk, "concurrency": args.concurrency, "workers": args.workers},
    }
    try:
        with SimThread(world) as sim:
            settings = settings_for(instance.url, instance.token, sim, args.chunk, args.concurrency)
            if args.bare_floor:
                instance.reset()
                print("bare floor: the same volume as minimal objects ...", flush=True)
                results["bare_floor"] = asyncio.run(bare_floor(settings, args.guests, args.clusters))
                print(f"  {results['bare_floor']}", flush=True)
            if not args.skip_floor:
                instance.reset()
                print("floor: the first sync's own writes replayed with no logic in between ...", flush=True)
                results["floor"] = asyncio.run(replay_floor(settings))
                print(f"  {results['floor']}", flush=True)
            instance.reset()
            print("first sync ...", flush=True)
            results["first_sync"] = asyncio.run(timed_sync(settings))
            print(f"  {results['first_sync']}", flush=True)
            print("re-sync (unchanged) ...", flush=True)
            results["resync"] = asyncio.run(timed_sync(settings))
            print(f"  {results['resync']}", flush=True)
    finally:
        instance.stop()

    first, again = results["first_sync"], results["resync"]
    print()
    print(f"first sync : {first['wall_s']:>8.1f} s  {first['written']} objects written, "
          f"{first['objects_per_s']} objects/s, requests {first['requests']}")  # fmt: skip
    print(f"re-sync    : {again['wall_s']:>8.1f} s  {again['written']} objects written, "
          f"requests {again['requests']}")  # fmt: skip
    lags = f"max {first['max_loop_lag_ms']} ms (first sync), {again['max_loop_lag_ms']} ms (re-sync)"
    print(f"loop lag   : {lags}")
    if "floor" in results:
        fl = results["floor"]
        results["ratio_to_floor"] = round(first["wall_s"] / fl["wall_s"], 2)
        print(
            f"floor      : {fl['wall_s']:>8.1f} s  {fl['written']} objects, {fl['objects_per_s']} objects/s"
        )
        print(f"ratio      : first sync / floor = {results['ratio_to_floor']}")
    if "bare_floor" in results:
        bf = results["bare_floor"]
        results["ratio_to_bare_floor"] = round(first["wall_s"] / bf["wall_s"], 2)
        print(
            f"bare floor : {bf['wall_s']:>8.1f} s  {bf['written']} objects, {bf['objects_per_s']} objects/s"
        )
        print(f"ratio      : first sync / bare floor = {results['ratio_to_bare_floor']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = first["status"] == "succeeded" and again["status"] == "succeeded" and again["written"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
