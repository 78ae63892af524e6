"""Typed Proxmox inventory: what discovery returns and what the sync mapping consumes.

Values only (frozen attrs, tuples). Parsing of raw API payloads lives next to them as named constructors
(``from_api``) in :mod:`proxbox.proxmox.parse`; nothing here does I/O.
"""

from __future__ import annotations

from typing import Literal

import attrs

GuestKind = Literal["qemu", "lxc"]
IpSource = Literal["agent", "lxc-config", "lxc-interfaces", "cloud-init"]


@attrs.frozen(kw_only=True)
class Disk:
    name: str  # config key: scsi0, virtio1, sata0, ide0, efidisk0, tpmstate0, rootfs, mp0
    bus: str  # scsi, virtio, sata, ide, efidisk, tpmstate, rootfs, mp
    index: int
    storage: str | None  # "local-lvm"; None for an absolute path / bind mount
    volume: str  # the whole first token: "local-lvm:vm-100-disk-0"
    size_bytes: int | None  # None when PVE gives no size (bind mounts, some pass-through)
    mountpoint: str | None = None  # LXC mp=/srv/data


@attrs.frozen(kw_only=True)
class Nic:
    name: str  # net0
    index: int
    model: str  # virtio, e1000, ... ; "veth" for LXC
    mac: str | None  # upper-case, colon-separated: BC:24:11:5E:7A:01
    bridge: str | None = None
    vlan: int | None = None  # the access tag
    trunks: tuple[int, ...] = ()
    link_down: bool = False
    mtu: int | None = None
    guest_name: str | None = None  # LXC name=eth0 / agent interface name when matched


@attrs.frozen(kw_only=True)
class IpAddress:
    address: str  # interface form with prefix: "10.30.0.21/24", "fd00::5/64"
    family: Literal[4, 6]
    nic: str | None  # the Nic.name it belongs to ("net0"); None when it cannot be attributed
    source: IpSource
    loopback: bool = False
    link_local: bool = False

    @property
    def usable(self) -> bool:
        """Loopback and link-local addresses are never written to NetBox."""
        return not (self.loopback or self.link_local)


@attrs.frozen(kw_only=True)
class Guest:
    cluster: str  # the Cluster.name it belongs to
    vmid: int
    kind: GuestKind
    name: str
    node: str
    status: str  # running, stopped, paused, unknown
    template: bool = False
    tags: tuple[str, ...] = ()
    vcpus: float | None = None
    memory_mb: int | None = None
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    ips: tuple[IpAddress, ...] = ()
    onboot: bool | None = None
    ostype: str | None = None
    description: str = ""
    agent_enabled: bool = False
    # False when the config could not be read (the guest is kept, its details are absent)
    config_complete: bool = True
    # False when the runtime address source (guest agent, LXC /interfaces) failed: ips may be missing, so the
    # sync must not remove addresses it no longer sees for this guest
    ips_complete: bool = True

    @property
    def key(self) -> tuple[str, int]:
        """Identity: (cluster, vmid). Never the name."""
        return (self.cluster, self.vmid)

    @property
    def disk_bytes(self) -> int:
        return sum(d.size_bytes or 0 for d in self.disks)


@attrs.frozen(kw_only=True)
class NodeInterface:
    name: str  # vmbr0, bond0, eno1
    type: str  # bridge, bond, eth, vlan, ...
    cidr: str | None = None
    cidr6: str | None = None
    active: bool = True
    vlan_id: int | None = None


@attrs.frozen(kw_only=True)
class Node:
    cluster: str
    name: str
    online: bool
    ip: str | None = None
    cpu_model: str | None = None
    cpus: int | None = None
    memory_bytes: int | None = None
    pve_version: str | None = None
    serial: str | None = None
    interfaces: tuple[NodeInterface, ...] = ()


@attrs.frozen(kw_only=True)
class Cluster:
    name: str  # the PVE cluster name; for a standalone node, the node's name
    endpoint: str  # the ProxmoxSettings.label it was read from
    standalone: bool = False
    quorate: bool = True
    version: str | None = None  # PVE version string


@attrs.frozen(kw_only=True)
class DiscoveryIssue:
    """Something discovery could not read. The run reports it as an ``error`` frame and goes on."""

    scope: str  # "cluster", "node", "guest"
    cluster: str
    node: str | None
    vmid: int | None
    code: str  # ProxboxError.code
    detail: str
    retryable: bool


@attrs.frozen(kw_only=True)
class ClusterInventory:
    cluster: Cluster
    nodes: tuple[Node, ...]
    guests: tuple[Guest, ...]
    # nodes whose guest list was fully read; guests on other nodes must never be orphaned or deleted
    complete_nodes: frozenset[str]
    issues: tuple[DiscoveryIssue, ...] = ()

    @property
    def complete(self) -> bool:
        """Every node of the cluster was fully discovered."""
        return all(n.name in self.complete_nodes for n in self.nodes)


@attrs.frozen(kw_only=True)
class Inventory:
    clusters: tuple[ClusterInventory, ...]
    # endpoints that could not be read at all (no cluster could even be named)
    failed_endpoints: tuple[DiscoveryIssue, ...] = ()
