"""Guest devices from config keys and runtime views: disks, NICs and their IP addresses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proxbox.proxmox.models import Disk, IpAddress, IpSource, Nic
from proxbox.proxmox.parse.values import (
    as_bool,
    as_int,
    as_str,
    normalize_mac,
    parse_size,
    property_dict,
    split_property_string,
)

# ------------------------------------------------------------------------------------------------- disks

QEMU_DISK_KEY = re.compile(r"^(scsi|virtio|sata|ide|efidisk|tpmstate)(\d+)$")
LXC_DISK_KEY = re.compile(r"^(rootfs|mp)(\d*)$")


def _storage_of(volume: str) -> str | None:
    """``local-lvm:vm-100-disk-0`` → ``local-lvm``; absolute paths, devices and bind mounts → None."""
    if volume.startswith("/"):
        return None
    storage, sep, _ = volume.partition(":")
    return storage if sep and storage else None


def disk_from_api(key: str, value: Any) -> Disk | None:
    """A qemu disk entry (``scsi0``, ``virtio1``, ``ide2``, ``efidisk0``, ``tpmstate0``...) or None.

    None for non-disk keys, ``unusedN``, ``media=cdrom``, volume ``none`` and unparseable values.
    """
    match = QEMU_DISK_KEY.match(key)
    if not match:
        return None
    props = property_dict(value, default_key="file")
    volume = props.get("file") or props.get("volume")
    if not volume or volume == "none":
        return None
    if props.get("media", "disk").lower() == "cdrom":
        return None
    bus, index = match.group(1), int(match.group(2))
    return Disk(
        name=key,
        bus=bus,
        index=index,
        storage=_storage_of(volume),
        volume=volume,
        size_bytes=parse_size(props.get("size")),
    )


def lxc_disk_from_api(key: str, value: Any) -> Disk | None:
    """``rootfs`` or ``mpN`` (volume, bind mount or device); None for anything else (``unusedN`` too)."""
    match = LXC_DISK_KEY.match(key)
    if not match or (match.group(1) == "rootfs" and match.group(2)):
        return None
    bus = match.group(1)
    if bus == "mp" and not match.group(2):
        return None
    props = property_dict(value, default_key="volume")
    volume = props.get("volume")
    if not volume:
        return None
    mountpoint = "/" if bus == "rootfs" else props.get("mp")
    return Disk(
        name=key,
        bus=bus,
        index=int(match.group(2)) if match.group(2) else 0,
        storage=_storage_of(volume),
        volume=volume,
        size_bytes=parse_size(props.get("size")),
        mountpoint=mountpoint,
    )


# -------------------------------------------------------------------------------------------------- NICs

NET_KEY = re.compile(r"^net(\d+)$")
_NIC_OPTIONS = frozenset(
    {"bridge", "tag", "trunks", "firewall", "link_down", "mtu", "queues", "rate", "macaddr", "model"}
)


def _parse_trunks(value: Any) -> tuple[int, ...]:
    """``"10;20"`` → (10, 20); ranges ``"100-103"`` are expanded (bounded by VLAN ids)."""
    text = as_str(value)
    if not text:
        return ()
    out: list[int] = []
    for part in re.split(r"[;,\s]+", text):
        low, sep, high = part.partition("-")
        a, b = as_int(low), as_int(high) if sep else as_int(low)
        if a is None or b is None:
            continue
        out.extend(v for v in range(max(a, 0), min(b, 4094) + 1))
    return tuple(dict.fromkeys(out))


def nic_from_api(key: str, value: Any) -> Nic | None:
    """A qemu ``netN``: ``virtio=BC:24:11:5E:7A:01,bridge=vmbr0,tag=30``; legacy ``model=..,macaddr=..``."""
    match = NET_KEY.match(key)
    if not match:
        return None
    text = as_str(value)
    if text is None:
        return None
    model: str | None = None
    mac: str | None = None
    props: dict[str, str] = {}
    for position, (k, v) in enumerate(split_property_string(text)):
        if k is None:
            if position == 0:
                model = v  # "virtio" with no MAC (PVE generates one on start)
            continue
        if k in _NIC_OPTIONS:
            props.setdefault(k, v)
        elif position == 0 or model is None:
            model, mac = k, v  # MODEL=MAC, the current spelling
    model = props.get("model") or model or "unknown"
    mac = normalize_mac(props.get("macaddr") or mac)
    return Nic(
        name=key,
        index=int(match.group(1)),
        model=model,
        mac=mac,
        bridge=as_str(props.get("bridge")),
        vlan=as_int(props.get("tag")),
        trunks=_parse_trunks(props.get("trunks")),
        link_down=as_bool(props.get("link_down")),
        mtu=as_int(props.get("mtu")),
    )


def lxc_nic_from_api(key: str, value: Any) -> tuple[Nic, tuple[IpAddress, ...]] | None:
    """An LXC ``netN`` → the NIC and its static addresses (``ip=``/``ip6=`` CIDRs; dhcp/auto/manual: none)."""
    match = NET_KEY.match(key)
    if not match:
        return None
    props = property_dict(value)
    if not props:
        return None
    nic = Nic(
        name=key,
        index=int(match.group(1)),
        model=as_str(props.get("type")) or "veth",
        mac=normalize_mac(props.get("hwaddr")),
        bridge=as_str(props.get("bridge")),
        vlan=as_int(props.get("tag")),
        trunks=_parse_trunks(props.get("trunks")),
        link_down=as_bool(props.get("link_down")),
        mtu=as_int(props.get("mtu")),
        guest_name=as_str(props.get("name")),
    )
    ips = tuple(
        ip
        for ip in (
            ip_from_cidr(props.get("ip"), nic=key, source="lxc-config"),
            ip_from_cidr(props.get("ip6"), nic=key, source="lxc-config"),
        )
        if ip is not None
    )
    return nic, ips


# ----------------------------------------------------------------------------------------- IP addresses


def ip_from_parts(address: Any, prefix: Any, *, nic: str | None, source: IpSource) -> IpAddress | None:
    """An address plus prefix length → :class:`IpAddress` (interface form, e.g. ``10.30.0.21/24``).

    IPv6 zone ids (``fe80::1%eth0``) are dropped; a missing prefix means a host address (/32, /128).
    """
    text = as_str(address)
    if text is None:
        return None
    text = text.split("%", 1)[0]
    try:
        host = ipaddress.ip_address(text)
    except ValueError:
        return None
    length = as_int(prefix)
    if length is None or not 0 <= length <= host.max_prefixlen:
        length = host.max_prefixlen
    return IpAddress(
        address=f"{host}/{length}",  # what str(ip_interface(...)) gives, without building it
        family=4 if host.version == 4 else 6,
        nic=nic,
        source=source,
        loopback=host.is_loopback,
        link_local=host.is_link_local,
    )


def ip_from_cidr(value: Any, *, nic: str | None, source: IpSource) -> IpAddress | None:
    """``"10.30.0.53/24"`` → IpAddress; ``dhcp``/``auto``/``manual``/garbage → None."""
    text = as_str(value)
    if text is None or text.lower() in ("dhcp", "auto", "manual", "static"):
        return None
    address, _, prefix = text.partition("/")
    return ip_from_parts(address, prefix or None, nic=nic, source=source)


IPCONFIG_KEY = re.compile(r"^ipconfig(\d+)$")


def ips_from_ipconfig(key: str, value: Any) -> tuple[IpAddress, ...]:
    """Cloud-init ``ipconfigN: ip=10.30.0.21/24,gw=10.30.0.1,ip6=auto`` → the static addresses of ``netN``."""
    match = IPCONFIG_KEY.match(key)
    if not match:
        return ()
    nic = f"net{match.group(1)}"
    props = property_dict(value)
    ips = (
        ip_from_cidr(props.get("ip"), nic=nic, source="cloud-init"),
        ip_from_cidr(props.get("ip6"), nic=nic, source="cloud-init"),
    )
    return tuple(ip for ip in ips if ip is not None)


def dedupe_ips(ips: Iterable[IpAddress]) -> tuple[IpAddress, ...]:
    seen: dict[tuple[str | None, str], IpAddress] = {}
    for ip in ips:
        seen.setdefault((ip.nic, ip.address), ip)
    return tuple(seen.values())


def _nic_by_mac(nics: Sequence[Nic]) -> dict[str, Nic]:
    return {nic.mac: nic for nic in nics if nic.mac}


def agent_interfaces(payload: Any) -> list[Mapping[str, Any]]:
    """The interface list from ``agent/network-get-interfaces`` (``{"result": [...]}`` or a bare list)."""
    if isinstance(payload, Mapping):
        payload = payload.get("result")
    if not isinstance(payload, list):
        return []
    return [row for row in payload if isinstance(row, Mapping)]


def ips_from_agent(payload: Any, nics: Sequence[Nic]) -> tuple[tuple[IpAddress, ...], dict[str, str]]:
    """Guest-agent addresses attributed to config NICs by MAC.

    Returns the addresses and ``{nic name: agent interface name}`` for matched interfaces. Interfaces with no
    MAC, or a MAC that no NIC has, are ignored (see the module docstring).
    """
    by_mac = _nic_by_mac(nics)
    ips: list[IpAddress] = []
    names: dict[str, str] = {}
    for row in agent_interfaces(payload):
        nic = by_mac.get(normalize_mac(row.get("hardware-address")) or "")
        if nic is None:
            continue
        name = as_str(row.get("name"))
        if name and nic.name not in names:
            names[nic.name] = name
        addresses = row.get("ip-addresses")
        for entry in addresses if isinstance(addresses, list) else ():
            if isinstance(entry, Mapping):
                ip = ip_from_parts(entry.get("ip-address"), entry.get("prefix"), nic=nic.name, source="agent")
                if ip is not None:
                    ips.append(ip)
    return dedupe_ips(ips), names


def ips_from_lxc_interfaces(payload: Any, nics: Sequence[Nic]) -> tuple[tuple[IpAddress, ...], set[str]]:
    """``GET …/lxc/{id}/interfaces`` (PVE 9 ``hardware-address``/``ip-addresses``, or the older
    ``hwaddr``/``inet``/``inet6``) → addresses attributed by MAC, else by name (the NIC's ``name=``).

    Returns the addresses and the names of the NICs the runtime view covered (even with no address).
    """
    if not isinstance(payload, list):
        return (), set()
    by_mac = _nic_by_mac(nics)
    by_name = {nic.guest_name: nic for nic in nics if nic.guest_name}
    ips: list[IpAddress] = []
    covered: set[str] = set()
    for row in payload:
        if not isinstance(row, Mapping):
            continue
        mac = normalize_mac(row.get("hardware-address")) or normalize_mac(row.get("hwaddr"))
        nic = by_mac.get(mac or "") or by_name.get(as_str(row.get("name")) or "")
        if nic is None:
            continue
        covered.add(nic.name)
        addresses = row.get("ip-addresses")
        if isinstance(addresses, list):
            for entry in addresses:
                if isinstance(entry, Mapping):
                    ip = ip_from_parts(
                        entry.get("ip-address"), entry.get("prefix"), nic=nic.name, source="lxc-interfaces"
                    )
                    if ip is not None:
                        ips.append(ip)
        else:
            for field in ("inet", "inet6"):
                for cidr in re.split(r"[\s,]+", as_str(row.get(field)) or ""):
                    ip = ip_from_cidr(cidr, nic=nic.name, source="lxc-interfaces") if cidr else None
                    if ip is not None:
                        ips.append(ip)
    return dedupe_ips(ips), covered
