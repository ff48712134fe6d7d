"""The WebSocket framing (wsproto) and the raw TCP framing, sans-IO: handshake, path and
subprotocol checks, binary batches, pings, text messages, and close codes."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from streamproto import ErrorCode
from transports import SUBPROTOCOL, close_code_for
from transports._framing import RawFraming, WsFraming


def test_close_codes_map_from_our_codes() -> None:
    assert close_code_for(ErrorCode.NO_ERROR) == 1000
    assert close_code_for(ErrorCode.SERVER_SHUTDOWN) == 1001
    assert close_code_for(ErrorCode.PROTOCOL_ERROR) == 4001
    assert close_code_for(ErrorCode.FRAME_TOO_LARGE) == 4003
    assert close_code_for(4321) == 1008  # an application code has no private close code


def test_raw_framing_passes_bytes_through() -> None:
    raw = RawFraming()
    assert raw.ready
    assert raw.receive(b"abc") == b"abc"
    assert raw.wrap(b"xyz") == b"xyz"
    assert not raw.closed
    assert raw.receive(b"") == b""
    assert raw.closed
    assert RawFraming().close(0) == b""


def client_and_server(path: str | None = "/sp") -> tuple[WsFraming, WsFraming]:
    client = WsFraming(True, host="h:1", path="/sp")
    server = WsFraming(False, path=path)
    server.receive(client.wrap(b""))
    client.receive(server.wrap(b""))
    return client, server


def test_handshake_then_batches_both_ways() -> None:
    client, server = client_and_server()
    assert client.ready
    assert server.ready
    assert server.receive(client.wrap(b"frames-1")) == b"frames-1"
    assert client.receive(server.wrap(b"frames-2")) == b"frames-2"
    assert client.wrap(b"") == b""  # nothing to send: no empty message


def test_any_path_when_the_server_does_not_care() -> None:
    _client, server = client_and_server(path=None)
    assert server.ready


def peer_request(path: str, subprotocols: list[str]) -> tuple[WSConnection, bytes]:
    peer = WSConnection(ConnectionType.CLIENT)
    return peer, peer.send(Request(host="h", target=path, subprotocols=subprotocols))


@pytest.mark.parametrize(
    ("path", "subprotocols", "status"),
    [("/elsewhere", [SUBPROTOCOL], 404), ("/sp", ["chat"], 400)],
)
def test_the_server_refuses_a_wrong_path_or_subprotocol(
    path: str, subprotocols: list[str], status: int
) -> None:
    server = WsFraming(False, path="/sp")
    peer, request = peer_request(path, subprotocols)
    server.receive(request)
    assert server.closed
    assert not server.ready
    peer.receive_data(server.wrap(b""))
    (event,) = [e for e in peer.events() if isinstance(e, RejectConnection)]
    assert event.status_code == status


def test_the_client_reports_a_refused_upgrade() -> None:
    client = WsFraming(True, path="/nope")
    server = WsFraming(False, path="/sp")
    server.receive(client.wrap(b""))
    client.receive(server.wrap(b""))
    assert client.closed
    assert client.error is not None
    assert "404" in client.error


def test_pings_are_answered_and_text_is_refused_with_1003() -> None:
    server = WsFraming(False, path="/sp")
    peer, request = peer_request("/sp", [SUBPROTOCOL])
    server.receive(request)
    peer.receive_data(server.wrap(b""))
    assert any(isinstance(e, AcceptConnection) for e in peer.events())
    server.receive(peer.send(Ping(b"hi")))
    peer.receive_data(server.wrap(b""))
    assert [type(e) for e in peer.events()] == [Pong]
    assert server.violation is None
    # R-TR-4: the text is a violation; binary messages after it are not passed on, and the
    # GOAWAY the connection sends still goes out before the close with 1003.
    data = peer.send(TextMessage(data="hello")) + peer.send(BytesMessage(data=b"late"))
    assert server.receive(data) == b""
    assert server.violation == "text messages are not part of streamproto"
    assert not server.closed
    peer.receive_data(server.wrap(b"goaway") + server.close(ErrorCode.PROTOCOL_ERROR))
    assert server.closed
    events = list(peer.events())
    assert [type(e) for e in events] == [BytesMessage, CloseConnection]
    assert events[0].data == b"goaway"
    assert events[1].code == 1003
    assert RawFraming().violation is None


def test_the_client_closes_when_the_server_selects_no_subprotocol() -> None:
    """R-TR-5: HELLO never goes to a server whose upgrade did not select streamproto.v1."""
    client = WsFraming(True, host="h:1", path="/sp")
    peer = WSConnection(ConnectionType.SERVER)
    peer.receive_data(client.wrap(b""))
    (request,) = [e for e in peer.events() if isinstance(e, Request)]
    assert request.subprotocols == [SUBPROTOCOL]
    client.receive(peer.send(AcceptConnection()))  # no subprotocol selected
    assert client.closed
    assert not client.ready
    assert client.error == "the server did not select the streamproto.v1 subprotocol"
    peer.receive_data(client.wrap(b"HELLO"))
    assert [(type(e), getattr(e, "code", None)) for e in peer.events()] == [(CloseConnection, 1002)]


def test_close_maps_our_code_to_the_close_code() -> None:
    server = WsFraming(False, path="/sp")
    peer, request = peer_request("/sp", [SUBPROTOCOL])
    server.receive(request)
    peer.receive_data(server.wrap(b""))
    list(peer.events())
    peer.receive_data(server.close(ErrorCode.SERVER_SHUTDOWN))
    assert server.closed
    (close,) = [e for e in peer.events() if isinstance(e, CloseConnection)]
    assert close.code == 1001
    assert server.close(ErrorCode.NO_ERROR) == b""  # closing twice sends nothing more


def test_a_close_from_the_peer_is_answered() -> None:
    server = WsFraming(False, path="/sp")
    peer, request = peer_request("/sp", [SUBPROTOCOL])
    server.receive(request)
    peer.receive_data(server.wrap(b""))
    list(peer.events())
    server.receive(peer.send(CloseConnection(code=1000)))
    assert server.closed
    peer.receive_data(server.wrap(b""))
    assert any(isinstance(e, CloseConnection) for e in peer.events())


def test_binary_messages_from_an_independent_peer() -> None:
    server = WsFraming(False, path="/sp")
    peer, request = peer_request("/sp", [SUBPROTOCOL])
    server.receive(request)
    peer.receive_data(server.wrap(b""))
    list(peer.events())
    data = peer.send(BytesMessage(data=b"one")) + peer.send(BytesMessage(data=b"two"))
    assert server.receive(data) == b"onetwo"


def test_garbage_instead_of_an_upgrade_closes() -> None:
    server = WsFraming(False, path="/sp")
    server.receive(b"NOT HTTP AT ALL\r\n\r\n")
    assert server.closed
    assert server.error is not None
