"""Deterministic world generation: the same arguments always give the same world, byte for byte.

Every object draws from its own RNG, ``random.Random(f"{seed}:{cluster}:{node}:{vmid}")`` for a guest, so
adding guests or nodes never reshuffles the others. The clock is frozen at ``epoch`` (uptimes, ctimes,
snapshot times and UPIDs are all derived from it).
"""

from __future__ import annotations

import hashlib
import random
import string
import time
import uuid
from collections.abc import Iterable
from typing import Any

import attrs

from proxbox.sim.model import (
    EPOCH,
    MAX_GUEST_INDEX,
    GiB,
    GuestKind,
    MiB,
    SimBackup,
    SimBackupJob,
    SimCluster,
    SimDisk,
    SimGuest,
    SimNic,
    SimNode,
    SimPool,
    SimReplication,
    SimSnapshot,
    SimStorage,
    TiB,
    World,
    eui64,
    pool_address,
    ula_address,
    ula_prefix,
)

DAY = 86400


@attrs.frozen(kw_only=True)
class Profile:
    """Fractions that shape a world. The defaults give a bit of everything a sync must handle."""

    lxc: float = 0.3
    running: float = 0.75
    template: float = 0.03
    windows: float = 0.15  # of non-template qemu guests
    agent: float = 0.7  # qemu guests with the agent enabled in config
    agent_answering: float = 0.8  # of those: the agent answers when the guest runs
    cloudinit: float = 0.45  # of linux qemu guests
    ipv6: float = 0.3  # NICs with an IPv6 address (static or SLAAC)
    multi_nic: float = 0.3
    agent_noise: float = 0.3  # running linux guests whose agent also reports docker0/veth
    unused_volume: float = 0.1
    snapshots: float = 0.15
    backups: float = 0.4
    ha: float = 0.1
    pool: float = 0.3
    lock: float = 0.01


# name, ostype, osinfo (get-osinfo result)
LINUX_OS: dict[str, dict[str, str]] = {
    "debian13": {
        "id": "debian",
        "name": "Debian GNU/Linux",
        "pretty-name": "Debian GNU/Linux 13 (trixie)",
        "version": "13 (trixie)",
        "version-id": "13",
        "kernel-release": "6.12.48+deb13-amd64",
    },
    "debian12": {
        "id": "debian",
        "name": "Debian GNU/Linux",
        "pretty-name": "Debian GNU/Linux 12 (bookworm)",
        "version": "12 (bookworm)",
        "version-id": "12",
        "kernel-release": "6.1.0-40-amd64",
    },
    "ubuntu2404": {
        "id": "ubuntu",
        "name": "Ubuntu",
        "pretty-name": "Ubuntu 24.04.3 LTS",
        "version": "24.04.3 LTS (Noble Numbat)",
        "version-id": "24.04",
        "kernel-release": "6.8.0-87-generic",
    },
    "rocky9": {
        "id": "rocky",
        "name": "Rocky Linux",
        "pretty-name": "Rocky Linux 9.6 (Blue Onyx)",
        "version": "9.6 (Blue Onyx)",
        "version-id": "9.6",
        "kernel-release": "5.14.0-570.el9.x86_64",
    },
}
WINDOWS_OS: dict[str, dict[str, str]] = {
    "win2022": {
        "id": "mswindows",
        "name": "Microsoft Windows",
        "pretty-name": "Windows Server 2022 Standard",
        "version": "Microsoft Windows Server 2022",
        "version-id": "2022",
        "kernel-release": "20348",
        "kernel-version": "10.0",
        "variant": "server",
        "variant-id": "server",
    },
    "win2025": {
        "id": "mswindows",
        "name": "Microsoft Windows",
        "pretty-name": "Windows Server 2025 Datacenter",
        "version": "Microsoft Windows Server 2025",
        "version-id": "2025",
        "kernel-release": "26100",
        "kernel-version": "10.0",
        "variant": "server",
        "variant-id": "server",
    },
    "win11": {
        "id": "mswindows",
        "name": "Microsoft Windows",
        "pretty-name": "Windows 11 Enterprise",
        "version": "Microsoft Windows 11",
        "version-id": "11",
        "kernel-release": "26100",
        "kernel-version": "10.0",
        "variant": "client",
        "variant-id": "client",
    },
}
WINDOWS_OSTYPE = {"win2022": "win11", "win2025": "win11", "win11": "win11"}
LXC_OS = {
    "debian": "debian-13-standard_13.1-2_amd64",
    "ubuntu": "ubuntu-24.04-standard_24.04-2_amd64",
    "alpine": "alpine-3.22-default_20250617_amd64",
    "rockylinux": "rockylinux-9-default_20240912_amd64",
}
OS_PROFILES: dict[str, dict[str, str]] = {**LINUX_OS, **WINDOWS_OS}

ROLES = (
    "web",
    "db",
    "app",
    "api",
    "cache",
    "mq",
    "proxy",
    "ci",
    "git",
    "mon",
    "log",
    "dns",
    "mail",
    "vpn",
    "k8s",
    "etcd",
    "backup",
    "files",
    "auth",
    "ldap",
    "build",
    "jump",
    "redis",
    "pg",
    "minio",
    "kafka",
)
TAGS = ("prod", "dev", "staging", "web", "db", "k8s", "monitoring", "backup-daily", "pci", "legacy")
CPU_MODELS = (
    ("AMD EPYC 7543P 32-Core Processor", 1, 32, "2800.000"),
    ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 2, 32, "2000.000"),
    ("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", 2, 16, "2400.000"),
    ("AMD EPYC 9354 32-Core Processor", 1, 32, "3250.000"),
    ("AMD Ryzen 9 7950X3D 16-Core Processor", 1, 16, "4200.000"),
)
CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
    "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid "
    "aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c "
    "rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit "
    "wdt tce "
    "topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb "
    "stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a rdseed adx smap clflushopt clwb sha_ni"
)
NIC_NETWORKS: tuple[int | None, ...] = (None, 10, 20, 30, 40)
NETWORK_WEIGHTS = (4, 3, 3, 2, 1)


def cluster_name(index: int) -> str:
    """lab-a, lab-b, ... lab-z, lab-aa, ..."""
    letters = ""
    i = index
    while True:
        letters = string.ascii_lowercase[i % 26] + letters
        i = i // 26 - 1
        if i < 0:
            return f"lab-{letters}"


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(
    seed: int | str = 1,
    clusters: int = 1,
    nodes: int = 3,
    guests: int = 20,
    standalone: int = 0,
    *,
    offline: Iterable[str] = (),
    standalone_guests: int | None = None,
    epoch: int = EPOCH,
    profile: Profile | None = None,
) -> World:
    """Build a world of ``clusters`` clusters of ``nodes`` nodes and ``guests`` guests each, plus
    ``standalone`` single-node endpoints (``standalone_guests`` guests each, default ``guests``).

    ``offline`` names nodes that start offline, as ``"cluster/node"``.
    """
    if clusters < 0 or standalone < 0 or clusters + standalone == 0:
        raise ValueError("a world needs at least one cluster or standalone endpoint")
    if nodes < 1:
        raise ValueError("a cluster needs at least one node")
    sguests = guests if standalone_guests is None else standalone_guests
    for count in (guests, sguests):
        if not 0 <= count <= MAX_GUEST_INDEX:
            raise ValueError(f"guests per endpoint must be between 0 and {MAX_GUEST_INDEX}, got {count}")
    profile = profile or Profile()
    world = World(seed=seed, epoch=epoch)
    for c in range(clusters):
        world.clusters.append(_cluster(world, profile, c, cluster_name(c), nodes, guests, standalone=False))
    for k in range(standalone):
        c = clusters + k
        world.clusters.append(_cluster(world, profile, c, f"pve-s{k + 1}", 1, sguests, standalone=True))
    for spec in offline:
        cname, _, nname = spec.partition("/")
        node = world.cluster(cname).node(nname)
        if node is None:
            raise ValueError(f"offline node {spec!r}: no node {nname!r} in cluster {cname!r}")
        node.online = False
    return world


# ------------------------------------------------------------------------------------------- cluster


def _cluster(
    world: World, profile: Profile, c: int, name: str, n_nodes: int, n_guests: int, *, standalone: bool
) -> SimCluster:
    rng = random.Random(f"{world.seed}:{name}")
    cluster = SimCluster(
        name=name,
        index=c,
        standalone=standalone,
        pve_version="8.4.14" if standalone else "9.1.2",
        repoid="b6f2a3c8" if standalone else "c2a4b9e1",
        config_version=0 if standalone else rng.randint(3, 40),
        legacy_lxc_interfaces=standalone,
    )
    if standalone:
        cluster.nodes.append(_node(world, cluster, name, 0, 11))
    else:
        letter = name.removeprefix("lab-")
        cluster.nodes.extend(
            _node(world, cluster, f"pve-{letter}{n}", n, 10 + n) for n in range(1, n_nodes + 1)
        )
    cluster.storages = _storages(rng, multi=not standalone)
    if not standalone:
        cluster.pools = [
            SimPool(poolid="prod", comment="Production"),
            SimPool(poolid="dev", comment="Development"),
            SimPool(poolid="infra", comment="Infrastructure"),
        ][: rng.randint(1, 3)]
    for i in range(n_guests):
        vmid = 100 + i
        node = cluster.nodes[i % len(cluster.nodes)]
        guest = _guest(world, profile, cluster, node.name, vmid, i)
        cluster.guests[vmid] = guest
    _backups(world, profile, cluster)
    _jobs(rng, world, cluster)
    return cluster


def _node(world: World, cluster: SimCluster, name: str, nodeid: int, host: int) -> SimNode:
    rng = random.Random(f"{world.seed}:{cluster.name}:{name}")
    model, sockets, cores, mhz = rng.choice(CPU_MODELS)
    mem_total = rng.choice((128, 256, 384, 512, 768, 1024)) * GiB
    fp = hashlib.sha256(f"{cluster.name}:{name}".encode()).hexdigest().upper()
    return SimNode(
        name=name,
        nodeid=nodeid,
        ip=f"10.{cluster.index}.0.{host}",
        cpu_model=model,
        sockets=sockets,
        cores=cores,
        threads=2,
        mhz=mhz,
        flags=CPU_FLAGS,
        mem_total=mem_total,
        mem_used=int(mem_total * rng.uniform(0.2, 0.8)),
        swap_total=8 * GiB,
        rootfs_total=rng.choice((94, 100, 238)) * GiB,
        rootfs_used=rng.randint(4, 30) * GiB,
        uptime_s=rng.randint(3, 200) * DAY + rng.randint(0, DAY),
        cpu_usage=round(rng.uniform(0.01, 0.4), 6),
        loadavg=tuple(f"{rng.uniform(0.05, 6):.2f}" for _ in range(3)),  # type: ignore[arg-type]
        kernel="6.8.12-15-pve" if cluster.standalone else "6.14.11-4-pve",
        kernel_version="#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)",
        boot_mode=rng.choice(("efi", "efi", "legacy-bios")),
        secureboot=rng.random() < 0.3,
        level=rng.choice(("", "", "c", "b")),
        ssl_fingerprint=":".join(fp[i : i + 2] for i in range(0, 64, 2)),
        nics=("eno1", "eno2") if rng.random() < 0.7 else ("enp65s0f0np0", "enp65s0f1np1"),
    )


def _storages(rng: random.Random, *, multi: bool) -> list[SimStorage]:
    out = [
        SimStorage(
            name="local",
            type="dir",
            content=("backup", "iso", "vztmpl"),
            shared=False,
            total=rng.choice((94, 100, 238)) * GiB,
            used=0,
            config={"path": "/var/lib/vz"},
        ),
        SimStorage(
            name="local-lvm",
            type="lvmthin",
            content=("images", "rootdir"),
            shared=False,
            total=rng.choice((800, 1800, 3600)) * GiB,
            used=0,
            config={"vgname": "pve", "thinpool": "data"},
        ),
    ]
    if multi and rng.random() < 0.6:
        out.append(
            SimStorage(
                name="ceph-rbd",
                type="rbd",
                content=("images", "rootdir"),
                shared=True,
                total=rng.choice((20, 40, 80)) * TiB,
                used=0,
                config={"pool": "vm-pool", "krbd": "0"},
            )
        )
    if multi and rng.random() < 0.3:
        out.append(
            SimStorage(
                name="local-zfs",
                type="zfspool",
                content=("images", "rootdir"),
                shared=False,
                total=1800 * GiB,
                used=0,
                config={"pool": "rpool/data", "sparse": "1"},
            )
        )
    if multi:
        out.append(
            SimStorage(
                name="nfs-backup",
                type="nfs",
                content=("backup", "iso"),
                shared=True,
                total=50 * TiB,
                used=0,
                config={"server": "10.99.0.5", "export": "/export/pve", "path": "/mnt/pve/nfs-backup"},
            )
        )
    if rng.random() < 0.5:
        out.append(
            SimStorage(
                name="pbs-main",
                type="pbs",
                content=("backup",),
                shared=True,
                total=100 * TiB,
                used=0,
                config={"server": "10.99.0.7", "datastore": "main", "username": "pve@pbs"},
            )
        )
    for s in out:
        s.used = int(s.total * rng.uniform(0.1, 0.7))
    return out


# --------------------------------------------------------------------------------------------- guests


def _guest(world: World, profile: Profile, cluster: SimCluster, node: str, vmid: int, index: int) -> SimGuest:
    rng = random.Random(f"{world.seed}:{cluster.name}:{node}:{vmid}")
    # every 7th guest draws its role from a cluster-independent RNG: duplicate names across clusters
    name_rng = random.Random(f"{world.seed}:name:{vmid}") if index % 7 == 0 else rng
    role = name_rng.choice(ROLES)
    kind: GuestKind = "lxc" if rng.random() < profile.lxc else "qemu"
    guest = SimGuest(
        vmid=vmid,
        kind=kind,
        name=f"{role}{index + 1:03d}",
        node=node,
        status="stopped",
        os="debian13",
        ostype="l26",
        index=index,
    )
    guest.uuid = _uuid(rng)
    guest.ctime = world.epoch - rng.randint(30, 900) * DAY
    if kind == "qemu":
        _qemu(world, profile, cluster, guest, rng)
    else:
        _lxc(world, profile, cluster, guest, rng)
    if not guest.template and rng.random() < profile.running:
        guest.status = "running"
        guest.uptime_s = rng.randint(600, 90 * DAY)
        guest.cpu_usage = round(rng.uniform(0.001, 0.35), 6)
        guest.mem_used = int(guest.memory_mb * MiB * rng.uniform(0.15, 0.85))
        guest.net_in = rng.randint(10**6, 10**12)
        guest.net_out = rng.randint(10**6, 10**12)
        guest.disk_read = rng.randint(10**7, 10**12)
        guest.disk_write = rng.randint(10**7, 10**12)
        guest.pid = rng.randint(1000, 4_000_000)
    guest.tags = tuple(sorted(rng.sample(TAGS, rng.choice((0, 0, 1, 1, 2, 3)))))
    guest.onboot = rng.random() < 0.6 and not guest.template
    guest.protection = rng.random() < 0.05
    if cluster.pools and rng.random() < profile.pool:
        guest.pool = rng.choice(cluster.pools).poolid
    if len(cluster.nodes) > 1 and not guest.template and rng.random() < profile.ha:
        guest.hastate = "started" if guest.running else "stopped"
    if guest.running and rng.random() < profile.lock:
        guest.lock = "backup"
    desc = rng.random()
    if desc < 0.2:
        guest.description = f"Owner: team-{rng.choice(ROLES)}\nTicket: OPS-{rng.randint(1000, 9999)}\n"
    elif desc < 0.4:
        guest.description = "Managed by Terraform"
    if not guest.template and rng.random() < profile.snapshots:
        parent = None
        for s in range(rng.randint(1, 3)):
            name = ("pre-upgrade", "before-patch", "baseline", "known-good")[rng.randrange(4)] + f"-{s + 1}"
            guest.snapshots.append(
                SimSnapshot(
                    name=name,
                    description=rng.choice(("", "before apt full-upgrade", "weekly")),
                    snaptime=world.epoch - rng.randint(1, 120) * DAY,
                    parent=parent,
                    vmstate=kind == "qemu" and rng.random() < 0.3,
                )
            )
            parent = name
        guest.snapshots.sort(key=lambda s: s.snaptime)
        for prev, snap in zip([None, *guest.snapshots], guest.snapshots, strict=False):
            snap.parent = prev.name if prev else None
    return guest


def _disk_storage(cluster: SimCluster, rng: random.Random) -> str:
    shared = [s.name for s in cluster.storages if "images" in s.content and s.type in ("rbd", "zfspool")]
    return rng.choice(shared) if shared and rng.random() < 0.4 else "local-lvm"


def _qemu(world: World, profile: Profile, cluster: SimCluster, g: SimGuest, rng: random.Random) -> None:
    g.template = rng.random() < profile.template
    g.vmgenid = _uuid(rng)
    windows = not g.template and rng.random() < profile.windows
    if windows:
        g.os = rng.choice(sorted(WINDOWS_OS))
        g.ostype = WINDOWS_OSTYPE[g.os]
    else:
        g.os = rng.choice(sorted(LINUX_OS))
        g.ostype = "l26"
    if g.template:
        g.name = f"tpl-{g.os}-{g.vmid}"
    g.cores = rng.choice((1, 2, 2, 4, 4, 8, 16))
    g.sockets = 2 if rng.random() < 0.1 else 1
    g.memory_mb = rng.choice((512, 1024, 2048, 4096, 4096, 8192, 16384, 32768))
    if windows:
        g.memory_mb = max(g.memory_mb, 4096)
    b = rng.random()
    g.balloon_mb = 0 if b < 0.15 else g.memory_mb // 2 if b < 0.35 else None
    g.bios = "ovmf" if windows or rng.random() < 0.3 else "seabios"
    g.machine = ("pc-q35-9.2+pve1" if windows else "q35") if g.bios == "ovmf" or rng.random() < 0.5 else None
    g.cpu_type = rng.choice(("x86-64-v2-AES", "x86-64-v2-AES", "host", "kvm64"))
    g.scsihw = rng.choice(("virtio-scsi-single", "virtio-scsi-single", "virtio-scsi-pci", "lsi"))
    if rng.random() < (0.9 if windows else profile.agent):
        g.agent_config = rng.choice(("1", "1", "enabled=1,fstrim_cloned_disks=1", "1,type=virtio"))
        g.agent = "answering" if rng.random() < profile.agent_answering else "silent"
    elif rng.random() < 0.2:
        g.agent_config = "0"  # explicitly disabled: same as not configured
    g.cloudinit = not windows and rng.random() < profile.cloudinit

    # disks
    storage = _disk_storage(cluster, rng)
    boot_bus = rng.choices(("scsi", "virtio", "sata", "ide"), (60, 25, 10, 5))[0]
    if windows and boot_bus in ("virtio", "ide"):
        boot_bus = "sata"
    n = 0

    def volume(st: str) -> str:
        nonlocal n
        vol = f"{st}:vm-{g.vmid}-disk-{n}"
        n += 1
        return vol

    def opts(bus: str) -> dict[str, str]:
        o: dict[str, str] = {}
        if bus in ("scsi", "virtio") and g.scsihw == "virtio-scsi-single":
            o["iothread"] = "1"
        if bus in ("scsi", "sata") and rng.random() < 0.4:
            o["ssd"] = "1"
        if rng.random() < 0.3:
            o["discard"] = "on"
        if rng.random() < 0.15:
            o["cache"] = "writeback"
        return o

    used_index: dict[str, int] = {"scsi": 0, "virtio": 0, "sata": 0, "ide": 0}
    if g.bios == "ovmf":
        g.disks.append(
            SimDisk(
                key="efidisk0",
                volume=volume(storage),
                size_bytes=4 * MiB,
                options={"efitype": "4m", "pre-enrolled-keys": "1" if windows else "0"},
            )
        )
    boot_key = f"{boot_bus}{used_index[boot_bus]}"
    used_index[boot_bus] += 1
    g.disks.append(
        SimDisk(
            key=boot_key,
            volume=volume(storage),
            size_bytes=rng.choice((8, 16, 20, 32, 40, 64, 100)) * GiB * (2 if windows else 1),
            options=opts(boot_bus),
        )
    )
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
        bus = boot_bus if rng.random() < 0.7 else rng.choice(("scsi", "virtio", "sata"))
        if bus == "ide" and used_index["ide"] >= 2:
            bus = "scsi"
        key = f"{bus}{used_index[bus]}"
        used_index[bus] += 1
        size = rng.choice((10 * GiB, 50 * GiB, 100 * GiB, 200 * GiB, 512 * MiB, 1 * TiB))
        o = opts(bus)
        if rng.random() < 0.2:
            o["backup"] = "0"
        g.disks.append(
            SimDisk(key=key, volume=volume(_disk_storage(cluster, rng)), size_bytes=size, options=o)
        )
    if windows:
        g.disks.append(
            SimDisk(key="tpmstate0", volume=volume(storage), size_bytes=4 * MiB, options={"version": "v2.0"})
        )
        g.disks.append(
            SimDisk(
                key="ide0", volume="local:iso/virtio-win-0.1.271.iso", media="cdrom", size_bytes=709474 * 1024
            )
        )
    if g.cloudinit:
        g.disks.append(
            SimDisk(key="ide2", volume=f"{storage}:vm-{g.vmid}-cloudinit", media="cdrom", size_bytes=4 * MiB)
        )
    else:
        r = rng.random()
        if r < 0.5:
            g.disks.append(SimDisk(key="ide2", volume="none", media="cdrom"))
        elif r < 0.8:
            iso = "debian-13.1.0-amd64-netinst.iso" if not windows else "SERVER_EVAL_x64FRE_en-us.iso"
            g.disks.append(
                SimDisk(
                    key="ide2",
                    volume=f"local:iso/{iso}",
                    media="cdrom",
                    size_bytes=(754 * MiB) if not windows else 4_921_344 * 1024,
                )
            )
    if rng.random() < profile.unused_volume:
        g.disks.append(SimDisk(key="unused0", volume=volume(storage)))

    # nics
    count = 1 if rng.random() >= profile.multi_nic else rng.choice((2, 2, 3))
    networks = _pick_networks(rng, count)
    ens = rng.random() < 0.5
    for j, vlan in enumerate(networks):
        model = (
            rng.choice(("e1000e", "virtio"))
            if windows
            else rng.choices(("virtio", "e1000", "vmxnet3", "rtl8139"), (85, 6, 6, 3))[0]
        )
        if windows:
            ifname = "Ethernet" if j == 0 else f"Ethernet {j + 1}"
        else:
            ifname = f"ens{18 + j}" if ens else f"eth{j}"
        nic = SimNic(
            index=j,
            model=model,
            mac=world.unique_mac(cluster.name, g.vmid, j),
            ifname=ifname,
            vlan=vlan,
            firewall=rng.random() < 0.4,
            link_down=rng.random() < 0.02,
        )
        if model == "virtio" and rng.random() < 0.1:
            nic.queues = 4
        trunk = count > 1 and j == count - 1 and rng.random() < 0.3
        if trunk:
            nic.vlan, nic.trunks = None, (10, 20, 30)
        else:
            _address(rng, profile, cluster, g, nic, first=j == 0, static_share=0.8 if g.cloudinit else 0.0)
        g.nics.append(nic)
    if not windows and rng.random() < profile.agent_noise:
        g.noise = ("docker0", *(f"veth{_hex(rng, 7)}" for _ in range(rng.randint(1, 2))))


def _pick_networks(rng: random.Random, count: int) -> list[int | None]:
    pool = list(NIC_NETWORKS)
    weights = list(NETWORK_WEIGHTS)
    picked: list[int | None] = []
    for _ in range(count):
        i = rng.choices(range(len(pool)), weights)[0]
        picked.append(pool.pop(i))
        weights.pop(i)
    return picked


def _address(
    rng: random.Random,
    profile: Profile,
    cluster: SimCluster,
    g: SimGuest,
    nic: SimNic,
    *,
    first: bool,
    static_share: float,
) -> None:
    """Give ``nic`` its real addresses, and decide how the config declares them (mode4/mode6)."""
    nic.ip4, gw = pool_address(cluster.index, nic.vlan, g.index)
    nic.gw4 = gw if first else None
    nic.mode4 = "static" if rng.random() < static_share else "dhcp"
    if rng.random() < profile.ipv6:
        if rng.random() < 0.5:
            nic.ip6, gw6 = ula_address(cluster.index, nic.vlan, g.index)
            nic.gw6 = gw6 if first else None
            nic.mode6 = "static" if g.kind == "lxc" or g.cloudinit else "dhcp"
        else:
            nic.ip6 = eui64(ula_prefix(cluster.index, nic.vlan), nic.mac) + "/64"
            nic.mode6 = "auto"


def _lxc(world: World, profile: Profile, cluster: SimCluster, g: SimGuest, rng: random.Random) -> None:
    g.os = rng.choice(sorted(LXC_OS))
    g.ostype = g.os
    g.cores = rng.choice((1, 1, 2, 2, 4))
    g.memory_mb = rng.choice((256, 512, 1024, 2048, 4096))
    g.swap_mb = rng.choice((0, 256, 512, 512))
    g.unprivileged = rng.random() < 0.9
    g.features = "nesting=1" if g.unprivileged and rng.random() < 0.7 else None
    storage = _disk_storage(cluster, rng)
    g.disks.append(
        SimDisk(
            key="rootfs",
            volume=f"{storage}:vm-{g.vmid}-disk-0",
            size_bytes=rng.choice((4, 8, 8, 16, 32)) * GiB,
        )
    )
    n = 1
    if rng.random() < 0.2:
        g.disks.append(
            SimDisk(
                key=f"mp{n - 1}",
                volume=f"{storage}:vm-{g.vmid}-disk-{n}",
                mountpoint="/srv/data",
                size_bytes=rng.choice((20, 50, 100)) * GiB,
                options={"backup": "1"},
            )
        )
        n += 1
    if rng.random() < 0.1:
        g.disks.append(SimDisk(key=f"mp{n - 1}", volume="/mnt/shared", mountpoint="/shared"))
    if rng.random() < profile.unused_volume:
        g.disks.append(SimDisk(key="unused0", volume=f"{storage}:vm-{g.vmid}-disk-{n}"))
    count = 2 if rng.random() < profile.multi_nic / 2 else 1
    for j, vlan in enumerate(_pick_networks(rng, count)):
        nic = SimNic(
            index=j,
            model="veth",
            mac=world.unique_mac(cluster.name, g.vmid, j),
            ifname=f"eth{j}",
            vlan=vlan,
            firewall=rng.random() < 0.5,
        )
        _address(rng, profile, cluster, g, nic, first=j == 0, static_share=0.6)
        if nic.mode6 == "dhcp":
            nic.mode6 = "static"
        g.nics.append(nic)


# ------------------------------------------------------------------------------------ backups and jobs


def _backups(world: World, profile: Profile, cluster: SimCluster) -> None:
    targets = [s for s in cluster.storages if "backup" in s.content and s.name != "local"] or [
        s for s in cluster.storages if s.name == "local"
    ]
    for g in cluster.guests.values():
        rng = random.Random(f"{world.seed}:{cluster.name}:{g.node}:{g.vmid}:backup")
        if g.template or rng.random() >= profile.backups:
            continue
        st = rng.choice(targets)
        for k in range(rng.randint(1, 3)):
            ctime = world.epoch - (k * 7 + rng.randint(0, 6)) * DAY - rng.randint(0, 3600)
            stamp = _stamp(ctime)
            size = max(64 * MiB, int(g.maxdisk * rng.uniform(0.05, 0.4)))
            if st.type == "pbs":
                vt = "vm" if g.kind == "qemu" else "ct"
                volid = f"{st.name}:backup/{vt}/{g.vmid}/{_iso(ctime)}"
                fmt = f"pbs-{vt}"
            else:
                fmt = "vma.zst" if g.kind == "qemu" else "tar.zst"
                volid = f"{st.name}:backup/vzdump-{g.kind}-{g.vmid}-{stamp}.{fmt}"
            cluster.backups.append(
                SimBackup(
                    volid=volid,
                    storage=st.name,
                    vmid=g.vmid,
                    subtype=g.kind,
                    node=g.node,
                    ctime=ctime,
                    size=size,
                    format=fmt,
                    notes=g.name,
                    protected=k == 2 and rng.random() < 0.3,
                )
            )
    cluster.backups.sort(key=lambda b: (b.storage, b.volid))


def _stamp(t: int) -> str:
    return time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime(t))


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _jobs(rng: random.Random, world: World, cluster: SimCluster) -> None:
    targets = [s.name for s in cluster.storages if "backup" in s.content]
    vmids = sorted(g.vmid for g in cluster.guests.values() if not g.template)
    for k in range(rng.randint(1, 2)):
        job = SimBackupJob(
            id=f"backup-{_hex(rng, 8)}-{_hex(rng, 4)}",
            schedule=rng.choice(("sun 01:00", "21:00", "sat 03:30", "mon..fri 02:00")),
            storage=rng.choice(targets),
            mode=rng.choice(("snapshot", "snapshot", "stop", "suspend")),
            enabled=k == 0 or rng.random() < 0.5,
            keep_last=rng.choice((3, 7, 14)),
            next_run=world.epoch + rng.randint(1, 7 * DAY),
            comment=rng.choice(("", "nightly")),
        )
        if k == 0 or not vmids:
            job.all = True
            job.exclude = tuple(rng.sample(vmids, min(len(vmids), rng.randint(0, 2))))
        else:
            job.vmids = tuple(sorted(rng.sample(vmids, min(len(vmids), rng.randint(1, 5)))))
        cluster.backup_jobs.append(job)
    if "local-zfs" in {s.name for s in cluster.storages} and len(cluster.nodes) > 1:
        for g in cluster.guests.values():
            if any(d.storage == "local-zfs" and d.is_disk for d in g.disks) and rng.random() < 0.5:
                names = [n.name for n in cluster.nodes]
                target = names[(names.index(g.node) + 1) % len(names)]
                cluster.replications.append(
                    SimReplication(
                        guest=g.vmid, jobnum=0, source=g.node, target=target, rate=rng.choice((None, 50.0))
                    )
                )


def world_summary(world: World) -> dict[str, Any]:
    """A short description for logs: clusters, node and guest counts."""
    return {c.name: {"nodes": len(c.nodes), "guests": len(c.guests)} for c in world.clusters}
