"""Running the simulator: :class:`SimServer` (async context manager, on the caller's loop) and
:class:`SimThread` (the same API, blocking, with the server on its own loop in a background thread, for
proxmoxer calls and benchmarks that would deadlock a same-loop server).

::

    async with SimServer(generate(seed=1, clusters=2, nodes=2, guests=10), control=True) as sim:
        settings = sim.proxmox_settings(auth="token")   # one ProxmoxSettings per endpoint
        sim.add_fault(path="/nodes/*/qemu/*/config", action="status", status=500, times=1)
        sim.drift(op="rename", cluster="lab-a", vmid=100, name="web-new")
        expected = sim.dump()                           # the oracle
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
from aiohttp import web

from proxbox.config import ProxmoxSettings
from proxbox.logsetup import get_logger
from proxbox.sim import drift as drift_mod
from proxbox.sim import oracle
from proxbox.sim.acl import Acl, parse_acl
from proxbox.sim.app import Clock, RequestCounters, SimState, make_cluster_app, warm
from proxbox.sim.auth import Authenticator, Credentials
from proxbox.sim.control import add_control_routes, make_control_app
from proxbox.sim.faults import FaultBook
from proxbox.sim.generate import Profile, generate
from proxbox.sim.model import World
from proxbox.sim.tls import TlsMaterial, make_tls

log = get_logger(__name__)
T = TypeVar("T")
PVE_EXACT_UNAUTH_DELAY_S = 3.0


@attrs.frozen(kw_only=True)
class Endpoint:
    """One PVE endpoint of the simulator (a cluster, or a standalone node)."""

    name: str  # the cluster name (the node name for a standalone endpoint)
    standalone: bool
    host: str
    port: int
    ca_path: str
    user: str
    password: str = attrs.field(repr=False)
    token_id: str  # user@realm!name
    token_secret: str = attrs.field(repr=False)

    @property
    def token_name(self) -> str:
        return self.token_id.split("!", 1)[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/api2/json"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "standalone": self.standalone,
            "host": self.host,
            "port": self.port,
            "url": self.url,
            "ca_path": self.ca_path,
        }


@attrs.define
class _Site:
    runner: web.AppRunner
    site: web.TCPSite | None
    port: int


class SimServer:
    """The simulator on the running loop: one HTTPS port per endpoint (``base_port + i``, or free ports when
    ``base_port`` is 0), plus a control port when ``control`` is on."""

    def __init__(
        self,
        world: World | None = None,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        credentials: Credentials | None = None,
        control: bool = False,
        pve_exact: bool = False,
        unauth_delay_s: float | None = None,
        ticket_ttl_s: float = 7200.0,
        live_clock: bool = False,
        profile: Profile | None = None,
        world_out: str | None = None,
        warm_cache: bool = True,
        latency_ms: float = 0.0,
        acl: Acl | str | None = None,
    ) -> None:
        self.world = world if world is not None else generate(seed=1, clusters=2, nodes=2, guests=10)
        self.host = host
        self.base_port = base_port
        self.credentials = credentials or Credentials.make()
        self.control = control
        self.pve_exact = pve_exact
        self.profile = profile or Profile()
        self.world_out = world_out
        delay = (
            unauth_delay_s if unauth_delay_s is not None else (PVE_EXACT_UNAUTH_DELAY_S if pve_exact else 0.0)
        )
        names = [c.name for c in self.world.clusters]
        self.state = SimState(
            world=self.world,
            auth=Authenticator(self.credentials, ticket_ttl_s=ticket_ttl_s),
            faults=FaultBook(self.world.seed),
            counters=RequestCounters(names),
            clock=Clock(self.world.epoch, live=live_clock),
            unauth_delay_s=delay,
            latency_s=latency_ms / 1000,
            acl=parse_acl(acl) if isinstance(acl, str) else acl,
        )
        self.tls: TlsMaterial | None = None
        self._sites: dict[str, _Site] = {}
        self._control_site: _Site | None = None
        self._started = False
        self.warm_cache = warm_cache
        self._warm_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _port_for(self, i: int) -> int:
        return self.base_port + i if self.base_port else 0

    async def _start_site(self, runner: web.AppRunner, port: int) -> tuple[web.TCPSite, int]:
        assert self.tls is not None
        site = web.TCPSite(runner, self.host, port, ssl_context=self.tls.server_context(), reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        bound = sockets[0].getsockname()[1] if sockets else port
        return site, bound

    async def start(self) -> None:
        if self._started:
            return
        self.tls = await asyncio.to_thread(make_tls, (self.host,))
        try:
            for i, cluster in enumerate(self.world.clusters):
                adder = (lambda app: add_control_routes(app, self)) if self.control else None
                app = make_cluster_app(self.state, cluster, adder)
                runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
                await runner.setup()
                site, port = await self._start_site(runner, self._port_for(i))
                self._sites[cluster.name] = _Site(runner, site, port)
            if self.control:
                runner = web.AppRunner(
                    make_control_app(self), handler_cancellation=True, shutdown_timeout=0.5, access_log=None
                )
                await runner.setup()
                site, port = await self._start_site(runner, self._port_for(len(self.world.clusters)))
                self._control_site = _Site(runner, site, port)
        except BaseException:
            await self.stop()
            raise
        self._started = True
        if self.warm_cache and not self.state.clock.live:
            await self._warm_all()
        self._write_world_out()
        log.info(
            "sim.started",
            endpoints=len(self._sites),
            control=self.control,
            ports=[s.port for s in self._sites.values()],
        )

    async def _warm_all(self) -> None:
        for cluster in self.world.clusters:
            await warm(self.state, cluster.name)

    async def stop(self) -> None:
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
            self._warm_task = None
        for s in [*self._sites.values(), *([self._control_site] if self._control_site else [])]:
            await s.runner.cleanup()
        for transport in list(self.state.transports):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        self.state.transports.clear()
        await asyncio.sleep(0)  # let the aborted transports' connection_lost callbacks run
        self._sites.clear()
        self._control_site = None
        if self.tls is not None:
            shutil.rmtree(self.tls.directory, ignore_errors=True)
            self.tls = None
        if self._started:
            log.info("sim.stopped")
        self._started = False

    # ------------------------------------------------------------------------------------ endpoints

    @property
    def ca_path(self) -> str:
        if self.tls is None:
            raise RuntimeError("the simulator is not running")
        return self.tls.ca_path

    @property
    def endpoints(self) -> list[Endpoint]:
        creds = self.credentials
        return [
            Endpoint(
                name=c.name,
                standalone=c.standalone,
                host=self.host,
                port=self._sites[c.name].port,
                ca_path=self.ca_path,
                user=creds.user,
                password=creds.password,
                token_id=creds.token_id,
                token_secret=self.state.auth.token_secret,
            )
            for c in self.world.clusters
            if c.name in self._sites
        ]

    def endpoint(self, name: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(f"no endpoint {name!r}")

    @property
    def control_port(self) -> int | None:
        return self._control_site.port if self._control_site else None

    def startup_info(self) -> dict[str, Any]:
        """The JSON line ``proxbox sim`` prints: endpoints, CA, credentials, control port."""
        creds = self.credentials
        control = None
        if self._control_site is not None:
            control = {
                "host": self.host,
                "port": self._control_site.port,
                "url": f"https://{self.host}:{self._control_site.port}/_sim",
            }
        return {
            "event": "sim.ready",
            "seed": self.world.seed,
            "ca_path": self.ca_path,
            "endpoints": [ep.as_dict() for ep in self.endpoints],
            "credentials": {
                "user": creds.user,
                "password": creds.password,
                "token_id": creds.token_id,
                "token_secret": self.state.auth.token_secret,
                "token": f"{creds.token_id}={self.state.auth.token_secret}",
            },
            "control": control,
            "pve_exact": self.pve_exact,
            "summary": {
                c.name: {"nodes": len(c.nodes), "guests": len(c.guests)} for c in self.world.clusters
            },
        }

    def proxmox_settings(
        self, auth: Literal["token", "ticket"] = "token", **overrides: Any
    ) -> list[ProxmoxSettings]:
        """One :class:`ProxmoxSettings` per endpoint, verifying TLS against the simulator's CA."""
        if auth not in ("token", "ticket"):
            raise ValueError("auth must be 'token' or 'ticket'")
        out = []
        for ep in self.endpoints:
            kw: dict[str, Any] = {
                "name": ep.name,
                "host": ep.host,
                "port": ep.port,
                "user": ep.user,
                "verify_ssl": ep.ca_path,
            }
            if auth == "token":
                kw.update(token_name=ep.token_name, token_value=ep.token_secret)
            else:
                kw.update(password=ep.password)
            kw.update(overrides)
            out.append(ProxmoxSettings(**kw))
        return out

    # ---------------------------------------------------------------------------------------- faults

    def add_fault(self, spec: Mapping[str, Any] | None = None, **kw: Any) -> int:
        """Add a fault rule (see :mod:`proxbox.sim.faults`); returns its id."""
        rule = self.state.faults.add({**(spec or {}), **kw})
        log.info("sim.fault_added", id=rule.id, action=rule.action, path=rule.path or rule.path_regex)
        return rule.id

    def remove_fault(self, rule_id: int) -> bool:
        return self.state.faults.remove(rule_id)

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.state.faults.rules]

    def node_offline(self, cluster: str, node: str, reason: str = "No route to host") -> None:
        """595 for ``/nodes/{node}/*``, offline in cluster status, /nodes and resources (guests "unknown")."""
        c = self.world.cluster(cluster)
        n = c.node(node)
        if n is None:
            raise KeyError(f"cluster {cluster} has no node {node!r}")
        n.online, n.offline_reason = False, reason
        c.touch()
        self._world_changed()

    def set_acl(self, acl: Acl | str | None) -> None:
        """What the user and its token may see from now on (None: everything); a string in ``--acl`` form."""
        self.state.acl = parse_acl(acl) if isinstance(acl, str) else acl

    def node_online(self, cluster: str, node: str) -> None:
        c = self.world.cluster(cluster)
        n = c.node(node)
        if n is None:
            raise KeyError(f"cluster {cluster} has no node {node!r}")
        n.online = True
        c.touch()
        self._world_changed()

    async def cluster_down(self, cluster: str, *, keep: object = None) -> None:
        """Stop the cluster's listener and close its open connections: new connections are refused.

        ``keep``: the connection (``request.protocol``) of a control call arriving on this very port; it is
        answered first, then closed."""
        s = self._sites[self.world.cluster(cluster).name]
        if s.site is None:
            return
        await s.site.stop()
        s.site = None
        server = s.runner.server
        for conn in server.connections if server is not None else []:
            if conn is keep:
                conn.close()
            else:
                conn.force_close()
        log.info("sim.cluster_down", cluster=cluster, port=s.port)

    async def cluster_up(self, cluster: str) -> None:
        s = self._sites[self.world.cluster(cluster).name]
        if s.site is not None:
            return
        s.site, _ = await self._start_site(s.runner, s.port)
        log.info("sim.cluster_up", cluster=cluster, port=s.port)

    def revoke_tickets(self) -> None:
        self.state.auth.revoke_tickets()

    def rotate_token(self, secret: str | None = None) -> str:
        return self.state.auth.rotate_token(secret)

    # ----------------------------------------------------------------------------------------- world

    def drift(
        self, steps: int | None = None, seed: int | str | None = None, op: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """``drift(steps=1, seed=...)``: seeded batches;
        ``drift(op="rename", cluster=..., vmid=..., name=...)``: one targeted change.
        Returns the change records."""
        if op is not None:
            if steps is not None:
                raise ValueError("give either steps or op, not both")
            changes = [drift_mod.apply_op(self.world, {"op": op, **kw}, self.profile)]
        else:
            if kw:
                raise ValueError(f"unknown drift arguments: {', '.join(sorted(kw))}")
            changes = drift_mod.drift_steps(
                self.world, 1 if steps is None else int(steps), seed, self.profile
            )
        self._world_changed()
        log.info("sim.drifted", changes=len(changes))
        return changes

    def requests(self) -> dict[str, Any]:
        return self.state.counters.snapshot()

    def reset_requests(self) -> None:
        self.state.counters.reset()

    def dump(self) -> dict[str, Any]:
        return oracle.dump(self.world)

    def _world_changed(self) -> None:
        if self._started and self.warm_cache and not self.state.clock.live:
            if self._warm_task is not None:
                self._warm_task.cancel()
            self._warm_task = asyncio.get_running_loop().create_task(self._warm_all())
        self._write_world_out()

    def _write_world_out(self) -> None:
        if self.world_out:
            path = Path(self.world_out)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(self.dump(), indent=1, sort_keys=False) + "\n")
            tmp.replace(path)


class SimThread:
    """A :class:`SimServer` on its own event loop in a daemon thread, with a blocking API.

    ``with SimThread(world, control=True) as sim: ...`` or ``start()``/``stop()``. Every method runs on the
    server's loop, so it is safe to call from any thread (including a test's event loop thread).
    """

    def __init__(self, world: World | None = None, **kwargs: Any) -> None:
        self._server = SimServer(world, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SimThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> SimServer:
        return self._server

    def start(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="proxbox-sim", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        try:
            self._run(self._server.start(), timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            if self._loop.is_running():
                self._run(self._server.stop(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
            self._loop = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the simulator thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def call() -> T:
            return fn(*args, **kwargs)

        return self._run(call())

    # the SimServer API, blocking
    world = property(lambda self: self._server.world)
    credentials = property(lambda self: self._server.credentials)
    ca_path = property(lambda self: self._server.ca_path)
    control_port = property(lambda self: self._server.control_port)

    @property
    def endpoints(self) -> list[Endpoint]:
        return self._call(lambda: self._server.endpoints)

    def endpoint(self, name: str) -> Endpoint:
        return self._call(self._server.endpoint, name)

    def startup_info(self) -> dict[str, Any]:
        return self._call(self._server.startup_info)

    def proxmox_settings(
        self, auth: Literal["token", "ticket"] = "token", **overrides: Any
    ) -> list[ProxmoxSettings]:
        return self._call(self._server.proxmox_settings, auth, **overrides)

    def add_fault(self, spec: Mapping[str, Any] | None = None, **kw: Any) -> int:
        return self._call(self._server.add_fault, spec, **kw)

    def remove_fault(self, rule_id: int) -> bool:
        return self._call(self._server.remove_fault, rule_id)

    def clear_faults(self) -> None:
        self._call(self._server.clear_faults)

    def faults(self) -> list[dict[str, Any]]:
        return self._call(self._server.faults)

    def node_offline(self, cluster: str, node: str, reason: str = "No route to host") -> None:
        self._call(self._server.node_offline, cluster, node, reason)

    def node_online(self, cluster: str, node: str) -> None:
        self._call(self._server.node_online, cluster, node)

    def set_acl(self, acl: Acl | str | None) -> None:
        self._call(self._server.set_acl, acl)

    def cluster_down(self, cluster: str) -> None:
        self._run(self._server.cluster_down(cluster))

    def cluster_up(self, cluster: str) -> None:
        self._run(self._server.cluster_up(cluster))

    def revoke_tickets(self) -> None:
        self._call(self._server.revoke_tickets)

    def rotate_token(self, secret: str | None = None) -> str:
        return self._call(self._server.rotate_token, secret)

    def drift(
        self, steps: int | None = None, seed: int | str | None = None, op: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        return self._call(self._server.drift, steps, seed, op, **kw)

    def requests(self) -> dict[str, Any]:
        return self._call(self._server.requests)

    def reset_requests(self) -> None:
        self._call(self._server.reset_requests)

    def dump(self) -> dict[str, Any]:
        return self._call(self._server.dump)
