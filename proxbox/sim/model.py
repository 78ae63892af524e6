"""The simulated truth: mutable attrs records for clusters, nodes, storages and guests.

Nothing here knows about HTTP. :mod:`proxbox.sim.generate` builds a :class:`World`, :mod:`proxbox.sim.drift`
mutates it, :mod:`proxbox.sim.render` turns it into exact PVE payloads and :mod:`proxbox.sim.oracle` into the
test oracle. Every mutation goes through :meth:`SimCluster.touch` so rendered answers are cached per revision.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Literal

import attrs

EPOCH = 1796000000  # the frozen clock: 2026-11-30T00:53:20Z
KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

GuestKind = Literal["qemu", "lxc"]
AgentState = Literal["answering", "silent", "none"]  # silent: enabled in config but the agent is not running
Mode4 = Literal["static", "dhcp", "none"]
Mode6 = Literal["static", "auto", "dhcp", "none"]

HOSTS_PER_BLOCK = 250  # guest addresses .2-.251 of each /24
BLOCKS_PER_NET = 10  # 10 x /24 per network: 2,500 guests per cluster
MAX_GUEST_INDEX = HOSTS_PER_BLOCK * BLOCKS_PER_NET
NETWORK_BASE = {None: 100, 10: 10, 20: 20, 30: 30, 40: 40}  # third octet of each network's first /24
DRIFT_NET_BASE = 200  # 10.{c}.200-209.x: addresses handed out by set_ip drift


# ------------------------------------------------------------------------------------------- helpers


def format_size(n: int) -> str:
    """PVE's size suffix form: 34359738368 -> "32G", 4194304 -> "4M"."""
    for unit, factor in (("T", TiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def parse_size(text: str) -> int:
    factors = {"T": TiB, "G": GiB, "M": MiB, "K": KiB}
    text = text.strip()
    if text and text[-1].upper() in factors:
        return int(float(text[:-1]) * factors[text[-1].upper()])
    return int(text)


def hashed_mac(cluster: str, vmid: int, nic: int, attempt: int = 0) -> str:
    """``BC:24:11`` (Proxmox's OUI) plus three bytes hashed from (cluster, vmid, nic); upper-case."""
    salt = f":{attempt}" if attempt else ""
    digest = hashlib.sha256(f"{cluster}:{vmid}:{nic}{salt}".encode()).digest()
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in digest[:3])


def pool_address(c: int, vlan: int | None, index: int) -> tuple[str, str]:
    """(CIDR, gateway) of guest ``index`` on a network of cluster ``c``: 10.{c}.{vlan+block}.{2+host}/24."""
    if not 0 <= index < MAX_GUEST_INDEX:
        raise ValueError(f"guest index {index} outside the address pool (max {MAX_GUEST_INDEX - 1})")
    third = NETWORK_BASE[vlan] + index // HOSTS_PER_BLOCK
    return f"10.{c}.{third}.{2 + index % HOSTS_PER_BLOCK}/24", f"10.{c}.{third}.1"


def drift_address(c: int, serial: int) -> tuple[str, str]:
    third = DRIFT_NET_BASE + (serial // HOSTS_PER_BLOCK) % BLOCKS_PER_NET
    return f"10.{c}.{third}.{2 + serial % HOSTS_PER_BLOCK}/24", f"10.{c}.{third}.1"


def ula_prefix(c: int, vlan: int | None) -> str:
    return f"fd00:{c:x}:{vlan or 0:x}::"


def ula_address(c: int, vlan: int | None, index: int) -> tuple[str, str]:
    """(CIDR, gateway) in the cluster's ULA /64 for the network, in canonical (compressed) form."""
    prefix = ula_prefix(c, vlan)
    addr = ipaddress.IPv6Interface(f"{prefix}{index + 0x100:x}/64")
    return str(addr), str(ipaddress.IPv6Address(f"{prefix}1"))


def eui64(prefix: str, mac: str) -> str:
    """The SLAAC address of ``mac`` in the /64 ``prefix`` (compressed)."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    net = int(ipaddress.IPv6Address(prefix))
    return str(ipaddress.IPv6Address(net | int.from_bytes(iid, "big")))


def link_local(mac: str) -> str:
    return eui64("fe80::", mac)


# ------------------------------------------------------------------------------------------- records


@attrs.define(kw_only=True)
class SimDisk:
    """One drive/mount key of a guest config: a real disk, a cdrom, an unused volume or an LXC mount."""

    key: str  # scsi0, virtio1, sata0, ide2, efidisk0, tpmstate0, unused0, rootfs, mp0
    volume: str  # "local-lvm:vm-100-disk-0", "none", "/mnt/shared", "local:iso/debian-13.iso"
    size_bytes: int | None = None
    options: dict[str, str] = attrs.Factory(dict)  # iothread=1, ssd=1, backup=0, efitype=4m...
    media: str | None = None  # "cdrom"
    mountpoint: str | None = None  # LXC mp=/srv/data

    @property
    def bus(self) -> str:
        return self.key.rstrip("0123456789")

    @property
    def index(self) -> int:
        digits = self.key[len(self.bus) :]
        return int(digits) if digits else 0

    @property
    def is_disk(self) -> bool:
        """cdroms and ``unusedN`` are not disks."""
        return self.media != "cdrom" and self.bus != "unused"

    @property
    def storage(self) -> str | None:
        if self.volume.startswith("/") or ":" not in self.volume:
            return None
        return self.volume.split(":", 1)[0]

    def render(self) -> str:
        """The property string PVE shows in the config."""
        if self.bus == "unused":
            return self.volume
        opts = dict(self.options)
        if self.media:
            opts["media"] = self.media
        if self.size_bytes is not None:
            opts["size"] = format_size(self.size_bytes)
        head = [self.volume]
        if self.mountpoint is not None:
            head.append(f"mp={self.mountpoint}")
        return ",".join(head + [f"{k}={v}" for k, v in sorted(opts.items())])


@attrs.define(kw_only=True)
class SimNic:
    index: int
    model: str  # virtio, e1000e, vmxnet3, rtl8139; veth for LXC
    mac: str  # upper-case
    ifname: str  # the name inside the guest: eth0, ens18, "Ethernet 2"
    bridge: str = "vmbr0"
    vlan: int | None = None
    trunks: tuple[int, ...] = ()
    firewall: bool = False
    link_down: bool = False
    mtu: int | None = None
    queues: int | None = None
    ip4: str | None = None  # the address the guest really has (CIDR)
    gw4: str | None = None
    ip6: str | None = None
    gw6: str | None = None
    mode4: Mode4 = "none"  # how the config declares it (cloud-init ipconfigN / LXC ip=)
    mode6: Mode6 = "none"

    @property
    def key(self) -> str:
        return f"net{self.index}"


@attrs.define(kw_only=True)
class SimSnapshot:
    name: str
    description: str
    snaptime: int
    parent: str | None = None
    vmstate: bool = False


@attrs.define(kw_only=True)
class SimGuest:
    vmid: int
    kind: GuestKind
    name: str
    node: str
    status: str  # running | stopped
    os: str  # key into generate.OS_PROFILES
    ostype: str  # l26, win11, debian, alpine...
    template: bool = False
    tags: tuple[str, ...] = ()
    cores: int = 1
    sockets: int = 1
    memory_mb: int = 1024
    balloon_mb: int | None = None  # qemu
    swap_mb: int = 512  # lxc
    onboot: bool = False
    protection: bool = False
    description: str = ""
    agent: AgentState = "none"  # qemu only
    agent_config: str | None = None  # the raw config value ("1", "enabled=1,fstrim_cloned_disks=1", "0")
    cloudinit: bool = False
    bios: str = "seabios"
    machine: str | None = None
    cpu_type: str = "x86-64-v2-AES"
    scsihw: str = "virtio-scsi-single"
    unprivileged: bool = True  # lxc
    features: str | None = None  # lxc "nesting=1"
    disks: list[SimDisk] = attrs.Factory(list)
    nics: list[SimNic] = attrs.Factory(list)
    snapshots: list[SimSnapshot] = attrs.Factory(list)
    pool: str | None = None
    hastate: str | None = None
    lock: str | None = None
    noise: tuple[str, ...] = ()  # extra agent interfaces: "docker0", "veth1a2b3c4"
    uptime_s: int = 0
    cpu_usage: float = 0.0
    mem_used: int = 0
    net_in: int = 0
    net_out: int = 0
    disk_read: int = 0
    disk_write: int = 0
    pid: int = 0
    uuid: str = ""
    vmgenid: str = ""
    ctime: int = 0
    index: int = 0  # position in the cluster's address pool

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def vcpus(self) -> int:
        return self.cores * (self.sockets if self.kind == "qemu" else 1)

    @property
    def maxdisk(self) -> int:
        if self.kind == "lxc":
            root = next((d for d in self.disks if d.key == "rootfs"), None)
            return root.size_bytes or 0 if root else 0
        boot = next((d for d in self.disks if d.is_disk and d.bus in ("scsi", "virtio", "sata", "ide")), None)
        return boot.size_bytes or 0 if boot else 0

    def nic(self, index: int) -> SimNic:
        for nic in self.nics:
            if nic.index == index:
                return nic
        raise KeyError(f"net{index}")

    def disk(self, key: str) -> SimDisk:
        for disk in self.disks:
            if disk.key == key:
                return disk
        raise KeyError(key)


@attrs.define(kw_only=True)
class SimNode:
    name: str
    nodeid: int
    ip: str
    online: bool = True
    offline_reason: str = "No route to host"
    cpu_model: str = ""
    sockets: int = 1
    cores: int = 8  # per socket
    threads: int = 2
    mhz: str = "2400.000"
    flags: str = ""
    mem_total: int = 128 * GiB
    mem_used: int = 0
    swap_total: int = 8 * GiB
    rootfs_total: int = 100 * GiB
    rootfs_used: int = 0
    uptime_s: int = 0
    cpu_usage: float = 0.0
    loadavg: tuple[str, str, str] = ("0.00", "0.00", "0.00")
    kernel: str = "6.14.11-4-pve"
    kernel_version: str = ""
    boot_mode: str = "efi"
    secureboot: bool = False
    level: str = ""
    ssl_fingerprint: str = ""
    nics: tuple[str, ...] = ("eno1", "eno2")  # physical ports, bonded into bond0

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores * self.threads


@attrs.define(kw_only=True)
class SimStorage:
    name: str
    type: str  # dir, lvmthin, rbd, nfs, pbs, zfspool
    content: tuple[str, ...]
    shared: bool
    total: int
    used: int
    config: dict[str, str] = attrs.Factory(dict)  # path, vgname, thinpool, pool, server, export, datastore...


@attrs.define(kw_only=True)
class SimBackup:
    volid: str
    storage: str
    vmid: int
    subtype: GuestKind
    node: str  # the node that ran it (its task lives there)
    ctime: int
    size: int
    format: str
    notes: str = ""
    protected: bool = False


@attrs.define(kw_only=True)
class SimBackupJob:
    id: str
    schedule: str
    storage: str
    mode: str = "snapshot"
    compress: str = "zstd"
    enabled: bool = True
    all: bool = False
    vmids: tuple[int, ...] = ()
    exclude: tuple[int, ...] = ()
    pool: str | None = None
    node: str | None = None
    comment: str = ""
    next_run: int = 0
    keep_last: int = 3


@attrs.define(kw_only=True)
class SimReplication:
    guest: int
    jobnum: int
    source: str
    target: str
    schedule: str = "*/15"
    rate: float | None = None

    @property
    def id(self) -> str:
        return f"{self.guest}-{self.jobnum}"


@attrs.define(kw_only=True)
class SimPool:
    poolid: str
    comment: str = ""


@attrs.define(kw_only=True)
class SimCluster:
    """One PVE endpoint: a cluster, or a standalone node (``standalone``: no ``cluster`` row)."""

    name: str
    index: int  # the ``c`` of its address pools (10.{c}.x.x)
    standalone: bool = False
    pve_version: str = "9.1.2"
    repoid: str = "c2a4b9e1"
    config_version: int = 1
    legacy_lxc_interfaces: bool = False  # older nodes: only name/hwaddr/inet/inet6
    nodes: list[SimNode] = attrs.Factory(list)
    guests: dict[int, SimGuest] = attrs.Factory(dict)
    storages: list[SimStorage] = attrs.Factory(list)
    pools: list[SimPool] = attrs.Factory(list)
    backups: list[SimBackup] = attrs.Factory(list)
    backup_jobs: list[SimBackupJob] = attrs.Factory(list)
    replications: list[SimReplication] = attrs.Factory(list)
    revision: int = 0  # bumped by every change; rendered answers are cached per revision
    drift_serial: int = 0  # addresses handed out by set_ip drift

    def touch(self) -> None:
        self.revision += 1

    @property
    def release(self) -> str:
        return ".".join(self.pve_version.split(".")[:2])

    @property
    def local_node(self) -> SimNode:
        """The node the endpoint answers from (``local: 1``)."""
        return self.nodes[0]

    @property
    def quorate(self) -> bool:
        return sum(n.online for n in self.nodes) * 2 > len(self.nodes)

    def node(self, name: str) -> SimNode | None:
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def guests_on(self, node: str, kind: GuestKind | None = None) -> list[SimGuest]:
        return [g for g in self.guests.values() if g.node == node and (kind is None or g.kind == kind)]

    def storage(self, name: str) -> SimStorage | None:
        for storage in self.storages:
            if storage.name == name:
                return storage
        return None

    def next_vmid(self) -> int:
        return max(self.guests, default=99) + 1


@attrs.define(kw_only=True)
class World:
    seed: int | str
    epoch: int = EPOCH
    clusters: list[SimCluster] = attrs.Factory(list)
    used_macs: set[str] = attrs.Factory(set)
    drift_batches: int = 0

    def cluster(self, name: str) -> SimCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(f"no cluster {name!r} (clusters: {', '.join(c.name for c in self.clusters)})")

    def unique_mac(self, cluster: str, vmid: int, nic: int) -> str:
        attempt = 0
        while True:
            mac = hashed_mac(cluster, vmid, nic, attempt)
            if mac not in self.used_macs:
                self.used_macs.add(mac)
                return mac
            attempt += 1
