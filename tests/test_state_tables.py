"""The state tables of ``_state.py`` against real connections (after h2's
``test_state_machines.py``).

Every (side, state, received handle frame), every (role, connection state, received connection
frame) and every (side, state, local operation) is driven through a real :class:`Connection`:
a pair the table lists must happen as the table says; any other pair must fail as the spec says
(the peer's fault: GOAWAY and ConnectionTerminated, never an exception; the application's:
LocalProtocolError, nothing sent, the connection still usable). Then the tables themselves: CLOSED
is absorbing, every state is reachable, and every row is exercised by the sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streamproto import (
    CancelRequested,
    Config,
    Connection,
    ConnectionTerminated,
    ConnState,
    DataReceived,
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
    LocalProtocolError,
    PingReceived,
    PongReceived,
    RequestAccepted,
    RequestRejected,
    Role,
    Setting,
    StreamsReceived,
    SubscribeRequested,
    Unsubscribed,
    UploadCancelled,
    UploadCompleted,
    UploadData,
    UploadFailed,
    WriteResult,
    _connection,
)
from streamproto._frames import (
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
    Ping,
    Pong,
    Query,
    QueryOp,
    Reject,
    Streams,
    Subscribe,
    Unsubscribe,
    Upload,
    UploadAck,
    UploadCancel,
    UploadResult,
    Welcome,
    encode,
)
from streamproto._state import (
    CONNECTION_TRANSITIONS,
    HANDLE_TRANSITIONS,
    ConnInput,
    Input,
    Side,
    recv_input,
)
from streamproto.testing import decode_frames, expect_goaway, expect_terminated

CH = "t:x"
RQ, AC, DR, CL = HState.REQUESTED, HState.ACTIVE, HState.DRAINING, HState.CLOSED
FN = HState.FINISHING
HANDLE_STATES = [RQ, AC, DR]
HANDLE_FRAMES = [
    FrameType.ACCEPT,
    FrameType.REJECT,
    FrameType.DATA,
    FrameType.GAP,
    FrameType.END,
    FrameType.ERROR,
    FrameType.CANCEL,
    FrameType.UNSUBSCRIBE,
    FrameType.UPLOAD_CANCEL,
    FrameType.CREDIT,
    FrameType.STREAMS,
    FrameType.UPLOAD_ACK,
    FrameType.UPLOAD_RESULT,
]
#: A query (status, list, delete) is answered or refused: it is never ACTIVE or DRAINING.
QUERY_SIDES = (Side.CLIENT_QUERY, Side.SERVER_QUERY)
#: Uploads are driven resumable, with a result (section 9.1), so they reach FINISHING too.
UPLOAD_SIDES = (Side.CLIENT_UPLOAD, Side.SERVER_UPLOAD)
STATES_OF = {
    side: [RQ]
    if side in QUERY_SIDES
    else [*HANDLE_STATES, FN]
    if side in UPLOAD_SIDES
    else HANDLE_STATES
    for side in Side
}
SIDE_STATES = [(side, state) for side in Side for state in STATES_OF[side]]
#: Small windows, so that one chunk returns credit (SEND_CREDIT is exercised too).
SMALL = Config(window_chunks=2)
FINAL = 5  # the final seq of the END or ERROR that puts a receiver in DRAINING

# -- driving a handle into a state --------------------------------------------------------------


def client() -> Connection:
    c = Connection(Role.CLIENT, SMALL)
    c.data_to_send()
    # The server announces queries and resumable uploads (FEATURES), so the client may use them.
    [event] = c.receive_data(encode(Welcome(settings=((Setting.FEATURES, 5),), session_id="s")))
    assert isinstance(event, HandshakeCompleted)
    return c


def server() -> Connection:
    s = Connection(Role.SERVER, SMALL)
    [event] = s.receive_data(encode(Hello()))
    assert isinstance(event, HandshakeRequested)
    s.accept_handshake(session_id="s", resume_token="t", features=Feature(5))
    s.data_to_send()
    return s


def drive(side: Side, state: HState) -> tuple[Connection, int]:
    """A connection holding handle 1 of ``side`` in ``state``. Receivers expect seq 1 next;
    in DRAINING their final seq is FINAL. Senders in DRAINING have a chunk queued."""
    if side is Side.CLIENT_SUBSCRIPTION:
        conn = client()
        h = conn.subscribe(CH, "s")
        if state is not RQ:
            conn.receive_data(encode(Accept(h, "s")))
        if state is DR:
            conn.receive_data(encode(End(h, FINAL)))
    elif side is Side.SERVER_SUBSCRIPTION:
        conn = server()
        h = 1
        conn.receive_data(encode(Subscribe(h, CH, "s")))  # no credit: data stays queued
        if state is not RQ:
            conn.accept(h, stream_id="s")
        if state is DR:
            conn.send_data(h, b"queued")
            conn.send_end(h)
    elif side is Side.CLIENT_QUERY:
        conn = client()
        h = conn.status(CH, "s")
    elif side is Side.SERVER_QUERY:
        conn = server()
        h = 1
        conn.receive_data(encode(Query(h, QueryOp.STATUS, CH, "s")))
    elif side is Side.CLIENT_UPLOAD:
        conn = client()
        h = conn.upload(CH, "u", resumable=True, result=True)
        if state is not RQ:
            conn.receive_data(encode(Accept(h, "u")))  # no credit: data stays queued
        if state is DR:
            conn.send_data(h, b"queued")
        if state in (DR, FN):
            conn.send_end(h)  # FINISHING: nothing was queued, it waits for the result
    else:
        conn = server()
        h = 1
        conn.receive_data(encode(Upload(h, CH, "u", resumable=True, result=True)))
        if state is not RQ:
            conn.accept(h, stream_id="u")
        if state is DR:
            conn.receive_data(encode(End(h, FINAL)))
        if state is FN:
            conn.receive_data(encode(End(h, 0)))  # taken whole: the result is due
    conn.data_to_send()
    assert conn.handle_state(h) is state
    assert not conn.closed
    return conn, h


def frame_for(ftype: FrameType, h: int) -> Frame:
    """A frame of ``ftype`` on handle ``h`` whose values are valid for a handle built by
    :func:`drive`, so that only the table decides."""
    frames: dict[FrameType, Frame] = {
        FrameType.ACCEPT: Accept(h, "s", 1, 0, credit_chunks=1, credit_bytes=100),
        FrameType.REJECT: Reject(h, ErrorCode.UNKNOWN_STREAM, "no"),
        FrameType.DATA: Data(h, 1, (b"x",)),
        FrameType.GAP: Gap(h, 1, 1, GapReason.EVICTED),
        FrameType.END: End(h, FINAL),
        FrameType.ERROR: Error(h, 1000, FINAL, "failed"),
        FrameType.CANCEL: Cancel(h),
        FrameType.UNSUBSCRIBE: Unsubscribe(h),
        FrameType.UPLOAD_CANCEL: UploadCancel(h, ErrorCode.UPLOAD_CANCELLED, "stop"),
        FrameType.CREDIT: Credit(h, 1, 1),
        FrameType.STREAMS: Streams(h, ()),
        FrameType.UPLOAD_ACK: UploadAck(h, 0),
        FrameType.UPLOAD_RESULT: UploadResult(h, b"r"),
    }
    return frames[ftype]


#: The event a legal received frame is reported as (None: none, the handle goes on).
RECV_EVENT: dict[Input, tuple[type[Event], ...]] = {
    Input.RECV_ACCEPT: (RequestAccepted,),
    Input.RECV_REJECT: (RequestRejected,),
    Input.RECV_DATA: (DataReceived, UploadData),
    Input.RECV_GAP: (GapReceived,),
    Input.RECV_END: (),
    Input.RECV_ERROR: (),
    Input.RECV_CANCEL: (CancelRequested,),
    Input.RECV_UNSUBSCRIBE: (Unsubscribed,),
    Input.RECV_UPLOAD_CANCEL: (UploadCancelled,),
    Input.RECV_CREDIT: (),
    Input.RECV_STREAMS: (StreamsReceived,),
    Input.RECV_UPLOAD_ACK: (),
    Input.RECV_UPLOAD_RESULT: (UploadCompleted,),
}


def recv_outcome(side: Side, state: HState, inp: Input) -> HState | ErrorCode:
    """The table's answer, with the spec's one other code (R-FLOW-8)."""
    new = HANDLE_TRANSITIONS[side].get((state, inp))
    if new is not None:
        return new
    if (side, state, inp) == (Side.SERVER_UPLOAD, RQ, Input.RECV_DATA):
        return ErrorCode.FLOW_CONTROL_ERROR
    return ErrorCode.PROTOCOL_ERROR


def check_recv(side: Side, state: HState, ftype: FrameType) -> None:
    conn, h = drive(side, state)
    inp = recv_input(ftype)
    assert inp is not None
    outcome = recv_outcome(side, state, inp)
    events = conn.receive_data(encode(frame_for(ftype, h)))
    if isinstance(outcome, ErrorCode):
        expect_terminated(events, outcome, by_peer=False)
        expect_goaway(conn.data_to_send(), outcome)
        assert conn.closed
        return
    assert not any(isinstance(e, ConnectionTerminated) for e in events), events
    assert conn.handle_state(h) is outcome
    wanted = RECV_EVENT[inp]
    if (side, state, inp) == (Side.SERVER_UPLOAD, RQ, Input.RECV_ERROR):
        wanted = (UploadFailed,)  # failed before ACCEPT: reported at once
    mine = [e for e in events if getattr(e, "handle", None) == h]
    if wanted:
        assert len(mine) == 1, events
        assert isinstance(mine[0], wanted), events
    else:
        assert mine == [], events
    # Whatever it sent is well-formed (PONG, CREDIT...), and the connection goes on.
    decode_frames(conn.data_to_send())
    conn.ping()
    assert isinstance(decode_frames(conn.data_to_send())[-1], Ping)


@pytest.mark.parametrize("ftype", HANDLE_FRAMES, ids=lambda f: f.name)
@pytest.mark.parametrize(("side", "state"), SIDE_STATES, ids=lambda x: x.name)
def test_received_handle_frame(side: Side, state: HState, ftype: FrameType) -> None:
    check_recv(side, state, ftype)


# -- local operations on a handle ---------------------------------------------------------------

#: Each operation the API exposes on a handle, with valid arguments, and its table input.
OPS: dict[str, tuple[Input, Callable[[Connection, int], object]]] = {
    "accept": (Input.SEND_ACCEPT, lambda c, h: c.accept(h, stream_id="s")),
    "reject": (Input.SEND_REJECT, lambda c, h: c.reject(h, ErrorCode.UNKNOWN_STREAM)),
    "send_data": (Input.SEND_DATA, lambda c, h: c.send_data(h, b"x")),
    "send_gap": (Input.SEND_GAP, lambda c, h: c.send_gap(h, 10)),
    "send_end": (Input.SEND_END, lambda c, h: c.send_end(h)),
    "send_error": (Input.SEND_ERROR, lambda c, h: c.send_error(h, 1000, "x")),
    "cancel": (Input.SEND_CANCEL, lambda c, h: c.cancel(h)),
    "unsubscribe": (Input.SEND_UNSUBSCRIBE, lambda c, h: c.unsubscribe(h)),
    "cancel_upload": (Input.SEND_UPLOAD_CANCEL, lambda c, h: c.cancel_upload(h)),
    "answer_streams": (Input.SEND_STREAMS, lambda c, h: c.answer_streams(h, [])),
    "send_upload_result": (Input.SEND_UPLOAD_RESULT, lambda c, h: c.send_upload_result(h, b"r")),
}
_STREAM_CLOSED_INPUTS = {Input.SEND_DATA, Input.SEND_GAP, Input.SEND_END, Input.SEND_ERROR}


def check_send(side: Side, state: HState, op: str) -> None:
    conn, h = drive(side, state)
    inp, call = OPS[op]
    new = HANDLE_TRANSITIONS[side].get((state, inp))
    if new is None:
        with pytest.raises(LocalProtocolError) as info:
            call(conn, h)
        # R-STATE-2: writing on a handle of ours that is DRAINING is STREAM_CLOSED; anything
        # else the table does not list (other role, other kind of handle) is INVALID_STATE.
        writes_here = any(key[1] is inp for key in HANDLE_TRANSITIONS[side])
        want = ErrorCode.INVALID_STATE
        if state in (DR, FN) and inp in _STREAM_CLOSED_INPUTS and writes_here:
            want = ErrorCode.STREAM_CLOSED
        assert info.value.code == want, info.value
        # Nothing was sent or changed, and the connection goes on.
        assert conn.data_to_send() == b""
        assert conn.handle_state(h) is state
        assert conn.take_events() == []
        conn.ping()
        assert isinstance(decode_frames(conn.data_to_send())[-1], Ping)
        return
    result = call(conn, h)
    assert result in (None, True, WriteResult.ACCEPTED)
    # DRAINING with nothing left to send is CLOSED at once (the DRAINED row), or FINISHING
    # for an upload that ends with a result (the AWAIT_RESULT row).
    allowed = {new, CL, FN} if new is DR else {new}
    assert conn.handle_state(h) in allowed
    decode_frames(conn.data_to_send())


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize(("side", "state"), SIDE_STATES, ids=lambda x: x.name)
def test_local_operation(side: Side, state: HState, op: str) -> None:
    check_send(side, state, op)


@pytest.mark.parametrize(
    "side", [s for s in Side if s is not Side.SERVER_QUERY], ids=lambda s: s.name
)
def test_operations_on_a_closed_handle(side: Side) -> None:
    # A handle the peer closed is a race, not a misuse: nothing raises, nothing is sent.
    # (A server query has no peer frame that closes it: only the server's answer does.)
    conn, h = drive(side, STATES_OF[side][-1] if side in QUERY_SIDES else AC)
    closing = {
        Side.CLIENT_SUBSCRIPTION: End(h, 0),
        Side.SERVER_SUBSCRIPTION: Cancel(h),
        Side.CLIENT_UPLOAD: UploadCancel(h),
        Side.SERVER_UPLOAD: Error(h, 1000, 0),
        Side.CLIENT_QUERY: Streams(h),
    }[side]
    conn.receive_data(encode(closing))
    conn.data_to_send()
    assert conn.handle_state(h) is CL
    # The other role's operations are INVALID_STATE whatever the handle: left out.
    other_role = {"cancel", "unsubscribe"} if conn.role is Role.SERVER else set()
    if conn.role is Role.CLIENT:
        other_role = {
            "accept",
            "reject",
            "cancel_upload",
            "send_gap",
            "answer_streams",
            "send_upload_result",
        }
    results = [call(conn, h) for op, (_inp, call) in OPS.items() if op not in other_role]
    assert set(results) <= {None, False, WriteResult.CLOSED}
    assert conn.data_to_send() == b""


# -- connection frames --------------------------------------------------------------------------

CONN_STATES: dict[Role, list[ConnState]] = {
    Role.CLIENT: [ConnState.HANDSHAKING, ConnState.OPEN, ConnState.DRAINING, ConnState.CLOSED],
    Role.SERVER: [
        ConnState.AWAIT_HELLO,
        ConnState.HELLO_RECEIVED,
        ConnState.OPEN,
        ConnState.DRAINING,
        ConnState.CLOSED,
    ],
}
CONN_FRAMES: dict[str, Frame] = {
    "HELLO": Hello(),
    "WELCOME": Welcome(session_id="s"),
    "PING": Ping(7),
    "PONG": Pong(7),
    "GOAWAY_0": Goaway(ErrorCode.NO_ERROR, 0, "bye"),
    "GOAWAY_ERR": Goaway(ErrorCode.INTERNAL_ERROR, 0, "oops"),
    "SUBSCRIBE": Subscribe(9, CH, "s"),
}


def drive_conn(role: Role, state: ConnState) -> Connection:
    """A connection in ``state``; in DRAINING it keeps handle 1 open."""
    if state in (ConnState.HANDSHAKING, ConnState.AWAIT_HELLO):
        return Connection(role)
    if state is ConnState.HELLO_RECEIVED:
        conn = Connection(role)
        conn.receive_data(encode(Hello()))
    elif role is Role.CLIENT:
        conn = client()
        if state is not ConnState.OPEN:
            conn.receive_data(encode(Accept(conn.subscribe(CH, "s"), "s")))
    else:
        conn = server()
        if state is not ConnState.OPEN:
            conn.receive_data(encode(Subscribe(1, CH, "s")))
            conn.accept(1, stream_id="s")
    if state is ConnState.DRAINING:
        conn.goaway()
    elif state is ConnState.CLOSED:
        conn.receive_data(b"")
    conn.data_to_send()
    conn.take_events()
    assert conn.state is state
    return conn


def conn_outcome(role: Role, state: ConnState, name: str) -> ConnState | ErrorCode:
    """What receiving frame ``name`` does: the table, after the role's own checks."""
    if name == "GOAWAY_ERR":  # R-GOAWAY-3, and a refusal before WELCOME (R-HS-4)
        return ConnState.CLOSED
    if name == "GOAWAY_0":  # drains; with nothing open (OPEN here) that is at once
        return ConnState.DRAINING if state is ConnState.DRAINING else ConnState.CLOSED
    if (role, name) in (
        (Role.CLIENT, "HELLO"),
        (Role.CLIENT, "SUBSCRIBE"),
        (Role.SERVER, "WELCOME"),
    ):
        return ErrorCode.PROTOCOL_ERROR  # a frame only the other role receives
    inp = {
        "HELLO": ConnInput.RECV_HELLO,
        "WELCOME": ConnInput.RECV_WELCOME,
        "PING": ConnInput.RECV_PING,
        "PONG": ConnInput.RECV_PONG,
        "SUBSCRIBE": ConnInput.RECV_REQUEST,
    }[name]
    new = CONNECTION_TRANSITIONS.get((state, inp))
    return ErrorCode.PROTOCOL_ERROR if new is None else new


#: The events a received connection frame is reported as, where the table allows it.
CONN_EVENTS: dict[tuple[str, ConnState], list[type[Event]]] = {
    ("GOAWAY_0", ConnState.HANDSHAKING): [HandshakeRefused],
    ("GOAWAY_0", ConnState.AWAIT_HELLO): [ConnectionTerminated],
    ("GOAWAY_0", ConnState.HELLO_RECEIVED): [ConnectionTerminated],
    ("GOAWAY_0", ConnState.OPEN): [GoawayReceived, ConnectionTerminated],
    ("GOAWAY_0", ConnState.DRAINING): [GoawayReceived],
    ("GOAWAY_ERR", ConnState.HANDSHAKING): [HandshakeRefused],
    ("HELLO", ConnState.AWAIT_HELLO): [HandshakeRequested],
    ("WELCOME", ConnState.HANDSHAKING): [HandshakeCompleted],
    ("SUBSCRIBE", ConnState.OPEN): [SubscribeRequested],
    ("SUBSCRIBE", ConnState.DRAINING): [],  # rejected by the core (R-REQ-6)
}
#: ... and in every state not listed there.
DEFAULT_CONN_EVENTS: dict[str, list[type[Event]]] = {
    "PING": [PingReceived],
    "PONG": [PongReceived],
    "GOAWAY_ERR": [ConnectionTerminated],
}


def check_conn(role: Role, state: ConnState, name: str) -> None:
    conn = drive_conn(role, state)
    events = conn.receive_data(encode(CONN_FRAMES[name]))
    if state is ConnState.CLOSED:  # over: input is ignored
        assert events == []
        assert conn.data_to_send() == b""
        return
    outcome = conn_outcome(role, state, name)
    if isinstance(outcome, ErrorCode):
        expect_terminated(events, outcome, by_peer=False)
        expect_goaway(conn.data_to_send(), outcome)
        return
    assert conn.state is outcome
    default = DEFAULT_CONN_EVENTS.get(name, [])
    assert [type(e) for e in events] == CONN_EVENTS.get((name, state), default), events
    frames = decode_frames(conn.data_to_send())
    if name == "PING":
        assert frames == [Pong(7)]
    if name == "SUBSCRIBE" and state is ConnState.DRAINING:  # R-REQ-6
        assert frames == [Reject(9, ErrorCode.SERVER_SHUTDOWN, "the connection is going away")]


def conn_cases() -> Iterator[tuple[Role, ConnState, str]]:
    for role, states in CONN_STATES.items():
        for state in states:
            for name in CONN_FRAMES:
                yield role, state, name


@pytest.mark.parametrize(("role", "state", "name"), list(conn_cases()))
def test_received_connection_frame(role: Role, state: ConnState, name: str) -> None:
    check_conn(role, state, name)


@pytest.mark.parametrize(
    ("role", "state"), [(r, s) for r, states in CONN_STATES.items() for s in states]
)
def test_local_connection_operations(role: Role, state: ConnState) -> None:
    check_local_conn(role, state)


def check_local_conn(role: Role, state: ConnState) -> None:
    """ping and requests against the table: CONNECTION_CLOSED in DRAINING or CLOSED,
    INVALID_STATE before the handshake."""
    conn = drive_conn(role, state)
    ops: list[tuple[ConnInput, Callable[[], Any]]] = [(ConnInput.SEND_PING, conn.ping)]
    if role is Role.CLIENT:
        ops.append((ConnInput.SEND_REQUEST, lambda: conn.subscribe(CH, "z")))
    for inp, call in ops:
        if CONNECTION_TRANSITIONS.get((state, inp)) is not None:
            call()
            continue
        with pytest.raises(LocalProtocolError) as info:
            call()
        closing = state in (ConnState.DRAINING, ConnState.CLOSED)
        want = ErrorCode.CONNECTION_CLOSED if closing else ErrorCode.INVALID_STATE
        assert info.value.code == want
    assert conn.state is state


# -- the tables themselves ----------------------------------------------------------------------


def test_closed_is_absorbing() -> None:
    for table in HANDLE_TRANSITIONS.values():
        assert not [key for key in table if key[0] is CL]
    assert not [key for key in CONNECTION_TRANSITIONS if key[0] is ConnState.CLOSED]


def reachable(edges: dict[Any, Any], start: Any) -> set[Any]:
    seen = {start}
    todo = [start]
    while todo:
        state = todo.pop()
        for (src, _inp), dst in edges.items():
            if src is state and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def test_every_state_is_reachable() -> None:
    for side, table in HANDLE_TRANSITIONS.items():
        want = {RQ, AC, DR, CL} | ({FN} if side in UPLOAD_SIDES else set())
        assert reachable(table, RQ) == ({RQ, CL} if side in QUERY_SIDES else want)
    client_states = reachable(CONNECTION_TRANSITIONS, ConnState.HANDSHAKING)
    server_states = reachable(CONNECTION_TRANSITIONS, ConnState.AWAIT_HELLO)
    assert client_states | server_states == set(ConnState)
    assert ConnState.AWAIT_HELLO not in client_states  # the roles' machines do not meet
    assert ConnState.HANDSHAKING not in server_states


def test_recv_input() -> None:
    for ftype in HANDLE_FRAMES:
        assert recv_input(ftype) is Input["RECV_" + ftype.name]
    for ftype in (FrameType.SUBSCRIBE, FrameType.OPEN, FrameType.UPLOAD, FrameType.HELLO):
        assert recv_input(ftype) is None


class _Recorder(dict[Any, Any]):
    """A transition table that records the rows looked up."""

    def __init__(self, table: dict[Any, Any], name: Any, seen: set[Any]) -> None:
        super().__init__(table)
        self.name = name
        self.seen = seen

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            self.seen.add((self.name, key))
        return super().get(key, default)


#: A row no implementation of ours can take: a client subscription has received no data
#: before ACCEPT, so it has no credit to return; the row is there to keep the receiving side
#: of the table symmetric with the server's (RECV_CREDIT in REQUESTED is legal for it).
UNREACHABLE = {(Side.CLIENT_SUBSCRIPTION, (RQ, Input.SEND_CREDIT))}


def test_every_row_is_exercised(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[Any] = set()
    handle_tables = {side: _Recorder(t, side, seen) for side, t in HANDLE_TRANSITIONS.items()}
    conn_table = _Recorder(CONNECTION_TRANSITIONS, "conn", seen)
    monkeypatch.setattr(_connection, "HANDLE_TRANSITIONS", handle_tables)
    monkeypatch.setattr(_connection, "CONNECTION_TRANSITIONS", conn_table)
    for side in Side:
        for state in STATES_OF[side]:
            for ftype in HANDLE_FRAMES:
                check_recv(side, state, ftype)
            for op in OPS:
                check_send(side, state, op)
    for role, state, name in conn_cases():
        check_conn(role, state, name)
    for role, states in CONN_STATES.items():
        for state in states:
            check_local_conn(role, state)
    # send_data's hot path skips the lookup for ACTIVE senders because the table, read at
    # import (_DATA_KEEPS_ACTIVE), says SEND_DATA keeps them ACTIVE: those rows were read there.
    assert _connection._DATA_KEEPS_ACTIVE
    seen.update(
        (side, (HState.ACTIVE, Input.SEND_DATA))
        for side in (Side.SERVER_SUBSCRIPTION, Side.CLIENT_UPLOAD)
    )
    # What the sweep does not do on its own: drain handles and connections, time out.
    for side in Side:
        if side in QUERY_SIDES:
            continue  # no DRAINING
        conn, h = drive(side, DR)
        if side is Side.CLIENT_SUBSCRIPTION:
            conn.receive_data(encode(Gap(h, 1, FINAL, GapReason.EVICTED)))
        elif side is Side.SERVER_UPLOAD:
            for seq in range(1, FINAL + 1):  # one at a time: the window is 2 chunks
                conn.receive_data(encode(Data(h, seq, (b"%d" % seq,))))
            assert conn.handle_state(h) is FN  # the result is due
            conn.send_upload_result(h)
        else:
            conn.receive_data(encode(Credit(h, 1, 100)))
            conn.data_to_send()
            if side is Side.CLIENT_UPLOAD:
                assert conn.handle_state(h) is FN
                conn.receive_data(encode(UploadResult(h)))
        assert conn.handle_state(h) is CL
    # Uploads that do not end with a result drain to CLOSED: a client's ERROR, a server's
    # received ERROR.
    conn, h = drive(Side.CLIENT_UPLOAD, AC)
    conn.send_data(h, b"queued")
    conn.send_error(h, 1000)
    conn.receive_data(encode(Credit(h, 1, 100)))
    conn.data_to_send()
    assert conn.handle_state(h) is CL
    conn, h = drive(Side.SERVER_UPLOAD, AC)
    conn.receive_data(encode(Error(h, 1000, 0)))
    assert conn.handle_state(h) is CL
    # A server upload FINISHING with chunks unread: reading them returns credit and acks.
    conn = Connection(Role.SERVER, Config(window_chunks=2, auto_credit=False))
    conn.receive_data(encode(Hello()))
    conn.accept_handshake(session_id="s", resume_token="t", features=Feature(5))
    conn.receive_data(encode(Upload(1, CH, "u", resumable=True, result=True)))
    conn.accept(1, stream_id="u")
    conn.receive_data(encode(Data(1, 1, (b"a",))) + encode(End(1, 1)))
    assert conn.handle_state(1) is FN
    conn.consume(1, 1, 1)
    frames = decode_frames(conn.data_to_send())
    assert [type(f) for f in frames][-2:] == [UploadAck, Credit]
    for role, state in [
        (Role.CLIENT, ConnState.HANDSHAKING),
        (Role.SERVER, ConnState.AWAIT_HELLO),
        (Role.SERVER, ConnState.HELLO_RECEIVED),
    ]:
        expect_terminated(drive_conn(role, state).handle_timer(100.0), ErrorCode.HANDSHAKE_TIMEOUT)
    drive_conn(Role.SERVER, ConnState.HELLO_RECEIVED).refuse_handshake(ErrorCode.AUTH_FAILED)
    conn = drive_conn(Role.CLIENT, ConnState.DRAINING)
    assert conn.receive_data(encode(Data(1, 1, (b"x",)))) == [DataReceived(1, 1, (b"x",))]
    conn.cancel(1)  # the last handle: drained
    drive_conn(Role.CLIENT, ConnState.OPEN).subscribe(CH, "s")
    conn = drive_conn(Role.SERVER, ConnState.DRAINING)
    conn.goaway()
    conn.goaway(ErrorCode.INTERNAL_ERROR)
    drive_conn(Role.SERVER, ConnState.OPEN).goaway(ErrorCode.INTERNAL_ERROR)

    handle_rows = {(side, key) for side, t in HANDLE_TRANSITIONS.items() for key in t}
    missing = handle_rows - seen - UNREACHABLE
    assert not missing, sorted(map(str, missing))
    assert not UNREACHABLE & seen  # if it is taken one day, it leaves this list
    conn_rows = {("conn", key) for key in CONNECTION_TRANSITIONS}
    missing = conn_rows - seen
    assert not missing, sorted(map(str, missing))
