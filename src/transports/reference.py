"""The reference server for the wire conformance runner.

    python -m transports.reference tcp://127.0.0.1:9000 [--backend asyncio|trio|sync]
                                   [--store redis://host:port/db | redis+cluster://host:port]
    python -m transports.reference http://127.0.0.1:9000 --allow-origin http://localhost:8000

Serves a hub with the channels of ``spec/CONFORMANCE.md`` (see
``streamproto.testing.reference.register_reference_channels``) with the chosen backend (asyncio
by default) until interrupted. It prints ``reference server on <address>`` once it listens
(port 0 picks a free port). An ``http://`` URL serves the same channels over HTTP/SSE
(spec/HTTP.md) and WebSocket upgrades on one port; ``--allow-origin`` (repeatable) lets pages
of that origin call it (CORS). With ``--store`` its streams live in that Redis, or Redis
Cluster with a ``redis+cluster://`` URL (see ``transports.redis``), so several reference
servers pointed at one Redis serve the same streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from typing import Any

from streamproto import HttpOptions, Hub, ReplayStore
from streamproto.testing.reference import register_reference_channels

from ._hubs import new_hub
from .cli import _url_help

BACKENDS = ("asyncio", "trio", "sync")


def reference_hub(store: ReplayStore | None = None) -> Hub:
    """A hub with the conformance channels (its history in ``store``; None: in memory)."""
    hub = new_hub(store=store)
    register_reference_channels(hub)
    return hub


def _store(url: str | None) -> Any:
    if url is None:
        return None
    from .redis import RedisStore  # noqa: PLC0415 - redis is an optional extra

    return RedisStore(url)


def _listening(address: str) -> None:
    print(f"reference server on {address}", flush=True)


async def _serve_asyncio(url: str, http: HttpOptions, store_url: str | None) -> None:
    from . import asyncio as backend  # noqa: PLC0415 - load only the backend asked for

    store = _store(store_url)
    server = await backend.serve(reference_hub(store), url, http=http)
    async with contextlib.AsyncExitStack() as stack:
        if store is not None:
            from .redis import open_asyncio_driver  # noqa: PLC0415

            await stack.enter_async_context(open_asyncio_driver(store, server))
        _listening(server.address)
        try:
            await asyncio.Event().wait()
        finally:
            await server.shutdown(timeout=1.0)


async def _serve_trio(url: str, http: HttpOptions, store_url: str | None) -> None:
    import trio  # noqa: PLC0415 - trio is an optional extra

    from . import trio as backend  # noqa: PLC0415

    store = _store(store_url)
    async with (
        backend.serve(reference_hub(store), url, http=http) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        if store is not None:
            from .redis import open_trio_driver  # noqa: PLC0415

            await stack.enter_async_context(open_trio_driver(store, server))
        _listening(server.address)
        await trio.sleep_forever()


def _serve_sync(url: str, http: HttpOptions, store_url: str | None) -> None:
    from . import sync as backend  # noqa: PLC0415 - load only the backend asked for

    store = _store(store_url)
    server = backend.serve(reference_hub(store), url, http=http)
    with contextlib.ExitStack() as stack:
        if store is not None:
            from .redis import open_thread_driver  # noqa: PLC0415

            stack.enter_context(open_thread_driver(store, server))
        _listening(server.address)
        try:
            threading.Event().wait()
        finally:
            server.shutdown(timeout=1.0)


def serve(
    url: str,
    backend: str = "asyncio",
    store: str | None = None,
    allow_origins: tuple[str, ...] = (),
) -> None:
    """Serve the reference hub at ``url`` with ``backend`` until interrupted; ``store``
    (``redis://host:port/db``, or ``redis+cluster://host:port`` for a Redis Cluster) keeps
    its streams in Redis, shared with other servers; an
    ``http://`` listener lets pages of ``allow_origins`` call it."""
    http = HttpOptions(allow_origins=allow_origins)
    if backend == "trio":
        import trio  # noqa: PLC0415 - trio is an optional extra

        trio.run(_serve_trio, url, http, store)
    elif backend == "sync":
        _serve_sync(url, http, store)
    else:
        asyncio.run(_serve_asyncio(url, http, store))


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m transports.reference")
    parser.add_argument("url", help=_url_help())
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio")
    parser.add_argument(
        "--store",
        default=None,
        help="redis://host:port/db, or redis+cluster://host:port (any node of a Redis "
        "Cluster): keep streams in this Redis",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        help="an origin whose pages may call the HTTP listener (CORS); repeatable, * for any",
    )
    args = parser.parse_args(argv)
    try:
        serve(args.url, args.backend, args.store, tuple(args.allow_origin))
    except* KeyboardInterrupt:  # trio may deliver it inside an exception group
        pass


if __name__ == "__main__":
    main()
