"""Check an adapter against the protocol scenarios: ``streamproto.testing.check_adapter``.

    python examples/conformance_check.py [SERVER CLIENT TRANSPORT] [--scenario NAME ...]

SERVER and CLIENT name adapters of the ``transports`` package (asyncio, trio, sync) and
TRANSPORT is tcp or ws; the defaults check the asyncio server against the trio client over
WebSocket. An adapter of your own is described with ``transports.testing.Adapter`` (its
``serve`` and ``connect``) and checked the same way: see docs/testing.md. Prints one line per
scenario and the summary; exits 1 if any scenario failed.
"""

from __future__ import annotations

import argparse
import sys

from streamproto.testing import SCENARIOS, ConformanceReport, check_adapter
from transports.testing import BACKENDS, TRANSPORTS, pair_factory


def main(
    server: str = "asyncio",
    client: str = "trio",
    transport: str = "ws",
    scenarios: list[str] | None = None,
    quiet: bool = False,
) -> ConformanceReport:
    make_pair = pair_factory(server, client, transport)
    report = check_adapter(make_pair, scenarios=scenarios, raise_on_failure=False)
    if not quiet:
        print(f"{server} server, {client} client, over {transport}")
        for result in report.results:
            print(f"  {'ok  ' if result.passed else 'FAIL'} {result.name}: {result.doc}")
            if not result.passed:
                print(f"       {result.error!r}")
        print(f"{len(report.results) - len(report.failures)} passed, {len(report.failures)} failed")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", nargs="?", default="asyncio", choices=BACKENDS)
    parser.add_argument("client", nargs="?", default="trio", choices=BACKENDS)
    parser.add_argument("transport", nargs="?", default="ws", choices=TRANSPORTS)
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    args = parser.parse_args()
    outcome = main(args.server, args.client, args.transport, args.scenario)
    sys.exit(0 if outcome.passed else 1)
