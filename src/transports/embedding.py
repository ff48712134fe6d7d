"""Helpers for applications that embed a hub in their own server (a Starlette or FastAPI app,
a devtools server): see ``docs/embedding.md``.

The hub keeps the registry of attached connections itself (:meth:`streamproto.Hub.peers`,
``peer_count``, ``peer(id)``, :meth:`streamproto.Peer.close`) and sends the GOAWAYs
(:meth:`streamproto.Hub.shutdown`); what needs a clock and a loop — waiting for the drain —
is here: :func:`shutdown_hub` for asyncio and trio, :func:`shutdown_hub_blocking` for threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from streamproto import ErrorCode, Hub, LocalProtocolError

__all__ = ["DRAIN_POLL", "shutdown_hub", "shutdown_hub_blocking"]

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
    deadline = _begin(hub, timeout, clock)
    while (forced := _forced(hub, deadline, clock)) is None:
        await sleep(_pause(deadline, clock))
    return forced


def shutdown_hub_blocking(
    hub: Hub,
    timeout: float,
    *,
    lock: AbstractContextManager[object],
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """:func:`shutdown_hub` for threads: the same sequence, blocking the calling thread.
    Every call into ``hub`` is made holding ``lock``, the lock all the embedding's calls into
    that hub are made under (a thread backend server's :attr:`transports.sync.Server.lock`);
    it is released while waiting, so the connections can drain. Call it from a thread that
    does not hold ``lock``. Returns how many connections had to be closed."""
    with lock:
        deadline = _begin(hub, timeout, clock)
    while True:
        with lock:
            forced = _forced(hub, deadline, clock)
        if forced is not None:
            return forced
        sleep(_pause(deadline, clock))


def _begin(hub: Hub, timeout: float, clock: Callable[[], float]) -> float:
    """Check ``timeout``, GOAWAY (NO_ERROR) to every connection; the drain's deadline."""
    if not timeout >= 0 or math.isinf(timeout):
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT, f"timeout must be a finite number >= 0: {timeout!r}"
        )
    hub.shutdown(ErrorCode.NO_ERROR)
    return clock() + timeout


def _forced(hub: Hub, deadline: float, clock: Callable[[], float]) -> int | None:
    """None while connections drain before ``deadline``; else close what is left
    (SERVER_SHUTDOWN) and return how many that was."""
    forced = hub.peer_count
    if forced and clock() < deadline:
        return None
    if forced:
        hub.shutdown(ErrorCode.SERVER_SHUTDOWN)
    return forced


def _pause(deadline: float, clock: Callable[[], float]) -> float:
    return min(DRAIN_POLL, max(0.0, deadline - clock()))
