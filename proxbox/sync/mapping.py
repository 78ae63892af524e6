"""Pure mapping: a Proxmox :class:`~proxbox.proxmox.models.Inventory` → the NetBox objects it should produce.

No I/O. The rules (docs/sync.md has the long form):

- one NetBox **cluster** (type ``Proxmox VE``) per Proxmox cluster, scoped to the endpoint's site
  (``[[proxmox]].site``, else ``[sync].default_site``); one **device** per node (manufacturer ``Proxmox``,
  device type and role ``Proxmox VE node``), identified by (cluster, ``proxmox_node`` custom field);
- every QEMU VM and LXC container becomes a **virtual machine** identified by (cluster, ``proxmox_vmid``),
  with role ``Proxmox VM`` / ``Proxmox container`` and a platform from the OS type when it is known;
- one **interface** per ``netN`` with its **MAC address** object as primary MAC; ``mode`` is ``access`` for a
  NIC with a VLAN tag and ``tagged`` for a trunk (no VLAN objects are created; the bridge and VLAN are in the
  description); **IP addresses** (usable ones only: no loopback, no link-local) on the interface they were
  seen on; primary IPv4/IPv6 = the first address of each family, by NIC order, per ``[sync].primary_ip``;
- one **virtual disk** per real disk (``scsi0``, ``rootfs``, ``mp0``…: cdroms, EFI vars and TPM state, and
  mounts without a size are not disks), size in MB (rounded up); the VM's ``disk`` total is NetBox's sum.
- Names NetBox requires to be unique are disambiguated deterministically: two guests of one cluster with the
  same name (case-insensitive) become ``name (vmid)``; two nodes with the same name on one site become
  ``node (cluster)``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable

import attrs

from proxbox.config import Settings, SyncSettings
from proxbox.events import RunKind
from proxbox.proxmox.models import ClusterInventory, Guest, Inventory, Nic, Node
from proxbox.sync.model import (
    CF_NODE,
    CF_ORPHANED,
    CF_VMID,
    CHILD_KINDS,
    CLUSTER,
    CLUSTER_TYPE,
    CUSTOM_FIELD,
    DEVICE,
    DEVICE_ROLE,
    DEVICE_TYPE,
    DISK,
    INTERFACE,
    IP,
    MAC,
    MANUFACTURER,
    MIRROR_MARK,
    ORPHAN_TAG,
    OWNER_TAG,
    PLATFORM,
    SITE,
    TAG,
    VM,
    Desired,
    DesiredState,
    Key,
    Ref,
)

MiB = 1024 * 1024

CLUSTER_TYPE_NAME = "Proxmox VE"
CLUSTER_TYPE_SLUG = "proxmox-ve"
MANUFACTURER_NAME = "Proxmox"
MANUFACTURER_SLUG = "proxmox"
DEVICE_TYPE_MODEL = "Proxmox VE node"
DEVICE_TYPE_SLUG = "proxmox-ve-node"
NODE_ROLE = ("Proxmox VE node", "proxmox-ve-node", "e65100")
GUEST_ROLES = {
    "qemu": ("Proxmox VM", "proxmox-vm", "1e88e5"),
    "lxc": ("Proxmox container", "proxmox-container", "43a047"),
}

VM_STATUS = {"running": "active", "stopped": "offline", "paused": "paused", "suspended": "paused"}

# Proxmox ostype → NetBox platform name (slug derived). Unknown/other types set no platform.
PLATFORMS = {
    "l24": "Linux 2.4",
    "l26": "Linux",
    "w2k": "Windows 2000",
    "w2k3": "Windows Server 2003",
    "w2k8": "Windows Server 2008",
    "wxp": "Windows XP",
    "wvista": "Windows Vista",
    "win7": "Windows 7",
    "win8": "Windows 8",
    "win10": "Windows 10",
    "win11": "Windows 11",
    "solaris": "Solaris",
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "centos": "CentOS",
    "fedora": "Fedora",
    "opensuse": "openSUSE",
    "archlinux": "Arch Linux",
    "alpine": "Alpine Linux",
    "gentoo": "Gentoo",
    "nixos": "NixOS",
    "devuan": "Devuan",
}

NOT_DISKS = frozenset({"efidisk", "tpmstate"})  # firmware state, not a disk the guest sees

# custom fields proxbox creates: name -> (type, object types, label, description)
CUSTOM_FIELDS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    CF_VMID: (
        "integer",
        ("virtualization.virtualmachine",),
        "Proxmox VMID",
        "Proxmox VE guest id (set by proxbox)",
    ),
    CF_NODE: ("text", ("dcim.device",), "Proxmox node", "Proxmox VE node name (set by proxbox)"),
    CF_ORPHANED: (
        "date",
        ("virtualization.virtualmachine", "dcim.device"),
        "Orphaned since",
        "Day proxbox last found this object missing from Proxmox VE",
    ),
}

_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def slugify(text: str) -> str:
    slug = _SLUG_BAD.sub("-", text.strip().lower()).strip("-")
    return (slug or "x")[:100]


def vcpus_value(vcpus: float | None) -> str | None:
    """NetBox's vCPU decimal (6 digits, 2 places) in the form it is compared in: ``"2.00"``."""
    if vcpus is None or vcpus <= 0:
        return None
    return f"{round(vcpus, 2):.2f}"


def disk_mb(size_bytes: int) -> int:
    return max(1, math.ceil(size_bytes / MiB))


def first_line(text: str, limit: int = 200) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def ip_value(address: str) -> str | None:
    try:
        return str(ipaddress.ip_interface(address.strip()))
    except ValueError:
        return None


def mac_value(mac: str | None) -> str | None:
    if not mac:
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", mac)
    if len(digits) != 12:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).upper()


# ----------------------------------------------------------------------------------------------- filters


@attrs.frozen(kw_only=True)
class FilterResult:
    inventory: Inventory
    skipped_clusters: tuple[str, ...] = ()
    skipped_nodes: int = 0
    skipped_guests: int = 0


def _matches(patterns: Iterable[str], text: str) -> bool:
    return any(re.fullmatch(p, text) for p in patterns)


def _keep(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    if include and not _matches(include, name):
        return False
    return not _matches(exclude, name)


def guest_selected(guest: Guest, sync: SyncSettings) -> bool:
    if guest.template and not sync.include_templates:
        return False
    if guest.status == "stopped" and not sync.include_stopped:
        return False
    if not _keep(guest.name, sync.include_guests, sync.exclude_guests):
        return False
    tags = {t.lower() for t in guest.tags}
    if sync.include_tags and not tags & {t.lower() for t in sync.include_tags}:
        return False
    return not (tags & {t.lower() for t in sync.exclude_tags})


def apply_filters(inventory: Inventory, sync: SyncSettings) -> FilterResult:
    """Keep what the include/exclude settings select. Regexes must match the whole name."""
    clusters: list[ClusterInventory] = []
    skipped_clusters: list[str] = []
    skipped_nodes = skipped_guests = 0
    for ci in inventory.clusters:
        if not _keep(ci.cluster.name, sync.include_clusters, sync.exclude_clusters):
            skipped_clusters.append(ci.cluster.name)
            continue
        nodes = tuple(n for n in ci.nodes if _keep(n.name, sync.include_nodes, sync.exclude_nodes))
        names = {n.name for n in nodes}
        guests = tuple(g for g in ci.guests if g.node in names and guest_selected(g, sync))
        skipped_nodes += len(ci.nodes) - len(nodes)
        skipped_guests += len(ci.guests) - len(guests)
        clusters.append(attrs.evolve(ci, nodes=nodes, guests=guests))
    return FilterResult(
        inventory=attrs.evolve(inventory, clusters=tuple(clusters)),
        skipped_clusters=tuple(skipped_clusters),
        skipped_nodes=skipped_nodes,
        skipped_guests=skipped_guests,
    )


# ------------------------------------------------------------------------------------------------- mapping


def managed_kinds(kind: RunKind) -> frozenset[str]:
    """Kinds a run of ``kind`` converges (updates, orphans, deletes). Other kinds it maps are only created
    when missing, because something it manages points to them (a ``vms`` run creates a missing device)."""
    if kind == "nodes":
        return frozenset({CLUSTER, DEVICE})
    if kind == "vms":
        return frozenset({CLUSTER, VM}) | CHILD_KINDS
    return frozenset({CLUSTER, DEVICE, VM}) | CHILD_KINDS


def cluster_complete(ci: ClusterInventory) -> bool:
    return ci.complete and not any(i.scope == "cluster" for i in ci.issues)


@attrs.define
class _Builder:
    settings: Settings
    objects: dict[tuple[str, Key], Desired] = attrs.Factory(dict)

    def add(self, obj: Desired) -> Ref:
        self.objects.setdefault((obj.kind, obj.key), obj)
        return obj.ref

    def tag(self, slug: str, name: str, color: str, description: str) -> None:
        self.add(
            Desired(
                kind=TAG,
                key=(slug,),
                label=name,
                fields={"name": name, "slug": slug, "color": color, "description": description},
            )
        )

    def named(self, kind: str, name: str, slug: str, **extra: object) -> Ref:
        fields = {"name": name, "slug": slug, **extra, "tags": frozenset({OWNER_TAG})}
        return self.add(Desired(kind=kind, key=(slug,), label=name, fields=fields, alt_key=(name.lower(),)))


def map_inventory(inventory: Inventory, settings: Settings, kind: RunKind = "full") -> DesiredState:
    """Filter ``inventory`` with ``settings.sync`` and map what is selected (see :func:`desired_state`)."""
    return desired_state(inventory, apply_filters(inventory, settings.sync).inventory, settings, kind)


def desired_state(
    unfiltered: Inventory, filtered: Inventory, settings: Settings, kind: RunKind
) -> DesiredState:
    """The desired NetBox state for the ``filtered`` inventory, plus what the orphan logic needs from the
    ``unfiltered`` one: which clusters were fully discovered and which guests/nodes exist at all (a guest
    that a filter hides is out of scope, never an orphan)."""
    sync = settings.sync
    managed = managed_kinds(kind)
    b = _Builder(settings)
    sites_by_endpoint = {px.label: px.site for px in settings.proxmox}

    b.tag(OWNER_TAG, OWNER_TAG, "2196f3", "Created and managed by proxbox")
    b.tag(ORPHAN_TAG, ORPHAN_TAG, "9e9e9e", "Owned by proxbox, no longer found in Proxmox VE")
    for name, (cf_type, object_types, label, description) in CUSTOM_FIELDS.items():
        b.add(
            Desired(
                kind=CUSTOM_FIELD,
                key=(name,),
                label=name,
                fields={
                    "name": name,
                    "type": cf_type,
                    "object_types": tuple(object_types),
                    "label": label,
                    "description": description,
                    "ui_editable": "no",
                    "ui_visible": "if-set" if name == CF_ORPHANED else "always",
                },
            )
        )
    cluster_type = b.named(
        CLUSTER_TYPE, CLUSTER_TYPE_NAME, CLUSTER_TYPE_SLUG, description="Proxmox VE cluster"
    )

    # device names must be unique per site: qualify nodes whose name repeats on a site
    site_of: dict[str, str] = {}
    for ci in filtered.clusters:
        site_of[ci.cluster.name] = sites_by_endpoint.get(ci.cluster.endpoint) or sync.default_site
    node_names = Counter(
        (slugify(site_of[ci.cluster.name]), n.name.lower()) for ci in filtered.clusters for n in ci.nodes
    )

    children_unknown: set[Key] = set()
    ips_unknown: set[Key] = set()
    for ci in filtered.clusters:
        cname = ci.cluster.name
        site_name = site_of[cname]
        site = b.named(SITE, site_name, slugify(site_name), status="active")
        cluster = b.add(
            Desired(
                kind=CLUSTER,
                key=(cname,),
                label=cname,
                cluster=cname,
                fields={
                    "name": cname,
                    "type": cluster_type,
                    "scope_type": "dcim.site",
                    "scope_id": site,
                    "status": "active",
                    "tags": frozenset({OWNER_TAG}),
                },
            )
        )
        if DEVICE in managed or VM in managed:
            for node in ci.nodes:
                qualified = node_names[(site.key[0], node.name.lower())] > 1
                _map_node(b, node, cluster, site, qualified)
        if VM in managed:
            names = Counter(g.name.lower() for g in ci.guests)
            for guest in sorted(ci.guests, key=lambda g: g.vmid):
                _map_guest(b, guest, cluster, site, duplicate_name=names[guest.name.lower()] > 1)
                if not guest.config_complete:
                    children_unknown.add(guest.key)
                if not guest.ips_complete:
                    ips_unknown.add(guest.key)

    present_guests = frozenset(g.key for ci in unfiltered.clusters for g in ci.guests)
    present_nodes = frozenset((ci.cluster.name, n.name) for ci in unfiltered.clusters for n in ci.nodes)
    return DesiredState(
        objects=tuple(b.objects.values()),
        clusters=frozenset(ci.cluster.name for ci in filtered.clusters),
        complete_clusters=frozenset(ci.cluster.name for ci in unfiltered.clusters if cluster_complete(ci)),
        present_guests=present_guests,
        present_nodes=present_nodes,
        children_unknown=frozenset(children_unknown),
        ips_unknown=frozenset(ips_unknown),
        managed=managed,
    )


def _map_node(b: _Builder, node: Node, cluster: Ref, site: Ref, qualified: bool) -> Ref:
    cname = node.cluster
    manufacturer = b.named(MANUFACTURER, MANUFACTURER_NAME, MANUFACTURER_SLUG)
    device_type = b.add(
        Desired(
            kind=DEVICE_TYPE,
            key=(MANUFACTURER_SLUG, DEVICE_TYPE_SLUG),
            label=DEVICE_TYPE_MODEL,
            alt_key=(MANUFACTURER_SLUG, DEVICE_TYPE_MODEL.lower()),
            fields={
                "manufacturer": manufacturer,
                "model": DEVICE_TYPE_MODEL,
                "slug": DEVICE_TYPE_SLUG,
                "u_height": 0,
                "tags": frozenset({OWNER_TAG}),
            },
        )
    )
    role_name, role_slug, role_color = NODE_ROLE
    role = b.named(DEVICE_ROLE, role_name, role_slug, color=role_color, vm_role=False)
    name = f"{node.name} ({cname})" if qualified else node.name
    fields: dict[str, object] = {
        "name": name,
        "site": site,
        "cluster": cluster,
        "role": role,
        "device_type": device_type,
        "status": "active" if node.online else "offline",
        "tags": frozenset({OWNER_TAG}),
        f"cf.{CF_NODE}": node.name,
        f"cf.{CF_ORPHANED}": None,
    }
    if node.serial:
        fields["serial"] = node.serial[:50]
    if node.pve_version:
        fields["description"] = f"Proxmox VE {node.pve_version}"[:200]
    return b.add(
        Desired(
            kind=DEVICE,
            key=(cname, node.name),
            label=name,
            cluster=cname,
            fields=fields,
            alt_key=(site.key[0], name.lower()),
        )
    )


def _mirror_tags(b: _Builder, guest: Guest) -> frozenset[str]:
    slugs = set()
    for tag in guest.tags:
        slug = slugify(tag)
        if slug in (OWNER_TAG, ORPHAN_TAG):
            continue
        b.tag(slug, tag[:100], "607d8b", MIRROR_MARK)
        slugs.add(slug)
    return frozenset(slugs)


def _map_guest(b: _Builder, guest: Guest, cluster: Ref, site: Ref, *, duplicate_name: bool) -> None:
    sync = b.settings.sync
    cname, vmid = guest.key
    name = f"{guest.name} ({vmid})" if duplicate_name else guest.name
    device = Ref(DEVICE, (cname, guest.node))
    create_only: set[str] = set()
    fields: dict[str, object] = {
        "name": name,
        "cluster": cluster,
        "device": device,
        "site": site,
        f"cf.{CF_VMID}": vmid,
        f"cf.{CF_ORPHANED}": None,
    }
    status = "offline" if guest.template else VM_STATUS.get(guest.status)
    if status is not None:
        fields["status"] = status

    tags = frozenset({OWNER_TAG})
    if not guest.config_complete:
        create_only.add("tags")  # the mirrored tags are not known: keep the ones NetBox has
    else:
        tags |= _mirror_tags(b, guest)
        role_name, role_slug, role_color = GUEST_ROLES[guest.kind]
        fields["role"] = b.named(DEVICE_ROLE, role_name, role_slug, color=role_color, vm_role=True)
        if not sync.overwrite_role:
            create_only.add("role")
        if (vcpus := vcpus_value(guest.vcpus)) is not None:
            fields["vcpus"] = vcpus
        if guest.memory_mb is not None:
            fields["memory"] = guest.memory_mb
        if guest.onboot is not None:
            fields["start_on_boot"] = "on" if guest.onboot else "off"
        platform_name = PLATFORMS.get((guest.ostype or "").lower())
        if platform_name:
            fields["platform"] = b.named(PLATFORM, platform_name, slugify(platform_name))
            if not sync.overwrite_platform:
                create_only.add("platform")
        fields["description"] = first_line(guest.description)
        if not sync.overwrite_description:
            create_only.add("description")
        if not sync.overwrite_tags:
            create_only.add("tags")
    fields["tags"] = tags

    vm = Desired(
        kind=VM,
        key=guest.key,
        label=name,
        cluster=cname,
        vmid=vmid,
        fields=fields,
        alt_key=(cname, name.lower()),
        create_only=frozenset(create_only),
    )
    if not guest.config_complete:
        b.add(vm)
        return

    primary: dict[int, Ref] = {}
    seen_addresses: set[str] = set()
    ip_objects: list[Desired] = []
    nic_objects: list[Desired] = []
    for nic in sorted(guest.nics, key=lambda n: n.index):
        iface_key = (cname, vmid, nic.name)
        iface, mac = _map_nic(guest, nic, vm.ref)
        nic_objects.append(iface)
        if mac is not None:
            nic_objects.append(mac)
        for ip in guest.ips:
            if ip.nic != nic.name or not ip.usable:
                continue
            address = ip_value(ip.address)
            if address is None or address in seen_addresses:
                continue
            seen_addresses.add(address)
            ref = Ref(IP, (*iface_key, address))
            primary.setdefault(ip.family, ref)
            ip_objects.append(
                Desired(
                    kind=IP,
                    key=ref.key,
                    label=address,
                    cluster=cname,
                    vmid=vmid,
                    parent=iface.ref,
                    fields={
                        "address": address,
                        "status": "active",
                        "assigned_object_type": "virtualization.vminterface",
                        "assigned_object_id": iface.ref,
                        "tags": frozenset({OWNER_TAG}),
                    },
                )
            )

    if sync.primary_ip != "never":
        extra = {"primary_ip4": primary.get(4), "primary_ip6": primary.get(6)}
        modes = set(vm.create_only)
        if sync.primary_ip == "when-undefined" or not sync.overwrite_primary_ip or not guest.ips_complete:
            modes |= {"primary_ip4", "primary_ip6"}
        vm = attrs.evolve(vm, fields=(*vm.fields, *extra.items()), create_only=frozenset(modes))
    b.add(vm)
    for obj in nic_objects:
        b.add(obj)
    for disk in guest.disks:
        if disk.bus in NOT_DISKS or not disk.size_bytes:
            continue
        b.add(
            Desired(
                kind=DISK,
                key=(cname, vmid, disk.name),
                label=disk.name,
                cluster=cname,
                vmid=vmid,
                parent=vm.ref,
                fields={
                    "virtual_machine": vm.ref,
                    "name": disk.name,
                    "size": disk_mb(disk.size_bytes),
                    "description": disk.volume[:200],
                    "tags": frozenset({OWNER_TAG}),
                },
            )
        )
    for obj in ip_objects:
        b.add(obj)


def _nic_description(nic: Nic) -> str:
    parts = [nic.model]
    if nic.bridge:
        parts.append(f"on {nic.bridge}")
    if nic.vlan is not None:
        parts.append(f"VLAN {nic.vlan}")
    if nic.trunks:
        parts.append("trunks " + ";".join(str(t) for t in nic.trunks))
    return " ".join(parts)[:200]


def _map_nic(guest: Guest, nic: Nic, vm: Ref) -> tuple[Desired, Desired | None]:
    cname, vmid = guest.key
    key = (cname, vmid, nic.name)
    mac_address = mac_value(nic.mac)
    mac_ref = Ref(MAC, key) if mac_address else None
    mode = "access" if nic.vlan is not None else ("tagged" if nic.trunks else None)
    iface = Desired(
        kind=INTERFACE,
        key=key,
        label=nic.name,
        cluster=cname,
        vmid=vmid,
        parent=vm,
        alt_key=key,
        fields={
            "virtual_machine": vm,
            "name": nic.name,
            "enabled": not nic.link_down,
            "mtu": nic.mtu,
            "mode": mode,
            "description": _nic_description(nic),
            "primary_mac_address": mac_ref,
            "tags": frozenset({OWNER_TAG}),
        },
    )
    if mac_ref is None:
        return iface, None
    mac = Desired(
        kind=MAC,
        key=key,
        label=mac_address or "",
        cluster=cname,
        vmid=vmid,
        parent=iface.ref,
        fields={
            "mac_address": mac_address,
            "assigned_object_type": "virtualization.vminterface",
            "assigned_object_id": iface.ref,
            "tags": frozenset({OWNER_TAG}),
        },
    )
    return iface, mac
