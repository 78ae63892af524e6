"""Raw Proxmox VE API payloads → the typed values of :mod:`proxbox.proxmox.models`.

Pure functions, no I/O. Every foreign dict enters through a named constructor (``disk_from_api``,
``nic_from_api``, ``qemu_guest_from_api``...), never ``Cls(**row)``. Parsing is tolerant the way PVE is
loose: booleans come as 0/1, ``"1"`` or ``true``; numbers often come as strings; unknown keys are ignored;
a value that cannot be parsed becomes ``None`` instead of an exception (one odd guest never breaks a run).

Decisions worth knowing (also in docs/discovery.md):

- ``media=cdrom`` drives, ``unusedN`` (detached) volumes and volume ``none`` are not disks.
- ``efidisk0`` and ``tpmstate0`` ARE returned as disks (bus ``efidisk`` / ``tpmstate``): they occupy storage
  and PVE counts them in backups; the sync decides whether to show them.
- Guest-agent interfaces are matched to config NICs by MAC (case- and separator-insensitive). Interfaces
  whose MAC matches no NIC (``lo``, docker bridges, veths, VPN tunnels) are ignored: their addresses cannot
  be attributed to a NetBox interface. Loopback and link-local addresses on matched interfaces are kept,
  flagged.
- LXC addresses come from ``/interfaces`` when the container runs (matched by MAC, else by ``name=``), and
  from the static ``ip=``/``ip6=`` of ``netN`` for NICs the runtime view says nothing about.
- Cloud-init ``ipconfigN`` addresses are used only when the guest agent gave no addresses at all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from proxbox.proxmox.models import (
    Cluster,
    Disk,
    Guest,
    GuestKind,
    IpAddress,
    IpSource,
    Nic,
    Node,
    NodeInterface,
)

# ---------------------------------------------------------------------------------------- tolerant scalars

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def as_bool(value: Any, default: bool = False) -> bool:
    """0/1, "0"/"1", true/false, "yes"/"no" → bool; anything else → ``default``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return default


def as_int(value: Any) -> int | None:
    """An integer from an int, a float or a numeric string ("4096", "4096.0"); otherwise None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value else None  # NaN
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if number == number and abs(number) != float("inf") else None
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string (numbers are stringified); None for missing/empty/containers."""
    if value is None or isinstance(value, dict | list | tuple | bool):
        return None
    text = str(value).strip()
    return text or None


def split_tags(value: Any) -> tuple[str, ...]:
    """PVE tags: ``"prod;web"`` (also ``,`` or spaces); order kept, duplicates dropped."""
    text = as_str(value)
    if not text:
        return ()
    seen: dict[str, None] = {}
    for tag in re.split(r"[;,\s]+", text):
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


# ---------------------------------------------------------------------------------------- property strings


def split_property_string(text: str) -> list[tuple[str | None, str]]:
    """``"local-lvm:vm-100-disk-0,size=32G"`` → ``[(None, "local-lvm:vm-100-disk-0"), ("size", "32G")]``.

    A token without ``=`` has key None (PVE's "default key"). Values may be double-quoted to contain commas
    (``description="a, b"``), with backslash escapes inside the quotes.
    """
    tokens: list[tuple[str | None, str]] = []
    buf: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            _add_token(tokens, "".join(buf))
            buf = []
        else:
            buf.append(ch)
    _add_token(tokens, "".join(buf))
    return tokens


def _add_token(tokens: list[tuple[str | None, str]], raw: str) -> None:
    raw = raw.strip()
    if not raw:
        return
    key, sep, value = raw.partition("=")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", key.strip()):
        tokens.append((key.strip(), value.strip()))
    else:
        tokens.append((None, raw))


def property_dict(text: Any, default_key: str | None = None) -> dict[str, str]:
    """A property string as a dict; the bare first token lands under ``default_key`` (if given)."""
    source = as_str(text)
    if source is None:
        return {}
    out: dict[str, str] = {}
    for key, value in split_property_string(source):
        if key is None:
            if default_key is not None and default_key not in out:
                out[default_key] = value
        else:
            out.setdefault(key, value)
    return out


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(value: Any) -> int | None:
    """``"32G"`` → 34359738368; ``"528K"``, ``"1.5T"``, ``"4096"`` (bytes); missing/garbage → None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = as_str(value)
    if text is None:
        return None
    match = _SIZE_RE.match(text)
    if not match:
        return None
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def normalize_mac(value: Any) -> str | None:
    """Any common MAC spelling → ``"BC:24:11:5E:7A:01"``; None for garbage and the all-zero MAC."""
    text = as_str(value)
    if text is None:
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", text)
    if len(digits) != 12 or len(re.sub(r"[:\-.\s]", "", text)) != 12:
        return None
    if set(digits) == {"0"}:
        return None
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


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
    iface = ipaddress.ip_interface(f"{host}/{length}")
    return IpAddress(
        address=str(iface),
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


def _dedupe(ips: Iterable[IpAddress]) -> tuple[IpAddress, ...]:
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
    return _dedupe(ips), names


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
    return _dedupe(ips), covered


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
        ips = _dedupe(ip for ip in cloud_init if ip.nic in nic_names)

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
    ips = _dedupe([*runtime, *(ip for ip in static if ip.nic not in covered)])

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
