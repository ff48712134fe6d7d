"""Transport framing, sans-IO: raw TCP (identity) and WebSocket (wsproto).

A framing sits between the socket and the streamproto :class:`~streamproto.Connection`:
``receive(data)`` turns socket bytes into streamproto bytes, ``wrap(payload)`` turns a batch of
streamproto frames into socket bytes, ``close(code)`` says goodbye. WebSocket carries each batch
from ``Connection.data_to_send()`` as one binary message (whole frames only, spec section 1).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from streamproto import ErrorCode

__all__ = ["SUBPROTOCOL", "Framing", "RawFraming", "WsFraming", "close_code_for"]

#: The WebSocket subprotocol name of version 1.
SUBPROTOCOL = "streamproto.v1"


def close_code_for(code: int) -> int:
    """The WebSocket close code after a GOAWAY with ``code`` (spec R-TR-6): 1000 for NO_ERROR,
    1001 for SERVER_SHUTDOWN, 4000 + code (the private range) for the other connection codes
    and 1008 for an application code, which does not fit in that range."""
    if code == ErrorCode.NO_ERROR:
        return 1000
    if code == ErrorCode.SERVER_SHUTDOWN:
        return 1001
    return 4000 + code if code < 1000 else 1008


class Framing(Protocol):
    """What the drivers need of a transport framing."""

    @property
    def ready(self) -> bool:
        """True once streamproto bytes may be sent (after the WebSocket handshake)."""

    @property
    def closed(self) -> bool:
        """True once the transport-level close happened (or the handshake failed)."""

    @property
    def violation(self) -> str | None:
        """Why the peer broke the transport's rules (a WebSocket text message), else None.
        The connection then fails with PROTOCOL_ERROR before ``close`` (spec R-TR-4)."""

    def receive(self, data: bytes) -> bytes:
        """Socket bytes in (``b""``: end of input); streamproto bytes out."""

    def wrap(self, payload: bytes) -> bytes:
        """Streamproto bytes (whole frames) to socket bytes, plus anything the framing itself
        has to send (handshake, pong). ``payload`` may be empty."""

    def close(self, code: int) -> bytes:
        """Socket bytes that close the transport cleanly for streamproto ``code``."""


class RawFraming:
    """Raw TCP: streamproto frames are self-delimiting, so the bytes pass through."""

    ready = True
    violation: str | None = None  # raw bytes have no framing rule to break

    def __init__(self) -> None:
        self.closed = False

    def receive(self, data: bytes) -> bytes:
        if not data:
            self.closed = True
        return data

    def wrap(self, payload: bytes) -> bytes:
        return payload

    def close(self, code: int) -> bytes:
        self.closed = True
        return b""


class WsFraming:
    """WebSocket over wsproto, either side.

    The client sends the upgrade request at once; the server accepts a request for ``path``
    (any path when None) that offers the ``streamproto.v1`` subprotocol and refuses others with
    HTTP 400/404; a client whose upgrade does not select the subprotocol closes with 1002 and
    sends nothing (spec R-TR-5). A text message is a protocol error: ``violation`` says so, the
    connection sends its GOAWAY and ``close`` uses 1003 (R-TR-4). Pings are answered.
    """

    def __init__(self, client: bool, *, host: str = "localhost", path: str | None = "/") -> None:
        self._ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._client = client
        self._path = path
        self._out: list[bytes] = []
        self._pong = b""  # the answer to the latest ping, not yet sent
        self._in: list[bytes] = []
        self.ready = False
        self.closed = False
        self.error: str | None = None
        self.violation: str | None = None
        if client:
            target = path or "/"
            self._out.append(
                self._ws.send(Request(host=host, target=target, subprotocols=[SUBPROTOCOL]))
            )

    def receive(self, data: bytes) -> bytes:
        try:
            self._ws.receive_data(data or None)
            for event in self._ws.events():
                self._on_event(event)
        except (WsRemoteError, WsLocalError) as exc:
            self.error = str(exc)
            self.closed = True
        if not data:
            self.closed = True
        payload = b"".join(self._in)
        self._in.clear()
        return payload

    def _on_event(self, event: object) -> None:
        ws = self._ws
        if isinstance(event, BytesMessage):
            if self.violation is None:  # after a violation the peer's bytes mean nothing
                self._in.append(bytes(event.data))
        elif isinstance(event, Request):
            if self._path is not None and event.target != self._path:
                self._refuse(404, "unknown path")
            elif SUBPROTOCOL not in event.subprotocols:
                self._refuse(400, f"the {SUBPROTOCOL} subprotocol is required")
            else:
                self._out.append(ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
                self.ready = True
        elif isinstance(event, AcceptConnection):
            if event.subprotocol == SUBPROTOCOL:
                self.ready = True
            else:
                # A server that did not select the subprotocol may not speak streamproto (or
                # another version of it): fail the WebSocket before HELLO goes out.
                self.error = f"the server did not select the {SUBPROTOCOL} subprotocol"
                self._out.append(ws.send(CloseConnection(code=1002, reason=self.error)))
                self.closed = True
        elif isinstance(event, RejectConnection):
            self.error = f"the server refused the WebSocket upgrade ({event.status_code})"
            self.closed = True
        elif isinstance(event, Ping):
            # RFC 6455 5.5.3: only the latest ping needs its pong. One pending pong at most,
            # so a peer that floods pings and does not read grows nothing here.
            self._pong = ws.send(event.response())
        elif isinstance(event, CloseConnection):
            if ws.state.name == "REMOTE_CLOSING":
                self._out.append(ws.send(event.response()))
            self.closed = True
        elif isinstance(event, TextMessage) and self.violation is None:
            self.error = self.violation = "text messages are not part of streamproto"

    def take_upgrade(self, headers: list[tuple[bytes, bytes]], target: str) -> None:
        """Server: take over a connection whose upgrade request another HTTP parser already
        read (an HTTP listener's ``Upgrade: websocket``), as hypercorn hands h11's request to
        wsproto. The answer (101, or 400/404) comes out of the next ``wrap``; the socket's bytes
        after the request go to ``receive``."""
        try:
            self._ws.initiate_upgrade_connection(headers, target)
            for event in self._ws.events():
                self._on_event(event)
        except WsRemoteError as exc:  # not a valid upgrade (no key, a bad version)
            self.error = str(exc)
            self.closed = True
            if exc.event_hint is not None:
                with contextlib.suppress(WsLocalError):
                    self._out.append(self._ws.send(exc.event_hint))

    def _refuse(self, status: int, why: str) -> None:
        self.error = why
        self._out.append(self._ws.send(RejectConnection(status_code=status)))
        self.closed = True

    def wrap(self, payload: bytes) -> bytes:
        if self._pong:
            self._out.append(self._pong)
            self._pong = b""
        if payload and self.ready and not self.closed:
            self._out.append(self._ws.send(BytesMessage(data=payload)))
        data = b"".join(self._out)
        self._out.clear()
        return data

    def close(self, code: int) -> bytes:
        if self.ready and not self.closed:
            ws_code = 1003 if self.violation is not None else close_code_for(code)
            with contextlib.suppress(WsLocalError):  # the peer closed first
                self._out.append(self._ws.send(CloseConnection(code=ws_code)))
        self.closed = True
        data = b"".join(self._out)
        self._out.clear()
        return data
