"""Transport adapters for streamproto: asyncio, trio and threads, over TCP or WebSocket.

Each backend is a thin "loop + lock + clock" around the sans-IO core: ``transports.asyncio``,
``transports.trio`` and ``transports.sync``. What they share is public in
``transports.adapter``: the drivers, the backends' base classes, and the registry of URL
schemes (``tcp``, ``ws``, ``http``, ``unix``).
"""

from ._common import (
    Backoff,
    ClientStatistics,
    ConnectionClosed,
    ConnectionLost,
    Gap,
    GapError,
    StreamError,
    Url,
    parse_url,
)
from ._framing import SUBPROTOCOL, close_code_for
from ._hubs import ID_BYTES, default_ids, new_hub

__all__ = [
    "ID_BYTES",
    "SUBPROTOCOL",
    "Backoff",
    "ClientStatistics",
    "ConnectionClosed",
    "ConnectionLost",
    "Gap",
    "GapError",
    "StreamError",
    "Url",
    "close_code_for",
    "default_ids",
    "new_hub",
    "parse_url",
]
