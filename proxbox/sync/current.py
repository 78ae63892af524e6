"""Pure: NetBox API rows → :class:`~proxbox.sync.model.Current` values, normalized like the desired ones.

Also the read plan: which endpoint, filters and ``fields=`` each kind is read with (the engine runs them;
nothing here does I/O).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from proxbox.sync.mapping import ip_value, mac_value
from proxbox.sync.model import (
    CF_NODE,
    CF_ORPHANED,
    CF_VMID,
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
    OWNER_TAG,
    PLATFORM,
    SITE,
    TAG,
    VM,
    Current,
    CurrentState,
    Key,
    Ref,
    Unknown,
)

Row = Mapping[str, Any]

# ---- what to read --------------------------------------------------------------------------------------

FIELDS: dict[str, tuple[str, ...]] = {
    TAG: ("id", "name", "slug", "color", "description"),
    CUSTOM_FIELD: ("id", "name"),
    CLUSTER_TYPE: ("id", "name", "slug"),
    SITE: ("id", "name", "slug"),
    MANUFACTURER: ("id", "name", "slug"),
    DEVICE_ROLE: ("id", "name", "slug"),
    PLATFORM: ("id", "name", "slug"),
    DEVICE_TYPE: ("id", "model", "slug", "manufacturer"),
    CLUSTER: ("id", "name", "type", "scope_type", "scope_id", "status", "tags"),
    DEVICE: (
        "id", "name", "site", "cluster", "role", "device_type", "status", "serial", "description", "tags",
        "custom_fields",
    ),
    VM: (
        "id", "name", "status", "cluster", "device", "site", "vcpus", "memory", "start_on_boot", "role",
        "platform", "description", "tags", "custom_fields", "primary_ip4", "primary_ip6",
    ),
    INTERFACE: (
        "id", "name", "virtual_machine", "enabled", "mtu", "mode", "description", "primary_mac_address",
        "tags",
    ),
    DISK: ("id", "name", "virtual_machine", "size", "description", "tags"),
    MAC: ("id", "mac_address", "assigned_object_type", "assigned_object_id", "tags"),
    IP: ("id", "address", "status", "assigned_object_type", "assigned_object_id", "tags"),
}  # fmt: skip


@attrs.frozen(kw_only=True)
class Read:
    kind: str
    filters: tuple[tuple[str, Any], ...]


def reads_first(custom_field_names: Sequence[str], cluster_names: Sequence[str]) -> list[Read]:
    """Round one: the shared vocabulary and the clusters (their ids scope round two)."""
    reads = [
        Read(kind=TAG, filters=()),
        Read(kind=CUSTOM_FIELD, filters=(("name", list(custom_field_names)),)),
        Read(kind=CLUSTER_TYPE, filters=()),
        Read(kind=SITE, filters=()),
        Read(kind=MANUFACTURER, filters=()),
        Read(kind=DEVICE_ROLE, filters=()),
        Read(kind=PLATFORM, filters=()),
        Read(kind=DEVICE_TYPE, filters=()),
    ]
    if cluster_names:
        reads.append(Read(kind=CLUSTER, filters=(("name", list(cluster_names)),)))
    return reads


def reads_second(cluster_ids: Sequence[int], kinds: frozenset[str]) -> list[Read]:
    """Round two, scoped: everything in our clusters (owned or not: conflicts and adoption need to see them),
    and the owned children (by tag)."""
    if not cluster_ids:
        return []
    ids = sorted(cluster_ids)
    reads = []
    if DEVICE in kinds:
        reads.append(Read(kind=DEVICE, filters=(("cluster_id", ids),)))
    if VM in kinds:
        reads.append(Read(kind=VM, filters=(("cluster_id", ids),)))
    if INTERFACE in kinds:
        reads.append(Read(kind=INTERFACE, filters=(("cluster_id", ids),)))
    if DISK in kinds:
        reads.append(Read(kind=DISK, filters=(("tag", OWNER_TAG),)))
    if MAC in kinds:
        reads.append(
            Read(
                kind=MAC, filters=(("tag", OWNER_TAG), ("assigned_object_type", "virtualization.vminterface"))
            )
        )
    if IP in kinds:
        reads.append(Read(kind=IP, filters=(("tag", OWNER_TAG),)))
    return reads


# ---- normalizers -----------------------------------------------------------------------------------------


def _id(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, int) else None


def _choice(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("value")
    return value


def _tags(row: Row) -> frozenset[str]:
    return frozenset(
        str(t["slug"]) for t in row.get("tags") or () if isinstance(t, Mapping) and t.get("slug")
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _blank_none(value: Any) -> Any:
    return None if value in ("", None) else value


def decimal2(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return f"{Decimal(str(value)).quantize(Decimal('0.01'))}"
    except InvalidOperation:
        return str(value)


def _cf(row: Row, name: str) -> Any:
    cfs = row.get("custom_fields")
    return cfs.get(name) if isinstance(cfs, Mapping) else None


def _slug_of(value: Any) -> str | None:
    return value.get("slug") if isinstance(value, Mapping) else None


@attrs.define
class _Index:
    """id → key per kind, filled in dependency order."""

    keys: dict[str, dict[int, Key]] = attrs.Factory(dict)

    def put(self, kind: str, id_: int, key: Key | None) -> None:
        if key is not None:
            self.keys.setdefault(kind, {})[id_] = key

    def key(self, kind: str, id_: int | None) -> Key | None:
        if id_ is None:
            return None
        return self.keys.get(kind, {}).get(id_)

    def ref(self, kind: str, value: Any) -> Ref | Unknown | None:
        id_ = _id(value)
        if id_ is None:
            return None
        key = self.key(kind, id_)
        return Ref(kind, key) if key is not None else Unknown(kind, id_)


def _named(kind: str, row: Row) -> Current:
    name = _text(row.get("name"))
    return Current(
        kind=kind,
        id=row["id"],
        key=(row.get("slug"),),
        label=name,
        alt_key=(name.lower(),),
        fields={"name": name, "slug": row.get("slug")},
    )


def build_current(rows: Mapping[str, Sequence[Row]]) -> CurrentState:
    """Normalize every row read from NetBox. ``rows`` maps kind → rows (missing kinds: nothing read)."""
    idx = _Index()
    out: list[Current] = []

    def keep(obj: Current) -> Current:
        idx.put(obj.kind, obj.id, obj.key)
        out.append(obj)
        return obj

    mirrored: set[str] = set()
    for row in rows.get(TAG, ()):
        name = _text(row.get("name"))
        if _text(row.get("description")) == MIRROR_MARK:
            mirrored.add(str(row.get("slug")))
        keep(
            Current(
                kind=TAG,
                id=row["id"],
                key=(row.get("slug"),),
                label=name,
                alt_key=(name.lower(),),
                fields={"name": name, "slug": row.get("slug")},
            )
        )
    for row in rows.get(CUSTOM_FIELD, ()):
        keep(
            Current(
                kind=CUSTOM_FIELD,
                id=row["id"],
                key=(row.get("name"),),
                label=_text(row.get("name")),
                fields={},
            )
        )
    for kind in (CLUSTER_TYPE, SITE, MANUFACTURER, DEVICE_ROLE, PLATFORM):
        for row in rows.get(kind, ()):
            keep(_named(kind, row))
    for row in rows.get(DEVICE_TYPE, ()):
        mslug = _slug_of(row.get("manufacturer"))
        model = _text(row.get("model"))
        keep(
            Current(
                kind=DEVICE_TYPE,
                id=row["id"],
                key=(mslug, row.get("slug")),
                label=model,
                alt_key=(mslug, model.lower()),
                fields={},
            )
        )

    cluster_names: dict[int, str] = {}
    for row in rows.get(CLUSTER, ()):
        name = _text(row.get("name"))
        cluster_names[row["id"]] = name
        tags = _tags(row)
        scope = idx.ref(SITE, row.get("scope_id")) if row.get("scope_type") == "dcim.site" else None
        if row.get("scope_type") not in (None, "dcim.site"):
            scope = Unknown(str(row.get("scope_type")), int(row.get("scope_id") or 0))
        keep(
            Current(
                kind=CLUSTER,
                id=row["id"],
                key=(name,),
                label=name,
                owned=OWNER_TAG in tags,
                fields={
                    "name": name,
                    "type": idx.ref(CLUSTER_TYPE, row.get("type")),
                    "scope_type": row.get("scope_type"),
                    "scope_id": scope,
                    "status": _choice(row.get("status")),
                    "tags": tags,
                },
            )
        )

    def cluster_of(row: Row) -> str | None:
        return cluster_names.get(_id(row.get("cluster")))  # type: ignore[arg-type]

    # keys first (children's keys hang off their parents'), fields in a second pass (VMs point at IPs)
    device_rows = list(rows.get(DEVICE, ()))
    for row in device_rows:
        cname, node = cluster_of(row), _cf(row, CF_NODE)
        idx.put(DEVICE, row["id"], (cname, node) if cname and node else None)
    vm_rows = list(rows.get(VM, ()))
    for row in vm_rows:
        cname, vmid = cluster_of(row), _cf(row, CF_VMID)
        idx.put(VM, row["id"], (cname, vmid) if cname and isinstance(vmid, int) else None)
    iface_rows = list(rows.get(INTERFACE, ()))
    for row in iface_rows:
        vm_key = idx.key(VM, _id(row.get("virtual_machine")))
        idx.put(INTERFACE, row["id"], (*vm_key, row.get("name")) if vm_key else None)
    mac_rows = [r for r in rows.get(MAC, ()) if r.get("assigned_object_type") == "virtualization.vminterface"]
    for row in mac_rows:
        idx.put(MAC, row["id"], idx.key(INTERFACE, row.get("assigned_object_id")))
    ip_rows = [r for r in rows.get(IP, ()) if r.get("assigned_object_type") == "virtualization.vminterface"]
    for row in ip_rows:
        iface_key = idx.key(INTERFACE, row.get("assigned_object_id"))
        address = ip_value(_text(row.get("address")))
        idx.put(IP, row["id"], (*iface_key, address) if iface_key and address else None)

    for row in device_rows:
        tags = _tags(row)
        name = _text(row.get("name"))
        site = row.get("site")
        out.append(
            Current(
                kind=DEVICE,
                id=row["id"],
                key=idx.key(DEVICE, row["id"]),
                label=name,
                owned=OWNER_TAG in tags,
                alt_key=(_slug_of(site), name.lower()),
                fields={
                    "name": name,
                    "site": idx.ref(SITE, site),
                    "cluster": idx.ref(CLUSTER, row.get("cluster")),
                    "role": idx.ref(DEVICE_ROLE, row.get("role")),
                    "device_type": idx.ref(DEVICE_TYPE, row.get("device_type")),
                    "status": _choice(row.get("status")),
                    "serial": _text(row.get("serial")),
                    "description": _text(row.get("description")),
                    "tags": tags,
                    f"cf.{CF_NODE}": _cf(row, CF_NODE),
                    f"cf.{CF_ORPHANED}": _cf(row, CF_ORPHANED),
                },
            )
        )
    for row in vm_rows:
        tags = _tags(row)
        name = _text(row.get("name"))
        cname = cluster_of(row)
        out.append(
            Current(
                kind=VM,
                id=row["id"],
                key=idx.key(VM, row["id"]),
                label=name,
                owned=OWNER_TAG in tags,
                alt_key=(cname, name.lower()) if cname else None,
                fields={
                    "name": name,
                    "status": _choice(row.get("status")),
                    "cluster": idx.ref(CLUSTER, row.get("cluster")),
                    "device": idx.ref(DEVICE, row.get("device")),
                    "site": idx.ref(SITE, row.get("site")),
                    "vcpus": decimal2(row.get("vcpus")),
                    "memory": row.get("memory"),
                    "start_on_boot": _choice(row.get("start_on_boot")),
                    "role": idx.ref(DEVICE_ROLE, row.get("role")),
                    "platform": idx.ref(PLATFORM, row.get("platform")),
                    "description": _text(row.get("description")),
                    "tags": tags,
                    f"cf.{CF_VMID}": _cf(row, CF_VMID),
                    f"cf.{CF_ORPHANED}": _cf(row, CF_ORPHANED),
                    "primary_ip4": idx.ref(IP, row.get("primary_ip4")),
                    "primary_ip6": idx.ref(IP, row.get("primary_ip6")),
                },
            )
        )
    for row in iface_rows:
        tags = _tags(row)
        key = idx.key(INTERFACE, row["id"])
        out.append(
            Current(
                kind=INTERFACE,
                id=row["id"],
                key=key,
                label=_text(row.get("name")),
                owned=OWNER_TAG in tags,
                alt_key=key,
                fields={
                    "virtual_machine": idx.ref(VM, row.get("virtual_machine")),
                    "name": row.get("name"),
                    "enabled": row.get("enabled"),
                    "mtu": row.get("mtu"),
                    "mode": _blank_none(_choice(row.get("mode"))),
                    "description": _text(row.get("description")),
                    "primary_mac_address": idx.ref(MAC, row.get("primary_mac_address")),
                    "tags": tags,
                },
            )
        )
    for row in rows.get(DISK, ()):
        tags = _tags(row)
        vm_key = idx.key(VM, _id(row.get("virtual_machine")))
        out.append(
            Current(
                kind=DISK,
                id=row["id"],
                key=(*vm_key, row.get("name")) if vm_key else None,
                label=_text(row.get("name")),
                owned=OWNER_TAG in tags,
                fields={
                    "virtual_machine": idx.ref(VM, row.get("virtual_machine")),
                    "name": row.get("name"),
                    "size": row.get("size"),
                    "description": _text(row.get("description")),
                    "tags": tags,
                },
            )
        )
    for row in mac_rows:
        tags = _tags(row)
        mac = mac_value(_text(row.get("mac_address")))
        out.append(
            Current(
                kind=MAC,
                id=row["id"],
                key=idx.key(MAC, row["id"]),
                label=mac or "",
                owned=OWNER_TAG in tags,
                fields={
                    "mac_address": mac,
                    "assigned_object_type": row.get("assigned_object_type"),
                    "assigned_object_id": idx.ref(INTERFACE, row.get("assigned_object_id")),
                    "tags": tags,
                },
            )
        )
    for row in ip_rows:
        tags = _tags(row)
        address = ip_value(_text(row.get("address")))
        out.append(
            Current(
                kind=IP,
                id=row["id"],
                key=idx.key(IP, row["id"]),
                label=address or "",
                owned=OWNER_TAG in tags,
                fields={
                    "address": address,
                    "status": _choice(row.get("status")),
                    "assigned_object_type": row.get("assigned_object_type"),
                    "assigned_object_id": idx.ref(INTERFACE, row.get("assigned_object_id")),
                    "tags": tags,
                },
            )
        )
    return CurrentState(objects=tuple(out), mirrored_tags=frozenset(mirrored))
