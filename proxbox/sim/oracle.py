"""The world dump: the test oracle for what a correct sync must write to NetBox.

See docs/simulator.md for the format. The IPs of each NIC are the ones a correct client ends up with:
loopback and link-local excluded, unattributed agent noise (docker0, veth*) excluded, taken from

* the guest agent, when the qemu guest runs and its agent is configured and answering (``source: agent``);
* otherwise, for qemu, the cloud-init ``ipconfigN`` static addresses (``cloud-init``; dhcp/auto give none);
* for a running container, ``/lxc/{id}/interfaces`` (``lxc-interfaces``);
* for a stopped container, the static ``ip=``/``ip6=`` of its config (``lxc-config``).
"""

from __future__ import annotations

from typing import Any

from proxbox.sim.model import SimCluster, SimGuest, SimNic, World
from proxbox.sim.render_guest import agent_configured


def ip_source(g: SimGuest) -> str | None:
    if g.kind == "qemu":
        if g.running and agent_configured(g) and g.agent == "answering":
            return "agent"
        return "cloud-init" if g.cloudinit else None
    return "lxc-interfaces" if g.running else "lxc-config"


def nic_ips(g: SimGuest, nic: SimNic, source: str | None) -> list[str]:
    if source in ("agent", "lxc-interfaces"):
        return [a for a in (nic.ip4, nic.ip6) if a]
    if source in ("cloud-init", "lxc-config"):
        out = []
        if nic.mode4 == "static" and nic.ip4:
            out.append(nic.ip4)
        if nic.mode6 == "static" and nic.ip6:
            out.append(nic.ip6)
        return out
    return []


def guest_dump(cluster: SimCluster, g: SimGuest) -> dict[str, Any]:
    node = cluster.node(g.node)
    online = bool(node and node.online)
    source = ip_source(g)
    nics = []
    ips: list[dict[str, Any]] = []
    for nic in g.nics:
        addrs = nic_ips(g, nic, source)
        guest_name = nic.ifname if g.kind == "lxc" or source == "agent" else None
        nics.append(
            {
                "name": nic.key,
                "index": nic.index,
                "model": nic.model,
                "mac": nic.mac,
                "bridge": nic.bridge,
                "vlan": nic.vlan,
                "trunks": list(nic.trunks),
                "link_down": nic.link_down,
                "guest_name": guest_name,
                "ips": addrs,
            }
        )
        ips.extend(
            {"address": a, "family": 6 if ":" in a else 4, "nic": nic.key, "source": source} for a in addrs
        )
    disks = [
        {
            "name": d.key,
            "bus": d.bus,
            "index": d.index,
            "storage": d.storage,
            "volume": d.volume,
            "size_bytes": d.size_bytes,
            "mountpoint": d.mountpoint,
        }
        for d in g.disks
        if d.is_disk
    ]
    return {
        "cluster": cluster.name,
        "vmid": g.vmid,
        "kind": g.kind,
        "name": g.name,
        "node": g.node,
        "node_online": online,
        "status": g.status if online else "unknown",
        "template": g.template,
        "tags": list(g.tags),
        "vcpus": g.vcpus,
        "memory_mb": g.memory_mb,
        "onboot": g.onboot,
        "ostype": g.ostype,
        "description": g.description,
        "pool": g.pool,
        "agent": {
            "configured": agent_configured(g),
            "answering": g.kind == "qemu" and g.agent == "answering",
        },
        "disks": disks,
        "disk_bytes": sum(d["size_bytes"] or 0 for d in disks),
        "nics": nics,
        "ips": ips,
        "ip_source": source,
    }


def cluster_dump(cluster: SimCluster) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "endpoint": cluster.name,
        "standalone": cluster.standalone,
        "quorate": cluster.quorate,
        "pve_version": cluster.pve_version,
        "revision": cluster.revision,
        "nodes": [
            {
                "name": n.name,
                "online": n.online,
                "ip": n.ip,
                "cpu_model": n.cpu_model,
                "cpus": n.cpus,
                "sockets": n.sockets,
                "memory_bytes": n.mem_total,
                "pve_version": cluster.pve_version,
            }
            for n in cluster.nodes
        ],
        "guests": [guest_dump(cluster, g) for g in sorted(cluster.guests.values(), key=lambda g: g.vmid)],
    }


def dump(world: World) -> dict[str, Any]:
    clusters = [cluster_dump(c) for c in world.clusters]
    return {
        "format": 1,
        "seed": world.seed,
        "epoch": world.epoch,
        "drift_batches": world.drift_batches,
        "summary": {c["name"]: {"nodes": len(c["nodes"]), "guests": len(c["guests"])} for c in clusters},
        "clusters": clusters,
    }
