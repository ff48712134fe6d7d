"""Transport adapters for streamproto: asyncio, trio and threads, over TCP or WebSocket.

Each backend is a thin "loop + lock + clock" around the sans-IO core: ``transports.asyncio``,
``transports.trio`` and ``transports.sync``. What they share lives in ``transports._common``.
"""

from ._common import Backoff, ConnectionLost, Gap, GapError, StreamError, Url, parse_url
from ._framing import SUBPROTOCOL, close_code_for

__all__ = [
    "SUBPROTOCOL",
    "Backoff",
    "ConnectionLost",
    "Gap",
    "GapError",
    "StreamError",
    "Url",
    "close_code_for",
    "parse_url",
]
