"""The values the sync pipeline passes around: desired objects, current objects, references.

Everything here is an immutable attrs value. A NetBox object is described by its *kind* (the names used in
events: ``virtual_machine``, ``interface``...), its *key* (proxbox's identity for it, never a NetBox id) and a
flat map of *normalized* field values, so that "desired == current" is plain equality:

- foreign keys are :class:`Ref` (kind + key) on both sides; a current foreign key that points to something
  proxbox does not track is :class:`Unknown` (it never equals a desired value);
- custom fields are flattened to ``cf.<name>``; tags are a ``frozenset`` of slugs;
- decimals are strings with two places (``"2.00"``), sizes are MB integers, MACs upper-case, IP addresses in
  the compressed ``address/prefix`` form.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

Key = tuple[Any, ...]

# ---- kinds, in dependency order ------------------------------------------------------------------------

TAG = "tag"
CUSTOM_FIELD = "custom_field"
CLUSTER_TYPE = "cluster_type"
SITE = "site"
MANUFACTURER = "manufacturer"
DEVICE_ROLE = "device_role"
PLATFORM = "platform"
DEVICE_TYPE = "device_type"
CLUSTER = "cluster"
DEVICE = "device"
VM = "virtual_machine"
INTERFACE = "interface"
DISK = "virtual_disk"
MAC = "mac_address"
IP = "ip_address"

LEVEL: dict[str, int] = {
    TAG: 0,
    CUSTOM_FIELD: 0,
    CLUSTER_TYPE: 1,
    SITE: 1,
    MANUFACTURER: 1,
    DEVICE_ROLE: 1,
    PLATFORM: 1,
    DEVICE_TYPE: 2,
    CLUSTER: 2,
    DEVICE: 3,
    VM: 4,
    INTERFACE: 5,
    DISK: 5,
    MAC: 6,
    IP: 6,
}
KINDS: tuple[str, ...] = tuple(sorted(LEVEL, key=lambda k: (LEVEL[k], list(LEVEL).index(k))))

ENDPOINT: dict[str, str] = {
    TAG: "extras.tags",
    CUSTOM_FIELD: "extras.custom-fields",
    CLUSTER_TYPE: "virtualization.cluster-types",
    SITE: "dcim.sites",
    MANUFACTURER: "dcim.manufacturers",
    DEVICE_ROLE: "dcim.device-roles",
    PLATFORM: "dcim.platforms",
    DEVICE_TYPE: "dcim.device-types",
    CLUSTER: "virtualization.clusters",
    DEVICE: "dcim.devices",
    VM: "virtualization.virtual-machines",
    INTERFACE: "virtualization.interfaces",
    DISK: "virtualization.virtual-disks",
    MAC: "dcim.mac-addresses",
    IP: "ipam.ip-addresses",
}

# Shared vocabulary: looked up by slug (or name), created when missing, never updated or deleted, and used
# whether or not proxbox created it.
REFERENCE_KINDS = frozenset(
    {TAG, CUSTOM_FIELD, CLUSTER_TYPE, SITE, MANUFACTURER, DEVICE_ROLE, PLATFORM, DEVICE_TYPE}
)
# Objects proxbox owns (``proxbox`` tag): updated to match Proxmox; unowned ones are conflicts unless adopted.
OWNED_KINDS = frozenset({CLUSTER, DEVICE, VM, INTERFACE, DISK, MAC, IP})
CHILD_KINDS = frozenset({INTERFACE, DISK, MAC, IP})
TOP_KINDS = frozenset({CLUSTER, DEVICE, VM})  # reported one by one even when unchanged
TAGGABLE = frozenset(LEVEL) - {TAG, CUSTOM_FIELD}

# Foreign keys that may be left out when their target is unavailable (a conflict, a failed create). Any other
# unresolvable reference means the object itself cannot be written.
OPTIONAL_REFS = frozenset({"device", "primary_ip4", "primary_ip6", "primary_mac_address", "platform", "role"})

# ---- names proxbox uses in NetBox --------------------------------------------------------------------

OWNER_TAG = "proxbox"
ORPHAN_TAG = "proxbox-orphan"
OWNERSHIP_TAGS = frozenset({OWNER_TAG, ORPHAN_TAG})
MIRROR_MARK = "Proxmox VE tag (mirrored by proxbox)"
CF_VMID = "proxmox_vmid"
CF_NODE = "proxmox_node"
CF_ORPHANED = "proxbox_orphaned_since"


@attrs.frozen
class Ref:
    """A reference to another object by proxbox key (resolved to a NetBox id only when writing)."""

    kind: str
    key: Key

    def __str__(self) -> str:
        return f"{self.kind}:{'/'.join(str(k) for k in self.key)}"


@attrs.frozen
class Unknown:
    """A current foreign key to an object proxbox does not track (by NetBox id)."""

    kind: str
    id: int

    def __str__(self) -> str:
        return f"{self.kind}#{self.id}"


def show(value: Any) -> str:
    """A field value as a display string (plan JSON, ``changes`` of events)."""
    if value is None:
        return ""
    if isinstance(value, frozenset | set):
        return ",".join(sorted(str(v) for v in value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def jsonable(value: Any) -> Any:
    if isinstance(value, Ref | Unknown):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return value


def _freeze(fields: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    items = fields.items() if isinstance(fields, Mapping) else fields
    return tuple((k, v) for k, v in items)


class _Fields:
    fields: tuple[tuple[str, Any], ...]

    def get(self, name: str, default: Any = None) -> Any:
        for k, v in self.fields:
            if k == name:
                return v
        return default

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.fields)

    @property
    def field_map(self) -> dict[str, Any]:
        return dict(self.fields)

    def refs(self) -> Iterator[tuple[str, Ref]]:
        for k, v in self.fields:
            if isinstance(v, Ref):
                yield k, v


@attrs.frozen(kw_only=True)
class Desired(_Fields):
    """One object as Proxmox says it should be in NetBox.

    ``create_only`` names fields that are written when the object is created (or the NetBox value is empty)
    but never changed afterwards: the per-field "don't overwrite" switches and the ``when-undefined``
    primary-IP policy. ``alt_key`` is NetBox's own uniqueness key (e.g. cluster + lower-case name), used to
    find an unowned object in the way.
    """

    kind: str
    key: Key
    fields: tuple[tuple[str, Any], ...] = attrs.field(converter=_freeze)
    label: str
    cluster: str | None = None
    vmid: int | None = None
    parent: Ref | None = None
    alt_key: Key | None = None
    create_only: frozenset[str] = frozenset()

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.key)


@attrs.frozen(kw_only=True)
class Current(_Fields):
    """One object as NetBox has it, normalized like :class:`Desired`. ``key`` is None when the object has no
    proxbox identity (an unowned VM without ``proxmox_vmid``)."""

    kind: str
    id: int
    key: Key | None
    fields: tuple[tuple[str, Any], ...] = attrs.field(converter=_freeze)
    owned: bool = False
    label: str = ""
    alt_key: Key | None = None

    @property
    def tags(self) -> frozenset[str]:
        return self.get("tags") or frozenset()


@attrs.frozen(kw_only=True)
class DesiredState:
    """What the inventory maps to, plus what the orphan logic needs to know about the inventory."""

    objects: tuple[Desired, ...]
    clusters: frozenset[str]  # Proxmox clusters in scope (after filters) - what this run may touch
    complete_clusters: frozenset[str]  # clusters whose every node was fully discovered
    present_guests: frozenset[tuple[str, int]]  # every guest Proxmox listed (before filters)
    present_nodes: frozenset[tuple[str, str]]  # every node of clusters read (before filters)
    # VM keys whose config could not be read (children untouched) / whose addresses could not be read (no IP
    # is removed)
    children_unknown: frozenset[Key] = frozenset()
    ips_unknown: frozenset[Key] = frozenset()
    managed: frozenset[str] = frozenset()  # kinds this run converges (others are only created when needed)

    def by_kind(self, kind: str) -> list[Desired]:
        return [o for o in self.objects if o.kind == kind]


@attrs.frozen(kw_only=True)
class CurrentState:
    """NetBox as read at the start of the run, one list per kind."""

    objects: tuple[Current, ...]
    mirrored_tags: frozenset[str] = frozenset()  # slugs of tags proxbox created to mirror Proxmox tags

    def by_kind(self, kind: str) -> list[Current]:
        return [o for o in self.objects if o.kind == kind]
