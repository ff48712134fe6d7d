"""Helpers for applications that embed a hub in their own server (a Starlette or FastAPI app,
a devtools server): see ``docs/embedding.md``.

The hub keeps the registry of attached connections itself (:meth:`streamproto.Hub.peers`,
``peer_count``, ``peer(id)``, :meth:`streamproto.Peer.close`) and sends the GOAWAYs
(:meth:`streamproto.Hub.shutdown`); what needs a clock and a loop — waiting for the drain —
is here, for asyncio and trio alike.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from streamproto import ErrorCode, Hub, LocalProtocolError

__all__ = ["DRAIN_POLL", "shutdown_hub"]

#: How often :func:`shutdown_hub` looks whether the connections have drained (seconds).
DRAIN_POLL = 0.01


async def shutdown_hub(
    hub: Hub,
    timeout: float,
    *,
    sleep: Callable[[float], Awaitable[object]],
    clock: Callable[[], float],
) -> int:
    """Shut down every connection attached to ``hub``, whatever adapter attached it: GOAWAY
    (NO_ERROR) to each, so open streams drain and no new requests or handshakes are taken;
    wait up to ``timeout`` seconds until every connection ended; then close what is left
    with GOAWAY SERVER_SHUTDOWN. Returns how many connections had to be closed that way.

    Run it on the loop that drives the hub's connections, with that loop's ``sleep`` and
    clock (``asyncio.sleep`` and ``loop.time``, ``trio.sleep`` and ``trio.current_time``).
    Handlers and HTTP exchanges are the application's to stop; the adapters close each
    transport once its connection has ended."""
    if not timeout >= 0 or math.isinf(timeout):
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT, f"timeout must be a finite number >= 0: {timeout!r}"
        )
    hub.shutdown(ErrorCode.NO_ERROR)
    deadline = clock() + timeout
    while hub.peer_count and clock() < deadline:
        await sleep(min(DRAIN_POLL, max(0.0, deadline - clock())))
    forced = hub.peer_count
    if forced:
        hub.shutdown(ErrorCode.SERVER_SHUTDOWN)
    return forced
