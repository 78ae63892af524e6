"""``proxbox config check`` and ``proxbox config example``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from proxbox.config import load_settings, redacted, to_toml

HELP = "validate a configuration file, or print a commented example"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check", help="validate the config and print the effective settings, secrets redacted"
    )
    check.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    sub.add_parser("example", help="print a fully commented configuration with every default")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "example":
        from proxbox.config_example import example_config

        sys.stdout.write(example_config())
        return 0
    settings = load_settings(getattr(args, "config", None), os.environ)
    data = redacted(settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"# {settings.source}: OK")
        print(to_toml(data), end="")
    return 0
