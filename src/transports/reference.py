"""The reference server for the wire conformance runner.

    python -m transports.reference tcp://127.0.0.1:9000 [--backend asyncio|trio|sync]

Serves a hub with the channels of ``spec/CONFORMANCE.md`` (see
``streamproto.testing.reference.register_reference_channels``) with the chosen backend (asyncio
by default) until interrupted. It prints ``reference server on <address>`` once it listens
(port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import threading

from streamproto import Hub
from streamproto.testing.reference import register_reference_channels

from ._hubs import new_hub

BACKENDS = ("asyncio", "trio", "sync")


def reference_hub() -> Hub:
    """A hub with the conformance channels."""
    hub = new_hub()
    register_reference_channels(hub)
    return hub


def _listening(address: str) -> None:
    print(f"reference server on {address}", flush=True)


async def _serve_asyncio(url: str) -> None:
    from . import asyncio as backend  # noqa: PLC0415 - load only the backend asked for

    server = await backend.serve(reference_hub(), url)
    _listening(server.address)
    try:
        await asyncio.Event().wait()
    finally:
        await server.shutdown(timeout=1.0)


async def _serve_trio(url: str) -> None:
    import trio  # noqa: PLC0415 - trio is an optional extra

    from . import trio as backend  # noqa: PLC0415

    async with backend.serve(reference_hub(), url) as server:
        _listening(server.address)
        await trio.sleep_forever()


def _serve_sync(url: str) -> None:
    from . import sync as backend  # noqa: PLC0415 - load only the backend asked for

    server = backend.serve(reference_hub(), url)
    _listening(server.address)
    try:
        threading.Event().wait()
    finally:
        server.shutdown(timeout=1.0)


def serve(url: str, backend: str = "asyncio") -> None:
    """Serve the reference hub at ``url`` with ``backend`` until interrupted."""
    if backend == "trio":
        import trio  # noqa: PLC0415 - trio is an optional extra

        trio.run(_serve_trio, url)
    elif backend == "sync":
        _serve_sync(url)
    else:
        asyncio.run(_serve_asyncio(url))


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m transports.reference")
    parser.add_argument("url", help="tcp://host:port or ws://host:port/path")
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio")
    args = parser.parse_args(argv)
    try:
        serve(args.url, args.backend)
    except* KeyboardInterrupt:  # trio may deliver it inside an exception group
        pass


if __name__ == "__main__":
    main()
