"""The sans-IO connection through its public API, both roles.

Most tests drive a :class:`streamproto.testing.ConnectionPair`, whose wrappers assert on every
call that the peer received exactly what was sent. A misbehaving peer is played with raw frames
from ``streamproto._frames``. Together with test_state_tables.py and
test_connection_stateful.py this covers ``_connection.py``, ``_state.py``, ``_events.py``,
``_config.py`` and ``streamproto.testing`` 100%, branches included.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import streamproto
from streamproto import (
    MAX_CREDIT,
    CancelRequested,
    Config,
    Connection,
    ConnectionStatistics,
    ConnectionTerminated,
    ConnState,
    DataReceived,
    DeleteRequested,
    ErrorCode,
    Event,
    Feature,
    GapReason,
    GapReceived,
    GoawayReceived,
    HandshakeCompleted,
    HandshakeRefused,
    HandshakeRequested,
    HState,
    ListRequested,
    LocalProtocolError,
    OpenRequested,
    OverflowPolicy,
    OverflowWarning,
    PingReceived,
    PongReceived,
    RequestAccepted,
    RequestRejected,
    Role,
    Setting,
    StatusRequested,
    StreamEnded,
    StreamEntry,
    StreamFailed,
    StreamsReceived,
    StreamState,
    SubscribeRequested,
    Unsubscribed,
    UploadCancelled,
    UploadCompleted,
    UploadData,
    UploadEnded,
    UploadFailed,
    UploadRequested,
    Writable,
    WriteResult,
)
from streamproto._config import MIN_KEEPALIVE_MS
from streamproto._connection import QUANTUM
from streamproto._frames import (
    HEADER_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_HANDSHAKE_BODY,
    MIN_MAX_FRAME_SIZE,
    MIN_UNKNOWN_BYTES,
    MIN_UNKNOWN_FRAMES,
    Accept,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    Frame,
    FrameType,
    Gap,
    Goaway,
    Hello,
    Open,
    Ping,
    Pong,
    Query,
    QueryOp,
    Reject,
    Subscribe,
    Unknown,
    Upload,
    Welcome,
    encode,
)
from streamproto.testing import (
    ConnectionPair,
    Transfer,
    decode_frames,
    expect_events,
    expect_goaway,
    expect_terminated,
)

CH = "demo:x"

# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(params=["whole", "bytes", "random"])
def split(request: pytest.FixtureRequest) -> dict[str, Any]:
    """How a pair cuts its transfers: whole, one byte at a time, or at random places."""
    if request.param == "bytes":
        return {"bytewise": True}
    if request.param == "random":
        return {"rng": random.Random(request.node.name)}
    return {}


def open_pair(
    client: Config | None = None, server: Config | None = None, **kwargs: Any
) -> ConnectionPair:
    pair = ConnectionPair(client, server, **kwargs)
    pair.handshake()
    return pair


def subscribed(
    client: Config | None = None,
    server: Config | None = None,
    policy: OverflowPolicy | None = None,
    **kwargs: Any,
) -> tuple[ConnectionPair, int]:
    """A handshaken pair with one accepted subscription from seq 1."""
    pair = open_pair(client, server, **kwargs)
    h = pair.subscribe(CH, "s1")
    pair.accept(h, stream_id="s1", policy=policy)
    return pair, h


def raw_client(config: Config | None = None) -> Connection:
    """A client after the handshake with a server played by hand."""
    c = Connection(Role.CLIENT, config)
    assert decode_frames(c.data_to_send())[0].__class__ is Hello
    [event] = c.receive_data(encode(Welcome(session_id="s", resume_token="t")))
    assert isinstance(event, HandshakeCompleted)
    return c


def raw_server(config: Config | None = None) -> Connection:
    """A server after the handshake with a client played by hand."""
    s = Connection(Role.SERVER, config)
    [event] = s.receive_data(encode(Hello()))
    assert isinstance(event, HandshakeRequested)
    s.accept_handshake(session_id="s", resume_token="t")
    assert isinstance(decode_frames(s.data_to_send())[0], Welcome)
    return s


def sent(conn: Connection, max_bytes: int | None = None) -> list[Frame]:
    return decode_frames(conn.data_to_send(max_bytes))


def assert_fails(conn: Connection, data: bytes, code: ErrorCode) -> ConnectionTerminated:
    """Feeding ``data`` makes ``conn`` fail with ``code``: the event, then a GOAWAY."""
    events = conn.receive_data(data)
    term = expect_terminated(events, code, by_peer=False)
    expect_goaway(conn.data_to_send(), code)
    assert conn.closed
    assert conn.receive_data(b"more") == []  # over: input is ignored
    return term


def local_error(code: ErrorCode, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value


def data_chunks(events: list[Event], handle: int) -> list[bytes]:
    out: list[bytes] = []
    for event in events:
        if isinstance(event, DataReceived | UploadData) and event.handle == handle:
            out += event.chunks
    return out


# -- handshake ----------------------------------------------------------------------------------


def test_handshake(split: dict[str, Any]) -> None:
    pair = ConnectionPair(Config(max_frame_size=20_000), resume_token="old", auth=b"key", **split)
    assert pair.client.state is ConnState.HANDSHAKING
    assert pair.server.state is ConnState.AWAIT_HELLO
    t = pair.handshake("sess", "tok", resumed=True)
    [hello] = t.server
    assert isinstance(hello, HandshakeRequested)
    assert (hello.version, hello.resume_token, hello.auth) == (1, "old", b"key")
    assert dict(hello.settings)[Setting.MAX_FRAME_SIZE] == 20_000
    [done] = t.client
    assert isinstance(done, HandshakeCompleted)
    assert (done.session_id, done.resume_token, done.resumed) == ("sess", "tok", True)
    assert pair.client.state is pair.server.state is ConnState.OPEN
    assert pair.server.peer_settings[Setting.MAX_FRAME_SIZE] == 20_000
    assert pair.client.peer_settings[Setting.MAX_UPLOADS] == 64
    assert pair.client.role is Role.CLIENT
    assert pair.server.role is Role.SERVER
    assert pair.client.config.max_frame_size == 20_000


def test_handshake_refused() -> None:
    pair = ConnectionPair()
    pair.refuse_handshake(ErrorCode.AUTH_FAILED, "bad key")
    assert pair.client.closed
    assert pair.server.closed
    assert pair.client.next_deadline() is None
    assert pair.server.next_deadline() is None
    # The refusal is the client's only terminal event: the end of input adds nothing.
    assert pair.client.receive_data(b"") == []


def test_refuse_handshake_truncates_long_message() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(encode(Hello()))
    s.refuse_handshake(ErrorCode.AUTH_FAILED, "é" * 1000)
    goaway = expect_goaway(s.data_to_send(), ErrorCode.AUTH_FAILED)
    assert len(goaway.message.encode()) <= streamproto.MAX_MESSAGE_BYTES
    assert goaway.message == "é" * 512


def test_client_unsupported_version() -> None:
    s = Connection(Role.SERVER)
    assert_fails(s, encode(Hello(min_version=2, max_version=3)), ErrorCode.UNSUPPORTED_VERSION)


def test_server_chose_unsupported_version() -> None:
    c = Connection(Role.CLIENT)
    c.data_to_send()
    assert_fails(c, encode(Welcome(version=2)), ErrorCode.UNSUPPORTED_VERSION)


def test_hello_bad_magic() -> None:
    s = Connection(Role.SERVER)
    bad = bytearray(encode(Hello()))
    bad[HEADER_SIZE] ^= 0xFF
    assert_fails(s, bytes(bad), ErrorCode.MALFORMED_FRAME)


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_peer_max_frame_size_below_floor(role: Role) -> None:
    settings = ((Setting.MAX_FRAME_SIZE, MIN_MAX_FRAME_SIZE - 1),)
    if role is Role.SERVER:
        conn = Connection(Role.SERVER)
        frame: Frame = Hello(settings=settings)
    else:
        conn = Connection(Role.CLIENT)
        frame = Welcome(settings=settings)
    assert_fails(conn, encode(frame), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    ("settings", "frame_size"),
    [
        (((Setting.MAX_FRAME_SIZE, 65_536), (Setting.MAX_FRAME_SIZE, 20_000)), 20_000),
        (((Setting.MAX_FRAME_SIZE, 20_000), (Setting.MAX_FRAME_SIZE, 16_383)), None),
        (((Setting.MAX_FRAME_SIZE, 16_383), (Setting.MAX_FRAME_SIZE, 65_536)), None),
    ],
)
def test_repeated_setting_every_occurrence_checked_last_one_used(
    settings: tuple[tuple[int, int], ...], frame_size: int | None
) -> None:
    """R-SET-4: settings are processed in order (as HTTP/2 does): each occurrence is checked,
    so a MAX_FRAME_SIZE below 16384 is PROTOCOL_ERROR even when a later one is valid, and the
    last occurrence is the value in effect."""
    s = Connection(Role.SERVER, Config(keepalive=15))
    proposals = ((Setting.KEEPALIVE_MS, 5_000), (Setting.KEEPALIVE_MS, 2_000))
    hello = encode(Hello(settings=(*settings, *proposals)))
    if frame_size is None:
        assert_fails(s, hello, ErrorCode.PROTOCOL_ERROR)
        return
    [event] = s.receive_data(hello)
    assert isinstance(event, HandshakeRequested)
    assert s.peer_settings[Setting.MAX_FRAME_SIZE] == frame_size
    s.accept_handshake(session_id="s", resume_token="t")
    welcome = decode_frames(s.data_to_send())[0]
    assert isinstance(welcome, Welcome)
    assert dict(welcome.settings)[Setting.KEEPALIVE_MS] == 2_000  # the last proposal


def test_unknown_settings_are_ignored() -> None:
    s = Connection(Role.SERVER)
    settings = ((99, 7), (Setting.MAX_UPLOADS, 3), (Setting.MAX_CHUNK_SIZE, 3000))
    [event] = s.receive_data(encode(Hello(settings=settings)))
    assert isinstance(event, HandshakeRequested)
    assert 99 not in s.peer_settings
    assert s.peer_settings[Setting.MAX_UPLOADS] == 64  # a server's setting: not the client's
    assert s.peer_settings[Setting.MAX_CHUNK_SIZE] == 3000


def test_handshake_timeout_client() -> None:
    c = Connection(Role.CLIENT, Config(handshake_timeout=5), now=100.0)
    assert c.next_deadline() == 105.0
    assert c.handle_timer(104.9) == []
    events = c.handle_timer(105.0)
    expect_terminated(events, ErrorCode.HANDSHAKE_TIMEOUT, by_peer=False)
    frames = sent(c)
    assert isinstance(frames[0], Hello)
    assert isinstance(frames[-1], Goaway)
    assert frames[-1].code == ErrorCode.HANDSHAKE_TIMEOUT
    assert c.next_deadline() is None
    assert c.handle_timer(200.0) == []


@pytest.mark.parametrize("hello_first", [False, True])
def test_handshake_timeout_server(hello_first: bool) -> None:
    s = Connection(Role.SERVER, Config(handshake_timeout=2))
    if hello_first:  # the application never answers HandshakeRequested
        s.receive_data(encode(Hello()))
        assert s.state is ConnState.HELLO_RECEIVED
    assert s.next_deadline() == 2.0
    assert s.handle_timer(1.0) == []
    expect_terminated(s.handle_timer(2.5), ErrorCode.HANDSHAKE_TIMEOUT)
    expect_goaway(s.data_to_send(), ErrorCode.HANDSHAKE_TIMEOUT)


def test_keepalive_ping_pong() -> None:
    pair = open_pair(server=Config(keepalive=1.0))
    assert pair.client.next_deadline() == pair.server.next_deadline() == 1.0
    # The first deadline finds the handshake's traffic: nothing to do.
    assert pair.advance(1.0) == Transfer([], [])
    # Nothing was received since: both sides ping, and both answer.
    t = pair.advance(1.0)
    assert sorted(map(type, t.client), key=str) == [PingReceived, PongReceived]
    assert sorted(map(type, t.server), key=str) == [PingReceived, PongReceived]
    assert pair.client.next_deadline() == 3.0
    # The pongs count as traffic: the next deadline only re-arms.
    assert pair.advance(1.0) == Transfer([], [])
    assert not pair.client.closed


def test_keepalive_negotiation() -> None:
    # The client may only shorten the server's interval; 0 (its own disabled) leaves it.
    pair = open_pair(Config(keepalive=1.5), Config(keepalive=2.0))
    assert pair.client.next_deadline() == pair.server.next_deadline() == 1.5
    pair = open_pair(Config(keepalive=0), Config(keepalive=2.0))
    assert pair.client.next_deadline() == pair.server.next_deadline() == 2.0
    pair = open_pair(Config(keepalive=5), Config(keepalive=0))
    assert pair.client.next_deadline() is pair.server.next_deadline() is None
    assert pair.advance(100.0) == Transfer([], [])


def test_keepalive_timeout() -> None:
    pair = open_pair(server=Config(keepalive=1.0))
    s = pair.server
    assert s.handle_timer(1.0) == []  # traffic since the start: re-arm
    assert s.handle_timer(2.0) == []  # silence: PING
    [ping] = sent(s)
    assert isinstance(ping, Ping)
    events = s.handle_timer(3.0)  # still silence: give up
    expect_terminated(events, ErrorCode.KEEPALIVE_TIMEOUT, by_peer=False)
    expect_goaway(s.data_to_send(), ErrorCode.KEEPALIVE_TIMEOUT)
    assert s.next_deadline() is None
    # A late timer on a closed connection does nothing.
    assert s.handle_timer(10.0) == []
    assert s.data_to_send() == b""
    # The client learns it from the GOAWAY.
    t = pair.client.receive_data(encode(Goaway(ErrorCode.KEEPALIVE_TIMEOUT, 0, "x")))
    expect_terminated(t, ErrorCode.KEEPALIVE_TIMEOUT, by_peer=True)


@pytest.mark.parametrize("last_frame_at", [1.0, 1.5, 2.0])
def test_keepalive_bounds_follow_the_ticks(last_frame_at: float) -> None:
    """R-KA-2, R-KA-5: checks run every K (here 1 s) from WELCOME; the PING goes out between K
    and 2K after the last frame received, the timeout between 2K and 3K after it, and never
    sooner than K after the PING."""
    s = open_pair(server=Config(keepalive=1.0)).server
    assert s.handle_timer(1.0) == []  # the handshake's traffic: re-arm
    # The peer's last frame arrives after the tick at 1.0 and before the one at 2.0 runs.
    s.receive_data(encode(Ping(7)))
    s.data_to_send()
    ping_at = timeout_at = None
    while timeout_at is None:
        now = s.next_deadline()
        assert now is not None
        events = s.handle_timer(now)
        if any(isinstance(f, Ping) for f in sent(s)):
            ping_at = now
        if events:
            expect_terminated(events, ErrorCode.KEEPALIVE_TIMEOUT, by_peer=False)
            timeout_at = now
    assert (ping_at, timeout_at) == (3.0, 4.0)
    assert 1.0 <= ping_at - last_frame_at <= 2.0
    assert 2.0 <= timeout_at - last_frame_at <= 3.0
    assert timeout_at - ping_at == 1.0


def test_stale_timer_after_close_does_nothing() -> None:
    pair = open_pair(server=Config(keepalive=1.0))
    c = pair.client
    c.handle_timer(1.0)
    c.handle_timer(2.0)  # PING sent, now awaiting the PONG
    assert c.data_to_send()
    pair.disconnect(pair.server)
    assert c.closed
    # The adapter's timer was armed for 3.0 before the connection closed.
    assert c.handle_timer(3.0) == []
    assert c.data_to_send() == b""


def test_ping(split: dict[str, Any]) -> None:
    pair = open_pair(**split)
    pair.ping(pair.client)
    pair.ping(pair.server)
    # A PONG nobody asked for is reported, harmlessly.
    assert pair.client.receive_data(encode(Pong(77))) == [PongReceived(77)]


def test_a_ping_flood_from_a_peer_that_does_not_read_is_excessive_load() -> None:
    """R-LIM-4: PONGs pile up while the peer does not read them; past the bound the
    connection ends with EXCESSIVE_LOAD, and the answers it would never read are dropped."""
    pair = open_pair(server=Config(max_queued_control_frames=100))
    pings = encode(Ping(1)) * 60
    events = pair.server.receive_data(pings)  # 60 PONGs queued: within the bound
    assert len(events) == 60
    events += pair.server.receive_data(pings)  # 120 queued: the next input finds it over
    assert not pair.server.closed
    events = pair.server.receive_data(encode(Ping(2)))
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert [t.code for t in terminated] == [ErrorCode.EXCESSIVE_LOAD]
    assert pair.server.closed
    frames = decode_frames(pair.server.data_to_send())
    assert len(frames) == 1  # the GOAWAY alone: the queued PONGs were dropped
    assert expect_goaway(encode(frames[0]), ErrorCode.EXCESSIVE_LOAD).code == 15


def test_a_peer_that_reads_its_answers_may_ping_without_end() -> None:
    pair = open_pair(server=Config(max_queued_control_frames=100))
    for _ in range(10):
        assert len(pair.server.receive_data(encode(Ping(1)) * 60)) == 60
        pair.client.receive_data(pair.server.data_to_send())
    assert not pair.server.closed


# -- requests -----------------------------------------------------------------------------------


def test_subscribe_accept_reject(split: dict[str, Any]) -> None:
    pair = open_pair(**split)
    h1 = pair.subscribe(CH, "s1", after_seq=0, policy=OverflowPolicy.BLOCK, priority=7)
    h2 = pair.subscribe(CH, "s2", after_seq=3)
    assert (h1, h2) == (1, 2)
    assert pair.client.handle_state(h1) is HState.REQUESTED
    assert pair.server.handle_state(h1) is HState.REQUESTED
    pair.accept(h1, stream_id="s1", first_seq=1, last_seq=0)
    assert pair.client.handle_state(h1) is pair.server.handle_state(h1) is HState.ACTIVE
    pair.reject(h2, ErrorCode.UNKNOWN_STREAM, "no such stream")
    assert pair.client.handle_state(h2) is pair.server.handle_state(h2) is HState.CLOSED
    pair.send_data(h1, b"a", b"b" * 100, b"")
    pair.send_end(h1)
    assert pair.client.handle_state(h1) is pair.server.handle_state(h1) is HState.CLOSED
    assert pair.client.statistics().open_handles == pair.server.statistics().open_handles == 0


def test_open_accept(split: dict[str, Any]) -> None:
    pair = open_pair(**split)
    h = pair.open("jobs:run", b"{args}", policy=OverflowPolicy.ERROR, priority=2)
    pair.accept(h, stream_id="job-17")
    pair.send_data(h, b"started")
    pair.send_error(h, 1234, "boom")
    h2 = pair.open("jobs:run", stream_id="mine")
    pair.reject(h2, ErrorCode.STREAM_EXISTS)


def test_open_with_evicted_start() -> None:
    pair = open_pair()
    h = pair.open("jobs:run")
    pair.accept(h, stream_id="j", first_seq=4, last_seq=6)  # gap 1..3 follows the ACCEPT
    pair.send_data(h, b"4")


def test_upload_accept_data_end(split: dict[str, Any]) -> None:
    pair = open_pair(server=Config(window_chunks=4), **split)
    u = pair.upload(CH, "up1", b"meta")
    pair.accept(u, stream_id="up1")
    pair.send_data(u, *[bytes([i]) * 10 for i in range(10)])  # beyond one window
    pair.send_end(u)
    assert pair.server.handle_state(u) is pair.client.handle_state(u) is HState.CLOSED


def test_upload_fail_and_reject() -> None:
    pair = open_pair()
    u = pair.upload(CH)
    pair.accept(u, stream_id="srv-picked")
    pair.send_data(u, b"x")
    pair.send_error(u, 1001, "disk full")
    u2 = pair.upload(CH, "u2")
    pair.reject(u2, ErrorCode.NOT_ALLOWED, "read only")


def test_upload_data_queued_before_accept() -> None:
    pair = open_pair()
    u = pair.upload(CH, "u")
    assert pair.client.send_data(u, b"early") is WriteResult.ACCEPTED
    assert pair.client.handle_state(u) is HState.REQUESTED
    assert pair.transfer() == Transfer([], [])  # no credit yet
    t = pair.accept(u)
    assert t.server == [UploadData(u, 1, (b"early",))]


def test_upload_cancelled_by_server() -> None:
    pair = open_pair()
    u = pair.upload(CH, "u")
    pair.accept(u)
    pair.send_data(u, b"x")
    pair.cancel_upload(u, ErrorCode.UPLOAD_CANCELLED, "enough")
    assert pair.client.send_data(u, b"late") is WriteResult.CLOSED
    assert pair.client.send_end(u) is False


def test_upload_cancel_in_flight_discards_data() -> None:
    pair = open_pair()
    u = pair.upload(CH, "u")
    pair.accept(u)
    pair.client.send_data(u, b"x")
    in_flight = pair.client.data_to_send()
    assert pair.server.cancel_upload(u)
    assert pair.server.receive_data(in_flight) == []  # crossed the UPLOAD_CANCEL
    t = pair.transfer()
    assert t.client == [UploadCancelled(u, ErrorCode.UPLOAD_CANCELLED, "")]
    assert pair.server.cancel_upload(u) is False


def test_upload_failed_before_accept() -> None:
    pair = open_pair()
    u = pair.upload(CH, "u")
    pair.client.send_data(u, b"queued")
    assert pair.client.send_error(u, 1500, "changed my mind")
    assert pair.client.handle_state(u) is HState.CLOSED
    assert pair.client.statistics().queued_bytes == 0
    t = pair.transfer()
    assert t.server == [UploadFailed(u, 1500, "changed my mind", 0)]
    assert pair.server.handle_state(u) is HState.CLOSED
    assert pair.server.statistics().open_handles == 0
    assert pair.server.accept(u) is False


def test_upload_failed_before_accept_crossing_accept() -> None:
    pair = open_pair()
    u = pair.upload(CH, "u")
    assert pair.server.accept(u)
    pair.client.send_error(u, 1500)
    t = pair.transfer()
    assert t.client == []  # the ACCEPT met a closed handle
    assert t.server == [UploadFailed(u, 1500, "", 0)]


def test_upload_end_with_queued_data_drains() -> None:
    pair = open_pair(server=Config(window_chunks=2))
    u = pair.upload(CH, "u")
    pair.accept(u)
    for i in range(5):
        pair.client.send_data(u, b"%d" % i)
    assert pair.client.send_end(u)
    assert pair.client.handle_state(u) is HState.DRAINING
    t = pair.transfer()
    assert data_chunks(t.server, u) == [b"0", b"1", b"2", b"3", b"4"]
    assert t.server[-1] == UploadEnded(u, 5)
    assert pair.client.handle_state(u) is HState.CLOSED


def test_upload_server_can_cancel_while_draining() -> None:
    pair = open_pair(server=Config(window_chunks=2))
    u = pair.upload(CH, "u")
    pair.accept(u)
    for i in range(4):
        pair.client.send_data(u, b"%d" % i)
    pair.client.send_end(u)
    # The END and the first two chunks reach the server; its CREDIT is not delivered yet.
    events = pair.server.receive_data(pair.client.data_to_send())
    assert data_chunks(events, u) == [b"0", b"1"]
    assert pair.server.handle_state(u) is HState.DRAINING
    assert pair.server.cancel_upload(u)
    t = pair.transfer()
    assert t.client == [UploadCancelled(u, ErrorCode.UPLOAD_CANCELLED, "")]
    assert t.server == []


def test_auto_reject_invalid_names() -> None:
    s = raw_server()
    s.receive_data(encode(Subscribe(1, "Bad Channel", "s")))
    s.receive_data(encode(Subscribe(2, CH, "bad id!")))
    s.receive_data(encode(Subscribe(3, CH, "")))  # a subscription needs a stream id
    s.receive_data(encode(Open(4, "nope", "")))
    s.receive_data(encode(Upload(5, CH, "spa ce")))
    assert s.receive_data(encode(Open(6, CH, ""))) == [
        OpenRequested(6, CH, "", b"", OverflowPolicy.DEFAULT, 0)
    ]
    frames = sent(s)
    assert [(f.handle, f.code) for f in frames if isinstance(f, Reject)] == [
        (h, ErrorCode.INVALID_NAME) for h in (1, 2, 3, 4, 5)
    ]
    assert s.statistics().open_handles == 1
    for h in (1, 2, 3, 4, 5):
        assert s.handle_state(h) is HState.CLOSED
    # Frames for an auto-rejected handle that cross the REJECT are discarded.
    assert s.receive_data(encode(Cancel(1))) == []


def test_auto_reject_limits() -> None:
    pair = open_pair(server=Config(max_subscriptions=1, max_uploads=1))
    h1 = pair.subscribe(CH, "a")
    h2 = pair.client.subscribe(CH, "b")
    t = pair.transfer()
    assert t.client == [RequestRejected(h2, ErrorCode.LIMIT_EXCEEDED, t.client[0].message)]  # type: ignore[union-attr]
    assert t.server == []
    u1 = pair.upload(CH, "u")
    u2 = pair.client.upload(CH, "v")
    t = pair.transfer()
    assert [type(e) for e in t.client] == [RequestRejected]
    assert t.client[0].code == ErrorCode.LIMIT_EXCEEDED  # type: ignore[union-attr]
    assert t.client[0].handle == u2  # type: ignore[union-attr]
    # Closing one makes room for the next.
    pair.cancel(h1)
    pair.subscribe(CH, "c")
    pair.accept(u1)
    pair.send_end(u1)
    pair.upload(CH, "w")


def test_auto_reject_while_draining() -> None:
    pair, h = subscribed()
    h2 = pair.client.subscribe(CH, "late")  # crosses the server's GOAWAY
    pair.server.goaway()
    t = pair.transfer()
    assert t.client[0] == GoawayReceived(ErrorCode.NO_ERROR, h, "")
    assert t.client[1] == RequestRejected(h2, ErrorCode.SERVER_SHUTDOWN, t.client[1].message)  # type: ignore[union-attr]
    assert t.server == []
    assert pair.server.state is ConnState.DRAINING
    # The open subscription still runs to completion; then both sides are done.
    pair.send_data(h, b"last words")
    t = pair.send_end(h)
    assert t.client[-1] == ConnectionTerminated(ErrorCode.NO_ERROR, "drained", True)
    assert t.server == [ConnectionTerminated(ErrorCode.NO_ERROR, "drained", False)]
    assert pair.client.closed
    assert pair.server.closed


def test_goaway_crossing_a_request_with_nothing_open() -> None:
    pair = open_pair()
    h = pair.client.subscribe(CH, "late")
    pair.server.goaway()  # nothing open: the server is done at once
    assert pair.server.take_events() == [ConnectionTerminated(ErrorCode.NO_ERROR, "drained", False)]
    assert pair.server.closed
    t = pair.transfer()
    # The GOAWAY's last_handle tells the client the server never saw its request.
    assert t.client == [
        GoawayReceived(ErrorCode.NO_ERROR, 0, ""),
        RequestRejected(h, ErrorCode.SERVER_SHUTDOWN, t.client[1].message),  # type: ignore[union-attr]
        ConnectionTerminated(ErrorCode.NO_ERROR, "drained", True),
    ]
    assert pair.client.closed


def test_requests_after_goaway_raise() -> None:
    pair = open_pair()
    pair.goaway(pair.server)
    local_error(ErrorCode.CONNECTION_CLOSED, pair.client.subscribe, CH, "s")
    local_error(ErrorCode.CONNECTION_CLOSED, pair.client.open, CH)
    local_error(ErrorCode.CONNECTION_CLOSED, pair.client.upload, CH)
    local_error(ErrorCode.CONNECTION_CLOSED, pair.client.ping)


def test_requests_before_handshake_raise() -> None:
    c = Connection(Role.CLIENT)
    local_error(ErrorCode.INVALID_STATE, c.subscribe, CH, "s")
    local_error(ErrorCode.INVALID_STATE, c.ping)


def test_tail_subscription(split: dict[str, Any]) -> None:
    pair = open_pair(**split)
    h = pair.subscribe(CH, "live", tail=True, after_seq=99)
    assert pair.server.accept(h, stream_id="live", first_seq=3, last_seq=7)  # no gap for tails
    t = pair.transfer()
    assert t.client == [RequestAccepted(h, "live", 3, 7)]
    t = pair.send_data(h, b"eight")
    assert t.client == [DataReceived(h, 8, (b"eight",))]
    pair.send_end(h)


def test_tail_subscription_of_empty_stream() -> None:
    pair = open_pair()
    h = pair.subscribe(CH, "live", tail=True)
    pair.accept(h, stream_id="live", first_seq=1, last_seq=0)
    assert pair.send_data(h, b"one").client == [DataReceived(h, 1, (b"one",))]


def test_after_seq_before_first_seq_gets_evicted_gap(split: dict[str, Any]) -> None:
    pair = open_pair(**split)
    h = pair.subscribe(CH, "s", after_seq=2)
    t = pair.accept(h, stream_id="s", first_seq=6, last_seq=9)
    assert t.client[1] == GapReceived(h, 3, 5, GapReason.EVICTED)
    t = pair.send_data(h, b"6", b"7", b"8", b"9")
    assert data_chunks(t.client, h) == [b"6", b"7", b"8", b"9"]
    assert t.client[0].seq == 6  # type: ignore[union-attr]
    pair.send_end(h)


def test_after_seq_within_held_seqs() -> None:
    pair = open_pair()
    h = pair.subscribe(CH, "s", after_seq=4)
    pair.accept(h, stream_id="s", first_seq=2, last_seq=9)
    assert pair.send_data(h, b"5").client == [DataReceived(h, 5, (b"5",))]
    local_error(ErrorCode.INVALID_ARGUMENT, pair.server.send_data, h, b"x", seq=9)
    assert pair.server.send_data(h, b"6", seq=6) is WriteResult.ACCEPTED


def test_send_gap(split: dict[str, Any]) -> None:
    pair, h = subscribed(**split)
    pair.send_data(h, b"1")
    pair.send_gap(h, 4)
    pair.send_gap(h, 5, GapReason.OVERFLOW)
    assert pair.send_data(h, b"6").client == [DataReceived(h, 6, (b"6",))]
    local_error(ErrorCode.INVALID_ARGUMENT, pair.server.send_gap, h, 5)
    local_error(ErrorCode.INVALID_ARGUMENT, pair.server.send_gap, h, 2**64)
    pair.send_gap(h, 9)
    pair.send_end(h)


def test_seq_space_exhausted() -> None:
    pair = open_pair()
    h = pair.subscribe(CH, "s", after_seq=2**64 - 2)
    pair.accept(h, stream_id="s", first_seq=1, last_seq=0)
    pair.send_data(h, b"last seq there is")
    local_error(ErrorCode.INVALID_ARGUMENT, pair.server.send_data, h, b"no seq left")
    local_error(ErrorCode.INVALID_ARGUMENT, pair.server.send_gap, h, 2**64)
    pair.send_end(h)


# -- END and ERROR overtake queued data ---------------------------------------------------------


@pytest.mark.parametrize("fail", [False, True])
def test_end_overtakes_queued_data(fail: bool) -> None:
    pair, h = subscribed(Config(window_chunks=2))
    c, s = pair.client, pair.server
    for i in range(1, 6):
        assert s.send_data(h, b"%d" % i) is WriteResult.ACCEPTED
    if fail:
        assert s.send_error(h, 2000, "late failure")
    else:
        assert s.send_end(h)
    assert s.handle_state(h) is HState.DRAINING
    local_error(ErrorCode.STREAM_CLOSED, s.send_data, h, b"more")
    local_error(ErrorCode.STREAM_CLOSED, s.send_end, h)
    local_error(ErrorCode.STREAM_CLOSED, s.send_error, h, 1)
    local_error(ErrorCode.STREAM_CLOSED, s.send_gap, h, 9)
    frames = sent(s)
    assert isinstance(frames[0], End | Error)  # control first
    assert frames[0].last_seq == 5
    events = pair.feed(c, encode_all(frames))
    assert events == [DataReceived(h, 1, (b"1", b"2"))]
    assert c.handle_state(h) is HState.DRAINING  # the end is known, not yet reported
    t = pair.transfer()
    assert data_chunks(t.client, h) == [b"3", b"4", b"5"]
    final = StreamFailed(h, 2000, "late failure", 5) if fail else StreamEnded(h, 5)
    assert t.client[-1] == final
    assert c.handle_state(h) is s.handle_state(h) is HState.CLOSED


def encode_all(frames: list[Frame]) -> bytes:
    return b"".join(map(encode, frames))


def test_end_waits_for_fragmented_chunk() -> None:
    pair, h = subscribed(Config(max_frame_size=MIN_MAX_FRAME_SIZE))
    big = bytes(range(256)) * 200
    pair.server.send_data(h, big)
    pair.server.send_end(h)
    out = pair.server.data_to_send(max_bytes=20_000)  # END and part of the chunk
    assert pair.feed(pair.client, out) == []
    assert pair.client.handle_state(h) is HState.DRAINING
    t = pair.transfer()
    assert t.client == [DataReceived(h, 1, (big,)), StreamEnded(h, 1)]


# -- credit -------------------------------------------------------------------------------------


def test_sender_stops_at_credit_and_resumes() -> None:
    pair, h = subscribed(Config(window_chunks=3))
    c, s = pair.client, pair.server
    for i in range(7):
        s.send_data(h, b"%d" % i)
    frames = sent(s)
    assert len(frames) == 3
    assert sent(s) == []  # out of credit
    events = pair.feed(c, encode_all(frames))
    assert data_chunks(events, h) == [b"0", b"1", b"2"]
    [credit] = sent(c)  # half the window consumed: credit goes back
    assert credit == Credit(h, 3, 3)
    assert s.receive_data(encode(credit)) == []
    assert len(sent(s)) == 3


def test_byte_credit() -> None:
    pair, h = subscribed(Config(window_bytes=100))
    s = pair.server
    for _ in range(5):
        s.send_data(h, b"x" * 60)
    # A chunk goes out while any byte credit is left: 60 then 60 (-20), then stop.
    out = s.data_to_send()
    assert len(decode_frames(out)) == 2
    events = pair.feed(pair.client, out)
    assert len(data_chunks(events, h)) == 2
    t = pair.transfer()
    assert len(data_chunks(t.client, h)) == 3


def test_auto_credit_at_half_window() -> None:
    pair, h = subscribed(Config(window_chunks=4, window_bytes=1000))
    c, s = pair.client, pair.server
    s.send_data(h, b"a")
    c.receive_data(s.data_to_send())
    assert c.data_to_send() == b""  # 1 of 4 chunks consumed
    s.send_data(h, b"b")
    c.receive_data(s.data_to_send())
    assert sent(c) == [Credit(h, 2, 2)]
    s.send_data(h, b"c" * 500)  # half the bytes
    c.receive_data(s.data_to_send())
    assert sent(c) == [Credit(h, 1, 500)]


def test_manual_credit() -> None:
    pair, h = subscribed(Config(window_chunks=4, auto_credit=False))
    h2 = pair.subscribe(CH, "s2")
    pair.accept(h2, stream_id="s2")
    c, s = pair.client, pair.server
    for i in range(6):
        s.send_data(h, b"%d" % i)
        s.send_data(h2, b"%d" % i)
    t = pair.transfer()
    assert data_chunks(t.client, h) == [b"0", b"1", b"2", b"3"]
    assert data_chunks(t.client, h2) == [b"0", b"1", b"2", b"3"]
    assert pair.transfer() == Transfer([], [])  # stalled: nothing consumed
    # Consuming one handle's data unblocks that handle only, at half the window.
    c.consume(h, 1, 1)
    assert c.data_to_send() == b""
    c.consume(h, 1, 0)
    t = pair.transfer()
    assert data_chunks(t.client, h) == [b"4", b"5"]
    assert data_chunks(t.client, h2) == []
    local_error(ErrorCode.INVALID_ARGUMENT, c.consume, h, 5, 0)
    local_error(ErrorCode.INVALID_ARGUMENT, c.consume, h, 0, 99)
    local_error(ErrorCode.INVALID_ARGUMENT, c.consume, h, -1, 0)
    c.consume(h2, 2, 2)
    assert data_chunks(pair.transfer().client, h2) == [b"4", b"5"]
    # A closed handle: nothing to do. A handle never opened: an error.
    pair.cancel(h)
    c.consume(h, 0, 0)
    local_error(ErrorCode.UNKNOWN_HANDLE, c.consume, 99, 0, 0)


def test_manual_credit_upload_server_side() -> None:
    pair = open_pair(server=Config(window_chunks=2, auto_credit=False))
    u = pair.upload(CH, "u")
    pair.accept(u)
    for i in range(3):
        pair.client.send_data(u, b"%d" % i)
    t = pair.transfer()
    assert data_chunks(t.server, u) == [b"0", b"1"]
    pair.server.consume(u, 2, 2)
    assert data_chunks(pair.transfer().server, u) == [b"2"]
    local_error(ErrorCode.INVALID_STATE, pair.client.consume, u, 0, 0)  # a sender


def test_consume_with_auto_credit_raises() -> None:
    pair, h = subscribed()
    local_error(ErrorCode.INVALID_STATE, pair.client.consume, h, 0, 0)


def test_data_beyond_chunk_credit() -> None:
    c = raw_client(Config(window_chunks=1, auto_credit=False))
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    assert c.receive_data(encode(Data(h, 1, (b"ok",)))) == [DataReceived(h, 1, (b"ok",))]
    assert_fails(c, encode(Data(h, 2, (b"too many",))), ErrorCode.FLOW_CONTROL_ERROR)


def test_data_beyond_byte_credit() -> None:
    c = raw_client(Config(window_bytes=10, auto_credit=False))
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    # One chunk may overshoot the byte credit; the next one is a violation.
    assert c.receive_data(encode(Data(h, 1, (b"x" * 20,))))
    assert_fails(c, encode(Data(h, 2, (b"y",))), ErrorCode.FLOW_CONTROL_ERROR)


def test_data_run_beyond_byte_credit() -> None:
    c = raw_client(Config(window_bytes=10))
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    assert_fails(c, encode(Data(h, 1, (b"x" * 10, b"y"))), ErrorCode.FLOW_CONTROL_ERROR)


def test_upload_data_beyond_credit() -> None:
    s = raw_server(Config(window_chunks=1, auto_credit=False))
    s.receive_data(encode(Upload(1, CH, "u")))
    s.accept(1)
    assert sent(s) == [Accept(1, "", 1, 0, 1, 1 << 20)]
    assert s.receive_data(encode(Data(1, 1, (b"a",)))) == [UploadData(1, 1, (b"a",))]
    assert_fails(s, encode(Data(1, 2, (b"b",))), ErrorCode.FLOW_CONTROL_ERROR)


def test_upload_data_before_accept_is_a_violation() -> None:
    s = raw_server()
    s.receive_data(encode(Upload(1, CH, "u")))
    assert_fails(s, encode(Data(1, 1, (b"a",))), ErrorCode.FLOW_CONTROL_ERROR)


def test_credit_overflow() -> None:
    s = raw_server()
    s.receive_data(encode(Subscribe(1, CH, "s", credit_chunks=MAX_CREDIT, credit_bytes=5)))
    assert s.receive_data(encode(Credit(1, 0, 7))) == []
    assert_fails(s, encode(Credit(1, 1, 0)), ErrorCode.FLOW_CONTROL_ERROR)


def test_initial_credit_overflow() -> None:
    s = raw_server()
    frame = Subscribe(1, CH, "s", credit_chunks=MAX_CREDIT + 1)
    assert_fails(s, encode(frame), ErrorCode.FLOW_CONTROL_ERROR)


def test_accept_credit_overflow() -> None:
    c = raw_client()
    u = c.upload(CH, "u")
    assert_fails(
        c, encode(Accept(u, "u", credit_bytes=MAX_CREDIT + 1)), ErrorCode.FLOW_CONTROL_ERROR
    )


def test_upload_credit_overflow() -> None:
    c = raw_client()
    u = c.upload(CH, "u")
    c.receive_data(encode(Accept(u, "u", credit_chunks=MAX_CREDIT, credit_bytes=1)))
    assert_fails(c, encode(Credit(u, 1, 0)), ErrorCode.FLOW_CONTROL_ERROR)


# -- overflow policies --------------------------------------------------------------------------


def stalled(policy: OverflowPolicy, **server: Any) -> tuple[ConnectionPair, int, bytes]:
    """A subscription whose 2 chunks of credit are in flight (held back from the client)."""
    pair, h = subscribed(Config(window_chunks=2), Config(**server), policy=policy)
    s = pair.server
    s.send_data(h, b"1")
    s.send_data(h, b"2")
    held = s.data_to_send()
    assert len(decode_frames(held)) == 2
    return pair, h, held


def test_drop_oldest() -> None:
    pair, h, held = stalled(OverflowPolicy.DROP_OLDEST, max_queued_chunks=2, max_queued_bytes=100)
    s, c = pair.server, pair.client
    for seq in range(3, 9):
        assert s.send_data(h, b"%d" % seq) is WriteResult.ACCEPTED
        assert s.statistics().queued_bytes <= 2
    # 3..6 were dropped; 7 and 8 are queued behind an OVERFLOW gap, which is held until the
    # subscriber has credit again (so later drops merge into it instead of piling up gaps).
    # The warning goes with the gap: none yet.
    assert s.take_events() == []
    assert s.statistics().chunks_dropped == 4
    events = pair.feed(c, held + s.data_to_send())
    assert events == [DataReceived(h, 1, (b"1", b"2"))]
    assert s.take_events() == []
    t = pair.transfer()  # the client's credit returns; the gap and the survivors follow
    assert t.client == [
        GapReceived(h, 3, 6, GapReason.OVERFLOW),
        OverflowWarning(h, 4, 3, 6),
        DataReceived(h, 7, (b"7", b"8")),
    ]
    # Both sides report the same gap, once.
    assert [e for e in t.server if isinstance(e, OverflowWarning)] == [OverflowWarning(h, 4, 3, 6)]
    pair.send_end(h)


def test_a_stalled_subscriber_gets_one_overflow_gap_not_one_per_flush() -> None:
    pair, h, held = stalled(OverflowPolicy.DROP_OLDEST, max_queued_chunks=2, max_queued_bytes=100)
    s, c = pair.server, pair.client
    for seq in range(3, 103):
        s.send_data(h, b"%d" % seq)
        assert s.data_to_send() == b""  # nothing goes out while there is no credit
    events = pair.feed(c, held)
    assert events == [DataReceived(h, 1, (b"1", b"2"))]
    t = pair.transfer()
    assert t.client == [
        GapReceived(h, 3, 100, GapReason.OVERFLOW),
        OverflowWarning(h, 98, 3, 100),
        DataReceived(h, 101, (b"101", b"102")),
    ]
    # 98 drops, one warning on the server too: not one per drop or per flush.
    warnings = [e for e in t.server if isinstance(e, OverflowWarning)]
    assert warnings == [OverflowWarning(h, 98, 3, 100)]


def test_a_held_overflow_gap_goes_out_when_it_is_the_end() -> None:
    pair, h, held = stalled(OverflowPolicy.DROP_OLDEST, max_queued_chunks=1, max_queued_bytes=100)
    s, c = pair.server, pair.client
    for seq in range(3, 6):
        s.send_data(h, b"%d" % seq)
    s.send_gap(h, 6, GapReason.OVERFLOW)  # the queue now ends with an overflow gap
    s.send_end(h)
    events = pair.feed(c, held + s.data_to_send())
    assert events[0] == DataReceived(h, 1, (b"1", b"2"))
    t = pair.transfer()
    assert isinstance(t.client[-1], StreamEnded)
    assert [type(e) for e in t.client].count(GapReceived) >= 1


def test_drop_oldest_bounded_by_bytes() -> None:
    pair, h = subscribed(
        Config(window_bytes=100), Config(max_queued_bytes=250), policy=OverflowPolicy.DROP_OLDEST
    )
    s = pair.server
    s.send_data(h, bytes([1]) * 100)
    held = s.data_to_send()  # the byte credit is used up
    for seq in range(2, 40):
        s.send_data(h, bytes([seq]) * 100)
        assert s.statistics().queued_bytes <= 250
    pair.feed(pair.client, held)
    t = pair.transfer()
    gaps = [e for e in t.client if isinstance(e, GapReceived)]
    assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [(2, 37, GapReason.OVERFLOW)]
    assert data_chunks(t.client, h) == [bytes([38]) * 100, bytes([39]) * 100]
    # The server's warning went with the gap.
    assert OverflowWarning(h, 36, 2, 37) in t.server


def test_drop_oldest_merges_queued_gaps() -> None:
    # R-OVF-2: the OVERFLOW gap takes in the queued gaps next to the dropped chunks (an EVICTED
    # one included); both warnings cover the gap's seqs, the statistics count the drops.
    pair, h, held = stalled(OverflowPolicy.DROP_OLDEST, max_queued_chunks=2)
    s = pair.server
    s.send_data(h, b"3")
    s.send_gap(h, 5)
    s.send_data(h, b"6")
    s.send_data(h, b"7")  # drops 3
    s.send_data(h, b"8")  # drops 6
    s.send_data(h, b"9")  # drops 7
    assert s.take_events() == []
    assert s.statistics().chunks_dropped == 3
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert [e for e in t.client if not isinstance(e, DataReceived)] == [
        GapReceived(h, 3, 7, GapReason.OVERFLOW),
        OverflowWarning(h, 5, 3, 7),
    ]
    assert OverflowWarning(h, 5, 3, 7) in t.server
    assert data_chunks(t.client, h) == [b"8", b"9"]


def test_drop_oldest_keeps_an_earlier_evicted_gap() -> None:
    pair, h, held = stalled(OverflowPolicy.DROP_OLDEST, max_queued_chunks=1)
    s = pair.server
    s.send_gap(h, 4)
    s.send_data(h, b"5")
    s.send_data(h, b"6")  # drops 5, behind the EVICTED gap
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert [e for e in t.client if not isinstance(e, DataReceived)] == [
        GapReceived(h, 3, 4, GapReason.EVICTED),
        GapReceived(h, 5, 5, GapReason.OVERFLOW),
        OverflowWarning(h, 1, 5, 5),
    ]


def test_drop_oldest_keeps_half_sent_chunk() -> None:
    pair, h = subscribed(
        Config(max_frame_size=MIN_MAX_FRAME_SIZE, window_chunks=1),
        Config(max_queued_chunks=1),
        policy=OverflowPolicy.DROP_OLDEST,
    )
    s = pair.server
    big = b"B" * 40_000
    s.send_data(h, big)
    part = s.data_to_send(max_bytes=1000)  # the first fragment: the credit is used up
    assert s.send_data(h, b"2") is WriteResult.ACCEPTED  # the half-sent chunk is not "beyond"
    assert s.send_data(h, b"3") is WriteResult.ACCEPTED  # 2 is dropped; the big one stays
    assert s.take_events() == []
    assert pair.feed(pair.client, part) == []
    t = pair.transfer()
    assert t.client == [
        DataReceived(h, 1, (big,)),
        GapReceived(h, 2, 2, GapReason.OVERFLOW),
        OverflowWarning(h, 1, 2, 2),
        DataReceived(h, 3, (b"3",)),
    ]
    assert OverflowWarning(h, 1, 2, 2) in t.server


def test_drop_oldest_connection_cap_drops_new_chunk() -> None:
    # Other handles fill the connection-wide cap: dropping this handle's own chunks does not
    # make room, so the new chunk is dropped too (and reported as a gap).
    pair, h = subscribed(
        Config(window_chunks=1),
        Config(max_connection_queued_bytes=300),
        policy=OverflowPolicy.DROP_OLDEST,
    )
    s = pair.server
    h2 = pair.subscribe(CH, "other")
    pair.accept(h2, stream_id="other", policy=OverflowPolicy.BLOCK)
    s.send_data(h2, b"o" * 100)
    held = s.data_to_send()  # h2's credit is used up
    for _ in range(3):
        assert s.send_data(h2, b"o" * 100) is WriteResult.ACCEPTED
    assert s.send_data(h2, b"o" * 100) is WriteResult.BLOCKED
    for _ in range(4):
        assert s.send_data(h, b"x" * 150) is WriteResult.ACCEPTED
        assert s.statistics().queued_bytes <= 300
    assert s.take_events() == []
    assert s.statistics().chunks_dropped == 4
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert [e for e in t.client if e.handle == h] == [  # type: ignore[union-attr]
        GapReceived(h, 1, 4, GapReason.OVERFLOW),
        OverflowWarning(h, 4, 1, 4),
    ]
    assert Writable(h2) in t.server
    assert OverflowWarning(h, 4, 1, 4) in t.server


def test_block_then_writable() -> None:
    pair, h, held = stalled(OverflowPolicy.BLOCK, max_queued_chunks=2)
    s = pair.server
    assert s.send_data(h, b"3") is WriteResult.ACCEPTED
    assert s.send_data(h, b"4") is WriteResult.ACCEPTED
    assert s.send_data(h, b"5") is WriteResult.BLOCKED
    assert s.send_data(h, b"5") is WriteResult.BLOCKED
    assert s.take_events() == []
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert Writable(h) in t.server
    assert data_chunks(t.client, h) == [b"3", b"4"]
    assert s.send_data(h, b"5") is WriteResult.ACCEPTED
    assert data_chunks(pair.transfer().client, h) == [b"5"]


def test_block_on_connection_cap_then_writable() -> None:
    pair, h = subscribed(
        server=Config(max_connection_queued_bytes=100), policy=OverflowPolicy.BLOCK
    )
    h2 = pair.subscribe(CH, "s2")
    pair.accept(h2, stream_id="s2", policy=OverflowPolicy.BLOCK)
    s = pair.server
    assert s.send_data(h, b"x" * 100) is WriteResult.ACCEPTED
    assert s.send_data(h2, b"y") is WriteResult.BLOCKED  # the cap is full of h's data
    t = pair.transfer()
    assert t.server == [Writable(h2)]
    assert s.send_data(h2, b"y") is WriteResult.ACCEPTED


def test_error_policy() -> None:
    pair, h, held = stalled(OverflowPolicy.ERROR, max_queued_chunks=1)
    s, c = pair.server, pair.client
    assert s.send_data(h, b"3") is WriteResult.ACCEPTED
    assert s.send_data(h, b"4") is WriteResult.FAILED
    assert s.handle_state(h) is HState.CLOSED
    assert s.statistics().queued_bytes == 0
    assert s.send_data(h, b"5") is WriteResult.CLOSED
    pair.feed(c, held)
    t = pair.transfer()
    assert t.client[-1] == StreamFailed(h, ErrorCode.RESOURCE_EXHAUSTED, "subscriber too slow", 2)
    assert data_chunks(t.client, h) == []


def test_error_policy_with_half_sent_chunk() -> None:
    pair, h = subscribed(
        Config(max_frame_size=MIN_MAX_FRAME_SIZE, window_chunks=2),
        Config(max_queued_chunks=1),
        policy=OverflowPolicy.ERROR,
    )
    s = pair.server
    pair.send_data(h, b"1")
    s.send_data(h, b"F" * 40_000)
    part = s.data_to_send(max_bytes=1000)
    assert s.send_data(h, b"3") is WriteResult.ACCEPTED  # within the credit
    assert s.send_data(h, b"4") is WriteResult.ACCEPTED  # one beyond it
    assert s.send_data(h, b"5") is WriteResult.FAILED
    assert pair.feed(pair.client, part) == []
    t = pair.transfer()
    # The half-sent chunk is abandoned: the failure came after seq 1.
    assert t.client == [StreamFailed(h, ErrorCode.RESOURCE_EXHAUSTED, "subscriber too slow", 1)]
    assert pair.client.handle_state(h) is HState.CLOSED


def test_default_policy_from_config() -> None:
    pair, h = subscribed(server=Config(default_policy=OverflowPolicy.ERROR, max_queued_chunks=1))
    s = pair.server
    s.send_data(h, b"1")
    s.send_data(h, b"2")  # within the credit: both queued
    assert s.send_data(h, b"3") is not WriteResult.FAILED
    pair2, h2, _ = stalled(OverflowPolicy.DEFAULT, max_queued_chunks=1)  # drop_oldest
    pair2.server.send_data(h2, b"3")
    assert pair2.server.send_data(h2, b"4") is WriteResult.ACCEPTED
    assert pair2.server.statistics().chunks_dropped == 1


def test_connection_queued_bytes_cap() -> None:
    pair, h = subscribed(Config(window_chunks=1), Config(max_connection_queued_bytes=1000))
    s = pair.server
    h2 = pair.subscribe(CH, "s2", policy=OverflowPolicy.ERROR)
    pair.accept(h2, stream_id="s2")
    s.send_data(h, b"a" * 10)
    held = s.data_to_send()
    results = [s.send_data(h, b"a" * 300) for _ in range(4)]
    assert results == [WriteResult.ACCEPTED] * 4  # the 4th dropped the oldest (2)
    assert s.statistics().queued_bytes == 900
    assert s.send_data(h2, b"b" * 200) is WriteResult.FAILED  # its policy: fail
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert StreamFailed(h2, ErrorCode.RESOURCE_EXHAUSTED, "subscriber too slow", 0) in t.client
    assert GapReceived(h, 2, 2, GapReason.OVERFLOW) in t.client
    assert data_chunks(t.client, h) == [b"a" * 300] * 3


# -- fragmentation ------------------------------------------------------------------------------


def test_fragmented_chunk_arrives_whole(split: dict[str, Any]) -> None:
    if "bytewise" in split:
        split = {"rng": random.Random(5)}  # 100 kB one byte at a time is too slow
    pair, h = subscribed(Config(max_frame_size=MIN_MAX_FRAME_SIZE), **split)
    big = random.Random(1).randbytes(100_000)
    for chunk in (b"small", big, b"after"):
        pair.server.send_data(h, chunk)
    frames = [f for f in sent(pair.server) if isinstance(f, Data)]
    assert all(len(f.chunks[0]) <= MIN_MAX_FRAME_SIZE - 8 for f in frames)
    assert [f.more for f in frames].count(True) == 6
    # Delivered through the pair: one chunk, same bytes.
    pair, h = subscribed(Config(max_frame_size=MIN_MAX_FRAME_SIZE), **split)
    t = pair.send_data(h, b"small", big, b"after")
    assert data_chunks(t.client, h) == [b"small", big, b"after"]
    assert pair.client.statistics().chunks_received == 3


def test_fragments_of_two_handles_interleave() -> None:
    pair, h1 = subscribed(Config(max_frame_size=MIN_MAX_FRAME_SIZE), rng=random.Random(3))
    h2 = pair.subscribe(CH, "s2")
    pair.accept(h2, stream_id="s2")
    a, b = b"A" * 50_000, b"B" * 50_000
    pair.server.send_data(h1, a)
    pair.server.send_data(h2, b)
    t = pair.transfer(max_bytes=5000)
    assert data_chunks(t.client, h1) == [a]
    assert data_chunks(t.client, h2) == [b]


def test_upload_fragmented() -> None:
    pair = open_pair(server=Config(max_frame_size=MIN_MAX_FRAME_SIZE))
    u = pair.upload(CH, "u")
    pair.accept(u)
    big = b"u" * 70_000
    t = pair.send_data(u, big)
    assert t.server == [UploadData(u, 1, (big,))]


def test_reassembly_beyond_max_chunk_size() -> None:
    c = raw_client(Config(max_chunk_size=20_000))
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    assert c.receive_data(encode(Data(h, 1, (b"x" * 15_000,), more=True))) == []
    assert c.statistics().buffered_bytes == 0
    assert_fails(c, encode(Data(h, 1, (b"x" * 6_000,), more=True)), ErrorCode.CHUNK_TOO_LARGE)


def test_send_data_above_peer_max_chunk_size() -> None:
    pair, h = subscribed(Config(max_chunk_size=1000))
    local_error(ErrorCode.CHUNK_TOO_LARGE, pair.server.send_data, h, b"x" * 1001)
    pair.send_data(h, b"x" * 1000)


def test_fragment_of_another_seq() -> None:
    c = raw_client()
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    c.receive_data(encode(Data(h, 1, (b"x",), more=True)))
    assert_fails(c, encode(Data(h, 2, (b"y",))), ErrorCode.PROTOCOL_ERROR)


def test_gap_inside_fragmented_chunk() -> None:
    c = raw_client()
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    c.receive_data(encode(Data(h, 1, (b"x",), more=True)))
    assert_fails(c, encode(Gap(h, 1, 1, GapReason.EVICTED)), ErrorCode.PROTOCOL_ERROR)


def test_fragment_then_run_in_one_frame_list() -> None:
    c = raw_client()
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    c.receive_data(encode(Data(h, 1, (b"x",), more=True)))
    # The last fragment of 1 and chunks 2, 3 decode as one run.
    events = c.receive_data(
        encode_all([Data(h, 1, (b"y",)), Data(h, 2, (b"2",)), Data(h, 3, (b"3",))])
    )
    assert events == [DataReceived(h, 1, (b"xy", b"2", b"3"))]


# -- scheduling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [4_000, 20_000, 100_000])
def test_priorities_share_bytes(max_bytes: int) -> None:
    big = Config(window_chunks=10_000, window_bytes=MAX_CREDIT)
    pair = open_pair(big)
    lo = pair.subscribe(CH, "lo", priority=0)
    hi = pair.subscribe(CH, "hi", priority=3)
    pair.accept(lo, stream_id="lo")
    pair.accept(hi, stream_id="hi")
    s = pair.server
    for _ in range(2000):
        s.send_data(lo, b"l" * 1000)
        s.send_data(hi, b"h" * 1000)
    counts = {lo: 0, hi: 0}
    total = 0
    while total < 400_000:
        out = s.data_to_send(max_bytes)
        assert len(out) <= max_bytes + MIN_MAX_FRAME_SIZE + 18  # at most one frame over
        total += len(out)
        for frame in decode_frames(out):
            assert isinstance(frame, Data)
            counts[frame.handle] += len(frame.chunks)
    assert 3.5 <= counts[hi] / counts[lo] <= 4.5, counts


def test_control_frames_go_first() -> None:
    pair, h = subscribed()
    h2 = pair.subscribe(CH, "s2")
    s = pair.server
    for _ in range(10):
        s.send_data(h, b"d" * 1000)
    s.accept(h2, stream_id="s2")
    payload = s.ping()
    frames = sent(s, max_bytes=100)
    assert frames[:2] == [Accept(h2, "s2"), Ping(payload)]
    assert len(frames) == 3  # then one data frame, within the budget
    assert sent(s, max_bytes=0) == []
    assert len(sent(s)) == 9


def test_data_to_send_skips_closed_handles() -> None:
    pair, h = subscribed()
    h2 = pair.subscribe(CH, "s2")
    pair.accept(h2, stream_id="s2")
    s = pair.server
    s.send_data(h, b"x")
    s.send_data(h2, b"y")
    s.receive_data(encode(Cancel(h)))  # h closes with its queue
    frames = sent(s, max_bytes=1000)
    assert [f.handle for f in frames] == [h2]  # type: ignore[union-attr]
    s.send_data(h2, b"z")
    s.receive_data(encode(Cancel(h2)))
    assert s.data_to_send() == b""


def test_quantum_is_sane() -> None:
    assert QUANTUM >= MIN_MAX_FRAME_SIZE


# -- cancel and unsubscribe ---------------------------------------------------------------------


def test_cancel_discards_frames_in_flight(split: dict[str, Any]) -> None:
    pair, h = subscribed(**split)
    s, c = pair.server, pair.client
    s.send_data(h, b"in flight")
    s.send_end(h)
    in_flight = s.data_to_send()
    c.cancel(h)
    assert c.handle_state(h) is HState.CLOSED
    assert c.receive_data(in_flight) == []
    t = pair.transfer()
    assert t.server == []  # the server had closed the handle after END: CANCEL discarded
    c.cancel(h)  # a no-op now
    c.unsubscribe(h)


def test_cancel_and_unsubscribe(split: dict[str, Any]) -> None:
    pair, h = subscribed(**split)
    pair.send_data(h, b"x")
    pair.cancel(h)
    assert pair.server.send_data(h, b"y") is WriteResult.CLOSED
    assert pair.server.send_end(h) is False
    assert pair.server.send_error(h, 1) is False
    assert pair.server.send_gap(h, 5) is WriteResult.CLOSED
    h2 = pair.subscribe(CH, "s2")
    pair.accept(h2, stream_id="s2")
    pair.unsubscribe(h2)
    h3 = pair.subscribe(CH, "s3")
    pair.cancel(h3)  # before the answer
    assert pair.server.accept(h3) is False
    assert pair.server.reject(h3, ErrorCode.UNKNOWN_STREAM) is False
    h4 = pair.subscribe(CH, "s4")
    pair.unsubscribe(h4)


def test_cancel_with_queued_data_frees_it() -> None:
    pair, h, _held = stalled(OverflowPolicy.BLOCK)
    pair.server.send_data(h, b"x" * 500)
    assert pair.server.statistics().queued_bytes == 500
    t = pair.cancel(h)
    assert t.server == [CancelRequested(h)]
    assert pair.server.statistics().queued_bytes == 0


def test_frame_for_never_opened_handle() -> None:
    c = raw_client()
    c.subscribe(CH, "s")
    assert_fails(c, encode(Accept(2, "s")), ErrorCode.INVALID_HANDLE)
    s = raw_server()
    assert_fails(s, encode(Cancel(1)), ErrorCode.INVALID_HANDLE)
    s = raw_server()
    assert_fails(s, encode(Credit(3, 1, 1)), ErrorCode.INVALID_HANDLE)
    c = raw_client()
    assert_fails(c, encode(Data(1, 1, (b"x",))), ErrorCode.INVALID_HANDLE)


def test_request_handle_not_increasing() -> None:
    s = raw_server()
    s.receive_data(encode(Subscribe(2, CH, "s")))
    assert_fails(s, encode(Subscribe(2, CH, "t")), ErrorCode.INVALID_HANDLE)
    s = raw_server()
    s.receive_data(encode(Subscribe(5, CH, "s")))
    assert_fails(s, encode(Upload(3, CH, "u")), ErrorCode.INVALID_HANDLE)


def test_request_handles_may_skip() -> None:
    s = raw_server()
    events = s.receive_data(encode(Subscribe(10, CH, "s")))
    assert [type(e) for e in events] == [SubscribeRequested]
    assert s.handle_state(5) is HState.CLOSED  # skipped: as good as closed


def test_requests_from_a_server_are_violations() -> None:
    c = raw_client()
    assert_fails(c, encode(Subscribe(1, CH, "s")), ErrorCode.PROTOCOL_ERROR)


# -- goaway -------------------------------------------------------------------------------------


def test_goaway_graceful_drain_by_client() -> None:
    pair, h = subscribed()
    u = pair.upload(CH, "u")
    pair.accept(u)
    t = pair.goaway(pair.client)
    assert t.server == [GoawayReceived(ErrorCode.NO_ERROR, u, "")]
    assert pair.client.state is pair.server.state is ConnState.DRAINING
    pair.send_data(h, b"x")
    pair.send_data(u, b"y")
    pair.send_end(u)
    pair.ping(pair.client)
    t = pair.send_end(h)
    assert t.client == [
        StreamEnded(h, 1),
        ConnectionTerminated(ErrorCode.NO_ERROR, "drained", False),
    ]
    assert t.server == [ConnectionTerminated(ErrorCode.NO_ERROR, "drained", True)]
    assert pair.transfer() == Transfer([], [])
    assert pair.client.closed
    assert pair.server.closed
    assert pair.client.statistics().state is ConnState.CLOSED


def test_goaway_twice_and_after_close() -> None:
    pair, h = subscribed()
    pair.goaway(pair.server, message="bye")
    pair.goaway(pair.server, message="really")
    pair.cancel(h)
    t = pair.transfer()
    assert pair.server.closed
    assert pair.client.closed
    assert t == Transfer([], [])
    pair.server.goaway()  # a no-op on a closed connection
    pair.server.goaway(ErrorCode.INTERNAL_ERROR)
    assert pair.server.data_to_send() == b""


def test_goaway_with_nothing_open_closes_at_once() -> None:
    pair = open_pair()
    t = pair.goaway(pair.server)
    assert t.client == [
        GoawayReceived(ErrorCode.NO_ERROR, 0, ""),
        ConnectionTerminated(ErrorCode.NO_ERROR, "drained", True),
    ]
    assert t.server == [ConnectionTerminated(ErrorCode.NO_ERROR, "drained", False)]


def test_goaway_with_error_code() -> None:
    pair, h = subscribed()
    pair.server.send_data(h, b"queued")
    t = pair.goaway(pair.client, ErrorCode.INTERNAL_ERROR, "oops")
    assert t.client == [ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "oops", False)]
    assert pair.client.closed
    assert pair.server.closed
    assert pair.server.statistics().queued_bytes == 0
    assert pair.client.handle_state(h) is HState.CLOSED
    local_error(ErrorCode.CONNECTION_CLOSED, pair.client.subscribe, CH, "s")
    assert pair.server.send_data(h, b"x") is WriteResult.CLOSED


def test_goaway_before_handshake_both_ways() -> None:
    # A server refusing by GOAWAY is HandshakeRefused; a client giving up is terminal.
    s = Connection(Role.SERVER)
    events = s.receive_data(encode(Goaway(ErrorCode.INTERNAL_ERROR, 0, "bye")))
    assert events == [ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "bye", True)]
    s = Connection(Role.SERVER)
    s.receive_data(encode(Hello()))
    events = s.receive_data(encode(Goaway(0, 0, "")))
    assert events == [ConnectionTerminated(ErrorCode.NO_ERROR, "", True)]
    c = Connection(Role.CLIENT)
    c.goaway(ErrorCode.INTERNAL_ERROR, "giving up")
    assert c.closed
    assert expect_goaway(c.data_to_send(), ErrorCode.INTERNAL_ERROR).message == "giving up"
    assert c.take_events() == [ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "giving up", False)]


def test_goaway_code_checked() -> None:
    pair = open_pair()
    local_error(ErrorCode.INVALID_ARGUMENT, pair.client.goaway, 70_000)
    local_error(ErrorCode.INVALID_ARGUMENT, pair.server.goaway, -1)


def test_end_of_input(split: dict[str, Any]) -> None:
    pair, h = subscribed(**split)
    t = pair.disconnect(pair.server)
    assert t.client == [
        ConnectionTerminated(ErrorCode.CONNECTION_LOST, "the transport closed", True)
    ]
    assert pair.client.handle_state(h) is HState.CLOSED
    assert pair.disconnect(pair.server) == Transfer([], [])
    c = Connection(Role.CLIENT)
    expect_terminated(c.receive_data(b""), ErrorCode.CONNECTION_LOST, by_peer=True)


def test_decoder_error_after_good_frames() -> None:
    pair, h = subscribed()
    c = pair.client
    good = encode(Data(h, 1, (b"ok",)))
    bad = struct.pack(">IBBI", 1, FrameType.GOAWAY, 0, 0) + b"\x00"  # a GOAWAY too short
    events = c.receive_data(good + bad)
    assert events[0] == DataReceived(h, 1, (b"ok",))
    expect_terminated(events, ErrorCode.MALFORMED_FRAME)
    expect_goaway(c.data_to_send(), ErrorCode.MALFORMED_FRAME)


def test_frame_too_large() -> None:
    pair, h = subscribed(Config(max_frame_size=MIN_MAX_FRAME_SIZE))
    frame = encode(Data(h, 1, (b"x" * MIN_MAX_FRAME_SIZE,)))
    assert_fails(pair.client, frame[:20], ErrorCode.FRAME_TOO_LARGE)
    assert MAX_FRAME_SIZE_LIMIT > MIN_MAX_FRAME_SIZE


# -- handles ------------------------------------------------------------------------------------


def test_handle_exhaustion() -> None:
    pair = open_pair(Config(max_handle=2))
    pair.subscribe(CH, "a")
    pair.upload(CH, "b")
    local_error(ErrorCode.HANDLE_EXHAUSTED, pair.client.open, CH)
    local_error(ErrorCode.HANDLE_EXHAUSTED, pair.client.subscribe, CH, "c")
    pair.ping(pair.client)  # still usable


def test_handle_state_unknown() -> None:
    pair = open_pair()
    local_error(ErrorCode.UNKNOWN_HANDLE, pair.client.handle_state, 1)
    local_error(ErrorCode.UNKNOWN_HANDLE, pair.server.handle_state, 0)


def test_unknown_frames_are_ignored(split: dict[str, Any]) -> None:
    pair, h = subscribed(**split)
    for frame in (Unknown(0x40, 0xFF, 0, b"future"), Unknown(0x30, 0, 999, b""), Unknown(0x0F)):
        assert pair.client.receive_data(encode(frame)) == []
        assert pair.server.receive_data(encode(frame)) == []
    s = Connection(Role.SERVER)
    assert s.receive_data(encode(Unknown(0x40))) == []  # even before HELLO
    pair.send_data(h, b"still fine")


# -- handshake size, keepalive floor, unknown-frame budget --------------------------------------


def hello_of(body_size: int) -> bytes:
    """A HELLO whose body is exactly ``body_size`` bytes (the auth fills it)."""
    return encode(Hello(auth=b"a" * (body_size - len(encode(Hello())) + HEADER_SIZE)))


def test_hello_body_at_the_limit_is_accepted() -> None:
    s = Connection(Role.SERVER)
    [event] = s.receive_data(hello_of(MAX_HANDSHAKE_BODY))
    assert isinstance(event, HandshakeRequested)
    assert len(event.auth) > MAX_HANDSHAKE_BODY - 100


def test_oversize_hello_is_refused_from_its_header() -> None:
    # R-FRAME-7: 16384 whatever the server's own MAX_FRAME_SIZE (here the default, 65536).
    s = Connection(Role.SERVER)
    raw = hello_of(MAX_HANDSHAKE_BODY + 1)
    assert s.receive_data(raw[:4]) == []  # a length alone could be any type's
    assert_fails(s, raw[4:HEADER_SIZE], ErrorCode.FRAME_TOO_LARGE)  # the type byte decides
    assert s.statistics().buffered_bytes == 0  # the body was never waited for


def test_oversize_welcome_is_refused() -> None:
    c = Connection(Role.CLIENT, Config(max_frame_size=MAX_FRAME_SIZE_LIMIT))
    welcome = encode(Welcome(session_id="s" * MAX_HANDSHAKE_BODY))
    assert_fails(c, welcome, ErrorCode.FRAME_TOO_LARGE)


def test_oversize_handshake_frames_are_local_errors() -> None:
    local_error(ErrorCode.FRAME_TOO_LARGE, Connection, Role.CLIENT, auth=b"x" * MAX_HANDSHAKE_BODY)
    s = Connection(Role.SERVER)
    s.receive_data(encode(Hello()))
    local_error(
        ErrorCode.FRAME_TOO_LARGE,
        s.accept_handshake,
        session_id="s" * MAX_HANDSHAKE_BODY,
        resume_token="t",
    )
    assert s.state is ConnState.HELLO_RECEIVED  # nothing was sent: it may still answer
    assert s.accept_handshake(session_id="s", resume_token="t")


@pytest.mark.parametrize(
    ("proposed", "bound"), [(1, 1000), (999, 1000), (1000, 1000), (1500, 1500), (0, 15_000)]
)
def test_keepalive_proposal_below_the_floor_counts_as_the_floor(proposed: int, bound: int) -> None:
    # R-SET-30: a HELLO's KEEPALIVE_MS of 1..999 is taken as 1000, then R-SET-5 applies.
    s = Connection(Role.SERVER, Config(keepalive=15.0))
    s.receive_data(encode(Hello(settings=((Setting.KEEPALIVE_MS, proposed),))))
    s.accept_handshake(session_id="s", resume_token="t")
    [welcome] = decode_frames(s.data_to_send())
    assert isinstance(welcome, Welcome)
    assert dict(welcome.settings)[Setting.KEEPALIVE_MS] == bound
    assert s.next_deadline() == bound / 1000


@pytest.mark.parametrize(("announced", "bound"), [(1, 1000), (999, 1000), (0, 0), (2000, 2000)])
def test_welcome_keepalive_below_the_floor_counts_as_the_floor(announced: int, bound: int) -> None:
    c = Connection(Role.CLIENT)
    c.receive_data(encode(Welcome(settings=((Setting.KEEPALIVE_MS, announced),))))
    assert c.peer_settings[Setting.KEEPALIVE_MS] == bound
    assert c.next_deadline() == (bound / 1000 if bound else None)


def test_keepalive_config_floor() -> None:
    for bad in (0.001, 0.5, 0.999, -1):
        local_error(ErrorCode.INVALID_ARGUMENT, Config, keepalive=bad)
    assert Config(keepalive=0).keepalive == 0
    assert Config(keepalive=MIN_KEEPALIVE_MS / 1000).keepalive == 1.0


EMPTY_UNKNOWN = encode(Unknown(0x40))


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_unknown_frames_past_the_budget_end_the_connection(role: Role) -> None:
    pair = open_pair()
    conn = pair.client if role is Role.CLIENT else pair.server
    assert conn.receive_data(EMPTY_UNKNOWN * MIN_UNKNOWN_FRAMES) == []
    assert_fails(conn, EMPTY_UNKNOWN, ErrorCode.EXCESSIVE_LOAD)


def test_unknown_frame_budget_before_the_handshake() -> None:
    s = Connection(Role.SERVER)
    assert_fails(s, EMPTY_UNKNOWN * (MIN_UNKNOWN_FRAMES + 1), ErrorCode.EXCESSIVE_LOAD)


def test_a_known_frame_restarts_the_unknown_frame_count(split: dict[str, Any]) -> None:
    pair, h = subscribed(**split)
    c = pair.client
    for _ in range(3):  # 3000 unknown frames in all, never 1001 in a row
        assert c.receive_data(EMPTY_UNKNOWN * (MIN_UNKNOWN_FRAMES - 1)) == []
        # The run is counted across reads: split it anywhere.
        assert c.receive_data(EMPTY_UNKNOWN[:3]) == []
        assert c.receive_data(EMPTY_UNKNOWN[3:]) == []
        assert c.receive_data(encode(Ping(7))) == [PingReceived(7)]
    pair.send_data(h, b"still fine")
    # A DATA frame counts as a known frame too.
    pair.server.send_data(h, b"x")
    raw = EMPTY_UNKNOWN * MIN_UNKNOWN_FRAMES + pair.server.data_to_send()
    assert c.receive_data(raw + EMPTY_UNKNOWN * MIN_UNKNOWN_FRAMES) == [DataReceived(h, 2, (b"x",))]
    assert_fails(c, EMPTY_UNKNOWN, ErrorCode.EXCESSIVE_LOAD)


def test_unknown_bytes_past_the_budget_end_the_connection() -> None:
    pair = open_pair()
    big = encode(Unknown(0x41, 0, 0, b"\0" * 65_536))
    per_mib = MIN_UNKNOWN_BYTES // 65_536
    assert pair.server.receive_data(big * per_mib) == []  # exactly the budget
    assert pair.server.receive_data(encode(Ping(1))) == [PingReceived(1)]
    assert pair.server.receive_data(big * per_mib) == []
    term = assert_fails(pair.server, big, ErrorCode.EXCESSIVE_LOAD)
    assert "unknown frames" in term.message


def test_unknown_frame_budget_is_configurable() -> None:
    config = Config(max_unknown_frames=5000, max_unknown_bytes=2 * MIN_UNKNOWN_BYTES)
    pair = open_pair(server=config)
    assert pair.server.receive_data(EMPTY_UNKNOWN * 5000) == []
    assert_fails(pair.server, EMPTY_UNKNOWN, ErrorCode.EXCESSIVE_LOAD)
    for field, low in [
        ("max_unknown_frames", MIN_UNKNOWN_FRAMES - 1),
        ("max_unknown_bytes", MIN_UNKNOWN_BYTES - 1),
    ]:
        local_error(ErrorCode.INVALID_ARGUMENT, Config, **{field: low})


# -- local misuse -------------------------------------------------------------------------------


def test_misuse_by_role() -> None:
    pair, h = subscribed()
    c, s = pair.client, pair.server
    for fn, args in [
        (s.subscribe, (CH, "x")),
        (s.open, (CH,)),
        (s.upload, (CH,)),
        (s.cancel, (h,)),
        (s.unsubscribe, (h,)),
        (c.accept_handshake, ()),
        (c.refuse_handshake, (ErrorCode.AUTH_FAILED,)),
        (c.accept, (h,)),
        (c.reject, (h, ErrorCode.UNKNOWN_STREAM)),
        (c.cancel_upload, (h,)),
        (c.send_data, (h, b"x")),  # a subscription: the client does not write it
        (c.send_end, (h,)),
        (c.send_error, (h, 1)),
    ]:
        kwargs: dict[str, Any] = {}
        if fn == c.accept_handshake:
            kwargs = {"session_id": "s", "resume_token": "t"}
        local_error(ErrorCode.INVALID_STATE, fn, *args, **kwargs)
    u = pair.upload(CH, "u")
    pair.accept(u)
    local_error(ErrorCode.INVALID_STATE, c.send_gap, u, 5)
    local_error(ErrorCode.INVALID_STATE, s.send_data, u, b"x")
    local_error(ErrorCode.INVALID_STATE, s.cancel_upload, h)  # a subscription
    local_error(ErrorCode.INVALID_STATE, c.cancel, u)  # an upload
    pair.send_data(h, b"still usable")
    pair.send_data(u, b"both ways")


def test_misuse_by_state() -> None:
    pair = open_pair()
    c, s = pair.client, pair.server
    h = pair.subscribe(CH, "s")
    local_error(ErrorCode.INVALID_STATE, s.send_data, h, b"before accept")
    local_error(ErrorCode.INVALID_STATE, s.send_end, h)
    local_error(ErrorCode.INVALID_STATE, s.send_gap, h, 3)
    local_error(ErrorCode.INVALID_STATE, s.accept_handshake, session_id="s", resume_token="t")
    local_error(ErrorCode.INVALID_STATE, s.refuse_handshake, ErrorCode.AUTH_FAILED)
    pair.accept(h, stream_id="s")
    local_error(ErrorCode.INVALID_STATE, s.accept, h)
    local_error(ErrorCode.INVALID_STATE, s.reject, h, ErrorCode.UNKNOWN_STREAM)
    u = pair.upload(CH, "u")
    local_error(ErrorCode.INVALID_STATE, c.send_end, u)  # not accepted yet
    local_error(ErrorCode.INVALID_STATE, s.cancel_upload, u)  # not accepted yet
    pair.send_data(h, b"fine")


def test_misuse_unknown_handles() -> None:
    pair = open_pair()
    c, s = pair.client, pair.server
    for fn, args in [
        (c.cancel, (7,)),
        (c.unsubscribe, (7,)),
        (c.send_data, (7, b"x")),
        (c.send_end, (7,)),
        (c.send_error, (7, 1)),
        (s.accept, (7,)),
        (s.reject, (7, 1)),
        (s.cancel_upload, (7,)),
        (s.send_gap, (7, 1)),
    ]:
        local_error(ErrorCode.UNKNOWN_HANDLE, fn, *args)


def test_misuse_bad_arguments() -> None:
    pair, h = subscribed()
    c, s = pair.client, pair.server
    local_error(ErrorCode.INVALID_NAME, c.subscribe, "NoNamespace", "s")
    local_error(ErrorCode.INVALID_NAME, c.subscribe, CH, "")
    local_error(ErrorCode.INVALID_NAME, c.subscribe, CH, "a b")
    local_error(ErrorCode.INVALID_NAME, c.open, CH, stream_id="a/b")
    local_error(ErrorCode.INVALID_NAME, c.upload, "x", "s")
    local_error(ErrorCode.INVALID_ARGUMENT, c.subscribe, CH, "s", after_seq=-1)
    local_error(ErrorCode.INVALID_ARGUMENT, c.subscribe, CH, "s", after_seq=2**64)
    local_error(ErrorCode.INVALID_ARGUMENT, c.subscribe, CH, "s", priority=256)
    local_error(ErrorCode.INVALID_ARGUMENT, c.open, CH, priority=-1)
    local_error(ErrorCode.INVALID_ARGUMENT, c.subscribe, CH, "s", credit_chunks=MAX_CREDIT + 1)
    local_error(ErrorCode.INVALID_ARGUMENT, c.open, CH, credit_bytes=-1)
    local_error(ErrorCode.INVALID_ARGUMENT, s.send_error, h, 2**16)
    local_error(ErrorCode.INVALID_ARGUMENT, s.reject, h, -1)
    local_error(ErrorCode.INVALID_ARGUMENT, s.cancel_upload, h, 2**16)
    local_error(ErrorCode.INVALID_ARGUMENT, s.refuse_handshake, 2**16)
    h2 = pair.subscribe(CH, "s2")
    local_error(ErrorCode.INVALID_ARGUMENT, s.accept, h2, first_seq=-1)
    local_error(ErrorCode.INVALID_ARGUMENT, s.accept, h2, last_seq=2**64)
    assert s.handle_state(h2) is HState.REQUESTED  # nothing changed
    pair.accept(h2, stream_id="s2")
    # Nothing of that reached the wire or changed a state: both sides go on.
    pair.send_data(h, b"fine")
    pair.send_data(h2, b"fine")


def test_explicit_credit_in_request() -> None:
    pair = open_pair()
    h = pair.subscribe(CH, "s", credit_chunks=1, credit_bytes=10)
    pair.accept(h, stream_id="s")
    pair.server.send_data(h, b"1")
    pair.server.send_data(h, b"2")
    assert len(sent(pair.server)) == 1


# -- statistics and events ----------------------------------------------------------------------


def test_statistics() -> None:
    pair, h = subscribed(Config(window_chunks=2))
    s, c = pair.server, pair.client
    for i in range(4):
        s.send_data(h, b"%d" % i)
    stats = s.statistics()
    assert isinstance(stats, ConnectionStatistics)
    assert (stats.state, stats.open_handles, stats.queued_bytes) == (ConnState.OPEN, 1, 4)
    pair.transfer()
    stats = s.statistics()
    assert (stats.chunks_sent, stats.queued_bytes, stats.chunks_dropped) == (4, 0, 0)
    cstats = c.statistics()
    assert cstats.chunks_received == 4
    assert cstats.bytes_received > 4 * 19
    part = encode(Data(h, 5, (b"x" * 100,)))[:50]
    c.receive_data(part)
    assert c.statistics().buffered_bytes == 50


def test_handle_state_after_close() -> None:
    pair, h = subscribed()
    pair.send_end(h)
    assert pair.client.handle_state(h) is HState.CLOSED
    assert pair.server.handle_state(h) is HState.CLOSED


EVENTS: list[Event] = [
    HandshakeRequested(1, ((1, 2),), "tok" * 30, b"k" * 100),
    HandshakeCompleted(1, "session" * 20, "t", True, ()),
    HandshakeRefused(ErrorCode.AUTH_FAILED, "m" * 500),
    PingReceived(2**64 - 1),
    PongReceived(0),
    GoawayReceived(0, 12, "x" * 1000),
    ConnectionTerminated(ErrorCode.CONNECTION_LOST, "gone" * 100, True),
    ConnectionTerminated(1234, "app", False),
    SubscribeRequested(1, CH, "s" * 128, None, OverflowPolicy.BLOCK, 3),
    SubscribeRequested(1, CH, "s", 5, OverflowPolicy.DEFAULT, 0),
    OpenRequested(1, CH, "", b"a" * 1000, OverflowPolicy.ERROR, 0),
    UploadRequested(1, CH, "u", b""),
    RequestAccepted(1, "id" * 64, 1, 0),
    RequestRejected(1, 99, "r" * 1000),
    DataReceived(1, 1, (b"x" * 100_000,)),
    DataReceived(1, 1, (b"a", b"b", b"c")),
    GapReceived(1, 2, 3, GapReason.OVERFLOW),
    StreamEnded(1, 9),
    StreamFailed(1, 1000, "f" * 100, 9),
    CancelRequested(1),
    Unsubscribed(1),
    UploadData(1, 1, (b"u",)),
    UploadEnded(1, 1),
    UploadFailed(1, ErrorCode.UPLOAD_DISCONNECTED, "gone", 0),
    UploadCancelled(1, ErrorCode.UPLOAD_CANCELLED, ""),
    UploadCompleted(1, b"result" * 40),
    Writable(1),
    OverflowWarning(1, 3, 4, 6),
    StatusRequested(1, CH, "s" * 128),
    ListRequested(1, CH, "a" * 128, 0b110, 100),
    DeleteRequested(1, CH, "s"),
    StreamsReceived(1, tuple(StreamEntry(f"s{i}", StreamState.OPEN) for i in range(100)), "s99"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_str_is_short(event: Event) -> None:
    text = str(event)
    assert text.startswith(type(event).__name__ + "(")
    assert len(text) <= 120, text
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.handle = 5  # type: ignore[misc,union-attr]


def test_event_last_seq() -> None:
    assert DataReceived(1, 5, (b"a", b"b")).last_seq == 6
    assert UploadData(1, 1, (b"a",)).last_seq == 1


def test_every_event_is_listed() -> None:
    names = {type(e).__name__ for e in EVENTS}
    assert names == set(streamproto._events.__all__) - {"Event"}


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_frame_size", MIN_MAX_FRAME_SIZE - 1),
        ("max_frame_size", MAX_FRAME_SIZE_LIMIT + 1),
        ("max_chunk_size", 0),
        ("keepalive", -1),
        ("handshake_timeout", 0),
        ("max_subscriptions", 0),
        ("max_uploads", 0),
        ("session_grace", -0.5),
        ("max_completed_uploads", -1),
        ("window_chunks", -1),
        ("window_bytes", MAX_CREDIT + 1),
        ("max_queued_chunks", 0),
        ("max_queued_bytes", 0),
        ("max_connection_queued_bytes", 0),
        ("max_handle", 0),
        ("default_policy", OverflowPolicy.DEFAULT),
    ],
)
def test_config_limits(field: str, value: object) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Config(**{field: value})
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert field in str(info.value)


def test_config_defaults_are_valid() -> None:
    cfg = Config()
    assert cfg.auto_credit
    assert cfg.default_policy is OverflowPolicy.DROP_OLDEST
    assert Config(keepalive=0, window_chunks=0).keepalive == 0


# -- the testing helpers catch what they should -------------------------------------------------


def test_pair_catches_wrong_events() -> None:
    with pytest.raises(AssertionError, match="expected"):
        expect_events([PingReceived(1)], [PingReceived(2)], "pings")
    with pytest.raises(AssertionError, match="nothing"):
        expect_events([], [PingReceived(2)])
    with pytest.raises(AssertionError, match="ConnectionTerminated"):
        expect_terminated([], ErrorCode.NO_ERROR)
    with pytest.raises(AssertionError, match="by_peer"):
        expect_terminated([ConnectionTerminated(0, "", True)], 0, by_peer=False)
    with pytest.raises(AssertionError, match="GOAWAY"):
        expect_goaway(b"", 0)


def test_pair_catches_out_of_order_data() -> None:
    pair, h = subscribed()
    pair.send_data(h, b"1")
    with pytest.raises(AssertionError, match="expected seq 2"):
        pair._check(pair.client, [DataReceived(h, 3, (b"x",))])
    with pytest.raises(AssertionError, match="expected seq 2"):
        pair._check(pair.client, [StreamEnded(h, 5)])


def test_pair_catches_events_after_the_end() -> None:
    pair, h = subscribed()
    pair.send_end(h)
    with pytest.raises(AssertionError, match="after handle"):
        pair._check(pair.client, [DataReceived(h, 2, (b"x",))])
    pair.disconnect(pair.client)
    with pytest.raises(AssertionError, match="after its connection ended"):
        pair._check(pair.server, [PingReceived(1)])


def test_pair_send_data_checks_delivery() -> None:
    pair, h = subscribed(Config(window_chunks=1, auto_credit=False))
    with pytest.raises(AssertionError, match="arrived"):
        pair.send_data(h, b"1", b"2")


def test_pair_send_data_checks_result() -> None:
    pair, h, _ = stalled(OverflowPolicy.BLOCK, max_queued_chunks=1)
    with pytest.raises(AssertionError, match="BLOCKED"):
        pair.send_data(h, b"3", b"4")


def test_pair_wrappers_check_closed_handles() -> None:
    pair, h = subscribed()
    u = pair.upload(CH, "u")
    pair.client.cancel(h)
    pair.client.send_error(u, 1000)
    pair.transfer()
    for fn, args in [
        (pair.accept, (h,)),
        (pair.reject, (h, 1)),
        (pair.cancel_upload, (u,)),
        (pair.send_gap, (h, 3)),
        (pair.send_end, (h,)),
        (pair.send_error, (h, 1)),
    ]:
        with pytest.raises(AssertionError, match="closed"):
            fn(*args)


def test_pair_handshake_checks() -> None:
    pair = open_pair()
    with pytest.raises(AssertionError, match="HandshakeRequested"):
        pair.handshake()


def test_pair_send_data_checks_other_events() -> None:
    pair, h = subscribed()
    h2 = pair.subscribe(CH, "s2")
    pair.accept(h2, stream_id="s2")
    pair.server.send_data(h2, b"other")
    with pytest.raises(AssertionError, match=r"only DataReceived"):
        pair.send_data(h, b"x")


def test_transfer_add() -> None:
    a = Transfer([PingReceived(1)], [])
    b = Transfer([], [PongReceived(1)])
    assert a + b == Transfer([PingReceived(1)], [PongReceived(1)])


def test_public_api() -> None:
    assert streamproto.testing.ConnectionPair is ConnectionPair  # type: ignore[attr-defined]
    for name in streamproto.__all__:
        assert getattr(streamproto, name) is not None


# -- more edges ---------------------------------------------------------------------------------


def test_has_room() -> None:
    pair, h, held = stalled(OverflowPolicy.BLOCK, max_queued_chunks=1)
    s = pair.server
    assert s.has_room(h, 10)
    s.send_data(h, b"3")
    assert not s.has_room(h)  # a Writable is owed now
    assert s.take_events() == []
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert t.server == [Writable(h)]
    local_error(ErrorCode.INVALID_STATE, pair.client.has_room, h)  # the client receives h
    local_error(ErrorCode.UNKNOWN_HANDLE, s.has_room, 99)
    pair.cancel(h)
    assert s.has_room(h) is False


def test_writable_only_for_handles_with_room() -> None:
    # Two blocked senders; freeing the connection-wide cap wakes the one it unblocks.
    pair, h1 = subscribed(
        Config(window_chunks=1), Config(max_connection_queued_bytes=100, max_queued_chunks=1)
    )
    h2 = pair.subscribe(CH, "s2")
    h3 = pair.subscribe(CH, "s3")
    for h in (h2, h3):
        pair.accept(h, stream_id=f"s{h}", policy=OverflowPolicy.BLOCK)
    s = pair.server
    s.send_data(h3, b"c")
    s.send_data(h3, b"c")  # h3: one in flight, one queued beyond its credit
    held = s.data_to_send()
    assert s.send_data(h3, b"c") is WriteResult.BLOCKED  # its own bound
    assert s.send_data(h1, b"a" * 99) is WriteResult.ACCEPTED
    assert s.send_data(h2, b"b" * 10) is WriteResult.BLOCKED  # the cap
    # Closing h1 frees the cap: h2 may write, h3 still may not.
    assert s.receive_data(encode(Cancel(h1))) == [CancelRequested(h1), Writable(h2)]
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert Writable(h3) in t.server


def test_accept_or_refuse_handshake_after_the_connection_ended() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(encode(Hello()) + b"\x00" * 3)
    s.receive_data(b"")  # the client went away before the application answered
    assert s.accept_handshake(session_id="s", resume_token="t") is False
    assert s.refuse_handshake(ErrorCode.AUTH_FAILED) is False
    assert s.data_to_send() == b""


def test_consume_on_a_sender_handle() -> None:
    pair = open_pair(Config(auto_credit=False))
    u = pair.upload(CH, "u")
    local_error(ErrorCode.INVALID_STATE, pair.client.consume, u, 0, 0)


def test_data_with_the_wrong_seq() -> None:
    c = raw_client()
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")))
    assert_fails(c, encode(Data(h, 2, (b"x",))), ErrorCode.PROTOCOL_ERROR)


def draining_client() -> tuple[Connection, int]:
    """A client subscription that received END(3) and nothing else."""
    c = raw_client()
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")) + encode(End(h, 3)))
    assert c.handle_state(h) is HState.DRAINING
    return c, h


def test_data_after_the_final_seq() -> None:
    c, h = draining_client()
    assert c.receive_data(encode(Data(h, 1, (b"1", b"2")))) == [DataReceived(h, 1, (b"1", b"2"))]
    assert_fails(c, encode(Data(h, 3, (b"3", b"4"))), ErrorCode.PROTOCOL_ERROR)


def test_gap_after_the_final_seq() -> None:
    c, h = draining_client()
    assert_fails(c, encode(Gap(h, 1, 4, GapReason.EVICTED)), ErrorCode.PROTOCOL_ERROR)


def test_gap_completes_a_drain() -> None:
    c, h = draining_client()
    events = c.receive_data(encode(Gap(h, 1, 3, GapReason.OVERFLOW)))
    assert events == [
        GapReceived(h, 1, 3, GapReason.OVERFLOW),
        OverflowWarning(h, 3, 1, 3),
        StreamEnded(h, 3),
    ]


def test_end_before_what_was_delivered() -> None:
    c = raw_client()
    h = c.subscribe(CH, "s")
    c.receive_data(encode(Accept(h, "s")) + encode(Data(h, 1, (b"1", b"2"))))
    assert_fails(c, encode(End(h, 1)), ErrorCode.PROTOCOL_ERROR)


def test_upload_end_before_what_was_delivered() -> None:
    s = raw_server()
    s.receive_data(encode(Upload(1, CH, "u")))
    s.accept(1)
    s.receive_data(encode(Data(1, 1, (b"1",))))
    assert_fails(s, encode(Error(1, 1000, 0)), ErrorCode.PROTOCOL_ERROR)


def test_goaway_with_a_wrong_last_handle_keeps_accepted_handles() -> None:
    # A server's last_handle below a handle it accepted is its own bug: the handle goes on.
    c = raw_client()
    h = c.subscribe(CH, "s")
    h2 = c.subscribe(CH, "t")
    c.receive_data(encode(Accept(h2, "t")))
    events = c.receive_data(encode(Goaway(0, 0, "")))
    assert events == [
        GoawayReceived(0, 0, ""),
        RequestRejected(h, ErrorCode.SERVER_SHUTDOWN, "not processed"),
    ]
    assert c.handle_state(h2) is HState.ACTIVE


def test_writable_means_the_refused_write_fits() -> None:
    # BLOCKED at the byte bound: room for an empty chunk is not room for the refused one, so
    # no Writable until the refused size fits (a writer that retries on Writable must not spin).
    pair, h = subscribed(
        Config(window_bytes=1000), Config(max_queued_bytes=1000), policy=OverflowPolicy.BLOCK
    )
    s = pair.server
    s.send_data(h, b"a" * 1000)
    held = s.data_to_send()  # the byte credit is used up
    assert s.send_data(h, b"b" * 600) is WriteResult.ACCEPTED
    assert s.send_data(h, b"c" * 600) is WriteResult.BLOCKED
    assert s.has_room(h, 0)
    assert s.data_to_send() == b""
    assert s.take_events() == []
    events = pair.feed(pair.client, held)
    assert data_chunks(events, h) == [b"a" * 1000]
    # The CREDIT makes room for the 600 bytes.
    [credit] = sent(pair.client)
    assert s.receive_data(encode(credit)) == [Writable(h)]
    assert s.send_data(h, b"c" * 600) is WriteResult.ACCEPTED
    assert data_chunks(pair.transfer().client, h) == [b"b" * 600, b"c" * 600]


def test_has_room_remembers_the_size_asked() -> None:
    pair, h = subscribed(
        Config(window_bytes=1000), Config(max_queued_bytes=1000), policy=OverflowPolicy.BLOCK
    )
    s = pair.server
    s.send_data(h, b"a" * 1000)
    held = s.data_to_send()
    assert s.send_data(h, b"b" * 900) is WriteResult.ACCEPTED
    assert not s.has_room(h, 500)
    pair.feed(pair.client, held)
    t = pair.transfer()
    assert t.server == [Writable(h)]
    assert s.has_room(h, 500)


def test_transfer_rounds_leave_chunks_half_sent() -> None:
    pair, h = subscribed(Config(max_frame_size=MIN_MAX_FRAME_SIZE))
    big = b"r" * 50_000
    pair.server.send_data(h, big)
    assert pair.transfer(1000, rounds=1) == Transfer([], [])  # one fragment went
    assert pair.transfer(1000, rounds=0) == Transfer([], [])
    assert pair.transfer(1000).client == [DataReceived(h, 1, (big,))]


def test_pair_consume() -> None:
    pair = open_pair(Config(window_chunks=2, auto_credit=False), Config(max_queued_chunks=2))
    h = pair.subscribe(CH, "s", policy=OverflowPolicy.BLOCK)
    pair.accept(h, stream_id="s")
    for i in range(4):
        assert pair.server.send_data(h, b"%d" % i) is WriteResult.ACCEPTED
    assert pair.server.send_data(h, b"4") is WriteResult.BLOCKED  # 2 in flight, 2 queued
    assert data_chunks(pair.transfer().client, h) == [b"0", b"1"]
    t = pair.consume(h, 2, 2)
    assert t.server == [Writable(h)]
    assert data_chunks(t.client, h) == [b"2", b"3"]
    pair = open_pair(server=Config(window_chunks=2, auto_credit=False))
    u = pair.upload(CH, "u")
    pair.accept(u)
    pair.send_data(u, b"a", b"b")
    pair.client.send_data(u, b"c")
    assert pair.transfer() == Transfer([], [])  # no credit left
    assert pair.consume(u, 2, 2).server == [UploadData(u, 3, (b"c",))]


def test_the_shared_empty_queue_is_never_written() -> None:
    """Idle senders share one empty deque (memory); only a real queue may receive entries."""
    from streamproto import _connection

    pair = ConnectionPair()
    pair.handshake()
    handle = pair.client.subscribe("demo:x", "s1", credit_chunks=1)
    pair.transfer()
    pair.server.accept(handle, stream_id="s1", first_seq=5, last_seq=9)  # queues a GAP
    for i in range(3):
        pair.server.send_data(handle, b"%d" % i)
    pair.transfer()
    assert len(_connection._NO_QUEUE) == 0


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_goaway_before_the_handshake_closes_at_once(role: Role) -> None:
    conn = Connection(role)
    conn.data_to_send()
    conn.goaway(ErrorCode.NO_ERROR, "never mind")
    assert conn.closed
    assert conn.take_events() == [ConnectionTerminated(ErrorCode.NO_ERROR, "never mind", False)]
    frames = decode_frames(conn.data_to_send())
    assert [type(f) for f in frames] == [Goaway]


def test_open_with_join_and_an_accept_that_joined() -> None:
    # Run-or-join (R-JOIN-1, R-JOIN-2): the flags travel both ways; a joined OPEN starts at
    # seq 1 like any OPEN, so a retained history that starts later is announced as a gap.
    pair = open_pair()
    h = pair.open(CH, b"q", stream_id="answer", join=True)
    t = pair.accept(h, stream_id="answer", first_seq=3, last_seq=5, joined=True)
    assert t.client[0] == RequestAccepted(h, "answer", 3, 5, True)
    pair.send_data(h, b"3")
    u = pair.upload(CH, "u")
    with pytest.raises(LocalProtocolError) as err:
        pair.server.accept(u, joined=True)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


# -- queries: status, list, delete (R-QUERY-*) --------------------------------------------------


def test_a_status_query_and_its_answer() -> None:
    pair = open_pair()
    assert pair.client.peer_features == Feature.QUERIES | Feature.BIDI
    h = pair.client.status(CH, "s")
    assert pair.client.handle_state(h) is HState.REQUESTED
    t = pair.transfer()
    assert t.server == [StatusRequested(h, CH, "s")]
    entry = StreamEntry("s", StreamState.OPEN, 0, 1, 3)
    assert pair.server.answer_streams(h, [entry])
    t = pair.transfer()
    assert t.client == [StreamsReceived(h, (entry,), "")]
    assert pair.client.handle_state(h) is pair.server.handle_state(h) is HState.CLOSED


def test_list_and_delete_queries_and_their_refusals() -> None:
    pair = open_pair()
    listing = pair.client.list_streams(CH, after="b", states=0b110, limit=7)
    everything = pair.client.list_streams(CH)
    delete = pair.client.delete(CH, "s")
    t = pair.transfer()
    assert t.server == [
        ListRequested(listing, CH, "b", 0b110, 7),
        ListRequested(everything, CH, "", 0, 100),
        DeleteRequested(delete, CH, "s"),
    ]
    pair.server.answer_streams(listing, [StreamEntry("c", StreamState.ENDED)], "c")
    pair.server.reject(delete, ErrorCode.NOT_ALLOWED, "no deletes")
    with pytest.raises(LocalProtocolError) as err:  # more than a frame: refused locally
        pair.server.answer_streams(everything, [StreamEntry("x" * 128, StreamState.OPEN)] * 500)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT
    assert pair.server.handle_state(everything) is HState.REQUESTED
    t = pair.transfer()
    assert t.client == [
        StreamsReceived(listing, (StreamEntry("c", StreamState.ENDED),), "c"),
        RequestRejected(delete, ErrorCode.NOT_ALLOWED, "no deletes"),
    ]
    pair.client.goaway()  # no new requests; an open query still gets its answer (R-GOAWAY-2)
    pair.transfer()
    assert pair.server.answer_streams(everything, []) is True


def test_query_arguments_are_checked_locally_and_by_the_server() -> None:
    pair = open_pair()
    for call in (
        lambda: pair.client.list_streams(CH, limit=0),
        lambda: pair.client.list_streams(CH, states=256),
    ):
        with pytest.raises(LocalProtocolError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(LocalProtocolError) as err:
        pair.client.status(CH, "")
    assert err.value.code == ErrorCode.INVALID_NAME
    # What the client would refuse, a raw peer may still send: the server rejects it.
    pair.server.receive_data(encode(Query(1, QueryOp.STATUS, CH, "")))
    pair.server.receive_data(encode(Query(2, QueryOp.LIST, "no channel", "")))
    assert [f.code for f in decode_frames(pair.server.data_to_send())] == [
        ErrorCode.INVALID_NAME,
        ErrorCode.INVALID_NAME,
    ]


def test_a_server_that_does_not_announce_queries_gets_none() -> None:
    pair = ConnectionPair()
    pair.handshake(features=Feature(0))
    assert pair.client.peer_features == Feature(0)
    with pytest.raises(LocalProtocolError) as err:
        pair.client.status(CH, "s")
    assert err.value.code == ErrorCode.INVALID_STATE
    assert pair.client.data_to_send() == b""
