"""Who may do what, at the hub: principals from ``authenticate``, resume tokens bound to their
principal, the authorization hook on every SUBSCRIBE, OPEN and UPLOAD, and concealed refusals
that are byte-identical to the reply an unknown channel gets."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from hub_helpers import Client, HubHarness

from streamproto import (
    AccessRequest,
    ChannelOptions,
    Connection,
    ConnectionTerminated,
    ErrorCode,
    HandshakeCompleted,
    HandshakeRefused,
    LocalProtocolError,
    Producer,
    Refuse,
    RequestAccepted,
    RequestKind,
    RequestRejected,
    UploadReader,
)

CH = "demo:tokens"
USERS = {b"alice": "alice", b"mallory": "mallory", b"": None}


def who(auth: bytes) -> object:
    """Two users and anonymous; anything else is refused."""
    return USERS.get(auth, Refuse(ErrorCode.AUTH_FAILED, "unknown credentials"))


def alice_only(request: AccessRequest) -> bool:
    return request.principal == "alice"


def harness(authorize: Any = alice_only, authenticate: Any = who) -> HubHarness:
    return HubHarness(authenticate=authenticate, authorize=authorize)


def rejected(client: Client, handle: int) -> RequestRejected:
    (event,) = client.of(handle)
    assert isinstance(event, RequestRejected), event
    return event


def accepted(client: Client, handle: int) -> bool:
    return any(isinstance(e, RequestAccepted) for e in client.of(handle))


class Handlers:
    """on_open and on_upload handlers that remember what reached them."""

    def __init__(self) -> None:
        self.opened: list[bytes] = []
        self.uploads: list[UploadReader] = []

    def on_open(self, producer: Producer, args: bytes) -> None:
        self.opened.append(args)

    def on_upload(self, reader: UploadReader) -> None:
        self.uploads.append(reader)


# -- principals ---------------------------------------------------------------------------------


def test_authenticate_yields_the_principal_kept_with_the_session() -> None:
    h = harness()
    early = h.connect(auth=b"alice", pump=False)
    assert early.peer.principal is None  # no handshake yet
    h.pump()
    assert early.peer.principal == "alice"
    assert h.connect(auth=b"mallory").peer.principal == "mallory"
    assert h.connect().peer.principal is None  # anonymous, as USERS says
    stranger = h.connect(auth=b"eve")
    assert stranger.events == [HandshakeRefused(ErrorCode.AUTH_FAILED, "unknown credentials")]
    assert h.hub.statistics().sessions == 3


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (Refuse(4001, "banned"), 4001, "banned"),
        (Refuse(ErrorCode.AUTH_FAILED), ErrorCode.AUTH_FAILED, "authentication failed"),
        # A stream code cannot travel in GOAWAY: the default refusal goes instead.
        (Refuse(ErrorCode.FORBIDDEN, "no"), ErrorCode.AUTH_FAILED, "no"),
        (False, ErrorCode.AUTH_FAILED, "authentication failed"),  # fail closed
        (4002, 4002, "authentication failed"),  # the answer before principals: a code
        (ErrorCode.AUTH_FAILED, ErrorCode.AUTH_FAILED, "authentication failed"),
        (0, ErrorCode.AUTH_FAILED, "authentication failed"),  # never a refusal with NO_ERROR
        (70_000, ErrorCode.AUTH_FAILED, "authentication failed"),  # no such code
        (ErrorCode.UNKNOWN_CHANNEL, ErrorCode.AUTH_FAILED, "authentication failed"),
    ],
)
def test_authenticate_refusals(answer: object, code: int, message: str) -> None:
    h = harness(authenticate=lambda auth: answer)
    c = h.connect(auth=b"x")
    assert c.events == [HandshakeRefused(code, message)]
    assert h.hub.statistics().sessions == 0


def test_an_authenticate_hook_that_raises_refuses(caplog: pytest.LogCaptureFixture) -> None:
    def broken(auth: bytes) -> object:
        raise RuntimeError("directory down")

    h = harness(authenticate=broken)
    with caplog.at_level(logging.ERROR, "streamproto.hub"):
        c = h.connect(auth=b"alice")
    assert c.events == [HandshakeRefused(ErrorCode.AUTH_FAILED, "authentication failed")]
    assert "directory down" in caplog.text


@pytest.mark.parametrize("code", [0, -1, 99, 150, 200, 205, 300, 999, 70_000])
def test_refuse_takes_only_codes_that_can_be_sent(code: int) -> None:
    with pytest.raises(LocalProtocolError, match=r"\[INVALID_ARGUMENT\]"):
        Refuse(code)


@pytest.mark.parametrize("code", [1, 7, 15, 100, 111, 112, 1000, 65535])
def test_refuse_takes_connection_stream_and_application_codes(code: int) -> None:
    assert Refuse(code, "m") == Refuse(code, "m")


# -- resume tokens and principals ---------------------------------------------------------------


def test_a_parked_session_resumes_only_for_its_principal() -> None:
    h = harness()
    producer = h.hub.register(CH).start("s")
    alice = h.connect(auth=b"alice")
    alice.conn.subscribe(CH, "s")
    h.pump()
    token, session = alice.handshake.resume_token, alice.handshake.session_id
    alice.disconnect()
    assert h.hub.statistics().parked_subscriptions == 1

    thief = h.connect(auth=b"mallory", resume_token=token)
    assert thief.handshake.resumed is False
    assert thief.handshake.session_id not in (session, "")
    assert thief.handshake.resume_token != token
    stolen = thief.conn.subscribe(CH, "s", after_seq=0)  # mallory is not authorized either
    producer.write(b"x")
    h.pump()
    assert rejected(thief, stolen).code == ErrorCode.FORBIDDEN
    assert h.hub.statistics().parked_subscriptions == 1  # still waiting for alice

    back = h.connect(auth=b"alice", resume_token=token)  # the token still works for alice
    assert (back.handshake.resumed, back.handshake.session_id) == (True, session)
    handle = back.conn.subscribe(CH, "s", after_seq=0)
    h.pump()
    assert back.chunks(handle) == [(1, b"x")]
    assert h.hub.statistics().parked_subscriptions == 0


def test_a_live_session_is_not_taken_over_by_another_principal() -> None:
    h = harness()
    producer = h.hub.register(CH).start("s")
    alice = h.connect(auth=b"alice")
    handle = alice.conn.subscribe(CH, "s")
    h.pump()
    thief = h.connect(auth=b"mallory", resume_token=alice.handshake.resume_token)
    assert thief.handshake.resumed is False
    producer.write(b"still mine")
    h.pump()
    # Resuming by the owner closes the old connection (R-SESS-4); the thief's attempt did not.
    assert not any(isinstance(e, ConnectionTerminated) for e in alice.events)
    assert alice.chunks(handle) == [(1, b"still mine")]
    assert h.hub.statistics().sessions == 2


def test_principals_are_compared_by_equality_and_anonymous_resumes_as_before() -> None:
    h = harness(authenticate=lambda auth: ("user", auth.decode()) if auth else None)
    first = h.connect(auth=b"7")
    first.disconnect()
    again = h.connect(auth=b"7", resume_token=first.handshake.resume_token)
    assert again.handshake.resumed is True  # a fresh but equal tuple
    anon = h.connect()
    anon.disconnect()
    assert h.connect(resume_token=anon.handshake.resume_token).handshake.resumed is True
    other = h.connect(auth=b"8", resume_token=again.handshake.resume_token)
    assert other.handshake.resumed is False


# -- the authorization hook ---------------------------------------------------------------------


def test_the_hook_sees_every_request() -> None:
    seen: list[AccessRequest] = []

    def record(request: AccessRequest) -> bool:
        seen.append(request)
        return True

    h = harness(authorize=record)
    handlers = Handlers()
    h.hub.register(CH, on_open=handlers.on_open, on_upload=handlers.on_upload).start("s")
    c = h.connect(auth=b"alice")
    handles = [
        c.conn.subscribe(CH, "s"),
        c.conn.open(CH, b"open-args"),
        c.conn.open(CH, b"", stream_id="mine"),
        c.conn.upload(CH, "up", b"upload-args"),
    ]
    h.pump()
    assert all(accepted(c, handle) for handle in handles)
    assert seen == [
        AccessRequest("alice", RequestKind.SUBSCRIBE, CH, "s", b""),
        AccessRequest("alice", RequestKind.OPEN, CH, "", b"open-args"),
        AccessRequest("alice", RequestKind.OPEN, CH, "mine", b""),
        AccessRequest("alice", RequestKind.UPLOAD, CH, "up", b"upload-args"),
    ]
    assert handlers.opened == [b"open-args", b""]
    assert [r.args for r in handlers.uploads] == [b"upload-args"]


def test_refused_requests_get_forbidden_and_reach_nothing() -> None:
    h = harness()
    handlers = Handlers()
    channel = h.hub.register(CH, on_open=handlers.on_open, on_upload=handlers.on_upload)
    channel.start("s")
    expected = channel.expect_upload("kept")
    c = h.connect(auth=b"mallory")
    before = h.hub.statistics()
    sub = c.conn.subscribe(CH, "s")
    opened = c.conn.open(CH, b"a")
    upload = c.conn.upload(CH, "")
    claimed = c.conn.upload(CH, "kept")
    h.pump()
    assert rejected(c, sub) == RequestRejected(
        sub, ErrorCode.FORBIDDEN, f"subscribe on {CH} is not allowed"
    )
    assert rejected(c, opened) == RequestRejected(
        opened, ErrorCode.FORBIDDEN, f"open on {CH} is not allowed"
    )
    for handle in (upload, claimed):
        assert rejected(c, handle) == RequestRejected(
            handle, ErrorCode.FORBIDDEN, f"upload on {CH} is not allowed"
        )
    assert (handlers.opened, handlers.uploads) == ([], [])
    assert h.hub.statistics() == before  # no stream, subscription or upload was made
    assert not expected.attached
    alice = h.connect(auth=b"alice")
    mine = alice.conn.upload(CH, "kept")  # the expected id is still there for alice
    h.pump()
    assert accepted(alice, mine)
    assert expected.attached


def _raises(request: AccessRequest) -> object:
    raise RuntimeError("policy store down")


@pytest.mark.parametrize(
    ("hook", "code", "message"),
    [
        (lambda r: Refuse(4003, "quota used up"), 4003, "quota used up"),
        (lambda r: Refuse(ErrorCode.NOT_ALLOWED), ErrorCode.NOT_ALLOWED, None),
        # A connection code cannot travel in REJECT: the default refusal goes instead.
        (lambda r: Refuse(ErrorCode.AUTH_FAILED, "no"), ErrorCode.FORBIDDEN, "no"),
        (lambda r: None, ErrorCode.FORBIDDEN, None),  # forgot to return: fail closed
        (lambda r: False, ErrorCode.FORBIDDEN, None),
        (lambda r: 1, ErrorCode.FORBIDDEN, None),  # only True allows
        (lambda r: "yes", ErrorCode.FORBIDDEN, None),
        (_raises, ErrorCode.FORBIDDEN, None),
    ],
)
def test_refusal_answers(
    hook: Callable[[AccessRequest], object],
    code: int,
    message: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness(authorize=hook)
    h.hub.register(CH).start("s")
    c = h.connect(auth=b"alice")
    with caplog.at_level(logging.ERROR, "streamproto.hub"):
        handle = c.conn.subscribe(CH, "s")
        h.pump()
    event = rejected(c, handle)
    assert event.code == code
    assert event.message == (message or f"subscribe on {CH} is not allowed")
    if hook is _raises:
        assert "policy store down" in caplog.text


def test_a_channel_hook_decides_instead_of_the_hub_hook() -> None:
    h = harness(authorize=lambda r: False)
    h.hub.register(CH, authorize=lambda r: r.principal == "mallory").start("s")
    h.hub.register("demo:other").start("s")
    c = h.connect(auth=b"mallory")
    mine, other = c.conn.subscribe(CH, "s"), c.conn.subscribe("demo:other", "s")
    h.pump()
    assert accepted(c, mine)
    assert rejected(c, other).code == ErrorCode.FORBIDDEN


def test_without_a_hook_every_request_is_allowed() -> None:
    h = harness(authorize=None)
    h.hub.register(CH).start("s")
    c = h.connect(auth=b"mallory")
    handle = c.conn.subscribe(CH, "s")
    h.pump()
    assert accepted(c, handle)


def test_a_resumed_subscription_is_authorized_again() -> None:
    allowed = {"alice"}
    h = harness(authorize=lambda r: r.principal in allowed)
    producer = h.hub.register(CH).start("s")
    alice = h.connect(auth=b"alice")
    alice.conn.subscribe(CH, "s")
    h.pump()
    alice.disconnect()
    allowed.clear()  # alice's access is revoked while she is away
    back = h.connect(auth=b"alice", resume_token=alice.handshake.resume_token)
    assert back.handshake.resumed
    handle = back.conn.subscribe(CH, "s", after_seq=0)
    h.pump()
    assert rejected(back, handle).code == ErrorCode.FORBIDDEN
    assert h.hub.statistics().parked_subscriptions == 1  # not taken over: it expires
    h.advance(back.server.config.session_grace + 1)
    assert h.hub.statistics().parked_subscriptions == 0
    assert not producer.aborted  # it counted as leaving (the channel's disconnect rule)


# -- concealment --------------------------------------------------------------------------------

Request = Callable[[Connection], int]
REQUESTS: dict[str, Request] = {
    "subscribe-open-stream": lambda c: c.subscribe(CH, "s"),
    "subscribe-retained-stream": lambda c: c.subscribe(CH, "done"),
    "subscribe-unknown-stream": lambda c: c.subscribe(CH, "nothing-here"),
    "open": lambda c: c.open(CH, b"args"),
    "open-with-id": lambda c: c.open(CH, b"", stream_id="s"),
    "upload": lambda c: c.upload(CH, "up"),
    "upload-expected": lambda c: c.upload(CH, "expected"),
}


def reply_bytes(client: Client, request: Request) -> bytes:
    """The bytes the server sends in answer to ``request`` (the client's first request)."""
    request(client.conn)
    client.peer.handle_events(client.server.receive_data(client.conn.data_to_send()))
    reply = client.server.data_to_send()
    client.events += client.pair.feed(client.conn, reply)
    return reply


def concealed_hub(conceal: bool = True) -> HubHarness:
    h = harness()
    handlers = Handlers()
    channel = h.hub.register(
        CH,
        ChannelOptions(conceal=conceal),
        on_open=handlers.on_open,
        on_upload=handlers.on_upload,
    )
    channel.start("s")
    channel.start("done").close()
    channel.expect_upload("expected")
    return h


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_concealed_refusal_is_byte_identical_to_an_unknown_channel(name: str) -> None:
    request = REQUESTS[name]
    unknown = reply_bytes(harness().connect(auth=b"mallory"), request)  # no channel there
    h = concealed_hub()
    thief = h.connect(auth=b"mallory")
    concealed = reply_bytes(thief, request)
    assert concealed == unknown
    assert rejected(thief, 1).code == ErrorCode.UNKNOWN_CHANNEL
    plain = reply_bytes(concealed_hub(conceal=False).connect(auth=b"mallory"), request)
    assert plain != unknown  # without concealment the refusal says FORBIDDEN


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_concealed_channel_answers_its_authorized_principals_as_usual(name: str) -> None:
    h = concealed_hub()
    alice = h.connect(auth=b"alice")
    reply_bytes(alice, REQUESTS[name])
    h.pump()
    (first, *_) = alice.of(1)
    if name == "subscribe-unknown-stream":
        assert first == RequestRejected(1, ErrorCode.UNKNOWN_STREAM, "no stream 'nothing-here'")
    elif name == "open-with-id":
        assert isinstance(first, RequestRejected)
        assert first.code == ErrorCode.STREAM_EXISTS
    else:
        assert isinstance(first, RequestAccepted)


def test_handshake_completed_for_everyone_the_hook_accepts() -> None:
    h = harness()
    assert isinstance(h.connect(auth=b"alice").events[0], HandshakeCompleted)
