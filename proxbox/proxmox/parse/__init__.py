"""Raw Proxmox VE API payloads → the typed values of :mod:`proxbox.proxmox.models`.

Pure functions, no I/O, in three modules: :mod:`.values` (tolerant scalars, property strings, sizes,
MACs), :mod:`.devices` (disks, NICs, IP addresses) and :mod:`.inventory` (guests, nodes, cluster); the
public names are re-exported here. Every foreign dict enters through a named constructor (``disk_from_api``,
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

from proxbox.proxmox.parse.devices import (
    agent_interfaces,
    dedupe_ips,
    disk_from_api,
    ip_from_cidr,
    ip_from_parts,
    ips_from_agent,
    ips_from_ipconfig,
    ips_from_lxc_interfaces,
    lxc_disk_from_api,
    lxc_nic_from_api,
    nic_from_api,
)
from proxbox.proxmox.parse.inventory import (
    agent_enabled,
    cluster_from_api,
    guest_from_api,
    guest_kind,
    lxc_guest_from_api,
    node_from_api,
    node_interface_from_api,
    pve_version_of,
    qemu_guest_from_api,
)
from proxbox.proxmox.parse.values import (
    as_bool,
    as_float,
    as_int,
    as_str,
    normalize_mac,
    parse_size,
    property_dict,
    split_property_string,
    split_tags,
)

__all__ = [
    "agent_enabled",
    "agent_interfaces",
    "as_bool",
    "as_float",
    "as_int",
    "as_str",
    "cluster_from_api",
    "dedupe_ips",
    "disk_from_api",
    "guest_from_api",
    "guest_kind",
    "ip_from_cidr",
    "ip_from_parts",
    "ips_from_agent",
    "ips_from_ipconfig",
    "ips_from_lxc_interfaces",
    "lxc_disk_from_api",
    "lxc_guest_from_api",
    "lxc_nic_from_api",
    "nic_from_api",
    "node_from_api",
    "node_interface_from_api",
    "normalize_mac",
    "parse_size",
    "property_dict",
    "pve_version_of",
    "qemu_guest_from_api",
    "split_property_string",
    "split_tags",
]
