"""`ng911` command line: one small module per subcommand, wired here."""
from __future__ import annotations

import argparse
import sys

from ng911 import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ng911",
        description=(
            "NG9-1-1 emergency call controller: a SIP third-party call controller (RFC 3725) "
            "that keeps the caller's upstream leg up while the PSAP leg moves between "
            "answer points."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ng911 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommands():
        module.register(sub)
    return parser


def _subcommands() -> list:  # type: ignore[type-arg]
    from ng911.cli import call_cmd, demo_cmd, serve_cmd, ua_cmd

    return [serve_cmd, demo_cmd, ua_cmd, call_cmd]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
