"""Pure planning: desired vs current → ordered actions. The plan is data; it is also the dry-run JSON.

Execution order (the applier follows it phase by phase):

1. **deletions**, children before parents: stale owned children of VMs that were read completely (a removed
   ``net1``, an address the guest no longer has) and pruned orphans. Children of a deleted object are not
   listed: NetBox deletes them with their parent. Deleting first frees names and addresses for the creates.
2. **creations**, parents before children (tags, custom fields, sites… → clusters → devices → VMs →
   interfaces, disks → MAC and IP addresses). A create carries every field except references to objects of
   its own or a later level (a VM's primary IP, an interface's primary MAC): those follow as an update.
3. **updates**, in the same order: changed fields only, each with old → new; orphan tagging; adoption.

Rules: reference kinds (tags, custom fields, cluster type, sites, manufacturer, device type, roles,
platforms) are matched by slug or name and never changed. Owned kinds are changed only when they carry the
``proxbox`` tag; an unowned object in the way is adopted when ``adopt_unowned`` is on, else it is a conflict
(reported, never touched; objects that depend on it are skipped). An unowned cluster with the right name is
used as it is. Tags merge: tags proxbox does not manage (user tags) are kept.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from proxbox.config import SyncSettings
from proxbox.sync.model import (
    CF_ORPHANED,
    CHILD_KINDS,
    CLUSTER,
    DEVICE,
    INTERFACE,
    IP,
    KINDS,
    LEVEL,
    MAC,
    OPTIONAL_REFS,
    ORPHAN_TAG,
    OWNED_KINDS,
    OWNER_TAG,
    OWNERSHIP_TAGS,
    REFERENCE_KINDS,
    TAG,
    TOP_KINDS,
    VM,
    Current,
    CurrentState,
    Desired,
    DesiredState,
    Key,
    Ref,
    Unknown,
    jsonable,
    show,
)
from proxbox.sync.orphans import decide_orphans

Op = Literal["create", "update", "delete"]
EventAction = Literal["created", "updated", "deleted", "orphaned", "adopted"]


@attrs.frozen(kw_only=True)
class Change:
    field: str
    old: Any
    new: Any

    def as_strings(self) -> tuple[str, str, str]:
        return (self.field, show(self.old), show(self.new))


@attrs.frozen(kw_only=True)
class Action:
    op: Op
    kind: str
    key: Key
    label: str
    event: EventAction
    cluster: str | None = None
    vmid: int | None = None
    netbox_id: int | None = None
    fields: tuple[tuple[str, Any], ...] = ()  # create: all fields to send; update: the new values
    changes: tuple[Change, ...] = ()
    parent: Ref | None = None
    reason: str = ""

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.key)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "op": self.op,
            "event": self.event,
            "kind": self.kind,
            "key": [jsonable(k) for k in self.key],
            "name": self.label,
        }
        if self.cluster is not None:
            out["cluster"] = self.cluster
        if self.vmid is not None:
            out["vmid"] = self.vmid
        if self.netbox_id is not None:
            out["netbox_id"] = self.netbox_id
        if self.op == "create":
            out["fields"] = {k: jsonable(v) for k, v in self.fields}
        if self.changes:
            out["changes"] = [
                {"field": c.field, "old": jsonable(c.old), "new": jsonable(c.new)} for c in self.changes
            ]
        if self.reason:
            out["reason"] = self.reason
        return out


@attrs.frozen(kw_only=True)
class Unchanged:
    kind: str
    key: Key
    label: str
    netbox_id: int
    cluster: str | None = None
    vmid: int | None = None


@attrs.frozen(kw_only=True)
class Conflict:
    """An unowned NetBox object where proxbox would put one of its own (set ``adopt_unowned`` to take it)."""

    kind: str
    key: Key
    label: str
    netbox_id: int
    detail: str
    cluster: str | None = None
    vmid: int | None = None


@attrs.frozen(kw_only=True)
class Plan:
    deletions: tuple[Action, ...] = ()
    creations: tuple[Action, ...] = ()
    updates: tuple[Action, ...] = ()
    unchanged: tuple[Unchanged, ...] = ()  # clusters, devices and VMs with nothing to write
    unchanged_counts: tuple[tuple[str, int], ...] = ()  # every kind
    conflicts: tuple[Conflict, ...] = ()
    skipped: int = 0  # objects not planned because something they depend on is a conflict
    notes: tuple[str, ...] = ()
    ids: tuple[tuple[str, Key, int], ...] = ()  # NetBox ids of the matched objects, for resolving references

    @property
    def actions(self) -> tuple[Action, ...]:
        return (*self.deletions, *self.creations, *self.updates)

    @property
    def writes(self) -> int:
        return len(self.deletions) + len(self.creations) + len(self.updates)

    def id_map(self) -> dict[tuple[str, Key], int]:
        return {(kind, key): id_ for kind, key, id_ in self.ids}

    def summary(self) -> dict[str, Any]:
        def count(actions: Iterable[Action]) -> dict[str, int]:
            return dict(sorted(Counter(a.kind for a in actions).items()))

        return {
            "delete": count(self.deletions),
            "create": count(self.creations),
            "update": count(self.updates),
            "unchanged": dict(self.unchanged_counts),
            "conflicts": len(self.conflicts),
            "skipped": self.skipped,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "actions": [a.as_json() for a in self.actions],
            "conflicts": [
                {"kind": c.kind, "key": [jsonable(k) for k in c.key], "name": c.label,
                 "netbox_id": c.netbox_id, "detail": c.detail}
                for c in self.conflicts
            ],
            "notes": list(self.notes),
        }  # fmt: skip


# ------------------------------------------------------------------------------------------------ helpers


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == frozenset()


def merge_tags(
    have: frozenset[str], want: frozenset[str], managed: frozenset[str], *, mirrors_create_only: bool
) -> frozenset[str]:
    """The tag set to write: tags proxbox manages converge to ``want``; any other tag (a user's) is kept."""
    if mirrors_create_only:
        return (have - (OWNERSHIP_TAGS - want)) | (want & OWNERSHIP_TAGS)
    return (have - managed) | want


def _suffix(d: Desired) -> str:
    name = d.get("name")
    if d.kind == VM:
        return f"{name} ({d.vmid})"
    return f"{name} ({d.cluster})"


@attrs.define
class _Planner:
    desired: DesiredState
    current: CurrentState
    sync: SyncSettings
    today: dt.date
    ids: dict[tuple[str, Key], int] = attrs.Factory(dict)
    canon: dict[tuple[str, Key], Key] = attrs.Factory(dict)  # current key → desired key (matched by name)
    unavailable: set[tuple[str, Key]] = attrs.Factory(set)  # conflicts and what depends on them
    deleted: set[tuple[str, Key]] = attrs.Factory(set)
    deletions: list[Action] = attrs.Factory(list)
    creations: list[Action] = attrs.Factory(list)
    updates: list[Action] = attrs.Factory(list)
    unchanged: list[Unchanged] = attrs.Factory(list)
    unchanged_counts: Counter[str] = attrs.Factory(Counter)
    conflicts: list[Conflict] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    skipped: int = 0
    managed_tags: frozenset[str] = frozenset()

    def run(self) -> Plan:
        desired_mirrors = {o.key[0] for o in self.desired.by_kind(TAG)} - OWNERSHIP_TAGS
        self.managed_tags = OWNERSHIP_TAGS | self.current.mirrored_tags | desired_mirrors
        current_by_kind: dict[str, list[Current]] = defaultdict(list)
        for obj in self.current.objects:
            current_by_kind[obj.kind].append(obj)
        desired_by_kind: dict[str, list[Desired]] = defaultdict(list)
        for d in self.desired.objects:
            desired_by_kind[d.kind].append(d)

        # match every kind first: deletions need the full picture before anything is compared
        pairs: dict[str, list[tuple[Desired, Current | None]]] = {}
        leftovers: dict[str, list[Current]] = {}
        for kind in KINDS:
            pairs[kind], leftovers[kind] = self._match(kind, desired_by_kind[kind], current_by_kind[kind])
        self._plan_deletions(leftovers)
        for kind in KINDS:
            for d, c in pairs[kind]:
                self._plan_object(d, c)
        return Plan(
            deletions=tuple(sorted(self.deletions, key=lambda a: -LEVEL[a.kind])),
            creations=tuple(sorted(self.creations, key=lambda a: LEVEL[a.kind])),
            updates=tuple(sorted(self.updates, key=lambda a: LEVEL[a.kind])),
            unchanged=tuple(self.unchanged),
            unchanged_counts=tuple(sorted(self.unchanged_counts.items())),
            conflicts=tuple(self.conflicts),
            skipped=self.skipped,
            notes=tuple(self.notes),
            ids=tuple((k, key, i) for (k, key), i in self.ids.items()),
        )

    # ---- matching

    def _match(
        self, kind: str, desired: list[Desired], current: list[Current]
    ) -> tuple[list[tuple[Desired, Current | None]], list[Current]]:
        current = sorted(current, key=lambda c: c.id)
        by_key: dict[Key, Current] = {}
        by_alt: dict[Key, Current] = {}
        for c in current:
            if c.key is not None:
                by_key.setdefault(c.key, c)
            if c.alt_key is not None:
                by_alt.setdefault(c.alt_key, c)
        used: set[int] = set()
        pairs: list[tuple[Desired, Current | None]] = []
        for d in desired:
            match = by_key.get(d.key)
            if match is not None and match.id in used:
                match = None
            if match is None and d.alt_key is not None:
                alt = by_alt.get(d.alt_key)
                if (
                    alt is not None
                    and alt.id not in used
                    and (kind in REFERENCE_KINDS or alt.key is None or alt.key == d.key or not alt.owned)
                ):
                    match = alt
            if match is not None:
                used.add(match.id)
            pairs.append((d, match))
        # a name held by an owned object of another identity (a stale VM): this one takes a qualified name
        taken = {c.alt_key for c in current if c.id not in used and c.owned and c.alt_key is not None}
        # ... or by an object being renamed away in the update phase, which runs after the creates
        taken |= {c.alt_key for d, c in pairs if c is not None and c.alt_key not in (None, d.alt_key)}
        if taken and kind in (VM, DEVICE):
            fixed: list[tuple[Desired, Current | None]] = []
            for d, held in pairs:
                if d.alt_key in taken and (held is None or held.alt_key != d.alt_key):
                    name = _suffix(d)
                    fields = tuple((k, name if k == "name" else v) for k, v in d.fields)
                    d = attrs.evolve(d, fields=fields, label=name, alt_key=(*d.alt_key[:-1], name.lower()))
                fixed.append((d, held))
            pairs = fixed
        return pairs, [c for c in current if c.id not in used]

    # ---- deletions (stale children, pruned orphans)

    def _plan_deletions(self, leftovers: Mapping[str, list[Current]]) -> None:
        desired_keys = {(d.kind, d.key) for d in self.desired.objects}
        managed = self.desired.managed
        deletes_left = self.sync.max_deletes_per_run
        for kind, key_kind in ((VM, VM), (DEVICE, DEVICE)):
            if kind not in managed:
                continue
            present = self.desired.present_guests if kind == VM else self.desired.present_nodes
            report = decide_orphans(
                leftovers[kind],
                desired_keys=frozenset(k for kk, k in desired_keys if kk == key_kind),
                present=frozenset(present),
                in_scope=self.desired.clusters,
                complete=self.desired.complete_clusters,
                sync=self.sync,
                today=self.today,
                deletes_left=deletes_left,
            )
            for decision in report.decisions:
                c = decision.current
                assert c.key is not None
                if decision.action == "delete":
                    deletes_left -= 1
                    self.deleted.add((kind, c.key))
                    self.deletions.append(self._action("delete", c, "deleted", reason=decision.reason))
                elif decision.action == "tag":
                    tags = c.tags | {ORPHAN_TAG}
                    changes = []
                    if tags != c.tags:
                        changes.append(Change(field="tags", old=c.tags, new=tags))
                    cf = f"cf.{CF_ORPHANED}"
                    if c.get(cf) != decision.since.isoformat():
                        changes.append(Change(field=cf, old=c.get(cf), new=decision.since.isoformat()))
                    self.updates.append(
                        self._action("update", c, "orphaned", changes=tuple(changes), reason=decision.reason)
                    )
                else:
                    self.unchanged_counts[kind] += 1
            if report.held_incomplete:
                self.notes.append(
                    f"{report.held_incomplete} {kind.replace('_', ' ')}(s) absent from Proxmox kept as they "
                    "are: their cluster was not fully discovered"
                )
            if report.deferred_deletes:
                self.notes.append(
                    f"{report.deferred_deletes} orphan {kind.replace('_', ' ')}(s) due for deletion wait for "
                    f"the next run (max_deletes_per_run = {self.sync.max_deletes_per_run})"
                )

        # stale children: only below a VM that is mapped, owned, and whose config was read completely
        for kind in sorted(CHILD_KINDS, key=lambda k: LEVEL[k]):  # interfaces decided before their addresses
            if kind not in managed:
                continue
            for c in leftovers[kind]:
                if not c.owned or c.key is None:
                    continue
                vm_key = tuple(c.key[:2])
                if (VM, vm_key) not in desired_keys or vm_key in self.desired.children_unknown:
                    continue
                if kind == IP and vm_key in self.desired.ips_unknown:
                    continue
                if kind in (MAC, IP) and (INTERFACE, tuple(c.key[:3])) in self.deleted:
                    continue  # goes with its interface
                if (kind, c.key) not in desired_keys:  # not a duplicate of an object that stays
                    self.deleted.add((kind, c.key))
                self.deletions.append(self._action("delete", c, "deleted", reason="no longer in Proxmox VE"))

    # ---- create / update / unchanged

    def _resolve(self, value: Any) -> Any:
        """A current value in desired terms: references matched by name use the desired key; references to
        objects deleted by this plan are empty."""
        if isinstance(value, Ref):
            key = self.canon.get((value.kind, value.key), value.key)
            if (value.kind, key) in self.deleted:
                return None
            return Ref(value.kind, key)
        return value

    def _blocked(self, d: Desired) -> bool:
        if d.parent is not None and (d.parent.kind, d.parent.key) in self.unavailable:
            return True
        return any(
            name not in OPTIONAL_REFS and (ref.kind, ref.key) in self.unavailable for name, ref in d.refs()
        )

    def _plan_object(self, d: Desired, c: Current | None) -> None:
        if self._blocked(d):
            self.unavailable.add((d.kind, d.key))
            self.skipped += 1
            return
        if c is None:
            self._plan_create(d)
            return
        self.ids[(d.kind, d.key)] = c.id
        if c.key is not None and c.key != d.key:
            self.canon[(d.kind, c.key)] = d.key
        if d.kind in REFERENCE_KINDS or d.kind not in self.desired.managed:
            self._unchanged(d, c)
            return
        adopt = False
        if not c.owned:
            if self.sync.adopt_unowned:
                adopt = True
            elif d.kind == CLUSTER:
                self._unchanged(d, c)  # an existing cluster of that name is used as it is
                return
            else:
                self.unavailable.add((d.kind, d.key))
                self.conflicts.append(
                    Conflict(
                        kind=d.kind,
                        key=d.key,
                        label=d.label,
                        netbox_id=c.id,
                        cluster=d.cluster,
                        vmid=d.vmid,
                        detail=f"NetBox {d.kind.replace('_', ' ')} {c.label!r} (id {c.id}) is not tagged "
                        f"{OWNER_TAG!r}; proxbox leaves it alone (set sync.adopt_unowned to take it over)",
                    )
                )
                return
        changes = self._diff(d, c, adopt=adopt)
        if changes:
            self.updates.append(
                Action(
                    op="update",
                    kind=d.kind,
                    key=d.key,
                    label=d.label,
                    event="adopted" if adopt else "updated",
                    cluster=d.cluster,
                    vmid=d.vmid,
                    netbox_id=c.id,
                    fields=tuple((ch.field, ch.new) for ch in changes),
                    changes=tuple(changes),
                    parent=d.parent,
                )
            )
        else:
            self._unchanged(d, c)

    def _unchanged(self, d: Desired, c: Current) -> None:
        self.unchanged_counts[d.kind] += 1
        if d.kind in TOP_KINDS:
            self.unchanged.append(
                Unchanged(
                    kind=d.kind, key=d.key, label=d.label, netbox_id=c.id, cluster=d.cluster, vmid=d.vmid
                )
            )

    def _diff(self, d: Desired, c: Current, *, adopt: bool) -> list[Change]:
        changes = []
        for name, want in d.fields:
            have = self._resolve(c.get(name))
            if isinstance(want, Ref) and (want.kind, want.key) in self.unavailable:
                continue  # an optional reference to a conflict: leave the field as it is
            if name == "tags":
                want = merge_tags(
                    have or frozenset(), want, self.managed_tags, mirrors_create_only="tags" in d.create_only
                )
            elif name in d.create_only and not _empty(have):
                continue
            if want != have and not (_empty(want) and _empty(have)):
                changes.append(Change(field=name, old=have, new=want))
        return changes

    def _plan_create(self, d: Desired) -> None:
        now: list[tuple[str, Any]] = []
        later: list[Change] = []
        for name, value in d.fields:
            if value is None or value == "":
                continue
            if isinstance(value, Ref):
                if (value.kind, value.key) in self.unavailable:
                    continue  # optional (required ones blocked the object already)
                if LEVEL[value.kind] >= LEVEL[d.kind]:
                    later.append(Change(field=name, old=None, new=value))
                    continue
            now.append((name, value))
        self.creations.append(
            Action(
                op="create",
                kind=d.kind,
                key=d.key,
                label=d.label,
                event="created",
                cluster=d.cluster,
                vmid=d.vmid,
                fields=tuple(now),
                parent=d.parent,
            )
        )
        if later:
            self.updates.append(
                Action(
                    op="update",
                    kind=d.kind,
                    key=d.key,
                    label=d.label,
                    event="updated",
                    cluster=d.cluster,
                    vmid=d.vmid,
                    fields=tuple((ch.field, ch.new) for ch in later),
                    changes=tuple(later),
                    parent=d.parent,
                    reason="references objects created in this run",
                )
            )

    def _action(
        self, op: Op, c: Current, event: EventAction, *, changes: tuple[Change, ...] = (), reason: str = ""
    ) -> Action:
        key = c.key or ()
        cluster = key[0] if c.kind in OWNED_KINDS and key else None
        vmid = (
            key[1] if c.kind not in (CLUSTER, DEVICE) and len(key) > 1 and isinstance(key[1], int) else None
        )
        return Action(
            op=op,
            kind=c.kind,
            key=key,
            label=c.label,
            event=event,
            cluster=cluster,
            vmid=vmid,
            netbox_id=c.id,
            fields=tuple((ch.field, ch.new) for ch in changes),
            changes=changes,
            reason=reason,
        )


def build_plan(desired: DesiredState, current: CurrentState, sync: SyncSettings, today: dt.date) -> Plan:
    """Compare and order. ``today`` dates orphans and decides grace periods (the engine passes UTC today)."""
    return _Planner(desired=desired, current=current, sync=sync, today=today).run()


def describe(value: Any) -> str:
    """For logs: a Ref/Unknown/value as text."""
    if isinstance(value, Ref | Unknown):
        return str(value)
    return show(value)
