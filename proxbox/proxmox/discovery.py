"""Discovery: read a whole Proxmox VE cluster (or all configured endpoints) into a typed inventory.

Call plan for one endpoint (``c`` = nodes, ``g`` = guests; no per-guest status calls):

1. ``/cluster/status``, ``/cluster/resources``, ``/version`` and ``/access/permissions`` together (4 calls).
   ``cluster/status`` names the cluster (a standalone node has no cluster row: the cluster takes the node's
   name, ``standalone=True``) and says which nodes are online; ``cluster/resources`` lists every guest of
   every node, including nodes that are offline now, so their guests are still reported (as
   ``config_complete=False``). ``access/permissions`` is the pre-flight check: PVE's lists silently leave out
   what the credentials may not see, so unless they hold ``VM.Audit`` on all of ``/vms`` and ``Sys.Audit`` on
   all of ``/nodes``, no node of the cluster counts as complete (a hidden guest would look deleted).
2. Per online node, together: ``qemu`` and ``lxc`` listings, ``status`` and ``network`` (4c calls).
3. Per guest, ``node_concurrency`` guests at a time per node: ``config`` (g calls), then only for running
   guests ``agent/network-get-interfaces`` (qemu with the agent enabled) or ``interfaces`` (lxc).

Partial failure is the normal case, never an abort:

- a node that is offline, or whose qemu or lxc listing failed, is left out of ``complete_nodes`` (the sync
  must not orphan or delete its guests); its guests come from ``cluster/resources`` with
  ``config_complete=False``;
- a guest whose config cannot be read is kept from the listing with ``config_complete=False``, plus an issue;
  a failed agent/interfaces read keeps the guest with ``ips_complete=False``, plus an issue;
- a config that "does not exist" (the guest was deleted or migrated meanwhile) drops the guest;
- credentials that may not see everything (or whose permissions cannot be read) leave every node out of
  ``complete_nodes``, plus an issue naming the missing privileges;
- only an endpoint whose ``cluster/status`` cannot be read fails as a whole (:func:`discover` raises;
  :func:`discover_all` records it in ``failed_endpoints``).

Progress: ``on_progress`` (a plain sync callable, never awaited) receives a :class:`DiscoveryProgress` when a
cluster is named, when a node is listed, for every guest discovered and for every issue, as it happens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from proxbox.config import Settings
from proxbox.errors import ProxboxError, ProxmoxMalformedResponse, ProxmoxPermissionError
from proxbox.heap import full_collections_deferred
from proxbox.logsetup import get_logger
from proxbox.proxmox.client import PveClient, make_clients
from proxbox.proxmox.models import (
    Cluster,
    ClusterInventory,
    DiscoveryIssue,
    Guest,
    GuestKind,
    Inventory,
    Node,
)
from proxbox.proxmox.parse import (
    agent_enabled,
    as_bool,
    as_int,
    as_str,
    cluster_from_api,
    guest_from_api,
    guest_kind,
    node_from_api,
)

log = get_logger(__name__)

GUEST_KINDS: tuple[GuestKind, ...] = ("qemu", "lxc")

ProgressKind = Literal["cluster", "node", "guest", "issue"]


@attrs.frozen(kw_only=True)
class DiscoveryProgress:
    """One step of discovery, for live progress (the sync turns these into events).

    ``done``/``total`` count guests of this cluster: ``total`` starts from ``cluster/resources`` and is
    corrected as node listings arrive, so it may move (a little) while ``done`` grows.
    """

    kind: ProgressKind
    endpoint: str
    cluster: str  # the endpoint label while the cluster is not yet named (a failed endpoint)
    node: str | None = None
    guest: Guest | None = None  # kind == "guest"
    issue: DiscoveryIssue | None = None  # kind == "issue"
    done: int = 0
    total: int = 0
    message: str = ""


ProgressCallback = Callable[[DiscoveryProgress], None]


def _issue(
    scope: str, cluster: str, exc: ProxboxError, *, node: str | None = None, vmid: int | None = None
) -> DiscoveryIssue:
    return DiscoveryIssue(
        scope=scope,
        cluster=cluster,
        node=node,
        vmid=vmid,
        code=exc.code,
        detail=exc.message,
        retryable=exc.retryable,
    )


@attrs.define
class _NodeResult:
    node: Node
    guests: list[Guest]
    complete: bool


class _ClusterDiscovery:
    """The state of discovering one endpoint: counters, issues and the progress callback."""

    def __init__(
        self, client: PveClient, node_concurrency: int, on_progress: ProgressCallback | None
    ) -> None:
        self.client = client
        self.endpoint = client.name
        self.width = max(1, node_concurrency)
        self.on_progress = on_progress
        self.cluster_name = client.name
        self.issues: list[DiscoveryIssue] = []
        self.done = 0
        self.total = 0
        self.callback_failures = 0
        self.sees_everything = True  # from the permission pre-flight

    # ------------------------------------------------------------------------------------------- progress

    def _emit(self, kind: ProgressKind, **fields: Any) -> None:
        if self.on_progress is None:
            return
        progress = DiscoveryProgress(
            kind=kind,
            endpoint=self.endpoint,
            cluster=self.cluster_name,
            done=self.done,
            total=self.total,
            **fields,
        )
        try:
            self.on_progress(progress)
        except Exception:  # a broken progress consumer must not break discovery; say so once per cluster
            self.callback_failures += 1
            if self.callback_failures == 1:
                log.exception("discovery.progress_callback_failed", endpoint=self.endpoint)

    def _record(self, issue: DiscoveryIssue) -> None:
        self.issues.append(issue)
        log.warning(
            "discovery.issue",
            endpoint=self.endpoint,
            cluster=issue.cluster,
            scope=issue.scope,
            node=issue.node,
            vmid=issue.vmid,
            code=issue.code,
            detail=issue.detail,
        )
        self._emit("issue", node=issue.node, issue=issue, message=issue.detail)

    # --------------------------------------------------------------------------------------------- cluster

    async def run(self) -> ClusterInventory:
        started = time.monotonic()
        status, resources, version, permissions = await asyncio.gather(
            self.client.get("cluster", "status"),
            self.client.get("cluster", "resources"),
            self.client.version(),
            self.client.get("access", "permissions"),
            return_exceptions=True,
        )
        for result in (status, resources, version, permissions):
            if isinstance(result, BaseException) and not isinstance(result, ProxboxError):
                raise result
        if isinstance(status, ProxboxError):
            raise status
        try:
            cluster, members = cluster_from_api(
                endpoint=self.endpoint,
                status_rows=status,
                version=None if isinstance(version, BaseException) else version,
            )
        except ValueError as exc:
            raise ProxmoxMalformedResponse(
                f"GET /cluster/status on {self.endpoint}: {exc}",
                endpoint=self.endpoint,
                path="/cluster/status",
            ) from None
        self.cluster_name = cluster.name
        if isinstance(version, ProxboxError):
            self._record(_issue("cluster", cluster.name, version))
        self._check_visibility(cluster, permissions)

        rows_by_node: dict[str, list[Mapping[str, Any]]] = {}
        node_online: dict[str, bool] = {}
        if isinstance(resources, ProxboxError):
            self._record(_issue("cluster", cluster.name, resources))
        else:
            for row in resources:
                if not isinstance(row, Mapping):
                    continue
                kind, node = as_str(row.get("type")), as_str(row.get("node"))
                if node is None:
                    continue
                if kind in GUEST_KINDS and as_int(row.get("vmid")) is not None:
                    rows_by_node.setdefault(node, []).append(row)
                elif kind == "node":
                    node_online[node] = as_str(row.get("status")) == "online"

        membership = {str(as_str(m.get("name"))): m for m in members}
        names = sorted({*membership, *rows_by_node})
        self.total = sum(len(rows) for rows in rows_by_node.values())
        self._emit(
            "cluster",
            message=f"cluster {cluster.name}: {len(names)} nodes, {self.total} guests",
        )

        def online(name: str) -> bool:
            member = membership.get(name)
            if member is not None and "online" in member:
                return as_bool(member.get("online"))
            return node_online.get(name, member is not None)

        results = await asyncio.gather(
            *(
                self._node(cluster, name, online(name), membership.get(name), rows_by_node.get(name, []))
                for name in names
            )
        )
        inventory = self._inventory(cluster, results)
        log.info(
            "discovery.cluster_done",
            endpoint=self.endpoint,
            cluster=cluster.name,
            nodes=len(inventory.nodes),
            complete_nodes=len(inventory.complete_nodes),
            guests=len(inventory.guests),
            issues=len(inventory.issues),
            duration_s=round(time.monotonic() - started, 3),
            progress_callback_failures=self.callback_failures,
            **self.client.stats.as_dict(),
        )
        return inventory

    def _check_visibility(self, cluster: Cluster, permissions: Any) -> None:
        """Unless the credentials see every guest and node, nothing of this cluster may count as complete."""
        if isinstance(permissions, ProxboxError):
            self.sees_everything = False
            self._record(
                attrs.evolve(
                    _issue("cluster", cluster.name, permissions),
                    detail=f"{permissions.message}; without knowing what these credentials may see, "
                    f"nothing in cluster {cluster.name} is orphaned or deleted in this run",
                )
            )
            return
        gaps = visibility_gaps(permissions if isinstance(permissions, Mapping) else {})
        if gaps:
            self.sees_everything = False
            s = self.client.settings
            who = f"{s.user}!{s.token_name}" if s.uses_token else s.user
            self._record(
                DiscoveryIssue(
                    scope="cluster",
                    cluster=cluster.name,
                    node=None,
                    vmid=None,
                    code=ProxmoxPermissionError.code,
                    detail=f"{who} lacks {', '.join(gaps)}: Proxmox leaves out of its lists what it may "
                    f"not see, so nothing in cluster {cluster.name} is orphaned or deleted in this run "
                    "(grant the audit role on /, see docs/install.md)",
                    retryable=False,
                )
            )

    def _inventory(self, cluster: Cluster, results: Sequence[_NodeResult]) -> ClusterInventory:
        guests: dict[int, Guest] = {}
        for result in results:
            for guest in result.guests:
                seen = guests.get(guest.vmid)
                # a guest listed on two nodes (mid-migration): keep the fuller record
                if seen is None or (guest.config_complete and not seen.config_complete):
                    guests[guest.vmid] = guest
        return ClusterInventory(
            cluster=cluster,
            nodes=tuple(r.node for r in results),
            guests=tuple(sorted(guests.values(), key=lambda g: g.vmid)),
            complete_nodes=frozenset(r.node.name for r in results if r.complete and self.sees_everything),
            issues=tuple(self.issues),
        )

    # ------------------------------------------------------------------------------------------------ node

    async def _node(
        self,
        cluster: Cluster,
        name: str,
        online: bool,
        member: Mapping[str, Any] | None,
        resource_rows: list[Mapping[str, Any]],
    ) -> _NodeResult:
        if not online:
            guests = [self._listed_only(cluster, name, row) for row in resource_rows]
            self._emit(
                "node", node=name, message=f"node {name} is offline: {len(guests)} guests kept as listed"
            )
            for guest in guests:
                self._guest_done(guest)
            node = node_from_api(cluster=cluster.name, name=name, online=False, membership=member)
            return _NodeResult(node=node, guests=guests, complete=False)

        answers: tuple[Any, ...] = await asyncio.gather(
            self.client.get("nodes", name, "qemu"),
            self.client.get("nodes", name, "lxc"),
            self.client.get("nodes", name, "status"),
            self.client.get("nodes", name, "network"),
            return_exceptions=True,
        )
        qemu, lxc, status, network = answers
        for result in (qemu, lxc, status, network):
            if isinstance(result, BaseException) and not isinstance(result, ProxboxError):
                raise result
        for result in (status, network):
            if isinstance(result, ProxboxError):
                self._record(_issue("node", cluster.name, result, node=name))
        node = node_from_api(
            cluster=cluster.name,
            name=name,
            online=True,
            membership=member,
            status=None if isinstance(status, BaseException) else status,
            network=None if isinstance(network, BaseException) else network,
        )

        complete = True
        listed: list[tuple[GuestKind, Mapping[str, Any]]] = []
        fallback: list[Guest] = []
        per_kind: tuple[tuple[GuestKind, Any], ...] = (("qemu", qemu), ("lxc", lxc))
        for kind, listing in per_kind:
            if isinstance(listing, ProxboxError):
                complete = False
                self._record(_issue("node", cluster.name, listing, node=name))
                fallback += [
                    self._listed_only(cluster, name, row) for row in resource_rows if guest_kind(row) == kind
                ]
            else:
                listed += [
                    (kind, row) for row in listing if isinstance(row, Mapping) and as_int(row.get("vmid"))
                ]
        self.total += len(listed) + len(fallback) - len(resource_rows)
        self._emit("node", node=name, message=f"node {name}: {len(listed) + len(fallback)} guests")
        for guest in fallback:
            self._guest_done(guest)

        gate = asyncio.Semaphore(self.width)
        found = await asyncio.gather(*(self._guest(cluster, name, kind, row, gate) for kind, row in listed))
        guests = [g for g in found if g is not None] + fallback
        return _NodeResult(node=node, guests=guests, complete=complete)

    # ----------------------------------------------------------------------------------------------- guest

    def _listed_only(self, cluster: Cluster, node: str, row: Mapping[str, Any]) -> Guest:
        """A guest known only from a listing row (node offline, listing or config unreadable)."""
        return guest_from_api(guest_kind(row), cluster=cluster.name, node=node, listing=row, config=None)

    def _guest_done(self, guest: Guest) -> None:
        self.done += 1
        self._emit("guest", node=guest.node, guest=guest)

    async def _guest(
        self, cluster: Cluster, node: str, kind: GuestKind, row: Mapping[str, Any], gate: asyncio.Semaphore
    ) -> Guest | None:
        vmid = as_int(row.get("vmid")) or 0
        async with gate:
            try:
                config = await self.client.get("nodes", node, kind, vmid, "config")
            except ProxboxError as exc:
                self._record(_issue("guest", cluster.name, exc, node=node, vmid=vmid))
                guest = guest_from_api(kind, cluster=cluster.name, node=node, listing=row, config=None)
                self._guest_done(guest)
                return guest
            if config is None:  # "configuration file does not exist": deleted or migrated meanwhile
                self.total -= 1
                log.info("discovery.guest_vanished", endpoint=self.endpoint, node=node, vmid=vmid)
                return None
            runtime, ips_complete = await self._runtime(cluster, node, kind, vmid, row, config)
        guest = guest_from_api(
            kind,
            cluster=cluster.name,
            node=node,
            listing=row,
            config=config,
            runtime=runtime,
            ips_complete=ips_complete,
        )
        self._guest_done(guest)
        return guest

    async def _runtime(
        self,
        cluster: Cluster,
        node: str,
        kind: GuestKind,
        vmid: int,
        row: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> tuple[Any, bool]:
        """The agent's interfaces (qemu) or ``/interfaces`` (lxc) of a running guest, and whether that read
        worked (False: the addresses are incomplete)."""
        if as_str(row.get("status")) != "running":
            return None, True
        if kind == "qemu":
            if not agent_enabled(config):
                return None, True
            path: tuple[str | int, ...] = ("nodes", node, "qemu", vmid, "agent", "network-get-interfaces")
        else:
            path = ("nodes", node, "lxc", vmid, "interfaces")
        try:
            return await self.client.get(*path), True
        except ProxboxError as exc:
            self._record(_issue("guest", cluster.name, exc, node=node, vmid=vmid))
            return None, False


# what a sync must see everywhere: (subtree, privilege)
VISIBILITY: tuple[tuple[str, str], ...] = (("/vms", "VM.Audit"), ("/nodes", "Sys.Audit"))


def visibility_gaps(permissions: Mapping[str, Any]) -> list[str]:
    """From ``GET /access/permissions`` (path → {privilege: propagate}): each ``"<privilege> on <path>"``
    missing for the credentials to see every guest and node.

    A subtree is covered when its nearest listed ancestor (itself included) grants the privilege, propagated
    when it is an ancestor; any listed path below it without the privilege is a hole.
    """

    def granted(path: str) -> dict[str, Any]:
        privs = permissions.get(path)
        return dict(privs) if isinstance(privs, Mapping) else {}

    gaps = []
    for subtree, privilege in VISIBILITY:
        if subtree in permissions:
            covered = privilege in granted(subtree)
        else:
            covered = bool(granted("/").get(privilege)) if "/" in permissions else False
        if not covered:
            gaps.append(f"{privilege} on {subtree}")
        gaps += [
            f"{privilege} on {path}"
            for path in sorted(permissions)
            if path.startswith(subtree + "/") and privilege not in granted(path)
        ]
    return gaps


async def discover(
    client: PveClient, *, node_concurrency: int = 4, on_progress: ProgressCallback | None = None
) -> ClusterInventory:
    """Discover the cluster behind ``client``. Raises a :class:`~proxbox.errors.ProxmoxError` only when the
    cluster cannot even be named (``/cluster/status`` unreadable); every other failure is an issue."""
    return await _ClusterDiscovery(client, node_concurrency, on_progress).run()


async def discover_all(
    settings: Settings,
    *,
    on_progress: ProgressCallback | None = None,
    clients: Sequence[PveClient] | None = None,
    node_concurrency: int | None = None,
) -> Inventory:
    """Discover every configured endpoint in parallel, one :class:`PveClient` each.

    ``clients`` lets a long-lived caller (the server) reuse its clients, which are then left open; otherwise
    a client is made per endpoint and closed at the end. An endpoint that fails entirely becomes a
    :class:`DiscoveryIssue` in ``failed_endpoints`` and the others go on. Automatic full garbage
    collections are postponed meanwhile (:func:`proxbox.heap.full_collections_deferred`).
    """
    width = node_concurrency if node_concurrency is not None else settings.sync.node_concurrency
    owned = clients is None
    pool = list(clients) if clients is not None else make_clients(settings)

    async def one(client: PveClient) -> ClusterInventory | DiscoveryIssue:
        try:
            return await discover(client, node_concurrency=width, on_progress=on_progress)
        except ProxboxError as exc:
            issue = _issue("cluster", client.name, exc)
        except Exception as exc:  # a bug must not hide the other endpoints' results
            log.exception("discovery.endpoint_crashed", endpoint=client.name)
            issue = DiscoveryIssue(
                scope="cluster",
                cluster=client.name,
                node=None,
                vmid=None,
                code="internal_error",
                detail=f"{type(exc).__name__}: {exc}",
                retryable=False,
            )
        finally:
            if owned:
                await client.close()
        log.warning("discovery.endpoint_failed", endpoint=client.name, code=issue.code, detail=issue.detail)
        if on_progress is not None:
            try:
                on_progress(
                    DiscoveryProgress(
                        kind="issue",
                        endpoint=client.name,
                        cluster=client.name,
                        issue=issue,
                        message=issue.detail,
                    )
                )
            except Exception:
                log.exception("discovery.progress_callback_failed", endpoint=client.name)
        return issue

    # the inventory is built up for the whole call: a full collection would scan all of it (see proxbox.heap)
    with full_collections_deferred():
        results = await asyncio.gather(*(one(c) for c in pool))
    return Inventory(
        clusters=tuple(r for r in results if isinstance(r, ClusterInventory)),
        failed_endpoints=tuple(r for r in results if isinstance(r, DiscoveryIssue)),
    )
