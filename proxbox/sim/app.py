"""The HTTP side: one aiohttp app per cluster endpoint, speaking PVE's API under ``/api2/json``.

Per request: count it, authenticate (ticket cookie or API token; CSRF on non-GET tickets; 401 with an empty
body after ``unauth_delay_s``), apply fault rules, answer from the per-revision render cache (or 501 for an
unknown method/path), frame errors exactly like PVE. ``/_sim/*`` (see :mod:`proxbox.sim.control`) bypasses all
of that and is only routed when the server runs with ``control=True``.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from aiohttp import web

from proxbox.sim.acl import FULL_PERMISSIONS, Acl, check_route, filter_rows
from proxbox.sim.auth import CSRF_HEADER, Authenticator
from proxbox.sim.faults import (
    POST_ACTIONS,
    FaultBook,
    error_response,
    json_bytes_response,
    post_action,
    pre_action,
)
from proxbox.sim.model import SimCluster, World
from proxbox.sim.render import ClusterView, WithTotal, vmid_param
from proxbox.sim.render_guest import PveError

PREFIX = "/api2/json"
UNKNOWN_ROUTE = "*"
CACHE_LIMIT = 100_000


class Clock:
    """The world's clock: frozen at the epoch, or (live) moving with real time from the server start."""

    def __init__(self, epoch: int, live: bool = False) -> None:
        self.epoch = epoch
        self.live = live
        self._start = time.monotonic()

    def now(self) -> int:
        return self.epoch + int(time.monotonic() - self._start) if self.live else self.epoch


@attrs.define
class ClusterCounters:
    total: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    routes: dict[str, dict[str, int]] = attrs.Factory(dict)
    statuses: dict[str, int] = attrs.Factory(dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "routes": {k: dict(v) for k, v in sorted(self.routes.items())},
            "statuses": dict(sorted(self.statuses.items())),
        }


class RequestCounters:
    """Requests per cluster: per ``"METHOD /route/{template}"`` and auth kind, per status, max in flight."""

    def __init__(self, clusters: list[str]) -> None:
        self._by_cluster = {name: ClusterCounters() for name in clusters}

    def enter(self, cluster: str) -> None:
        c = self._by_cluster.setdefault(cluster, ClusterCounters())
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)

    def leave(self, cluster: str) -> None:
        self._by_cluster[cluster].in_flight -= 1

    def count(self, cluster: str, method: str, route: str, auth: str) -> None:
        c = self._by_cluster[cluster]
        c.total += 1
        entry = c.routes.setdefault(f"{method} {route}", {"total": 0})
        entry["total"] += 1
        entry[auth] = entry.get(auth, 0) + 1

    def status(self, cluster: str, status: int) -> None:
        c = self._by_cluster[cluster]
        c.statuses[str(status)] = c.statuses.get(str(status), 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {name: c.as_dict() for name, c in self._by_cluster.items()}

    def reset(self) -> None:
        for name, c in self._by_cluster.items():
            self._by_cluster[name] = ClusterCounters(in_flight=c.in_flight, max_in_flight=c.in_flight)


class RenderCache:
    """Rendered answer bytes of one cluster, valid for one (revision, clock second)."""

    def __init__(self) -> None:
        self._stamp: tuple[int, int] = (-1, -1)
        self._entries: dict[tuple[str, str, str], bytes] = {}

    def lookup(self, stamp: tuple[int, int], key: tuple[str, str, str]) -> bytes | None:
        if stamp != self._stamp:
            self._stamp = stamp
            self._entries.clear()
            return None
        return self._entries.get(key)

    def store(self, key: tuple[str, str, str], body: bytes) -> None:
        if len(self._entries) >= CACHE_LIMIT:
            self._entries.clear()
        self._entries[key] = body


@attrs.define(kw_only=True)
class SimState:
    """Everything the cluster apps share."""

    world: World
    auth: Authenticator
    faults: FaultBook
    counters: RequestCounters
    clock: Clock
    unauth_delay_s: float = 0.0
    latency_s: float = 0.0  # added to every API answer (benchmarks: a realistic round trip)
    acl: Acl | None = None  # what the user and its token may see (None: everything, like root@pam)
    caches: dict[str, RenderCache] = attrs.Factory(dict)
    # every connection that carried a request: aborted at stop so no TLS shutdown outlives the loop
    transports: weakref.WeakSet[asyncio.BaseTransport] = attrs.Factory(weakref.WeakSet)

    def cache(self, cluster: str) -> RenderCache:
        cache = self.caches.get(cluster)
        if cache is None:
            cache = self.caches[cluster] = RenderCache()
        return cache


STATE = web.AppKey("sim_state", SimState)
CLUSTER = web.AppKey("sim_cluster", str)
USER = web.RequestKey("sim_user", str)

# ------------------------------------------------------------------------------------------------ routes

Render = Callable[[ClusterView, Mapping[str, str], Mapping[str, str]], Any]


def _vm(m: Mapping[str, str]) -> int:
    return vmid_param(m["vmid"])


def _agent(command: str) -> Render:
    return lambda v, m, q: v.agent(m["node"], _vm(m), command)


# Order matters for speed: aiohttp scans the routes sharing a static prefix in registration order, so the
# per-guest routes a sync calls thousands of times come first.
ROUTES: list[tuple[str, str, Render]] = [
    ("GET", "/nodes/{node}/qemu/{vmid}/config", lambda v, m, q: v.guest_config(m["node"], "qemu", _vm(m), q)),
    ("GET", "/nodes/{node}/lxc/{vmid}/config", lambda v, m, q: v.guest_config(m["node"], "lxc", _vm(m), q)),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", _agent("network-get-interfaces")),
    ("GET", "/nodes/{node}/lxc/{vmid}/interfaces", lambda v, m, q: v.lxc_interfaces(m["node"], _vm(m))),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/status/current",
        lambda v, m, q: v.guest_status(m["node"], "qemu", _vm(m)),
    ),
    (
        "GET",
        "/nodes/{node}/lxc/{vmid}/status/current",
        lambda v, m, q: v.guest_status(m["node"], "lxc", _vm(m)),
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo", _agent("get-osinfo")),
    ("GET", "/nodes/{node}/qemu", lambda v, m, q: v.qemu_list(m["node"], q)),
    ("GET", "/nodes/{node}/lxc", lambda v, m, q: v.lxc_list(m["node"])),
    ("GET", "/nodes/{node}/status", lambda v, m, q: v.node_status(m["node"])),
    ("GET", "/nodes/{node}/network", lambda v, m, q: v.node_network(m["node"], q)),
    ("GET", "/nodes/{node}/storage", lambda v, m, q: v.node_storage(m["node"], q)),
    ("GET", "/nodes/{node}/version", lambda v, m, q: v.node_version(m["node"])),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending", lambda v, m, q: v.pending(m["node"], _vm(m))),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-host-name", _agent("get-host-name")),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/info", _agent("info")),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", _agent("ping")),
    ("GET", "/nodes/{node}/qemu/{vmid}/snapshot", lambda v, m, q: v.snapshots(m["node"], "qemu", _vm(m))),
    ("GET", "/nodes/{node}/lxc/{vmid}/snapshot", lambda v, m, q: v.snapshots(m["node"], "lxc", _vm(m))),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config",
        lambda v, m, q: v.snapshot_config(m["node"], "qemu", _vm(m), m["snapname"]),
    ),
    (
        "GET",
        "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config",
        lambda v, m, q: v.snapshot_config(m["node"], "lxc", _vm(m), m["snapname"]),
    ),
    (
        "GET",
        "/nodes/{node}/storage/{storage}/status",
        lambda v, m, q: v.storage_status(m["node"], m["storage"]),
    ),
    (
        "GET",
        "/nodes/{node}/storage/{storage}/content",
        lambda v, m, q: v.storage_content(m["node"], m["storage"], q),
    ),
    ("GET", "/nodes/{node}/tasks", lambda v, m, q: v.node_tasks(m["node"], q)),
    ("GET", "/nodes/{node}/tasks/{upid}/status", lambda v, m, q: v.task_status(m["node"], m["upid"])),
    ("GET", "/nodes/{node}/tasks/{upid}/log", lambda v, m, q: v.task_log(m["node"], m["upid"])),
    ("GET", "/version", lambda v, m, q: v.version()),
    ("GET", "/cluster/status", lambda v, m, q: v.cluster_status()),
    ("GET", "/cluster/resources", lambda v, m, q: v.resources(q)),
    ("GET", "/cluster/backup", lambda v, m, q: v.backup_jobs()),
    ("GET", "/cluster/backup/{id}", lambda v, m, q: v.backup_job(m["id"])),
    ("GET", "/cluster/replication", lambda v, m, q: v.replication()),
    ("GET", "/cluster/tasks", lambda v, m, q: v.cluster_tasks()),
    ("GET", "/cluster/ha/resources", lambda v, m, q: v.ha_resources()),
    ("GET", "/pools", lambda v, m, q: v.pools(q)),
    ("GET", "/pools/{poolid}", lambda v, m, q: v.pool(m["poolid"])),
    ("GET", "/storage", lambda v, m, q: v.storage_config()),
    ("GET", "/nodes", lambda v, m, q: v.nodes()),
]


def encode(payload: Any) -> bytes:
    if isinstance(payload, WithTotal):
        doc: dict[str, Any] = {"data": payload.data, "total": payload.total}
    else:
        doc = {"data": payload}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _render_handler(template: str, render: Render, cacheable: bool) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        name = request.app[CLUSTER]
        cluster = state.world.cluster(name)
        now = state.clock.now()
        acl = state.acl
        if acl is not None:
            check_route(acl, template, request.match_info)
        cached = cacheable and acl is None  # answers under an ACL depend on it: never cached
        key = (request.method, request.path, request.query_string)
        cache = state.cache(name)
        body = cache.lookup((cluster.revision, now), key) if cached else None
        if body is None:
            payload = render(ClusterView(state.world, cluster, now), request.match_info, request.query)
            if acl is not None:
                payload = filter_rows(acl, template, payload)
            body = encode(payload)
            if cached:
                cache.store(key, body)
        return json_bytes_response(body)

    return handler


# what a sync reads, precomputed per world revision (see warm)
WARM_GUEST = {
    "qemu": (
        "/nodes/{node}/qemu/{vmid}/config",
        "/nodes/{node}/qemu/{vmid}/status/current",
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        "/nodes/{node}/qemu/{vmid}/agent/get-osinfo",
    ),
    "lxc": (
        "/nodes/{node}/lxc/{vmid}/config",
        "/nodes/{node}/lxc/{vmid}/status/current",
        "/nodes/{node}/lxc/{vmid}/interfaces",
    ),
}
WARM_NODE = (
    "/nodes/{node}/qemu",
    "/nodes/{node}/lxc",
    "/nodes/{node}/status",
    "/nodes/{node}/network",
    "/nodes/{node}/storage",
)
WARM_CLUSTER = (
    ("/version", ""),
    ("/cluster/status", ""),
    ("/nodes", ""),
    ("/cluster/resources", ""),
    ("/cluster/resources", "type=vm"),
    ("/cluster/resources", "type=node"),
    ("/cluster/resources", "type=storage"),
)


async def warm(state: SimState, name: str, *, chunk: int = 200) -> int:
    """Render the answers a sync asks for (query-less, plus the resources filters) into the cache of cluster
    ``name``, yielding to the loop every ``chunk`` renders. Stops early when the world changes meanwhile.
    Returns how many answers were rendered."""
    renders = {template: fn for method, template, fn in ROUTES if method == "GET"}
    cluster = state.world.cluster(name)
    cache = state.cache(name)
    stamp = (cluster.revision, state.clock.now())
    view = ClusterView(state.world, cluster, stamp[1])
    jobs: list[tuple[str, dict[str, str], str]] = [(t, {}, q) for t, q in WARM_CLUSTER]
    for node in cluster.nodes:
        jobs.extend((t, {"node": node.name}, "") for t in WARM_NODE)
    for g in sorted(cluster.guests.values(), key=lambda g: g.vmid):
        jobs.extend((t, {"node": g.node, "vmid": str(g.vmid)}, "") for t in WARM_GUEST[g.kind])
    done = 0
    for i, (template, match, qs) in enumerate(jobs):
        if i and i % chunk == 0:
            await asyncio.sleep(0)
            if (cluster.revision, state.clock.now()) != stamp:
                break
        key = ("GET", PREFIX + template.format(**match), qs)
        if cache.lookup(stamp, key) is not None:
            continue
        query = dict(p.split("=", 1) for p in qs.split("&")) if qs else {}
        try:
            body = encode(renders[template](view, match, query))
        except PveError:
            continue
        cache.store(key, body)
        done += 1
    return done


async def _login(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    form = await request.post()
    missing = {
        k: "property is missing and it is not optional" for k in ("username", "password") if not form.get(k)
    }
    if missing:
        raise PveError(400, "Parameter verification failed.", errors=missing)
    realm = form.get("realm")
    scope = request.app[CLUSTER]
    user = state.auth.login(
        str(form["username"]), str(form["password"]), str(realm) if realm else None, scope=scope
    )
    if user is None:
        if state.unauth_delay_s:
            await asyncio.sleep(state.unauth_delay_s)
        raise PveError(401, "authentication failure")
    ticket, csrf = state.auth.issue(user, scope)
    cluster = state.world.cluster(scope)
    data: dict[str, Any] = {
        "username": user,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "cap": _capabilities(state.acl or FULL_PERMISSIONS),
    }
    if not cluster.standalone:
        data["clustername"] = cluster.name
    return json_bytes_response(encode(data))


def _capabilities(acl: Acl) -> dict[str, dict[str, int]]:
    """The login answer's ``cap``: privileges per top-level area."""

    def area(path: str, *privs: str) -> dict[str, int]:
        return {p: 1 for p in privs if acl.allows(path, p)}

    return {
        "vms": area("/vms", "VM.Audit", "VM.GuestAgent.Audit"),
        "nodes": area("/nodes", "Sys.Audit"),
        "storage": area("/storage", "Datastore.Audit"),
        "access": {},
        "dc": area("/", "Sys.Audit"),
        "sdn": area("/sdn", "SDN.Audit"),
        "mapping": {},
    }


async def _permissions(request: web.Request) -> web.StreamResponse:
    """The caller's effective privileges per path (what a pre-flight check reads)."""
    state = request.app[STATE]
    if state.acl is None:
        view = ClusterView(state.world, state.world.cluster(request.app[CLUSTER]), state.clock.now())
        return json_bytes_response(encode(view.permissions(request.get(USER, ""))))
    return json_bytes_response(encode(state.acl.as_permissions()))


# -------------------------------------------------------------------------------------------- middleware


def _route_of(request: web.Request) -> str:
    if request.match_info.http_exception is not None:
        return UNKNOWN_ROUTE
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else UNKNOWN_ROUTE
    return canonical[len(PREFIX) :] if canonical.startswith(PREFIX) else canonical


@web.middleware
async def pve_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    state = request.app[STATE]
    if request.transport is not None:
        state.transports.add(request.transport)
    if request.path.startswith("/_sim"):
        return await handler(request)
    cluster = request.app[CLUSTER]
    state.counters.enter(cluster)
    try:
        resp = await _serve(request, handler, state, cluster)
        state.counters.status(cluster, resp.status)
        return resp
    finally:
        state.counters.leave(cluster)


async def _serve(
    request: web.Request, handler: Callable[[web.Request], Any], state: SimState, cluster: str
) -> web.StreamResponse:
    method = request.method
    path = request.path
    rel = path[len(PREFIX) :] if path == PREFIX or path.startswith(PREFIX + "/") else None
    kind = state.auth.classify(request.cookies, request.headers)
    state.counters.count(cluster, method, _route_of(request), kind)
    if not (rel == "/access/ticket" and method == "POST"):
        result = state.auth.authenticate(request.cookies, request.headers, cluster)
        if result.user is None:
            if state.unauth_delay_s:
                await asyncio.sleep(state.unauth_delay_s)
            return error_response(401, result.reason, empty_body=True)
        if (
            kind == "ticket"
            and method != "GET"
            and not state.auth.check_csrf(request.headers.get(CSRF_HEADER), result.user, cluster)
        ):
            return error_response(401, "Permission denied - invalid csrf token", empty_body=True)
        request[USER] = result.user
    if state.latency_s:
        await asyncio.sleep(state.latency_s)
    decision = state.faults.evaluate(
        method, rel if rel is not None else path, cluster, request.match_info.get("node"), kind
    )
    if decision.delay_s:
        await asyncio.sleep(decision.delay_s)
    rule = decision.rule
    if rule is not None and rule.action not in POST_ACTIONS:
        early = await pre_action(rule, request)
        if early is not None:
            return early
    resp: web.StreamResponse
    if rel is None or request.match_info.http_exception is not None:
        resp = error_response(501, f"Method '{method} {rel if rel is not None else path}' not implemented")
    else:
        try:
            resp = await handler(request)
        except PveError as err:
            resp = error_response(err.status, err.message, errors=err.errors, empty_body=err.empty_body)
    if rule is not None and rule.action in POST_ACTIONS and isinstance(resp, web.Response):
        resp = await post_action(rule, request, resp)
    return resp


async def _pve_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith("/_sim"):
        response.headers["Server"] = "pve-api-daemon/3.0"
        response.headers["Cache-Control"] = "max-age=0"
        response.headers["Pragma"] = "no-cache"


def make_cluster_app(
    state: SimState, cluster: SimCluster, control: Callable[[web.Application], None] | None
) -> web.Application:
    """The app for one endpoint. ``control`` adds the ``/_sim`` routes (only with ``--control``)."""
    app = web.Application(middlewares=[pve_middleware])
    app[STATE] = state
    app[CLUSTER] = cluster.name
    for method, template, render in ROUTES:
        app.router.add_route(
            method, PREFIX + template, _render_handler(template, render, cacheable=method == "GET")
        )
    app.router.add_post(PREFIX + "/access/ticket", _login)
    app.router.add_get(PREFIX + "/access/permissions", _permissions)
    app.on_response_prepare.append(_pve_headers)
    if control is not None:
        control(app)
    return app
