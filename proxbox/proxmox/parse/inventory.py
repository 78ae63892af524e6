"""Guests, nodes and clusters from listing rows, configs and status payloads."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from proxbox.proxmox.models import Cluster, Disk, Guest, GuestKind, IpAddress, Nic, Node, NodeInterface
from proxbox.proxmox.parse.devices import (
    IPCONFIG_KEY,
    dedupe_ips,
    disk_from_api,
    ips_from_agent,
    ips_from_ipconfig,
    ips_from_lxc_interfaces,
    lxc_disk_from_api,
    lxc_nic_from_api,
    nic_from_api,
)
from proxbox.proxmox.parse.values import as_bool, as_float, as_int, as_str, property_dict, split_tags

# ------------------------------------------------------------------------------------------------ guests


def agent_enabled(config: Mapping[str, Any] | None) -> bool:
    """qemu ``agent``: ``1``, ``0``, ``enabled=1,fstrim_cloned_disks=1`` or ``1,type=virtio``."""
    if not isinstance(config, Mapping):
        return False
    return as_bool(property_dict(config.get("agent"), default_key="enabled").get("enabled"))


def _config_items(config: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    return sorted(config.items()) if isinstance(config, Mapping) else []


def _memory_mb(value: Any) -> int | None:
    """qemu ``memory`` is ``"4096"`` or (PVE 8.1+) ``"current=4096"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return as_int(property_dict(value, default_key="current").get("current"))


def _mib(value: Any) -> int | None:
    number = as_int(value)
    return number // (1024 * 1024) if number else None


def qemu_guest_from_api(
    *,
    cluster: str,
    node: str,
    listing: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    agent: Any = None,
    ips_complete: bool = True,
) -> Guest:
    """A QEMU VM from its listing row (``/nodes/{n}/qemu`` or ``/cluster/resources``), its config, and the
    agent's ``network-get-interfaces`` answer (None when not asked or not available).

    ``config=None`` means the config could not be read: the guest is kept with ``config_complete=False``.
    """
    vmid = as_int(listing.get("vmid")) or 0
    cfg = config if isinstance(config, Mapping) else {}
    disks: list[Disk] = []
    nics: list[Nic] = []
    cloud_init: list[IpAddress] = []
    for key, value in _config_items(config):
        if (disk := disk_from_api(key, value)) is not None:
            disks.append(disk)
        elif (nic := nic_from_api(key, value)) is not None:
            nics.append(nic)
        elif IPCONFIG_KEY.match(key):
            cloud_init.extend(ips_from_ipconfig(key, value))
    disks.sort(key=lambda d: (d.bus, d.index))
    nics.sort(key=lambda n: n.index)

    ips, agent_names = ips_from_agent(agent, nics) if agent is not None else ((), {})
    if agent_names:
        nics = [attrs.evolve(n, guest_name=agent_names.get(n.name, n.guest_name)) for n in nics]
    nic_names = {n.name for n in nics}
    if not ips:
        ips = dedupe_ips(ip for ip in cloud_init if ip.nic in nic_names)

    sockets = as_int(cfg.get("sockets")) or 1
    cores = as_int(cfg.get("cores")) or 1
    vcpus: float | None = as_int(cfg.get("vcpus")) or (sockets * cores if cfg else None)
    if vcpus is None:
        vcpus = as_float(listing.get("cpus")) or as_float(listing.get("maxcpu"))
    return Guest(
        cluster=cluster,
        vmid=vmid,
        kind="qemu",
        name=as_str(cfg.get("name")) or as_str(listing.get("name")) or f"VM {vmid}",
        node=node,
        status=_status(listing),
        template=as_bool(cfg.get("template")) or as_bool(listing.get("template")),
        tags=split_tags(cfg.get("tags") if "tags" in cfg else listing.get("tags")),
        vcpus=float(vcpus) if vcpus is not None else None,
        memory_mb=_memory_mb(cfg.get("memory")) if "memory" in cfg else _mib(listing.get("maxmem")),
        disks=tuple(disks),
        nics=tuple(nics),
        ips=ips,
        onboot=as_bool(cfg.get("onboot")) if "onboot" in cfg else (False if config is not None else None),
        ostype=as_str(cfg.get("ostype")),
        description=str(cfg.get("description") or ""),
        agent_enabled=agent_enabled(config),
        config_complete=config is not None,
        ips_complete=ips_complete and config is not None,
    )


def lxc_guest_from_api(
    *,
    cluster: str,
    node: str,
    listing: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    interfaces: Any = None,
    ips_complete: bool = True,
) -> Guest:
    """An LXC container from its listing row, its config and (when running) ``/interfaces``."""
    vmid = as_int(listing.get("vmid")) or 0
    cfg = config if isinstance(config, Mapping) else {}
    disks: list[Disk] = []
    nics: list[Nic] = []
    static: list[IpAddress] = []
    for key, value in _config_items(config):
        if (disk := lxc_disk_from_api(key, value)) is not None:
            disks.append(disk)
        elif (parsed := lxc_nic_from_api(key, value)) is not None:
            nics.append(parsed[0])
            static.extend(parsed[1])
    disks.sort(key=lambda d: (d.bus != "rootfs", d.index))
    nics.sort(key=lambda n: n.index)
    runtime, covered = ips_from_lxc_interfaces(interfaces, nics)
    ips = dedupe_ips([*runtime, *(ip for ip in static if ip.nic not in covered)])

    vcpus = as_float(cfg.get("cores")) or as_float(listing.get("cpus")) or as_float(listing.get("maxcpu"))
    return Guest(
        cluster=cluster,
        vmid=vmid,
        kind="lxc",
        name=as_str(cfg.get("hostname")) or as_str(listing.get("name")) or f"CT{vmid}",
        node=node,
        status=_status(listing),
        template=as_bool(cfg.get("template")) or as_bool(listing.get("template")),
        tags=split_tags(cfg.get("tags") if "tags" in cfg else listing.get("tags")),
        vcpus=vcpus,
        memory_mb=as_int(cfg.get("memory")) if "memory" in cfg else _mib(listing.get("maxmem")),
        disks=tuple(disks),
        nics=tuple(nics),
        ips=ips,
        onboot=as_bool(cfg.get("onboot")) if "onboot" in cfg else (False if config is not None else None),
        ostype=as_str(cfg.get("ostype")),
        description=str(cfg.get("description") or ""),
        agent_enabled=False,
        config_complete=config is not None,
        ips_complete=ips_complete and config is not None,
    )


def guest_from_api(
    kind: GuestKind,
    *,
    cluster: str,
    node: str,
    listing: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    runtime: Any = None,
    ips_complete: bool = True,
) -> Guest:
    """Dispatch on ``kind``; ``runtime`` is the agent answer (qemu) or ``/interfaces`` (lxc)."""
    if kind == "qemu":
        return qemu_guest_from_api(
            cluster=cluster,
            node=node,
            listing=listing,
            config=config,
            agent=runtime,
            ips_complete=ips_complete,
        )
    return lxc_guest_from_api(
        cluster=cluster,
        node=node,
        listing=listing,
        config=config,
        interfaces=runtime,
        ips_complete=ips_complete,
    )


def _status(listing: Mapping[str, Any]) -> str:
    status = as_str(listing.get("status")) or "unknown"
    if status == "running" and as_str(listing.get("qmpstatus")) in ("paused", "suspended", "prelaunch"):
        return "paused"
    return status


def guest_kind(row: Mapping[str, Any], default: GuestKind = "qemu") -> GuestKind:
    """``type`` of a listing/resources row (``qemu``/``lxc``)."""
    kind = as_str(row.get("type"))
    return kind if kind in ("qemu", "lxc") else default  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- nodes, cluster


def node_interface_from_api(row: Mapping[str, Any]) -> NodeInterface | None:
    """One ``/nodes/{n}/network`` row. PVE sends ``active: 1`` only for interfaces that are up."""
    name = as_str(row.get("iface"))
    if name is None:
        return None
    cidr = as_str(row.get("cidr"))
    address = as_str(row.get("address"))
    if cidr is None and address:
        netmask = as_str(row.get("netmask"))
        try:
            cidr = str(ipaddress.ip_interface(f"{address}/{netmask}" if netmask else address))
        except ValueError:
            cidr = None
    cidr6 = as_str(row.get("cidr6"))
    if cidr6 is None and as_str(row.get("address6")):
        cidr6 = f"{row['address6']}/{as_int(row.get('netmask6')) or 128}"
    vlan_id = as_int(row.get("vlan-id"))
    kind = as_str(row.get("type")) or "unknown"
    if vlan_id is None and kind == "vlan" and "." in name:
        vlan_id = as_int(name.rsplit(".", 1)[1])
    return NodeInterface(
        name=name,
        type=kind,
        cidr=cidr,
        cidr6=cidr6,
        active=as_bool(row.get("active")),
        vlan_id=vlan_id,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def pve_version_of(text: Any) -> str | None:
    """``"pve-manager/9.1.2/c2a4b9e1"`` → ``"9.1.2"``; a bare version is returned as is."""
    value = as_str(text)
    if value is None:
        return None
    parts = value.split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == "pve-manager" else value


def node_from_api(
    *,
    cluster: str,
    name: str,
    online: bool,
    membership: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    network: Any = None,
) -> Node:
    """A node from its ``/cluster/status`` row, ``/nodes/{n}/status`` and ``/nodes/{n}/network``."""
    member = _mapping(membership)
    st = _mapping(status)
    cpuinfo = _mapping(st.get("cpuinfo"))
    memory = _mapping(st.get("memory"))
    interfaces = [
        iface
        for row in (network if isinstance(network, list) else ())
        if isinstance(row, Mapping) and (iface := node_interface_from_api(row)) is not None
    ]
    interfaces.sort(key=lambda i: i.name)
    return Node(
        cluster=cluster,
        name=name,
        online=online,
        ip=as_str(member.get("ip")),
        cpu_model=as_str(cpuinfo.get("model")),
        cpus=as_int(cpuinfo.get("cpus")),
        memory_bytes=as_int(memory.get("total")),
        pve_version=pve_version_of(st.get("pveversion")),
        interfaces=tuple(interfaces),
    )


def cluster_from_api(
    *, endpoint: str, status_rows: Any, version: Mapping[str, Any] | None = None
) -> tuple[Cluster, list[Mapping[str, Any]]]:
    """``/cluster/status`` (+ ``/version``) → the Cluster and its node rows.

    A standalone node has no ``type=cluster`` row: the cluster is named after the node, ``standalone=True``.
    Raises ValueError when there is neither a cluster row nor a node row to name it.
    """
    rows = [r for r in status_rows if isinstance(r, Mapping)] if isinstance(status_rows, list) else []
    cluster_row = next((r for r in rows if r.get("type") == "cluster"), None)
    nodes = [r for r in rows if r.get("type") == "node" and as_str(r.get("name"))]
    ver = as_str(version.get("version")) if isinstance(version, Mapping) else None
    if cluster_row is not None and as_str(cluster_row.get("name")):
        cluster = Cluster(
            name=str(as_str(cluster_row.get("name"))),
            endpoint=endpoint,
            standalone=False,
            quorate=as_bool(cluster_row.get("quorate"), default=True),
            version=ver,
        )
    elif nodes:
        local = next((r for r in nodes if as_bool(r.get("local"))), nodes[0])
        name = str(as_str(local.get("name")))
        cluster = Cluster(name=name, endpoint=endpoint, standalone=True, version=ver)
    else:
        raise ValueError("cluster/status has neither a cluster row nor a node row")
    return cluster, nodes
