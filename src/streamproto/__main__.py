"""Command line: ``python -m streamproto conformance URL [--json PATH] [--case ID ...]``."""

from __future__ import annotations

import argparse
import sys

from ._diagrams import render


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m streamproto")
    commands = parser.add_subparsers(dest="command", required=True)
    conformance = commands.add_parser(
        "conformance", help="run the wire conformance cases against a server"
    )
    conformance.add_argument("url", help="tcp://host:port or ws://host:port/path")
    conformance.add_argument("--json", metavar="PATH", help="also write a JSON report here")
    conformance.add_argument("--case", action="append", metavar="ID", help="run only these")
    conformance.add_argument("--timeout", type=float, default=5.0, help="seconds per wait")
    commands.add_parser("diagrams", help="print the state diagrams (docs/state-machines.md)")
    args = parser.parse_args(argv)
    if args.command == "diagrams":
        print(render(), end="")
        return 0

    # The runner does I/O, so it lives with the adapters (same distribution).
    from transports.conformance import run  # noqa: PLC0415 - keeps --help fast

    report = run(args.url, only=set(args.case or ()), timeout=args.timeout, out=print)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
