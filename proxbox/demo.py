"""``proxbox demo``: the whole thing on one machine, in one command.

1. a real NetBox: the project's local development instance (``tools/netbox-dev up``: installed on first use,
   reused afterwards), or an existing one given with ``--netbox-url`` and ``--netbox-token``;
2. the Proxmox VE simulator, in-process (a small generated world: ``--clusters``, ``--nodes``, ``--guests``);
3. the proxbox server on ``--port``, with a full sync started at once;
4. that sync shown live in the terminal (the ``proxbox watch`` renderer, over the server's WebSocket API);
5. where to look next: the status page, the metrics, NetBox and its login.

Then it keeps serving until Ctrl-C (or exits at once with ``--once``). Exit status: 0 if the sync succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, TextIO

import attrs

from proxbox.config import Settings, settings_from_dict
from proxbox.errors import ConfigError
from proxbox.logsetup import configure_logging, get_logger

log = get_logger(__name__)

HELP = "start the simulator, a local NetBox and the server, run a full sync and show it live"

DEFAULT_PORT = 8800


@attrs.frozen(kw_only=True)
class NetBoxTarget:
    url: str
    token: str
    login: str | None = None  # "user / password" of a local development instance
    local: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--netbox-url", metavar="URL", help="use this NetBox instead of the local dev instance"
    )
    parser.add_argument("--netbox-token", metavar="TOKEN", help="its API token (write access)")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"server port (default {DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument("--clusters", type=int, default=2, help="simulated clusters (default 2)")
    parser.add_argument("--nodes", type=int, default=2, help="nodes per cluster (default 2)")
    parser.add_argument("--guests", type=int, default=12, help="guests per cluster (default 12)")
    parser.add_argument("--seed", default="demo", help="world seed: the same seed gives the same world")
    parser.add_argument("--state-dir", metavar="DIR", help="run history directory (default: a temporary one)")
    parser.add_argument("--once", action="store_true", help="exit after the sync instead of serving")
    parser.add_argument("--plain", action="store_true", help="plain lines even on a terminal")


def _out() -> TextIO:
    return sys.stdout


def say(text: str = "") -> None:
    out = _out()
    out.write(text + "\n")
    out.flush()


def netbox_target(args: argparse.Namespace) -> NetBoxTarget:
    """The NetBox to sync into: the one given, or the local development instance (started if needed)."""
    url = args.netbox_url or os.environ.get("PROXBOX_NETBOX_URL")
    token = args.netbox_token or os.environ.get("PROXBOX_NETBOX_TOKEN")
    if url or token:
        if not (url and token):
            raise ConfigError("--netbox-url", "give both --netbox-url and --netbox-token (or neither)")
        return NetBoxTarget(url=url.rstrip("/"), token=token)
    from proxbox import devnetbox

    say(
        "NetBox: starting the local development instance (the first time installs NetBox: several minutes)..."
    )
    instance = devnetbox.NetBoxHarness().dev_up()
    return NetBoxTarget(
        url=instance.url,
        token=instance.token,
        login=f"{devnetbox.ADMIN_USER} / {devnetbox.ADMIN_PASSWORD}",
        local=True,
    )


def pick_port(host: str, wanted: int) -> int:
    """``wanted`` if it is free, else (or for 0) any free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in ([wanted] if wanted else []) + [0]:
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ConfigError("--port", f"no free port on {host}")


def demo_settings(netbox: NetBoxTarget, *, host: str, port: int, state_dir: str) -> Settings:
    return settings_from_dict(
        {
            "server": {"host": host, "port": port, "state_dir": state_dir, "drain_grace_s": 10.0},
            "netbox": {"url": netbox.url, "token": netbox.token},
        },
        source="proxbox demo",
    )


def run(args: argparse.Namespace) -> int:
    # the run's own frames show every problem; the server's warnings would only interleave with them
    configure_logging(getattr(args, "log_level", None) or "error", "console", stream=sys.stderr)
    for name in ("clusters", "nodes", "guests"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}", "must be 1 or more")
    netbox = netbox_target(args)
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="proxbox-demo-")
    try:
        return asyncio.run(_demo(args, netbox, state_dir))
    finally:
        if not args.state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)


async def _demo(args: argparse.Namespace, netbox: NetBoxTarget, state_dir: str) -> int:
    from proxbox.sim import SimServer, generate
    from proxbox.web.keys import RUNS
    from proxbox.web.serve import serve

    world = generate(seed=args.seed, clusters=args.clusters, nodes=args.nodes, guests=args.guests)
    port = pick_port(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{port}"
    async with SimServer(world) as sim:
        guests = sum(len(c.guests) for c in world.clusters)
        nodes = sum(len(c.nodes) for c in world.clusters)
        size = f"{_n(len(world.clusters), 'cluster')}, {_n(nodes, 'node')}, {_n(guests, 'guest')}"
        say(f"Proxmox VE simulator: {size}")
        for ep in sim.endpoints:
            say(f"  {ep.name}: {ep.url}")
        say(f"NetBox: {netbox.url}")
        settings = demo_settings(netbox, host=args.host, port=port, state_dir=state_dir)
        settings = attrs.evolve(settings, proxmox=tuple(sim.proxmox_settings(auth="token")))

        stop = asyncio.Event()
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_ready(app: Any) -> None:
            run, _ = app[RUNS].trigger("full", trigger="demo")
            started.set_result(run.id)

        server = asyncio.create_task(
            serve(settings, on_ready=on_ready, stop=stop), name="proxbox-demo-server"
        )
        try:
            code = await _show(args, base, netbox, started, server, stop)
        finally:
            stop.set()
            await asyncio.wait([server])
        error = None if server.cancelled() else server.exception()
        if isinstance(error, OSError):
            raise ConfigError("--port", f"cannot serve on {base}: {error.strerror or error}")
        if error is not None:
            raise error
        return code


async def _show(
    args: argparse.Namespace,
    base: str,
    netbox: NetBoxTarget,
    started: asyncio.Future[str],
    server: asyncio.Task[None],
    stop: asyncio.Event,
) -> int:
    """Follow the sync to its end, print where to look next, then serve until Ctrl-C (unless ``--once``)."""
    from proxbox.watch import RunWatcher, make_renderer

    run_id = await _first(started, server, stop)
    if run_id is None:
        return 130 if stop.is_set() else 1
    say(f"proxbox server: {base} (full sync {run_id} started)")
    say()
    watcher = RunWatcher(base, run_id, renderer=make_renderer(plain=True if args.plain else None))
    follow = asyncio.ensure_future(watcher.follow())
    if await _first(follow, server, stop) is None:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        return 130 if stop.is_set() else 1
    view = follow.result()
    say()
    _next_steps(base, netbox, run_id)
    if not args.once:
        say(f"Serving until Ctrl-C. Another sync:  curl -X POST {base}/sync/full")
        await _first(server, stop)
    return view.exit_code


async def _first(main: asyncio.Future[Any], *others: Any) -> Any:
    """``main``'s result, or None if one of ``others`` (a task ending, an event set) comes first."""
    waiters = [o if isinstance(o, asyncio.Future) else asyncio.ensure_future(o.wait()) for o in others]
    try:
        await asyncio.wait([main, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w, o in zip(waiters, others, strict=True):
            if w is not o:
                w.cancel()
    if main.done() and not main.cancelled():
        return main.result()
    return None


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _next_steps(base: str, netbox: NetBoxTarget, run_id: str) -> None:
    say("Where to look next:")
    say(f"  status page   {base}/status")
    say(f"  this run      proxbox watch {base} --run {run_id}")
    say(f"  run history   {base}/runs")
    say(f"  metrics       {base}/metrics")
    login = f"  (login {netbox.login})" if netbox.login else ""
    say(f"  NetBox        {netbox.url}/virtualization/virtual-machines/{login}")
    if netbox.local:
        say("  (the local NetBox keeps running: tools/netbox-dev down stops it)")
