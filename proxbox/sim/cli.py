"""``proxbox sim``: serve a simulated Proxmox VE world until SIGINT/SIGTERM.

Prints exactly one JSON line on stdout once every endpoint listens (endpoints, CA path, credentials, control
port); logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from proxbox.errors import ConfigError
from proxbox.logsetup import configure_logging
from proxbox.sim.acl import parse_acl
from proxbox.sim.auth import Credentials
from proxbox.sim.generate import generate
from proxbox.sim.model import EPOCH
from proxbox.sim.server import SimServer

HELP = "serve a simulated Proxmox VE world (HTTPS, one port per cluster) for tests and demos"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", default="1", help="world seed (same seed and sizes: same answers, byte for byte)"
    )
    parser.add_argument("--clusters", type=int, default=2, help="number of clusters (default 2)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes per cluster (default 3)")
    parser.add_argument("--guests", type=int, default=20, help="guests per cluster, ~70%% qemu (default 20)")
    parser.add_argument(
        "--standalone", type=int, default=0, help="extra single-node endpoints (no cluster row)"
    )
    parser.add_argument(
        "--offline-node",
        action="append",
        default=[],
        metavar="CLUSTER/NODE",
        help="a node that starts offline (repeatable)",
    )
    parser.add_argument("--epoch", type=int, default=EPOCH, help=f"the frozen clock (default {EPOCH})")
    parser.add_argument(
        "--live-clock", action="store_true", help="let uptimes and counters move with real time"
    )
    parser.add_argument(
        "--listen", default="127.0.0.1", metavar="ADDR", help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        metavar="PORT",
        help="endpoint i listens on PORT+i (control port after them); 0: free ports",
    )
    parser.add_argument(
        "--control", action="store_true", help="enable the /_sim control API (faults, drift...)"
    )
    parser.add_argument(
        "--world-out", metavar="FILE", help="write the world dump here (rewritten on every change)"
    )
    parser.add_argument("--user", default="root@pam", help="the ticket-auth user (default root@pam)")
    parser.add_argument("--password", help="its password (default: random, printed in the JSON line)")
    parser.add_argument(
        "--token",
        metavar="USER@REALM!ID=SECRET",
        help="the accepted API token (default: <user>!proxbox=<random uuid>)",
    )
    parser.add_argument("--ticket-ttl", type=float, default=7200.0, metavar="SECONDS", help="ticket lifetime")
    parser.add_argument(
        "--pve-exact", action="store_true", help="PVE timing quirks too: 401s are delayed 3 s"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="MS", help="added to every API answer (default 0)"
    )
    parser.add_argument(
        "--acl",
        metavar="PATH=PRIV[,PRIV];...",
        help="what the user and token may see, e.g. '/=Sys.Audit;/vms=VM.Audit;/vms/105='"
        " (default: everything); lists silently leave out the rest, per-object calls get 403",
    )


def _seed(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


async def _serve(args: argparse.Namespace) -> int:
    try:
        world = generate(
            seed=_seed(args.seed),
            clusters=args.clusters,
            nodes=args.nodes,
            guests=args.guests,
            standalone=args.standalone,
            offline=args.offline_node,
            epoch=args.epoch,
        )
        creds = Credentials.make(user=args.user, password=args.password, token=args.token)
        acl = parse_acl(args.acl) if args.acl else None
    except (ValueError, KeyError) as exc:
        raise ConfigError("sim", str(exc.args[0]) if exc.args else str(exc)) from None
    if args.base_port and not 0 < args.base_port + args.clusters + args.standalone < 65536:
        raise ConfigError("sim.base_port", f"ports from {args.base_port} do not fit below 65536")
    sim = SimServer(
        world,
        host=args.listen,
        base_port=args.base_port,
        credentials=creds,
        control=args.control,
        pve_exact=args.pve_exact,
        ticket_ttl_s=args.ticket_ttl,
        live_clock=args.live_clock,
        latency_ms=args.latency_ms,
        world_out=args.world_out,
        acl=acl,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
    except OSError as exc:
        print(f"proxbox sim: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(json.dumps(sim.startup_info(), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    configure_logging(
        getattr(args, "log_level", None) or "info",
        getattr(args, "log_format", None) or "auto",
        stream=sys.stderr,
    )
    return asyncio.run(_serve(args))
