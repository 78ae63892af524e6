"""``proxbox`` command line: argv/env → Settings → logging → run. The only place that exits the process.

Each subcommand lives in its own module exposing ``HELP``, ``configure(parser)`` and ``run(args) -> int``;
this module only wires them, loads settings on request and maps errors to exit codes:
0 success, 1 the work failed (a run not ``succeeded``, a server that could not start), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from proxbox import __version__
from proxbox.errors import ConfigError, ProxboxError

# name -> module; order is the order of `proxbox --help`
COMMANDS: dict[str, str] = {
    "serve": "proxbox.web.serve",
    "sync": "proxbox.sync.cli",
    "sim": "proxbox.sim.cli",
    "demo": "proxbox.demo",
    "watch": "proxbox.watch",
    "config": "proxbox.config_cli",
}


def _available_commands() -> dict[str, Any]:
    modules = {}
    for name, path in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (path == exc.name or path.startswith(exc.name + ".")):
                raise  # a real missing dependency inside the module: do not hide it
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxbox",
        description="Keep NetBox true to Proxmox VE, and watch every sync live.",
    )
    parser.add_argument("--version", action="version", version=f"proxbox {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (default: $PROXBOX_CONFIG or /etc/proxbox/proxbox.toml)",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override [logging].level"
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"], help="override [logging].format")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        # accept --config after the subcommand too (proxbox config check --config FILE)
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        print(f"proxbox: config error: {exc}", file=sys.stderr)
        return 2
    except ProxboxError as exc:
        print(f"proxbox: error [{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
