"""The control API under ``/_sim/*`` (only with ``--control``): faults, node/cluster outages, drift, request
counters, the world dump, and auth switches.

Served on every cluster port and on a dedicated control port (reachable while clusters are down).
Every call needs the simulator's credentials: the API token header (``Authorization: PVEAPIToken=...``) or
a ticket cookie (no CSRF needed). Answers are plain JSON (no PVE envelope); errors are
``{"error": "..."}`` with 400/401/404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxbox.sim.drift import DriftError

if TYPE_CHECKING:
    from proxbox.sim.server import SimServer

SERVER = web.AppKey("sim_server", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _server(request: web.Request) -> SimServer:
    return request.app[SERVER]  # type: ignore[return-value]


def _guarded(fn: Callable[[web.Request, SimServer], Awaitable[Any]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        server = _server(request)
        if server.state.auth.authenticate(request.cookies, request.headers).user is None:
            return _error(401, "unauthorized: send the simulator's API token or ticket")
        try:
            result = await fn(request, server)
        except json.JSONDecodeError as exc:
            return _error(400, f"body is not JSON: {exc}")
        except (ValueError, KeyError, TypeError) as exc:  # DriftError is a ValueError
            return _error(400, str(exc.args[0]) if exc.args else type(exc).__name__)
        return result if isinstance(result, web.StreamResponse) else _json(result)

    return handler


async def _body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    text = await request.text()
    return json.loads(text) if text.strip() else {}


async def _faults_get(request: web.Request, server: SimServer) -> Any:
    return {"faults": server.faults()}


async def _faults_post(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    specs = body if isinstance(body, list) else body.get("rules", [body]) if isinstance(body, dict) else None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ValueError('expected a rule object, a list of rules, or {"rules": [...]}')
    ids = [server.add_fault(spec) for spec in specs]
    return {"ids": ids}


async def _faults_delete(request: web.Request, server: SimServer) -> Any:
    server.clear_faults()
    return {"cleared": True}


async def _fault_delete(request: web.Request, server: SimServer) -> Any:
    if not server.remove_fault(int(request.match_info["id"])):
        return _error(404, f"no fault rule {request.match_info['id']}")
    return {"removed": int(request.match_info["id"])}


async def _node_offline(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    server.node_offline(body["cluster"], body["node"], reason=body.get("reason", "No route to host"))
    return {"cluster": body["cluster"], "node": body["node"], "online": False}


async def _node_online(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    server.node_online(body["cluster"], body["node"])
    return {"cluster": body["cluster"], "node": body["node"], "online": True}


async def _cluster_down(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    await server.cluster_down(body["cluster"], keep=request.protocol)
    resp = _json({"cluster": body["cluster"], "up": False})
    resp.force_close()
    return resp


async def _cluster_up(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    await server.cluster_up(body["cluster"])
    return {"cluster": body["cluster"], "up": True}


async def _drift(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    if isinstance(body, list):
        return {"changes": [server.drift(**spec) for spec in body]}
    if not isinstance(body, dict):
        raise DriftError('expected {"steps": N} or a targeted op {"op": ...}')
    if "ops" in body:
        return {"changes": [c for spec in body["ops"] for c in server.drift(**spec)]}
    return {"changes": server.drift(**body)}


async def _requests_get(request: web.Request, server: SimServer) -> Any:
    return server.requests()


async def _requests_delete(request: web.Request, server: SimServer) -> Any:
    server.reset_requests()
    return {"reset": True}


async def _world(request: web.Request, server: SimServer) -> Any:
    return server.dump()


async def _endpoints(request: web.Request, server: SimServer) -> Any:
    return server.startup_info()


async def _revoke(request: web.Request, server: SimServer) -> Any:
    server.revoke_tickets()
    return {"revoked": True}


async def _rotate(request: web.Request, server: SimServer) -> Any:
    body = await _body(request)
    return {"token_id": server.credentials.token_id, "token_secret": server.rotate_token(body.get("secret"))}


def add_control_routes(app: web.Application, server: SimServer) -> None:
    app[SERVER] = server
    r = app.router
    r.add_get("/_sim/faults", _guarded(_faults_get))
    r.add_post("/_sim/faults", _guarded(_faults_post))
    r.add_delete("/_sim/faults", _guarded(_faults_delete))
    r.add_delete("/_sim/faults/{id:\\d+}", _guarded(_fault_delete))
    r.add_post("/_sim/node_offline", _guarded(_node_offline))
    r.add_post("/_sim/node_online", _guarded(_node_online))
    r.add_post("/_sim/cluster_down", _guarded(_cluster_down))
    r.add_post("/_sim/cluster_up", _guarded(_cluster_up))
    r.add_post("/_sim/drift", _guarded(_drift))
    r.add_get("/_sim/requests", _guarded(_requests_get))
    r.add_delete("/_sim/requests", _guarded(_requests_delete))
    r.add_get("/_sim/world", _guarded(_world))
    r.add_get("/_sim/endpoints", _guarded(_endpoints))
    r.add_post("/_sim/auth/revoke_tickets", _guarded(_revoke))
    r.add_post("/_sim/auth/rotate_token", _guarded(_rotate))


@web.middleware
async def _track(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.transport is not None:
        _server(request).state.transports.add(request.transport)
    return await handler(request)


def make_control_app(server: SimServer) -> web.Application:
    app = web.Application(middlewares=[_track])
    add_control_routes(app, server)
    return app
