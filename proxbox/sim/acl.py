"""A simple ACL for the simulator's principal: what PVE's permission system does to a sync, without roles.

PVE checks a privilege on an object path (``/vms/100``, ``/nodes/pve1``, ``/storage/local``, ``/``); an ACL
entry on a path propagates to the paths below it, and the most specific entry wins. What a sync sees of that:

- a per-object call without the privilege is a **403** ``Permission check failed (/vms/100, VM.Audit)``;
- list endpoints (``/cluster/resources``, ``/nodes/{n}/qemu``, ``/nodes/{n}/lxc``) **silently leave out** what
  the caller may not see — the dangerous case for a sync, where a hidden guest looks deleted;
- ``GET /access/permissions`` tells the caller its own effective privileges, path by path.

No ACL (``None``) means full access, as for ``root@pam``. ``parse_acl("/=Sys.Audit;/vms=VM.Audit")`` reads the
``--acl`` form: ``path=Priv[,Priv...]`` entries separated by ``;``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from proxbox.sim.render_guest import PveError

ALL_PRIVILEGES = (
    "Sys.Audit",
    "VM.Audit",
    "VM.GuestAgent.Audit",
    "Datastore.Audit",
    "Pool.Audit",
    "SDN.Audit",
)


def _normalize(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts)


@attrs.frozen
class Acl:
    """Path → privileges; the most specific entry that is a prefix (by path component) of a path applies."""

    entries: Mapping[str, frozenset[str]] = attrs.field(
        converter=lambda e: {_normalize(k): frozenset(v) for k, v in dict(e).items()}
    )

    def privileges(self, path: str) -> frozenset[str]:
        path = _normalize(path)
        while True:
            found = self.entries.get(path)
            if found is not None:
                return found
            if path == "/":
                return frozenset()
            path = path.rsplit("/", 1)[0] or "/"

    def allows(self, path: str, privilege: str) -> bool:
        return privilege in self.privileges(path)

    def check(self, path: str, privilege: str) -> None:
        """PVE's 403 for a per-object call without the privilege."""
        if not self.allows(path, privilege):
            raise PveError(403, f"Permission check failed ({_normalize(path)}, {privilege})")

    def as_permissions(self) -> dict[str, dict[str, int]]:
        """``GET /access/permissions``: effective privileges at every path with an entry (1 = propagated)."""
        return {path: {p: 1 for p in sorted(privs)} for path, privs in sorted(self.entries.items())}

    def as_text(self) -> str:
        return ";".join(f"{path}={','.join(sorted(privs))}" for path, privs in sorted(self.entries.items()))


def parse_acl(text: str) -> Acl:
    """``"/=Sys.Audit;/vms=VM.Audit,VM.GuestAgent.Audit;/vms/105="`` (an empty list: nothing there)."""
    entries: dict[str, set[str]] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        path, sep, privs = item.partition("=")
        if not sep or not path.startswith("/"):
            raise ValueError(f"ACL entry must look like /path=Priv[,Priv], got {item!r}")
        names = {p.strip() for p in privs.split(",") if p.strip()}
        unknown = names - set(ALL_PRIVILEGES)
        if unknown:
            raise ValueError(f"unknown privilege(s) {sorted(unknown)} (known: {', '.join(ALL_PRIVILEGES)})")
        entries[_normalize(path)] = names
    if not entries:
        raise ValueError("an ACL needs at least one entry")
    return Acl({k: frozenset(v) for k, v in entries.items()})


FULL_PERMISSIONS = Acl({"/": frozenset(ALL_PRIVILEGES)})


# --------------------------------------------------------------------------------- applied to routes

GUEST_PREFIXES = ("/nodes/{node}/qemu/{vmid}", "/nodes/{node}/lxc/{vmid}")
NODE_CHECKED = ("/nodes/{node}/status", "/nodes/{node}/network")
FILTERED_LISTS = ("/nodes/{node}/qemu", "/nodes/{node}/lxc")


def check_route(acl: Acl, template: str, match: Mapping[str, str]) -> None:
    """The privilege a route needs on its object, as PVE checks it (403 when missing)."""
    if template.startswith(GUEST_PREFIXES):
        vm_path = f"/vms/{match['vmid']}"
        acl.check(vm_path, "VM.Audit")
        if "/agent/" in template:
            acl.check(vm_path, "VM.GuestAgent.Audit")
    elif template in NODE_CHECKED:
        acl.check(f"/nodes/{match['node']}", "Sys.Audit")
    elif template == "/cluster/status":
        acl.check("/", "Sys.Audit")
    elif template.startswith("/nodes/{node}/storage/{storage}"):
        acl.check(f"/storage/{match['storage']}", "Datastore.Audit")


def _row_visible(acl: Acl, row: Mapping[str, Any]) -> bool:
    kind = row.get("type")
    if kind in ("qemu", "lxc") or ("vmid" in row and kind is None):
        return acl.allows(f"/vms/{row.get('vmid')}", "VM.Audit")
    if kind == "node":
        return acl.allows(f"/nodes/{row.get('node')}", "Sys.Audit")
    if kind == "storage":
        return acl.allows(f"/storage/{row.get('storage')}", "Datastore.Audit")
    return True


def filter_rows(acl: Acl, template: str, payload: Any) -> Any:
    """List endpoints leave out, without a word, the rows the caller may not see."""
    if template != "/cluster/resources" and template not in FILTERED_LISTS:
        return payload
    if not isinstance(payload, list):
        return payload
    rows: Iterable[Any] = payload
    return [row for row in rows if not isinstance(row, Mapping) or _row_visible(acl, row)]
