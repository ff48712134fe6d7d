"""The reference server for the wire conformance runner.

    python -m transports.reference tcp://127.0.0.1:9000 [--backend asyncio]

Serves a hub with the channels of ``spec/CONFORMANCE.md`` (see
``streamproto.testing.reference.register_reference_channels``) until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from streamproto import Hub
from streamproto.testing.reference import register_reference_channels

from . import asyncio as backend
from ._hubs import new_hub


def reference_hub() -> Hub:
    """A hub with the conformance channels."""
    hub = new_hub()
    register_reference_channels(hub)
    return hub


async def _serve(url: str) -> None:
    server = await backend.serve(reference_hub(), url)
    print(f"reference server on {server.address}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.shutdown(timeout=1.0)


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m transports.reference")
    parser.add_argument("url", help="tcp://host:port or ws://host:port/path")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.url))


if __name__ == "__main__":
    main()
