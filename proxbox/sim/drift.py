"""Drift: changes to the world that a sync must follow (create, update and delete paths).

Targeted ops (``apply_op``) make one specific change; :func:`drift_steps` applies seeded batches. Every op
returns a change record ``{"op", "cluster", "vmid", ...before/after}`` and bumps the cluster's revision.

Ops: ``rename`` (name), ``delete``, ``migrate`` (node), ``set_mac`` (nic, mac), ``set_ip`` (nic, ip; an IPv6
CIDR changes the v6 address), ``set_vlan`` (nic, vlan; the address moves to that network), ``resize_disk``
(disk, size_bytes or size "40G"; default +10G), ``add_guest`` (kind, node, name, vmid), ``set_status``
(status running|stopped), ``set_tags`` (tags).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs

from proxbox.sim.generate import Profile, _guest
from proxbox.sim.model import (
    MAX_GUEST_INDEX,
    NETWORK_BASE,
    GiB,
    SimCluster,
    SimGuest,
    World,
    drift_address,
    eui64,
    parse_size,
    pool_address,
    ula_prefix,
)

BATCH_OPS = ("add_guest", "delete", "rename", "migrate", "set_mac", "set_ip", "set_vlan", "resize_disk")
SUFFIXES = ("old", "new", "v2", "legacy", "tmp", "blue", "green")


class DriftError(ValueError):
    """A drift op that cannot apply (unknown cluster, guest, nic, disk...)."""


def _guest_of(cluster: SimCluster, vmid: Any) -> SimGuest:
    try:
        return cluster.guests[int(vmid)]
    except (KeyError, TypeError, ValueError):
        raise DriftError(f"cluster {cluster.name} has no guest {vmid!r}") from None


def _cluster_of(world: World, name: Any) -> SimCluster:
    try:
        return world.cluster(str(name))
    except KeyError as exc:
        raise DriftError(str(exc.args[0])) from None


def apply_op(world: World, spec: Mapping[str, Any], profile: Profile | None = None) -> dict[str, Any]:
    """Apply one targeted op: ``{"op": "rename", "cluster": "lab-a", "vmid": 100, "name": "web-new"}``."""
    op = spec.get("op")
    fn = OPS.get(str(op))
    if fn is None:
        raise DriftError(f"op must be one of {', '.join(sorted(OPS))}, got {op!r}")
    cluster = _cluster_of(world, spec.get("cluster"))
    change = fn(world, cluster, dict(spec), profile or Profile())
    cluster.touch()
    return {"op": op, "cluster": cluster.name, **change}


def _rename(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    before = g.name
    g.name = str(spec.get("name") or f"{g.name}-{SUFFIXES[g.vmid % len(SUFFIXES)]}")
    return {"vmid": g.vmid, "before": before, "after": g.name}


def _delete(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    del c.guests[g.vmid]
    c.backups = [b for b in c.backups if b.vmid != g.vmid]
    c.replications = [r for r in c.replications if r.guest != g.vmid]
    return {"vmid": g.vmid, "name": g.name, "node": g.node}


def _migrate(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    target = spec.get("node")
    if target is None:
        others = [n.name for n in c.nodes if n.name != g.node and n.online]
        if not others:
            raise DriftError(f"cluster {c.name} has no other online node to migrate {g.vmid} to")
        names = [n.name for n in c.nodes]
        target = next(n for n in names[names.index(g.node) + 1 :] + names if n in others)
    if c.node(str(target)) is None:
        raise DriftError(f"cluster {c.name} has no node {target!r}")
    before = g.node
    g.node = str(target)
    for r in c.replications:
        if r.guest == g.vmid:
            r.source = g.node
    return {"vmid": g.vmid, "before": before, "after": g.node}


def _nic(g: SimGuest, spec: dict[str, Any]) -> Any:
    try:
        return g.nic(int(spec.get("nic", 0)))
    except (KeyError, ValueError) as exc:
        raise DriftError(f"guest {g.vmid} has no nic {spec.get('nic')!r}") from exc


def _set_mac(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    nic = _nic(g, spec)
    before = nic.mac
    if spec.get("mac"):
        nic.mac = str(spec["mac"]).upper()
        world.used_macs.add(nic.mac)
    else:
        nic.mac = world.unique_mac(c.name, g.vmid, nic.index)
    if nic.mode6 == "auto" and nic.ip6:
        nic.ip6 = eui64(ula_prefix(c.index, nic.vlan), nic.mac) + "/64"
    return {"vmid": g.vmid, "nic": nic.key, "before": before, "after": nic.mac}


def _set_ip(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    nic = _nic(g, spec)
    ip = spec.get("ip")
    if ip and ":" in str(ip):
        before = nic.ip6
        nic.ip6 = str(ip)
        if nic.mode6 in ("none", "auto"):
            nic.mode6 = "static"
        return {"vmid": g.vmid, "nic": nic.key, "family": 6, "before": before, "after": nic.ip6}
    before = nic.ip4
    if ip:
        nic.ip4 = str(ip)
        if nic.gw4:
            nic.gw4 = nic.ip4.rsplit(".", 1)[0] + ".1"
    else:
        nic.ip4, gw = drift_address(c.index, c.drift_serial)
        c.drift_serial += 1
        if nic.gw4:
            nic.gw4 = gw
    if nic.mode4 == "none":
        nic.mode4 = "static"
    return {"vmid": g.vmid, "nic": nic.key, "family": 4, "before": before, "after": nic.ip4}


def _set_vlan(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    nic = _nic(g, spec)
    vlan = spec.get("vlan")
    vlan = None if vlan in (None, "", 0) else int(vlan)
    before = nic.vlan
    nic.vlan, nic.trunks = vlan, ()
    if nic.ip4 or nic.mode4 != "none":
        others = {n.vlan for n in g.nics if n is not nic}
        if vlan in NETWORK_BASE and vlan not in others and g.index < MAX_GUEST_INDEX:
            nic.ip4, gw = pool_address(c.index, vlan, g.index)
        else:
            nic.ip4, gw = drift_address(c.index, c.drift_serial)
            c.drift_serial += 1
        if nic.gw4:
            nic.gw4 = gw
        if nic.mode4 == "none":
            nic.mode4 = "dhcp"
    if nic.ip6 and nic.mode6 == "auto":
        nic.ip6 = eui64(ula_prefix(c.index, vlan), nic.mac) + "/64"
    return {"vmid": g.vmid, "nic": nic.key, "before": before, "after": vlan, "ip": nic.ip4}


def _resize_disk(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    key = spec.get("disk")
    disks = [
        d for d in g.disks if d.is_disk and d.size_bytes is not None and d.bus not in ("efidisk", "tpmstate")
    ]
    if key:
        disk = next((d for d in disks if d.key == key), None)
        if disk is None:
            raise DriftError(f"guest {g.vmid} has no resizable disk {key!r}")
    elif disks:
        disk = disks[0]
    else:
        raise DriftError(f"guest {g.vmid} has no resizable disk")
    before = disk.size_bytes or 0
    if spec.get("size_bytes") is not None:
        after = int(spec["size_bytes"])
    elif spec.get("size"):
        after = parse_size(str(spec["size"]))
    else:
        after = before + 10 * GiB
    if after < before:
        raise DriftError("PVE disks only grow")
    disk.size_bytes = after
    return {"vmid": g.vmid, "disk": disk.key, "before": before, "after": after}


def _add_guest(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    vmid = int(spec.get("vmid") or c.next_vmid())
    if vmid in c.guests:
        raise DriftError(f"cluster {c.name} already has guest {vmid}")
    index = vmid - 100
    if not 0 <= index < MAX_GUEST_INDEX:
        raise DriftError(f"vmid {vmid} is outside the simulator's address pool (100-{99 + MAX_GUEST_INDEX})")
    node = spec.get("node") or c.nodes[index % len(c.nodes)].name
    if c.node(str(node)) is None:
        raise DriftError(f"cluster {c.name} has no node {node!r}")
    kind = spec.get("kind")
    if kind not in (None, "qemu", "lxc"):
        raise DriftError("kind must be qemu or lxc")
    if kind:
        profile = attrs.evolve(profile, lxc=1.0 if kind == "lxc" else 0.0, template=0.0)
    g = _guest(world, profile, c, str(node), vmid, index)
    if spec.get("name"):
        g.name = str(spec["name"])
    c.guests[vmid] = g
    return {"vmid": vmid, "name": g.name, "node": g.node, "kind": g.kind}


def _set_status(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    status = spec.get("status")
    if status not in ("running", "stopped"):
        raise DriftError("status must be running or stopped")
    before = g.status
    g.status = str(status)
    if g.running and not g.uptime_s:
        g.uptime_s, g.pid = 60, 4242 + g.vmid
    return {"vmid": g.vmid, "before": before, "after": g.status}


def _set_tags(world: World, c: SimCluster, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    g = _guest_of(c, spec.get("vmid"))
    tags = spec.get("tags") or ()
    if isinstance(tags, str):
        tags = [t for t in tags.replace(",", ";").split(";") if t]
    before = list(g.tags)
    g.tags = tuple(sorted(str(t) for t in tags))
    return {"vmid": g.vmid, "before": before, "after": list(g.tags)}


OPS = {
    "rename": _rename,
    "delete": _delete,
    "migrate": _migrate,
    "set_mac": _set_mac,
    "set_ip": _set_ip,
    "set_vlan": _set_vlan,
    "resize_disk": _resize_disk,
    "add_guest": _add_guest,
    "set_status": _set_status,
    "set_tags": _set_tags,
}


def drift_steps(
    world: World, steps: int = 1, seed: int | str | None = None, profile: Profile | None = None
) -> list[dict[str, Any]]:
    """Apply ``steps`` seeded batches; each batch does one of every op in :data:`BATCH_OPS`, each on a
    cluster and guest drawn from ``random.Random(f"{seed}:drift:{n}")`` (n counts batches)."""
    changes: list[dict[str, Any]] = []
    for _ in range(steps):
        rng = random.Random(f"{world.seed if seed is None else seed}:drift:{world.drift_batches}")
        world.drift_batches += 1
        for op in BATCH_OPS:
            candidates = [c for c in world.clusters if c.guests or op == "add_guest"]
            if op == "migrate":
                candidates = [c for c in candidates if sum(n.online for n in c.nodes) > 1]
            if not candidates:
                continue
            cluster = rng.choice(candidates)
            spec: dict[str, Any] = {"op": op, "cluster": cluster.name}
            online = {n.name for n in cluster.nodes if n.online}
            vmids = sorted(v for v, g in cluster.guests.items() if not g.template and g.node in online)
            if op != "add_guest":
                if not vmids:
                    continue
                spec["vmid"] = rng.choice(vmids)
                g = cluster.guests[spec["vmid"]]
                if op in ("set_mac", "set_ip", "set_vlan"):
                    nics = [n for n in g.nics if op == "set_mac" or n.ip4]
                    if not nics:
                        continue
                    spec["nic"] = rng.choice(nics).index
                if op == "set_vlan":
                    used = {n.vlan for n in g.nics}
                    free = [v for v in NETWORK_BASE if v not in used]
                    if not free:
                        continue
                    spec["vlan"] = rng.choice(free)
            try:
                changes.append(apply_op(world, spec, profile))
            except DriftError:
                continue
    return changes
