"""Discovery against the simulator: the whole world equals the simulator's dump (the oracle), also under
faults, with a node offline, an endpoint down or a guest unreadable; progress is live; the loop stays free."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import itertools
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from proxbox import heap
from proxbox.config import ProxmoxSettings, Settings
from proxbox.proxmox.client import PveClient
from proxbox.proxmox.discovery import DiscoveryProgress, discover, discover_all
from proxbox.proxmox.models import ClusterInventory, Guest, Node
from proxbox.sim import SimServer, SimThread, World, generate


def small_world(**kw: Any) -> World:
    """2 clusters x 2 nodes x 12 guests + 1 standalone node; the second cluster speaks the pre-PVE-9 LXC
    /interfaces shape. Seed 13 has every case the parser handles (see the first test's coverage check)."""
    world = generate(seed=kw.pop("seed", 13), clusters=2, nodes=2, guests=12, standalone=1, **kw)
    world.clusters[1].legacy_lxc_interfaces = True
    return world


@pytest.fixture
async def world_sim() -> AsyncIterator[SimServer]:
    async with SimServer(small_world(), control=True) as server:
        yield server


def client_settings(sim: SimServer | SimThread, auth: str = "token", **kw: Any) -> list[ProxmoxSettings]:
    base: dict[str, Any] = {"retries": 3, "backoff_s": 0.005, "timeout": 2.0, "connect_timeout": 2.0}
    base.update(kw)
    return sim.proxmox_settings(auth, **base)


def settings_of(endpoints: list[ProxmoxSettings], node_concurrency: int = 4) -> Settings:
    return attrs.evolve(
        Settings(proxmox=tuple(endpoints)),
        sync=attrs.evolve(Settings().sync, node_concurrency=node_concurrency),
    )


# ------------------------------------------------------------------------------------------- the oracle


def _iface(address: str) -> str:
    return str(ipaddress.ip_interface(address))


def guest_view(g: Guest) -> dict[str, Any]:
    """A discovered guest in the oracle's terms (only usable addresses, like the oracle)."""
    usable = [ip for ip in g.ips if ip.usable]
    return {
        "cluster": g.cluster,
        "vmid": g.vmid,
        "kind": g.kind,
        "name": g.name,
        "node": g.node,
        "status": g.status,
        "template": g.template,
        "tags": list(g.tags),
        "vcpus": g.vcpus,
        "memory_mb": g.memory_mb,
        "onboot": g.onboot,
        "ostype": g.ostype,
        "description": g.description,
        "agent_configured": g.agent_enabled,
        "disks": sorted(
            (d.name, d.bus, d.index, d.storage, d.volume, d.size_bytes, d.mountpoint) for d in g.disks
        ),
        "nics": [
            {
                "name": n.name,
                "index": n.index,
                "model": n.model,
                "mac": n.mac,
                "bridge": n.bridge,
                "vlan": n.vlan,
                "trunks": list(n.trunks),
                "link_down": n.link_down,
                "guest_name": n.guest_name,
                "ips": sorted(_iface(ip.address) for ip in usable if ip.nic == n.name),
            }
            for n in g.nics
        ],
        "ips": sorted((_iface(ip.address), ip.family, ip.nic, ip.source) for ip in usable),
    }


def oracle_view(d: dict[str, Any]) -> dict[str, Any]:
    """The oracle's guest in the same terms. An LXC rootfs mounts at "/" (the oracle leaves it None)."""
    return {
        "cluster": d["cluster"],
        "vmid": d["vmid"],
        "kind": d["kind"],
        "name": d["name"],
        "node": d["node"],
        "status": d["status"],
        "template": d["template"],
        "tags": d["tags"],
        "vcpus": float(d["vcpus"]),
        "memory_mb": d["memory_mb"],
        "onboot": d["onboot"],
        "ostype": d["ostype"],
        "description": d["description"],
        "agent_configured": d["agent"]["configured"],
        "disks": sorted(
            (
                x["name"],
                x["bus"],
                x["index"],
                x["storage"],
                x["volume"],
                x["size_bytes"],
                "/" if x["bus"] == "rootfs" and x["mountpoint"] is None else x["mountpoint"],
            )
            for x in d["disks"]
        ),
        "nics": [
            {
                "name": n["name"],
                "index": n["index"],
                "model": n["model"],
                "mac": n["mac"],
                "bridge": n["bridge"],
                "vlan": n["vlan"],
                "trunks": n["trunks"],
                "link_down": n["link_down"],
                "guest_name": n["guest_name"],
                "ips": sorted(_iface(a) for a in n["ips"]),
            }
            for n in d["nics"]
        ],
        "ips": sorted((_iface(ip["address"]), ip["family"], ip["nic"], ip["source"]) for ip in d["ips"]),
    }


def node_view(n: Node) -> tuple[Any, ...]:
    return (n.name, n.online, n.ip, n.cpu_model, n.cpus, n.memory_bytes, n.pve_version)


def oracle_node(n: dict[str, Any]) -> tuple[Any, ...]:
    return (n["name"], n["online"], n["ip"], n["cpu_model"], n["cpus"], n["memory_bytes"], n["pve_version"])


def assert_cluster_matches(
    inv: ClusterInventory, oracle: dict[str, Any], *, skip_nodes: frozenset[str] = frozenset()
):
    assert inv.cluster.name == oracle["name"]
    assert inv.cluster.standalone == oracle["standalone"]
    assert inv.cluster.quorate == oracle["quorate"]
    assert inv.cluster.version == oracle["pve_version"]
    expected_guests = {g["vmid"]: g for g in oracle["guests"]}
    found = {g.vmid: g for g in inv.guests}
    assert sorted(found) == sorted(expected_guests)
    for vmid, guest in found.items():
        if guest.node in skip_nodes:
            continue
        assert guest.config_complete and guest.ips_complete, guest
        assert guest_view(guest) == oracle_view(expected_guests[vmid]), f"{inv.cluster.name}/{vmid}"
    nodes = {n.name: n for n in inv.nodes}
    for n in oracle["nodes"]:
        if n["name"] not in skip_nodes:
            assert node_view(nodes[n["name"]]) == oracle_node(n)


def oracle_of(sim: SimServer | SimThread) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in sim.dump()["clusters"]}


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("auth", ["token", "ticket"])
async def test_discovery_of_every_endpoint_equals_the_simulator_world(world_sim: SimServer, auth: str):
    inventory = await discover_all(settings_of(client_settings(world_sim, auth)))
    oracle = oracle_of(world_sim)
    assert inventory.failed_endpoints == ()
    assert (
        sorted(c.cluster.name for c in inventory.clusters) == sorted(oracle) == ["lab-a", "lab-b", "pve-s1"]
    )
    for inv in inventory.clusters:
        assert inv.issues == ()
        assert inv.complete
        assert_cluster_matches(inv, oracle[inv.cluster.name])
    # the comparison covered every case: IPs from every source, Windows agents, agent noise, bind mounts,
    # trunks, templates, multi-NIC and IPv6 guests, legacy LXC /interfaces, stopped guests
    guests = [g for c in inventory.clusters for g in c.guests]
    assert {ip.source for g in guests for ip in g.ips} == {
        "agent",
        "cloud-init",
        "lxc-interfaces",
        "lxc-config",
    }
    assert any(n.guest_name and n.guest_name.startswith("Ethernet") for g in guests for n in g.nics)
    assert any(ip.link_local for g in guests for ip in g.ips)
    assert any(d.storage is None and d.size_bytes is None for g in guests for d in g.disks)
    assert any(n.trunks for g in guests for n in g.nics)
    assert any(g.template for g in guests)
    assert any(len(g.nics) > 1 for g in guests)
    assert any(ip.family == 6 and ip.usable for g in guests for ip in g.ips)
    assert any(g.cluster == "lab-b" and ip.source == "lxc-interfaces" for g in guests for ip in g.ips)
    assert {g.status for g in guests} == {"running", "stopped"}


async def test_standalone_node_is_a_cluster_named_after_itself(world_sim: SimServer):
    settings = next(s for s in client_settings(world_sim) if s.name == "pve-s1")
    async with PveClient(settings) as client:
        inv = await discover(client)
    assert (inv.cluster.name, inv.cluster.standalone) == ("pve-s1", True)
    assert [n.name for n in inv.nodes] == ["pve-s1"]


async def test_discovery_makes_no_per_guest_status_calls(world_sim: SimServer):
    settings = client_settings(world_sim)[0]
    world_sim.reset_requests()
    async with PveClient(settings) as client:
        inv = await discover(client)
    routes = world_sim.requests()["lab-a"]["routes"]
    assert not [r for r in routes if r.endswith("/status/current")]
    configs = sum(v["total"] for r, v in routes.items() if r.endswith("/config"))
    assert configs == len(inv.guests)
    running = [g for g in inv.guests if g.status == "running" and (g.kind == "lxc" or g.agent_enabled)]
    runtime = sum(
        v["total"] for r, v in routes.items() if r.endswith(("/interfaces", "/network-get-interfaces"))
    )
    assert runtime == len(running)
    # status, resources, version and the permission pre-flight; then 4 per node; then per guest
    assert sum(v["total"] for v in routes.values()) == 4 + 4 * len(inv.nodes) + configs + runtime


async def test_with_a_fifth_of_all_calls_failing_discovery_still_returns_the_full_world(world_sim: SimServer):
    faults = [
        {"action": "status", "status": 503},
        {"action": "status", "status": 500, "message": "internal error"},
        {"action": "status", "status": 595},
        {"action": "drop"},
    ]
    for i, fault in enumerate(faults):  # 4 rules at 5.6% each: about 20% of requests fail
        world_sim.add_fault(path="/*", method="GET", probability=0.056, seed=f"chaos-{i}", **fault)
    endpoints = client_settings(world_sim, retries=8, backoff_s=0.002)
    clients = [PveClient(s) for s in endpoints]
    try:
        inventory = await discover_all(settings_of(endpoints), clients=clients)
    finally:
        for client in clients:
            await client.close()
    oracle = oracle_of(world_sim)
    assert inventory.failed_endpoints == ()
    for inv in inventory.clusters:
        assert inv.issues == ()
        assert inv.complete
        assert_cluster_matches(inv, oracle[inv.cluster.name])
    requests = sum(c.stats.requests for c in clients)
    failed = sum(sum(c.stats.errors.values()) for c in clients)
    assert failed / requests > 0.1  # the faults really fired
    assert sum(c.stats.retries for c in clients) == failed


async def test_an_offline_node_is_incomplete_and_everything_else_is_returned(world_sim: SimServer):
    world_sim.node_offline("lab-a", "pve-a2")
    oracle = oracle_of(world_sim)["lab-a"]
    async with PveClient(client_settings(world_sim)[0]) as client:
        inv = await discover(client)
    assert inv.complete_nodes == frozenset({"pve-a1"})
    assert not inv.complete
    offline = [g for g in inv.guests if g.node == "pve-a2"]
    assert offline, "the offline node had guests"
    assert all(not g.config_complete and g.status == "unknown" for g in offline)
    assert_cluster_matches(inv, oracle, skip_nodes=frozenset({"pve-a2"}))
    # no call went to the offline node
    assert not any(r for r in world_sim.requests()["lab-a"]["routes"] if "pve-a2" in r)
    assert {n.name: n.online for n in inv.nodes} == {"pve-a1": True, "pve-a2": False}


async def test_a_node_whose_listing_fails_is_incomplete_but_keeps_its_guests(world_sim: SimServer):
    world_sim.add_fault(path="/nodes/pve-a1/lxc", action="status", status=503)
    async with PveClient(client_settings(world_sim, retries=2)[0]) as client:
        inv = await discover(client)
    assert inv.complete_nodes == frozenset({"pve-a2"})
    lxc_on_a1 = [g for g in inv.guests if g.node == "pve-a1" and g.kind == "lxc"]
    qemu_on_a1 = [g for g in inv.guests if g.node == "pve-a1" and g.kind == "qemu"]
    assert lxc_on_a1 and all(not g.config_complete for g in lxc_on_a1)
    assert qemu_on_a1 and all(g.config_complete for g in qemu_on_a1)
    assert [(i.scope, i.node, i.code) for i in inv.issues] == [("node", "pve-a1", "proxmox_unavailable")]


async def test_one_unreadable_guest_config_never_aborts_the_rest(world_sim: SimServer):
    oracle = oracle_of(world_sim)["lab-a"]
    victim = oracle["guests"][0]
    world_sim.add_fault(
        path=f"/nodes/{victim['node']}/*/{victim['vmid']}/config", action="status", status=500
    )
    async with PveClient(client_settings(world_sim, retries=2)[0]) as client:
        inv = await discover(client)
    broken = [g for g in inv.guests if not g.config_complete]
    assert [g.vmid for g in broken] == [victim["vmid"]]
    assert broken[0].name == victim["name"]
    assert [(i.scope, i.vmid, i.code, i.retryable) for i in inv.issues] == [
        ("guest", victim["vmid"], "proxmox_unavailable", True)
    ]
    assert inv.complete
    others = attrs.evolve(inv, guests=tuple(g for g in inv.guests if g.vmid != victim["vmid"]))
    oracle_rest = {**oracle, "guests": [g for g in oracle["guests"] if g["vmid"] != victim["vmid"]]}
    assert_cluster_matches(others, oracle_rest)


async def test_a_failing_agent_read_keeps_the_guest_with_incomplete_addresses(world_sim: SimServer):
    oracle = oracle_of(world_sim)
    victim = next(
        g
        for c in oracle.values()
        for g in c["guests"]
        if g["kind"] == "qemu" and g["status"] == "running" and g["agent"]["answering"]
    )
    world_sim.add_fault(
        path=f"/nodes/{victim['node']}/qemu/{victim['vmid']}/agent/*",
        action="status",
        status=403,
        message="x",
    )
    inventory = await discover_all(settings_of(client_settings(world_sim)))
    inv = next(c for c in inventory.clusters if c.cluster.name == victim["cluster"])
    guest = next(g for g in inv.guests if g.vmid == victim["vmid"])
    assert guest.config_complete and not guest.ips_complete
    assert not any(ip.source == "agent" for ip in guest.ips)
    assert [(i.scope, i.vmid, i.code) for i in inv.issues] == [
        ("guest", victim["vmid"], "proxmox_permission_denied")
    ]


async def test_an_endpoint_that_is_down_fails_alone(world_sim: SimServer):
    await world_sim.cluster_down("lab-b")
    inventory = await discover_all(settings_of(client_settings(world_sim, retries=2)))
    assert sorted(c.cluster.name for c in inventory.clusters) == ["lab-a", "pve-s1"]
    [failed] = inventory.failed_endpoints
    assert (failed.scope, failed.cluster, failed.code, failed.retryable) == (
        "cluster",
        "lab-b",
        "proxmox_unavailable",
        True,
    )


async def test_progress_is_reported_per_guest_as_discovery_goes(world_sim: SimServer):
    seen: list[DiscoveryProgress] = []
    inventory = await discover_all(settings_of(client_settings(world_sim)), on_progress=seen.append)
    per_cluster: dict[str, list[DiscoveryProgress]] = {}
    for p in seen:
        per_cluster.setdefault(p.cluster, []).append(p)
    for inv in inventory.clusters:
        events = per_cluster[inv.cluster.name]
        assert events[0].kind == "cluster"
        guests = [p for p in events if p.kind == "guest"]
        assert sorted(p.guest.vmid for p in guests if p.guest) == sorted(g.vmid for g in inv.guests)
        assert [p.done for p in guests] == list(range(1, len(inv.guests) + 1))
        assert guests[-1].total == len(inv.guests)
        assert {p.node for p in events if p.kind == "node"} == {n.name for n in inv.nodes}


async def test_a_broken_progress_callback_does_not_break_discovery(world_sim: SimServer):
    def explode(_: DiscoveryProgress) -> None:
        raise RuntimeError("consumer bug")

    inventory = await discover_all(settings_of(client_settings(world_sim)), on_progress=explode)
    assert len(inventory.clusters) == 3


async def test_issues_are_reported_as_progress_when_they_happen(world_sim: SimServer):
    world_sim.node_offline("lab-a", "pve-a1")
    world_sim.add_fault(path="/nodes/pve-a2/network", action="status", status=403)
    seen: list[DiscoveryProgress] = []
    async with PveClient(client_settings(world_sim)[0]) as client:
        inv = await discover(client, on_progress=seen.append)
    issues = [p.issue for p in seen if p.kind == "issue"]
    assert issues == list(inv.issues)
    assert [(i.scope, i.node, i.code) for i in inv.issues if i] == [
        ("node", "pve-a2", "proxmox_permission_denied")
    ]


async def test_the_event_loop_stays_responsive_during_discovery(monkeypatch: pytest.MonkeyPatch):
    """Every Proxmox call runs in a worker thread, never on the loop, and the loop keeps ticking throughout.

    The simulator runs in its own thread (its work is not on this loop). Absolute lag numbers belong to
    bench/discovery.py (a shared 2-core machine makes them noise in a test); here the loop must never be
    blocked by a call, and a ticker must keep running for the whole discovery."""
    loop_thread = threading.get_ident()
    call_threads: list[str] = []
    real_call = PveClient._call

    def recording_call(self: PveClient, *args: Any) -> Any:
        call_threads.append(
            threading.current_thread().name if threading.get_ident() != loop_thread else "LOOP"
        )
        return real_call(self, *args)

    monkeypatch.setattr(PveClient, "_call", recording_call)
    world = generate(seed=9, clusters=2, nodes=3, guests=40)
    with SimThread(world, control=True) as sim:
        sim.add_fault(path="/*", action="latency", latency_ms=2)
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.005)
                ticks.append(time.perf_counter())

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        inventory = await discover_all(settings_of(client_settings(sim, concurrency=4)))
        ended = time.perf_counter()
        stop.set()
        await tick
    assert sum(len(c.guests) for c in inventory.clusters) == 80
    assert call_threads and "LOOP" not in call_threads
    assert all(name.startswith("pve-") for name in call_threads)
    # the loop kept ticking: no stretch of the discovery (its start included) was spent blocked or starved
    points = [started, *(t for t in ticks if started <= t < ended), ended]
    longest = max(b - a for a, b in itertools.pairwise(points))
    assert len(points) > 12
    assert longest < (ended - started) / 3, (
        f"the loop stood still {longest * 1000:.0f} ms of {ended - started:.2f} s"
    )


async def test_discovery_holds_off_full_garbage_collections_and_restores_the_collector(world_sim: SimServer):
    """A full GC pass over a growing inventory freezes the loop for tens of ms (bench/discovery.py --gc
    compare): discovery postpones them while it runs, young passes go on, and the thresholds come back."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    generations: list[int] = []
    deferring: list[bool] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    def on_progress(progress: DiscoveryProgress) -> None:
        deferring.append(heap.deferring())
        ballast.append([[i] for i in range(2_000)])  # a heap growing the way a big estate's inventory does

    ballast: list[Any] = []
    gc.callbacks.append(on_gc)
    try:
        inventory = await discover_all(settings_of(client_settings(world_sim)), on_progress=on_progress)
        after = gc.get_threshold()
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*saved)
    assert sum(len(c.guests) for c in inventory.clusters) == 36
    assert deferring and all(deferring)
    assert generations and 2 not in generations, "a full collection ran during discovery"
    assert after == (700, 10, 10)
    assert not heap.deferring()


async def test_cancelling_discovery_stops_promptly_and_leaves_no_worker_behind(world_sim: SimServer):
    world_sim.add_fault(path="/*", action="latency", latency_ms=30)
    endpoints = client_settings(world_sim, concurrency=2)
    task = asyncio.ensure_future(discover_all(settings_of(endpoints)))
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    async with PveClient(endpoints[0]) as probe:
        guard = probe.guard_s  # the longest one attempt may still run in a worker
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < guard
    names = {s.name for s in endpoints}
    while any(t.name.startswith(tuple(f"pve-{n}" for n in names)) for t in threading.enumerate()):
        assert time.monotonic() - cancelled_at < guard, "a worker thread outlived its client"
        await asyncio.sleep(0.02)
