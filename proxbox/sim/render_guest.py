"""Guest payloads in PVE's exact shapes: lists, status, config (property strings), agent, LXC interfaces.

Pure functions of a :class:`~proxbox.sim.model.SimGuest` and the clock; errors are raised as
:class:`PveError` with PVE's own messages, in PVE's order.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from proxbox.sim.generate import LXC_OS, OS_PROFILES
from proxbox.sim.model import MiB, SimCluster, SimGuest, SimNic, SimSnapshot, link_local


class PveError(Exception):
    """An API error as PVE frames it: status, message (reason = first line), ``errors`` on 400.

    ``empty_body``: 401 on normal calls and 595/596 carry no body at all.
    """

    def __init__(
        self, status: int, message: str, *, errors: dict[str, str] | None = None, empty_body: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.empty_body = empty_body


def config_missing(node: str, kind: str, vmid: int) -> PveError:
    folder = "qemu-server" if kind == "qemu" else "lxc"
    return PveError(500, f"Configuration file 'nodes/{node}/{folder}/{vmid}.conf' does not exist")


def _uptime(g: SimGuest, elapsed: int) -> int:
    return g.uptime_s + elapsed if g.running else 0


def _counters(g: SimGuest, elapsed: int) -> dict[str, Any]:
    grow = elapsed * 1000 if g.running else 0
    return {
        "netin": g.net_in + grow,
        "netout": g.net_out + grow,
        "diskread": g.disk_read + grow,
        "diskwrite": g.disk_write + grow,
    }


def _flags(g: SimGuest, out: dict[str, Any]) -> dict[str, Any]:
    if g.tags:
        out["tags"] = ";".join(g.tags)
    if g.template:
        out["template"] = 1
    if g.lock:
        out["lock"] = g.lock
    return out


def ha_status(g: SimGuest) -> dict[str, Any]:
    if not g.hastate:
        return {"managed": 0}
    return {"managed": 1, "state": g.hastate}


# ---------------------------------------------------------------------------------------------- qemu


def qemu_list_entry(g: SimGuest, elapsed: int, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vmid": g.vmid,
        "name": g.name,
        "status": g.status,
        "cpus": g.vcpus,
        "cpu": g.cpu_usage if g.running else 0,
        "mem": g.mem_used if g.running else 0,
        "maxmem": g.memory_mb * MiB,
        "disk": 0,
        "maxdisk": g.maxdisk,
        "uptime": _uptime(g, elapsed),
        **_counters(g, elapsed),
    }
    if g.running:
        out["pid"] = g.pid
    if full:
        out["qmpstatus"] = g.status
        if g.running:
            out["running-machine"] = "pc-q35-9.2+pve1" if g.machine else "pc-i440fx-9.2+pve1"
            out["running-qemu"] = "9.2.0"
    return _flags(g, out)


def qemu_status(g: SimGuest, elapsed: int) -> dict[str, Any]:
    out = qemu_list_entry(g, elapsed, full=True)
    out["ha"] = ha_status(g)
    if agent_configured(g):
        out["agent"] = 1
    if g.running:
        if g.balloon_mb:
            out["balloon"] = g.balloon_mb * MiB
        out["proxmox-support"] = {
            "backup-fleecing": True,
            "pbs-dirty-bitmap": True,
            "query-bitmap-info": True,
        }
    out["clipboard"] = None
    return out


def net_string(nic: SimNic) -> str:
    if nic.model == "veth":
        parts = [f"name={nic.ifname}", f"bridge={nic.bridge}"]
        if nic.firewall:
            parts.append("firewall=1")
        if nic.gw4 and nic.mode4 == "static":
            parts.append(f"gw={nic.gw4}")
        if nic.gw6 and nic.mode6 == "static":
            parts.append(f"gw6={nic.gw6}")
        parts.append(f"hwaddr={nic.mac}")
        if nic.mode4 == "static" and nic.ip4:
            parts.append(f"ip={nic.ip4}")
        elif nic.mode4 == "dhcp":
            parts.append("ip=dhcp")
        if nic.mode6 == "static" and nic.ip6:
            parts.append(f"ip6={nic.ip6}")
        elif nic.mode6 in ("auto", "dhcp"):
            parts.append(f"ip6={nic.mode6}")
        tail = _net_tail(nic)
        return ",".join([*parts, *tail, "type=veth"])
    return ",".join(
        [
            f"{nic.model}={nic.mac}",
            f"bridge={nic.bridge}",
            *(["firewall=1"] if nic.firewall else []),
            *_net_tail(nic),
        ]
    )


def _net_tail(nic: SimNic) -> list[str]:
    out = []
    if nic.link_down:
        out.append("link_down=1")
    if nic.mtu:
        out.append(f"mtu={nic.mtu}")
    if nic.queues:
        out.append(f"queues={nic.queues}")
    if nic.vlan is not None:
        out.append(f"tag={nic.vlan}")
    if nic.trunks:
        out.append("trunks=" + ";".join(str(t) for t in nic.trunks))
    return out


def ipconfig_string(nic: SimNic) -> str | None:
    parts = []
    if nic.mode4 == "static" and nic.ip4:
        parts.append(f"ip={nic.ip4}")
        if nic.gw4:
            parts.append(f"gw={nic.gw4}")
    elif nic.mode4 == "dhcp" and nic.ip4:
        parts.append("ip=dhcp")
    if nic.mode6 == "static" and nic.ip6:
        parts.append(f"ip6={nic.ip6}")
        if nic.gw6:
            parts.append(f"gw6={nic.gw6}")
    elif nic.mode6 in ("auto", "dhcp"):
        parts.append(f"ip6={nic.mode6}")
    return ",".join(parts) or None


def _digest(conf: dict[str, Any]) -> str:
    text = "\n".join(f"{k}: {v}" for k, v in sorted(conf.items()))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def qemu_config(g: SimGuest, *, snapshot: SimSnapshot | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "name": g.name,
        "ostype": g.ostype,
        "cores": g.cores,
        "sockets": g.sockets,
        "cpu": g.cpu_type,
        "memory": str(g.memory_mb),
        "scsihw": g.scsihw,
        "numa": 0,
        "smbios1": f"uuid={g.uuid}",
        "vmgenid": g.vmgenid,
        "meta": f"creation-qemu=9.2.0,ctime={g.ctime}",
    }
    if g.balloon_mb is not None:
        conf["balloon"] = g.balloon_mb
    if g.bios != "seabios":
        conf["bios"] = g.bios
    if g.machine:
        conf["machine"] = g.machine
    if g.agent_config is not None:
        conf["agent"] = g.agent_config
    if g.onboot:
        conf["onboot"] = 1
    if g.protection:
        conf["protection"] = 1
    if g.description:
        conf["description"] = g.description
    _flags(g, conf)
    boot = [d.key for d in g.disks if d.is_disk and d.bus in ("scsi", "virtio", "sata", "ide")][:1]
    boot += [d.key for d in g.disks if d.media == "cdrom" and d.key == "ide2"]
    boot += [n.key for n in g.nics][:1]
    conf["boot"] = "order=" + ";".join(boot)
    for d in g.disks:
        conf[d.key] = d.render()
    for nic in g.nics:
        conf[nic.key] = net_string(nic)
        if g.cloudinit:
            ipc = ipconfig_string(nic)
            if ipc:
                conf[f"ipconfig{nic.index}"] = ipc
    if g.cloudinit:
        conf["ciuser"] = "debian" if g.os.startswith("debian") else "cloud"
    if snapshot is not None:
        conf["snaptime"] = snapshot.snaptime
        if snapshot.parent:
            conf["parent"] = snapshot.parent
        if snapshot.vmstate:
            conf["vmstate"] = f"local-lvm:vm-{g.vmid}-state-{snapshot.name}"
    elif g.snapshots:
        conf["parent"] = g.snapshots[-1].name
    conf["digest"] = _digest(conf)
    return dict(sorted(conf.items()))


def pending(conf: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in conf.items() if k != "digest"]


def agent_configured(g: SimGuest) -> bool:
    if g.kind != "qemu" or g.agent_config is None:
        return False
    first = g.agent_config.split(",")[0]
    if first.startswith("enabled="):
        first = first.removeprefix("enabled=")
    return first not in ("0", "")


def check_agent(g: SimGuest) -> None:
    """qemu-server's agent check, in its order."""
    if not agent_configured(g):
        raise PveError(500, "No QEMU guest agent configured")
    if not g.running:
        raise PveError(500, f"VM {g.vmid} is not running")
    if g.agent != "answering":
        raise PveError(500, "QEMU guest agent is not running")


def _stats(seed: str, running: bool) -> dict[str, int]:
    h = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    rx = (h % 10**11) if running else 0
    tx = (h // 7 % 10**11) if running else 0
    return {
        "rx-bytes": rx,
        "rx-dropped": h % 97,
        "rx-errs": 0,
        "rx-packets": rx // 900,
        "tx-bytes": tx,
        "tx-dropped": 0,
        "tx-errs": 0,
        "tx-packets": tx // 900,
    }


def _agent_ip(cidr: str) -> dict[str, Any]:
    iface = ipaddress.ip_interface(cidr)
    kind = "ipv4" if iface.version == 4 else "ipv6"
    return {"ip-address-type": kind, "ip-address": str(iface.ip), "prefix": iface.network.prefixlen}


def agent_interfaces(g: SimGuest) -> dict[str, Any]:
    check_agent(g)
    windows = g.ostype.startswith("win")
    loop = {
        "ip-addresses": [_agent_ip("127.0.0.1/8"), _agent_ip("::1/128")],
        "statistics": _stats(f"{g.vmid}:lo", True),
    }
    result: list[dict[str, Any]] = []
    if not windows:
        result.append({"name": "lo", "hardware-address": "00:00:00:00:00:00", **loop})
    for nic in g.nics:
        ips = [_agent_ip(c) for c in (nic.ip4, nic.ip6) if c]
        ips.append(_agent_ip(link_local(nic.mac) + "/64"))
        result.append(
            {
                "name": nic.ifname,
                "hardware-address": nic.mac.lower(),
                "ip-addresses": ips,
                "statistics": _stats(f"{g.vmid}:{nic.index}", True),
            }
        )
    for name in g.noise:
        digest = hashlib.sha256(f"{g.vmid}:{name}".encode()).digest()
        mac = "02:42:" + ":".join(f"{b:02x}" for b in digest[:4])
        ips = [_agent_ip("172.17.0.1/16")] if name == "docker0" else []
        ips.append(_agent_ip(link_local(mac.upper()) + "/64"))
        result.append(
            {
                "name": name,
                "hardware-address": mac,
                "ip-addresses": ips,
                "statistics": _stats(f"{g.vmid}:{name}", True),
            }
        )
    if windows:
        result.append({"name": "Loopback Pseudo-Interface 1", **loop})
    return {"result": result}


def agent_osinfo(g: SimGuest) -> dict[str, Any]:
    check_agent(g)
    info = dict(OS_PROFILES[g.os])
    info.setdefault("kernel-version", "#1 SMP PREEMPT_DYNAMIC")
    info["machine"] = "x86_64"
    return {"result": dict(sorted(info.items()))}


def agent_hostname(g: SimGuest) -> dict[str, Any]:
    check_agent(g)
    return {"result": {"host-name": g.name}}


AGENT_COMMANDS = (
    "guest-ping",
    "guest-info",
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-network-get-interfaces",
    "guest-get-fsinfo",
    "guest-get-time",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-thaw",
)


def agent_info(g: SimGuest) -> dict[str, Any]:
    check_agent(g)
    cmds = [{"name": c, "enabled": True, "success-response": True} for c in AGENT_COMMANDS]
    return {
        "result": {
            "version": "9.2.0" if not g.ostype.startswith("win") else "109.0.0",
            "supported_commands": cmds,
        }
    }


def agent_ping(g: SimGuest) -> dict[str, Any]:
    check_agent(g)
    return {"result": {}}


# ----------------------------------------------------------------------------------------------- lxc


def lxc_list_entry(g: SimGuest, elapsed: int) -> dict[str, Any]:
    root = next((d for d in g.disks if d.key == "rootfs"), None)
    out: dict[str, Any] = {
        "vmid": g.vmid,
        "name": g.name,
        "status": g.status,
        "type": "lxc",
        "cpus": g.cores,
        "cpu": g.cpu_usage if g.running else 0,
        "mem": g.mem_used if g.running else 0,
        "maxmem": g.memory_mb * MiB,
        "swap": 0,
        "maxswap": g.swap_mb * MiB,
        "disk": int((root.size_bytes or 0) * 0.3) if root and g.running else 0,
        "maxdisk": g.maxdisk,
        "uptime": _uptime(g, elapsed),
        **_counters(g, elapsed),
    }
    if g.running:
        out["pid"] = g.pid
    return _flags(g, out)


def lxc_status(g: SimGuest, elapsed: int) -> dict[str, Any]:
    out = lxc_list_entry(g, elapsed)
    out["ha"] = ha_status(g)
    return out


def lxc_config(g: SimGuest, *, snapshot: SimSnapshot | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "arch": "amd64",
        "hostname": g.name,
        "ostype": g.ostype,
        "cores": g.cores,
        "memory": g.memory_mb,
        "swap": g.swap_mb,
    }
    if g.unprivileged:
        conf["unprivileged"] = 1
    if g.features:
        conf["features"] = g.features
    if g.onboot:
        conf["onboot"] = 1
    if g.protection:
        conf["protection"] = 1
    if g.description:
        conf["description"] = g.description
    _flags(g, conf)
    for d in g.disks:
        conf[d.key] = d.render()
    for nic in g.nics:
        conf[nic.key] = net_string(nic)
    if snapshot is not None:
        conf["snaptime"] = snapshot.snaptime
        if snapshot.parent:
            conf["parent"] = snapshot.parent
    elif g.snapshots:
        conf["parent"] = g.snapshots[-1].name
    conf["digest"] = _digest(conf)
    return dict(sorted(conf.items()))


def lxc_interfaces(g: SimGuest, cluster: SimCluster) -> list[dict[str, Any]] | None:
    """``null`` for a stopped container; the PVE 9 shape, or only name/hwaddr/inet/inet6 on older nodes."""
    if not g.running:
        return None
    out = [_lxc_iface("lo", "00:00:00:00:00:00", ["127.0.0.1/8", "::1/128"], cluster.legacy_lxc_interfaces)]
    for nic in g.nics:
        addrs = [a for a in (nic.ip4, nic.ip6) if a] + [link_local(nic.mac) + "/64"]
        out.append(_lxc_iface(nic.ifname, nic.mac.lower(), addrs, cluster.legacy_lxc_interfaces))
    return out


def _lxc_iface(name: str, mac: str, addrs: list[str], legacy: bool) -> dict[str, Any]:
    v4 = [a for a in addrs if ":" not in a]
    v6 = [a for a in addrs if ":" in a]
    entry: dict[str, Any] = {"name": name, "hwaddr": mac}
    if v4:
        entry["inet"] = v4[0]
    if v6:
        entry["inet6"] = v6[0]
    if not legacy:
        entry["hardware-address"] = mac
        entry["ip-addresses"] = [
            {
                "ip-address-type": "inet" if ":" not in a else "inet6",
                "ip-address": a.split("/")[0],
                "prefix": int(a.split("/")[1]),
            }
            for a in addrs
        ]
    return entry


# ------------------------------------------------------------------------------------------ snapshots


def snapshot_list(g: SimGuest, config_digest: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in g.snapshots:
        entry: dict[str, Any] = {"name": s.name, "description": s.description, "snaptime": s.snaptime}
        if s.parent:
            entry["parent"] = s.parent
        if g.kind == "qemu":
            entry["vmstate"] = int(s.vmstate)
        out.append(entry)
    current: dict[str, Any] = {"name": "current", "description": "You are here!", "digest": config_digest}
    if g.snapshots:
        current["parent"] = g.snapshots[-1].name
    if g.kind == "qemu" and g.running:
        current["running"] = 1
    out.append(current)
    return out


def lxc_template_volid(g: SimGuest) -> str:
    return f"local:vztmpl/{LXC_OS.get(g.os, 'debian-13-standard_13.1-2_amd64')}.tar.zst"
