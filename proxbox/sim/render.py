"""Cluster, node, storage and task payloads in PVE's exact shapes (notes §1), for one cluster at one instant.

:class:`ClusterView` is what the HTTP layer calls; it raises :class:`~proxbox.sim.render_guest.PveError` with
PVE's messages (unknown node → 500 hostname lookup, offline node → 595, missing guest → 500 config missing).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import attrs

from proxbox.sim import render_guest as rg
from proxbox.sim.acl import ALL_PRIVILEGES
from proxbox.sim.model import SimBackup, SimCluster, SimGuest, SimNode, SimStorage, World
from proxbox.sim.render_guest import PveError

NETWORK_TYPES = (
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "fabric",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
    "any_bridge",
    "any_local_bridge",
    "include_sdn",
)
STORAGE_NET_VLAN = 50


@attrs.frozen
class WithTotal:
    """A list answer that also carries PVE's top-level ``total``."""

    data: list[dict[str, Any]]
    total: int


def _frac(*parts: object) -> float:
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "big") / 2**32


def _bool_param(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None:
        return False
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise PveError(
            400,
            "Parameter verification failed.",
            errors={name: f"type check ('boolean') failed - got '{value}'"},
        )
    return value in ("1", "true", "yes", "on")


def _int_param(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise PveError(
            400,
            "Parameter verification failed.",
            errors={name: f"type check ('integer') failed - got '{value}'"},
        ) from None


def vmid_param(text: str) -> int:
    try:
        vmid = int(text)
    except ValueError:
        vmid = -1
    if not 100 <= vmid <= 999_999_999:
        raise PveError(
            400,
            "Parameter verification failed.",
            errors={
                "vmid": f"type check ('integer') failed - got '{text}'"
                if vmid == -1
                else "value must have a minimum value of 100"
            },
        )
    return vmid


class ClusterView:
    """One cluster's answers at ``now`` (frozen clock: ``now == world.epoch``)."""

    def __init__(self, world: World, cluster: SimCluster, now: int) -> None:
        self.world = world
        self.cluster = cluster
        self.now = now
        self.elapsed = now - world.epoch

    # ------------------------------------------------------------------------------------ guards

    def node(self, name: str) -> SimNode:
        node = self.cluster.node(name)
        if node is None:
            raise PveError(
                500,
                f"hostname lookup '{name}' failed - failed to get address info for: {name}: "
                "Name or service not known",
            )
        if not node.online:
            raise PveError(595, node.offline_reason, empty_body=True)
        return node

    def guest(self, node: str, kind: str, vmid: int) -> SimGuest:
        self.node(node)
        g = self.cluster.guests.get(vmid)
        if g is None or g.node != node or g.kind != kind:
            raise rg.config_missing(node, kind, vmid)
        return g

    def _guest_status(self, g: SimGuest) -> str:
        node = self.cluster.node(g.node)
        return g.status if node and node.online else "unknown"

    # ---------------------------------------------------------------------------------- cluster

    def version(self) -> dict[str, Any]:
        c = self.cluster
        return {"version": c.pve_version, "release": c.release, "repoid": c.repoid}

    def cluster_status(self) -> list[dict[str, Any]]:
        c = self.cluster
        out: list[dict[str, Any]] = []
        if not c.standalone:
            out.append(
                {
                    "type": "cluster",
                    "id": "cluster",
                    "name": c.name,
                    "nodes": len(c.nodes),
                    "quorate": int(c.quorate),
                    "version": c.config_version,
                }
            )
        for n in c.nodes:
            out.append(
                {
                    "type": "node",
                    "id": f"node/{n.name}",
                    "name": n.name,
                    "nodeid": n.nodeid,
                    "ip": n.ip,
                    "online": int(n.online),
                    "local": int(n is c.local_node),
                    "level": n.level,
                }
            )
        return out

    def _vm_resource(self, g: SimGuest) -> dict[str, Any]:
        status = self._guest_status(g)
        live = status == "running"
        out: dict[str, Any] = {
            "id": f"{g.kind}/{g.vmid}",
            "type": g.kind,
            "vmid": g.vmid,
            "name": g.name,
            "node": g.node,
            "status": status,
            "template": int(g.template),
            "cpu": g.cpu_usage if live else 0,
            "maxcpu": g.vcpus,
            "mem": g.mem_used if live else 0,
            "maxmem": g.memory_mb * 1024 * 1024,
            "disk": 0,
            "maxdisk": g.maxdisk,
            "uptime": g.uptime_s + self.elapsed if live else 0,
            "netin": g.net_in if live else 0,
            "netout": g.net_out if live else 0,
            "diskread": g.disk_read if live else 0,
            "diskwrite": g.disk_write if live else 0,
        }
        if g.tags:
            out["tags"] = ";".join(g.tags)
        if g.pool:
            out["pool"] = g.pool
        if g.hastate:
            out["hastate"] = g.hastate
        if g.lock:
            out["lock"] = g.lock
        return out

    def _node_resource(self, n: SimNode) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": f"node/{n.name}",
            "type": "node",
            "node": n.name,
            "status": "online" if n.online else "offline",
        }
        if n.online:
            out.update(
                {
                    "cpu": n.cpu_usage,
                    "maxcpu": n.cpus,
                    "mem": n.mem_used,
                    "maxmem": n.mem_total,
                    "disk": n.rootfs_used,
                    "maxdisk": n.rootfs_total,
                    "uptime": n.uptime_s + self.elapsed,
                    "level": n.level,
                    "cgroup-mode": 2,
                }
            )
        return out

    def _storage_usage(self, s: SimStorage, node: str) -> tuple[int, int]:
        used = s.used if s.shared else int(s.total * (0.1 + 0.6 * _frac(self.cluster.name, node, s.name)))
        return s.total, used

    def _storage_resource(self, s: SimStorage, n: SimNode) -> dict[str, Any]:
        total, used = self._storage_usage(s, n.name)
        out: dict[str, Any] = {
            "id": f"storage/{n.name}/{s.name}",
            "type": "storage",
            "node": n.name,
            "storage": s.name,
            "plugintype": s.type,
            "content": ",".join(s.content),
            "shared": int(s.shared),
            "status": "available" if n.online else "unknown",
        }
        if n.online:
            out.update({"disk": used, "maxdisk": total})
        return out

    def resources(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        kind = query.get("type")
        if kind not in (None, "", "vm", "node", "storage", "sdn"):
            raise PveError(
                400,
                "Parameter verification failed.",
                errors={
                    "type": f"value '{kind}' does not have a value in the enumeration "
                    "'vm, storage, node, sdn'"
                },
            )
        out: list[dict[str, Any]] = []
        c = self.cluster
        if kind in (None, "", "vm"):
            out.extend(self._vm_resource(g) for g in sorted(c.guests.values(), key=lambda g: g.vmid))
        if kind in (None, "", "node"):
            out.extend(self._node_resource(n) for n in c.nodes)
        if kind in (None, "", "storage"):
            out.extend(self._storage_resource(s, n) for n in c.nodes for s in c.storages)
        if kind in (None, ""):
            out.extend({"id": f"/pool/{p.poolid}", "type": "pool", "pool": p.poolid} for p in c.pools)
        return out

    def backup_jobs(self) -> list[dict[str, Any]]:
        return [self._job(j) for j in self.cluster.backup_jobs]

    def backup_job(self, job_id: str) -> dict[str, Any]:
        for j in self.cluster.backup_jobs:
            if j.id == job_id:
                return self._job(j)
        raise PveError(500, f"Job '{job_id}' does not exist")

    def _job(self, j: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": j.id,
            "type": "vzdump",
            "schedule": j.schedule,
            "storage": j.storage,
            "mode": j.mode,
            "compress": j.compress,
            "enabled": int(j.enabled),
            "next-run": j.next_run,
            "notes-template": "{{guestname}}",
            "mailnotification": "always",
            "notification-mode": "auto",
        }
        if j.all:
            out["all"] = 1
            if j.exclude:
                out["exclude"] = ",".join(map(str, j.exclude))
        else:
            out["vmid"] = ",".join(map(str, j.vmids))
        if j.comment:
            out["comment"] = j.comment
        # PVE 9 sends the object the schema documents; older nodes the property string
        out["prune-backups"] = (
            f"keep-last={j.keep_last}"
            if self.cluster.legacy_lxc_interfaces
            else {"keep-last": str(j.keep_last)}
        )
        return out

    def replication(self) -> list[dict[str, Any]]:
        out = []
        for r in self.cluster.replications:
            entry: dict[str, Any] = {
                "id": r.id,
                "type": "local",
                "guest": r.guest,
                "jobnum": r.jobnum,
                "target": r.target,
                "schedule": r.schedule,
                "source": r.source,
            }
            if r.rate is not None:
                entry["rate"] = r.rate
            out.append(entry)
        return out

    def ha_resources(self) -> list[dict[str, Any]]:
        out = []
        for g in sorted(self.cluster.guests.values(), key=lambda g: g.vmid):
            if g.hastate:
                sid = f"{'vm' if g.kind == 'qemu' else 'ct'}:{g.vmid}"
                out.append(
                    {
                        "sid": sid,
                        "type": sid.split(":")[0],
                        "state": g.hastate,
                        "max_restart": 1,
                        "max_relocate": 1,
                        "failback": 1,
                        "digest": hashlib.sha1(sid.encode(), usedforsecurity=False).hexdigest(),
                    }
                )
        return out

    def pools(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        poolid = query.get("poolid")
        if poolid:
            return [self.pool(poolid) | {"poolid": poolid}]
        return [{"poolid": p.poolid, "comment": p.comment} for p in self.cluster.pools]

    def pool(self, poolid: str) -> dict[str, Any]:
        for p in self.cluster.pools:
            if p.poolid == poolid:
                members = [
                    self._vm_resource(g)
                    for g in sorted(self.cluster.guests.values(), key=lambda g: g.vmid)
                    if g.pool == poolid
                ]
                return {"comment": p.comment, "members": members}
        raise PveError(500, f"pool '{poolid}' does not exist")

    def storage_config(self) -> list[dict[str, Any]]:
        out = []
        for s in self.cluster.storages:
            entry: dict[str, Any] = {
                "storage": s.name,
                "type": s.type,
                "content": ",".join(s.content),
                **s.config,
                "digest": hashlib.sha1(s.name.encode(), usedforsecurity=False).hexdigest(),
            }
            if "backup" in s.content:
                entry["prune-backups"] = "keep-all=1"
            out.append(entry)
        return out

    def permissions(self, user: str) -> dict[str, Any]:
        privs = dict.fromkeys(ALL_PRIVILEGES, 1)
        return {"/": privs, "/vms": privs, "/nodes": privs, "/storage": privs, f"/access/users/{user}": privs}

    # ------------------------------------------------------------------------------------- nodes

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for n in self.cluster.nodes:
            entry: dict[str, Any] = {
                "node": n.name,
                "status": "online" if n.online else "offline",
                "id": f"node/{n.name}",
                "type": "node",
                "ssl_fingerprint": n.ssl_fingerprint,
            }
            if n.online:
                entry.update(
                    {
                        "cpu": n.cpu_usage,
                        "maxcpu": n.cpus,
                        "mem": n.mem_used,
                        "maxmem": n.mem_total,
                        "disk": n.rootfs_used,
                        "maxdisk": n.rootfs_total,
                        "uptime": n.uptime_s + self.elapsed,
                        "level": n.level,
                    }
                )
            out.append(entry)
        return out

    def node_status(self, name: str) -> dict[str, Any]:
        n = self.node(name)
        c = self.cluster
        boot: dict[str, Any] = {"mode": n.boot_mode}
        if n.boot_mode == "efi":
            boot["secureboot"] = int(n.secureboot)
        return {
            "cpu": n.cpu_usage,
            "wait": 0.0012,
            "idle": 0,
            "loadavg": list(n.loadavg),
            "uptime": n.uptime_s + self.elapsed,
            "pveversion": f"pve-manager/{c.pve_version}/{c.repoid}",
            "kversion": f"Linux {n.kernel} {n.kernel_version}",
            "current-kernel": {
                "sysname": "Linux",
                "release": n.kernel,
                "version": n.kernel_version,
                "machine": "x86_64",
            },
            "boot-info": boot,
            "cpuinfo": {
                "model": n.cpu_model,
                "cores": n.cores,
                "cpus": n.cpus,
                "sockets": n.sockets,
                "mhz": n.mhz,
                "hvm": "1",
                "user_hz": 100,
                "flags": n.flags,
            },
            "memory": {
                "total": n.mem_total,
                "used": n.mem_used,
                "free": n.mem_total - n.mem_used,
                "available": n.mem_total - n.mem_used,
            },
            "swap": {"total": n.swap_total, "used": 0, "free": n.swap_total},
            "rootfs": {
                "total": n.rootfs_total,
                "used": n.rootfs_used,
                "free": n.rootfs_total - n.rootfs_used,
                "avail": n.rootfs_total - n.rootfs_used,
            },
            "ksm": {"shared": 0},
        }

    def node_version(self, name: str) -> dict[str, Any]:
        self.node(name)
        return self.version()

    def node_network(self, name: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        n = self.node(name)
        kind = query.get("type")
        if kind and kind not in NETWORK_TYPES:
            raise PveError(
                400,
                "Parameter verification failed.",
                errors={
                    "type": f"value '{kind}' does not have a value in the enumeration "
                    f"'{', '.join(NETWORK_TYPES)}'"
                },
            )
        c = self.cluster.index
        host = n.ip.rsplit(".", 1)[1]
        ifaces: list[dict[str, Any]] = []
        for prio, port in enumerate(n.nics, start=3):
            ifaces.append(
                {
                    "iface": port,
                    "type": "eth",
                    "method": "manual",
                    "method6": "manual",
                    "families": ["inet"],
                    "active": 1,
                    "exists": 1,
                    "priority": prio,
                }
            )
        ifaces.append(
            {
                "iface": "bond0",
                "type": "bond",
                "method": "manual",
                "method6": "manual",
                "slaves": " ".join(n.nics),
                "bond_mode": "802.3ad",
                "bond_xmit_hash_policy": "layer3+4",
                "bond-miimon": "100",
                "families": ["inet"],
                "active": 1,
                "autostart": 1,
                "priority": 5,
            }
        )
        ifaces.append(
            {
                "iface": "vmbr0",
                "type": "bridge",
                "method": "static",
                "method6": "manual",
                "address": n.ip,
                "netmask": "255.255.255.0",
                "cidr": f"{n.ip}/24",
                "gateway": f"10.{c}.0.1",
                "bridge_ports": "bond0",
                "bridge_stp": "off",
                "bridge_fd": "0",
                "bridge_vlan_aware": 1,
                "bridge_vids": "2-4094",
                "families": ["inet"],
                "active": 1,
                "autostart": 1,
                "priority": 6,
            }
        )
        vaddr = f"10.{c}.{STORAGE_NET_VLAN}.{host}"
        ifaces.append(
            {
                "iface": f"vmbr0.{STORAGE_NET_VLAN}",
                "type": "vlan",
                "method": "static",
                "method6": "manual",
                "address": vaddr,
                "netmask": "255.255.255.0",
                "cidr": f"{vaddr}/24",
                "vlan-id": str(STORAGE_NET_VLAN),
                "vlan-raw-device": "vmbr0",
                "mtu": "9000",
                "families": ["inet"],
                "active": 1,
                "autostart": 1,
                "priority": 7,
                "comments": "storage network\n",
            }
        )
        if kind in ("any_bridge", "any_local_bridge"):
            return [i for i in ifaces if i["type"] in ("bridge", "OVSBridge")]
        if kind and kind != "include_sdn":
            return [i for i in ifaces if i["type"] == kind]
        return ifaces

    # ------------------------------------------------------------------------------------ guests

    def qemu_list(self, node: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        self.node(node)
        full = _bool_param(query, "full")
        guests = sorted(self.cluster.guests_on(node, "qemu"), key=lambda g: g.vmid)
        return [rg.qemu_list_entry(g, self.elapsed, full=full) for g in guests]

    def lxc_list(self, node: str) -> list[dict[str, Any]]:
        self.node(node)
        guests = sorted(self.cluster.guests_on(node, "lxc"), key=lambda g: g.vmid)
        return [rg.lxc_list_entry(g, self.elapsed) for g in guests]

    def guest_status(self, node: str, kind: str, vmid: int) -> dict[str, Any]:
        g = self.guest(node, kind, vmid)
        return rg.qemu_status(g, self.elapsed) if kind == "qemu" else rg.lxc_status(g, self.elapsed)

    def guest_config(self, node: str, kind: str, vmid: int, query: Mapping[str, str]) -> dict[str, Any]:
        g = self.guest(node, kind, vmid)
        _bool_param(query, "current")
        snapname = query.get("snapshot")
        snap = None
        if snapname:
            snap = next((s for s in g.snapshots if s.name == snapname), None)
            if snap is None:
                raise PveError(500, f"snapshot '{snapname}' does not exist")
        return rg.qemu_config(g, snapshot=snap) if kind == "qemu" else rg.lxc_config(g, snapshot=snap)

    def pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        return rg.pending(self.guest_config(node, "qemu", vmid, {}))

    def agent(self, node: str, vmid: int, command: str) -> dict[str, Any]:
        g = self.guest(node, "qemu", vmid)
        return {
            "network-get-interfaces": rg.agent_interfaces,
            "get-osinfo": rg.agent_osinfo,
            "get-host-name": rg.agent_hostname,
            "info": rg.agent_info,
            "ping": rg.agent_ping,
        }[command](g)

    def lxc_interfaces(self, node: str, vmid: int) -> list[dict[str, Any]] | None:
        return rg.lxc_interfaces(self.guest(node, "lxc", vmid), self.cluster)

    def snapshots(self, node: str, kind: str, vmid: int) -> list[dict[str, Any]]:
        conf = self.guest_config(node, kind, vmid, {})
        return rg.snapshot_list(self.guest(node, kind, vmid), conf["digest"])

    def snapshot_config(self, node: str, kind: str, vmid: int, snapname: str) -> dict[str, Any]:
        return self.guest_config(node, kind, vmid, {"snapshot": snapname})

    # ----------------------------------------------------------------------------------- storage

    def _storage(self, node: str, name: str) -> SimStorage:
        self.node(node)
        s = self.cluster.storage(name)
        if s is None:
            raise PveError(500, f"storage '{name}' does not exist")
        return s

    def node_storage(self, node: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        self.node(node)
        content = query.get("content")
        only = query.get("storage")
        _bool_param(query, "enabled")
        out = []
        for s in self.cluster.storages:
            if content and not set(content.split(",")) & set(s.content):
                continue
            if only and s.name != only:
                continue
            total, used = self._storage_usage(s, node)
            out.append(
                {
                    "storage": s.name,
                    "type": s.type,
                    "content": ",".join(s.content),
                    "active": 1,
                    "enabled": 1,
                    "shared": int(s.shared),
                    "total": total,
                    "used": used,
                    "avail": total - used,
                    "used_fraction": round(used / total, 6) if total else 0,
                }
            )
        return out

    def storage_status(self, node: str, name: str) -> dict[str, Any]:
        s = self._storage(node, name)
        total, used = self._storage_usage(s, node)
        return {
            "type": s.type,
            "content": ",".join(s.content),
            "active": 1,
            "enabled": 1,
            "shared": int(s.shared),
            "total": total,
            "used": used,
            "avail": total - used,
        }

    def storage_content(self, node: str, name: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        s = self._storage(node, name)
        content = query.get("content")
        vmid = _int_param(query, "vmid")
        out: list[dict[str, Any]] = []
        if "images" in s.content or "rootdir" in s.content:
            for g in sorted(self.cluster.guests.values(), key=lambda g: g.vmid):
                if not s.shared and g.node != node:
                    continue
                for d in g.disks:
                    if d.storage != s.name or (d.media == "cdrom" and "cloudinit" not in d.volume):
                        continue
                    ctype = "images" if g.kind == "qemu" else "rootdir"
                    out.append(
                        {
                            "volid": d.volume,
                            "content": ctype,
                            "format": "raw",
                            "vmid": g.vmid,
                            "size": d.size_bytes or 4 * 1024 * 1024,
                            "ctime": g.ctime,
                        }
                    )
        if "iso" in s.content and s.name == "local":
            for iso, size in (
                ("debian-13.1.0-amd64-netinst.iso", 754 * 2**20),
                ("virtio-win-0.1.271.iso", 709474 * 1024),
            ):
                out.append(
                    {
                        "volid": f"local:iso/{iso}",
                        "content": "iso",
                        "format": "iso",
                        "size": size,
                        "ctime": self.world.epoch - 40 * 86400,
                    }
                )
        if "vztmpl" in s.content:
            for tmpl in ("debian-13-standard_13.1-2_amd64", "ubuntu-24.04-standard_24.04-2_amd64"):
                out.append(
                    {
                        "volid": f"{s.name}:vztmpl/{tmpl}.tar.zst",
                        "content": "vztmpl",
                        "format": "tzst",
                        "size": 130 * 2**20,
                        "ctime": self.world.epoch - 60 * 86400,
                    }
                )
        for b in self.cluster.backups:
            if b.storage != s.name or (not s.shared and b.node != node):
                continue
            out.append(self._backup_volume(b, s))
        if content:
            out = [v for v in out if v["content"] in content.split(",")]
        if vmid is not None:
            out = [v for v in out if v.get("vmid") == vmid]
        return out

    def _backup_volume(self, b: SimBackup, s: SimStorage) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "volid": b.volid,
            "content": "backup",
            "subtype": b.subtype,
            "format": b.format,
            "size": b.size,
            "ctime": b.ctime,
            "vmid": b.vmid,
            "notes": b.notes,
            "protected": int(b.protected),
        }
        if s.type == "pbs":
            entry["verification"] = {
                "state": "ok",
                "upid": self._upid(b.node, "verificationjob", "", b.ctime),
            }
        return entry

    # ------------------------------------------------------------------------------------- tasks

    @staticmethod
    def _upid(node: str, kind: str, ident: str, start: int) -> str:
        pid = int(_frac(node, kind, ident, start) * 4_000_000)
        pstart = int(_frac(start, node) * 90_000_000)
        return f"UPID:{node}:{pid:08X}:{pstart:08X}:{start:08X}:{kind}:{ident}:root@pam:"

    def _tasks(self, node: str | None) -> list[dict[str, Any]]:
        tasks = []
        for b in self.cluster.backups:
            if node is None or b.node == node:
                start = b.ctime - 120
                tasks.append(self._task(b.node, "vzdump", str(b.vmid), start, b.ctime + 5))
        for g in self.cluster.guests.values():
            if g.running and (node is None or g.node == node):
                start = self.world.epoch - g.uptime_s - 3
                tasks.append(
                    self._task(
                        g.node, "qmstart" if g.kind == "qemu" else "vzstart", str(g.vmid), start, start + 2
                    )
                )
        tasks.sort(key=lambda t: (-t["starttime"], t["upid"]))
        return tasks

    def _task(self, node: str, kind: str, ident: str, start: int, end: int) -> dict[str, Any]:
        upid = self._upid(node, kind, ident, start)
        parts = upid.split(":")
        return {
            "upid": upid,
            "node": node,
            "pid": int(parts[2], 16),
            "pstart": int(parts[3], 16),
            "starttime": start,
            "endtime": end,
            "type": kind,
            "id": ident,
            "user": "root@pam",
            "status": "OK",
        }

    def node_tasks(self, node: str, query: Mapping[str, str]) -> WithTotal:
        self.node(node)
        tasks = self._tasks(node)
        typefilter = query.get("typefilter")
        vmid = _int_param(query, "vmid")
        since = _int_param(query, "since")
        until = _int_param(query, "until")
        if typefilter:
            tasks = [t for t in tasks if t["type"] == typefilter]
        if vmid is not None:
            tasks = [t for t in tasks if t["id"] == str(vmid)]
        if since is not None:
            tasks = [t for t in tasks if t["starttime"] >= since]
        if until is not None:
            tasks = [t for t in tasks if t["starttime"] <= until]
        if _bool_param(query, "errors"):
            tasks = [t for t in tasks if t["status"] != "OK"]
        start = _int_param(query, "start", 0) or 0
        limit = _int_param(query, "limit", 50) or 50
        return WithTotal(tasks[start : start + limit], len(tasks))

    def cluster_tasks(self) -> list[dict[str, Any]]:
        return self._tasks(None)[:50]

    def _find_task(self, node: str, upid: str) -> dict[str, Any]:
        self.node(node)
        for t in self._tasks(node):
            if t["upid"] == upid:
                return t
        raise PveError(500, "no such task")

    def task_status(self, node: str, upid: str) -> dict[str, Any]:
        t = self._find_task(node, upid)
        out = {k: v for k, v in t.items() if k not in ("endtime", "status")}
        return out | {"status": "stopped", "exitstatus": "OK"}

    def task_log(self, node: str, upid: str) -> WithTotal:
        t = self._find_task(node, upid)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t["starttime"]))
        lines = [f"INFO: starting task {t['type']} {t['id']} at {stamp}"]
        if t["type"] == "vzdump":
            lines += [
                f"INFO: Starting Backup of VM {t['id']} (qemu)",
                "INFO: status = running",
                "INFO: backup mode: snapshot",
                f"INFO: Finished Backup of VM {t['id']} (00:02:00)",
                "INFO: Backup job finished successfully",
            ]
        lines.append("TASK OK")
        return WithTotal([{"n": i + 1, "t": line} for i, line in enumerate(lines)], len(lines))
