"""The adapters' loggers and what they log about each connection (docs/logging.md).

Every record about a connection goes through a :class:`ConnectionLog`, which prefixes the
message with the connection's id (and its session id once known) and puts both in the record
as ``conn_id`` and ``session_id``, for formatters and filters.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from streamproto import DataReceived, Event, UploadData, code_name

__all__ = ["ConnectionLog", "client_log", "log_events", "next_conn_id", "server_log"]

server_log = logging.getLogger("streamproto.server")
client_log = logging.getLogger("streamproto.client")

# Connection ids are unique within the process and short enough to read in a log line; they
# name connections in logs, traces and statistics (a session id names a session, which
# outlives its connections).
_conn_ids = itertools.count(1)


def next_conn_id() -> str:
    """A fresh connection id (``c1``, ``c2``, ...)."""
    return f"c{next(_conn_ids)}"


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter for one connection: ``ids()`` gives its connection id and session id
    (``""`` while unknown) at the time of each record."""

    def __init__(self, logger: logging.Logger, ids: Callable[[], tuple[str, str]]) -> None:
        super().__init__(logger, {})
        self.ids = ids

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix ``[conn session]`` and set ``conn_id``/``session_id`` on the record."""
        conn, session = self.ids()
        kwargs["extra"] = {"conn_id": conn, "session_id": session, **kwargs.get("extra", {})}
        prefix = f"[{conn} {session}]" if session else f"[{conn}]"
        return f"{prefix} {msg}", kwargs


def log_events(log: ConnectionLog, events: Iterable[Event]) -> None:
    """DEBUG: every event of a connection but its data (its ``str``, which truncates)."""
    if log.isEnabledFor(logging.DEBUG):
        for event in events:
            if not isinstance(event, DataReceived | UploadData):
                log.debug("%s", event)


def describe(code: int, message: str) -> str:
    """``CODE_NAME: message`` (or the name alone)."""
    name = code_name(code)
    return f"{name}: {message}" if message else name
