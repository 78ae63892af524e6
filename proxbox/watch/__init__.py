"""``proxbox watch [URL] [--run ID|latest] [--api-key KEY]``: follow a run live in the terminal.

Per-phase progress bars on a terminal (plain lines when stdout is not a TTY, or with ``--plain``), errors as
they happen, the summary at the end. Reconnects and resumes (``since``) when the connection drops.
Exit status:
0 the run succeeded; 1 it ended partial, failed or cancelled, or could not be followed (no such run, server
unreachable); 2 bad usage (bad URL, API key refused).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from proxbox.errors import ConfigError, InvalidRequest, Unauthorized
from proxbox.logsetup import configure_logging
from proxbox.watch.client import DEFAULT_URL, Backoff, RunWatcher, base_url
from proxbox.watch.render import PlainRenderer, Renderer, RichRenderer, make_renderer
from proxbox.watch.view import EXIT_NOT_SUCCEEDED, EXIT_SUCCEEDED, EXIT_USAGE, RunView

__all__ = [
    "EXIT_NOT_SUCCEEDED",
    "EXIT_SUCCEEDED",
    "EXIT_USAGE",
    "Backoff",
    "PlainRenderer",
    "Renderer",
    "RichRenderer",
    "RunView",
    "RunWatcher",
    "make_renderer",
]

HELP = (
    "follow a run live: per-phase progress, errors as they happen, the summary; exit 0 only if it succeeded"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", help=f"server URL (default: $PROXBOX_URL or {DEFAULT_URL})")
    parser.add_argument("--run", default="latest", metavar="ID", help="run id, or 'latest' (default)")
    parser.add_argument("--api-key", metavar="KEY", help="API key (default: $PROXBOX_API_KEY)")
    parser.add_argument("--api-key-file", metavar="FILE", help="read the API key from this file")
    parser.add_argument("--since", type=int, default=0, metavar="N", help="skip frames up to seq N")
    parser.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every item, unchanged ones too")
    parser.add_argument(
        "--retries", type=int, default=10, metavar="N", help="reconnect attempts in a row before giving up"
    )


def api_key_from(args: argparse.Namespace, env: dict[str, str] | os._Environ[str]) -> str | None:
    if args.api_key:
        return str(args.api_key)
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise ConfigError(
                "--api-key-file", f"cannot read {args.api_key_file!r}: {exc.strerror or exc}"
            ) from None
        return key[0].strip() if key else None
    return env.get("PROXBOX_API_KEY") or None


def run(args: argparse.Namespace) -> int:
    configure_logging(getattr(args, "log_level", None) or "warning", "console", stream=sys.stderr)
    if args.since < 0 or args.retries < 0:
        print("proxbox watch: --since and --retries must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        base = base_url(args.url or os.environ.get("PROXBOX_URL") or DEFAULT_URL)
    except InvalidRequest as exc:
        print(f"proxbox watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    watcher = RunWatcher(
        base,
        args.run,
        renderer=make_renderer(plain=True if args.plain else None, verbose=args.verbose),
        api_key=api_key_from(args, os.environ),
        since=args.since,
        backoff=Backoff(attempts=args.retries),
    )
    try:
        view = asyncio.run(watcher.follow())
    except (Unauthorized, InvalidRequest) as exc:
        print(f"proxbox watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return view.exit_code
