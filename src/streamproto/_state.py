"""State tables: every legal transition of a connection and of a handle, and nothing else.

Rules for this file (after h11's ``_state.py`` and h2's ``stream.py``):

1. All state logic lives here, as literal tables; ``_connection.py`` asks, never decides.
2. A handle is one subscription, one upload or one query, seen from one role. The six sides are
   separate tables because they are different machines: a client subscription receives DATA, a
   server subscription sends it.
3. A (state, input) pair missing from a table is illegal. For a RECV_* input that is the peer's
   fault: a connection error PROTOCOL_ERROR answered with GOAWAY. For a SEND_* input it is the
   local application's: LocalProtocolError INVALID_STATE.
4. CLOSED is absorbing: no table has a row leaving it.
5. ``DRAINED`` is the internal input that fires when a DRAINING handle has delivered (receiver)
   or sent (sender) everything up to its final seq. A sender's queued DATA and GAP still go out
   while it drains, but the application can no longer write: SEND_DATA is not legal there.
6. A bidirectional handle (OPEN with flag BIDI) is two of these machines under one handle
   number, one per direction: ``BIDI_SIDES`` names them per role, ``BIDI_ROUTES`` says which of
   the two an input steps. Nothing else couples them: an END, ERROR or cancel closes one
   direction and leaves the other running. The handle is forgotten when both are CLOSED.

The docs' state diagrams are generated from these tables (``python -m streamproto diagrams``
writes ``docs/state-machines.md``; a test keeps the page in step).
"""

from __future__ import annotations

import enum
from typing import Final

from ._frames import FrameType

__all__ = [
    "BIDI_ROUTES",
    "BIDI_SIDES",
    "CONNECTION_TRANSITIONS",
    "HANDLE_TRANSITIONS",
    "ConnInput",
    "ConnState",
    "Direction",
    "HState",
    "Input",
    "Side",
    "recv_input",
]


class Side(enum.Enum):
    """A handle's machine: which role holds it and what it carries."""

    __hash__ = object.__hash__  # identity, in C: these key the tables on the hot path

    CLIENT_SUBSCRIPTION = "client subscription"
    SERVER_SUBSCRIPTION = "server subscription"
    CLIENT_UPLOAD = "client upload"
    SERVER_UPLOAD = "server upload"
    CLIENT_QUERY = "client query"
    SERVER_QUERY = "server query"


class HState(enum.Enum):
    """A handle's state."""

    __hash__ = object.__hash__  # identity, in C: these key the tables on the hot path

    REQUESTED = "REQUESTED"  # request sent or received, no ACCEPT/REJECT yet
    ACTIVE = "ACTIVE"  # accepted; data flows
    DRAINING = "DRAINING"  # END or ERROR sent/received; data up to its last_seq still flows
    FINISHING = "FINISHING"  # an upload taken whole after END; its UPLOAD_RESULT is to come
    CLOSED = "CLOSED"


class Input(enum.Enum):
    """What happens to a handle: a frame sent or received, or the end of draining."""

    __hash__ = object.__hash__  # identity, in C: these key the tables on the hot path

    SEND_ACCEPT = "SEND_ACCEPT"
    RECV_ACCEPT = "RECV_ACCEPT"
    SEND_REJECT = "SEND_REJECT"
    RECV_REJECT = "RECV_REJECT"
    SEND_DATA = "SEND_DATA"
    RECV_DATA = "RECV_DATA"
    SEND_GAP = "SEND_GAP"
    RECV_GAP = "RECV_GAP"
    SEND_END = "SEND_END"
    RECV_END = "RECV_END"
    SEND_ERROR = "SEND_ERROR"
    RECV_ERROR = "RECV_ERROR"
    SEND_CANCEL = "SEND_CANCEL"
    RECV_CANCEL = "RECV_CANCEL"
    SEND_UNSUBSCRIBE = "SEND_UNSUBSCRIBE"
    RECV_UNSUBSCRIBE = "RECV_UNSUBSCRIBE"
    SEND_UPLOAD_CANCEL = "SEND_UPLOAD_CANCEL"
    RECV_UPLOAD_CANCEL = "RECV_UPLOAD_CANCEL"
    SEND_CREDIT = "SEND_CREDIT"
    RECV_CREDIT = "RECV_CREDIT"
    SEND_STREAMS = "SEND_STREAMS"
    RECV_STREAMS = "RECV_STREAMS"
    SEND_UPLOAD_ACK = "SEND_UPLOAD_ACK"
    RECV_UPLOAD_ACK = "RECV_UPLOAD_ACK"
    SEND_UPLOAD_RESULT = "SEND_UPLOAD_RESULT"
    RECV_UPLOAD_RESULT = "RECV_UPLOAD_RESULT"
    DRAINED = "DRAINED"
    #: DRAINED after END on an upload that ends with UPLOAD_RESULT (flag RESUMABLE or RESULT).
    AWAIT_RESULT = "AWAIT_RESULT"


_RQ, _AC, _DR, _CL = HState.REQUESTED, HState.ACTIVE, HState.DRAINING, HState.CLOSED
_FN = HState.FINISHING
I = Input  # noqa: E741 - table shorthand

#: (state, input) -> new state, per side. Anything missing is illegal (rule 3).
HANDLE_TRANSITIONS: Final[dict[Side, dict[tuple[HState, Input], HState]]] = {
    Side.CLIENT_SUBSCRIPTION: {
        (_RQ, I.RECV_ACCEPT): _AC,
        (_RQ, I.RECV_REJECT): _CL,
        (_RQ, I.SEND_CANCEL): _CL,
        (_RQ, I.SEND_UNSUBSCRIBE): _CL,
        (_RQ, I.SEND_CREDIT): _RQ,
        (_AC, I.RECV_DATA): _AC,
        (_AC, I.RECV_GAP): _AC,
        (_AC, I.RECV_END): _DR,
        (_AC, I.RECV_ERROR): _DR,
        (_AC, I.SEND_CREDIT): _AC,
        (_AC, I.SEND_CANCEL): _CL,
        (_AC, I.SEND_UNSUBSCRIBE): _CL,
        (_DR, I.RECV_DATA): _DR,
        (_DR, I.RECV_GAP): _DR,
        (_DR, I.SEND_CREDIT): _DR,
        (_DR, I.SEND_CANCEL): _CL,
        (_DR, I.SEND_UNSUBSCRIBE): _CL,
        (_DR, I.DRAINED): _CL,
    },
    Side.SERVER_SUBSCRIPTION: {
        (_RQ, I.SEND_ACCEPT): _AC,
        (_RQ, I.SEND_REJECT): _CL,
        (_RQ, I.RECV_CANCEL): _CL,
        (_RQ, I.RECV_UNSUBSCRIBE): _CL,
        (_RQ, I.RECV_CREDIT): _RQ,
        (_AC, I.SEND_DATA): _AC,
        (_AC, I.SEND_GAP): _AC,
        (_AC, I.SEND_END): _DR,
        (_AC, I.SEND_ERROR): _DR,
        (_AC, I.RECV_CREDIT): _AC,
        (_AC, I.RECV_CANCEL): _CL,
        (_AC, I.RECV_UNSUBSCRIBE): _CL,
        (_DR, I.RECV_CREDIT): _DR,
        (_DR, I.RECV_CANCEL): _CL,
        (_DR, I.RECV_UNSUBSCRIBE): _CL,
        (_DR, I.DRAINED): _CL,
    },
    Side.CLIENT_UPLOAD: {
        (_RQ, I.RECV_ACCEPT): _AC,
        (_RQ, I.RECV_REJECT): _CL,
        (_RQ, I.SEND_DATA): _RQ,  # queued until ACCEPT brings credit
        (_RQ, I.SEND_ERROR): _CL,
        (_AC, I.SEND_DATA): _AC,
        (_AC, I.RECV_CREDIT): _AC,
        (_AC, I.SEND_END): _DR,
        (_AC, I.SEND_ERROR): _DR,
        (_AC, I.RECV_UPLOAD_CANCEL): _CL,
        (_DR, I.RECV_CREDIT): _DR,
        (_DR, I.RECV_UPLOAD_CANCEL): _CL,
        (_DR, I.DRAINED): _CL,
        # Resumable and result uploads (section 9.1): acknowledged as the server takes
        # them, and closed by UPLOAD_RESULT (or UPLOAD_CANCEL) once all of it went out.
        (_AC, I.RECV_UPLOAD_ACK): _AC,
        (_DR, I.RECV_UPLOAD_ACK): _DR,
        (_DR, I.AWAIT_RESULT): _FN,
        (_FN, I.RECV_UPLOAD_ACK): _FN,
        (_FN, I.RECV_CREDIT): _FN,
        (_FN, I.RECV_UPLOAD_RESULT): _CL,
        (_FN, I.RECV_UPLOAD_CANCEL): _CL,
    },
    Side.SERVER_UPLOAD: {
        (_RQ, I.SEND_ACCEPT): _AC,
        (_RQ, I.SEND_REJECT): _CL,
        (_RQ, I.RECV_ERROR): _CL,
        (_AC, I.RECV_DATA): _AC,
        (_AC, I.SEND_CREDIT): _AC,
        (_AC, I.RECV_END): _DR,
        (_AC, I.RECV_ERROR): _DR,
        (_AC, I.SEND_UPLOAD_CANCEL): _CL,
        (_DR, I.RECV_DATA): _DR,
        (_DR, I.SEND_CREDIT): _DR,
        (_DR, I.SEND_UPLOAD_CANCEL): _CL,
        (_DR, I.DRAINED): _CL,
        (_AC, I.SEND_UPLOAD_ACK): _AC,
        (_DR, I.SEND_UPLOAD_ACK): _DR,
        (_DR, I.AWAIT_RESULT): _FN,
        (_FN, I.SEND_CREDIT): _FN,
        (_FN, I.SEND_UPLOAD_ACK): _FN,
        (_FN, I.SEND_UPLOAD_RESULT): _CL,
        (_FN, I.SEND_UPLOAD_CANCEL): _CL,
    },
    # A query (status, list, delete) is one request and one answer: STREAMS or REJECT.
    Side.CLIENT_QUERY: {
        (_RQ, I.RECV_STREAMS): _CL,
        (_RQ, I.RECV_REJECT): _CL,
    },
    Side.SERVER_QUERY: {
        (_RQ, I.SEND_STREAMS): _CL,
        (_RQ, I.SEND_REJECT): _CL,
    },
}


class Direction(enum.Enum):
    """Which machine of a bidirectional handle an input steps (rule 6)."""

    RECEIVING = "receiving"  # the direction whose chunks this side receives
    SENDING = "sending"  # the direction whose chunks this side sends
    BOTH = "both"  # the request's answer: one ACCEPT or REJECT for both directions


#: Per role, a bidirectional handle's (receiving, sending) machines: the client's receiving
#: direction is a subscription, its sending one an upload; the server's the converse.
BIDI_SIDES: Final[dict[str, tuple[Side, Side]]] = {
    "client": (Side.CLIENT_SUBSCRIPTION, Side.CLIENT_UPLOAD),
    "server": (Side.SERVER_UPLOAD, Side.SERVER_SUBSCRIPTION),
}

_RX, _TX, _BOTH = Direction.RECEIVING, Direction.SENDING, Direction.BOTH

#: On a bidirectional handle, the machine each input steps. A frame's type and its direction
#: of travel name the machine, the same for both roles: DATA, GAP, END and ERROR belong to the
#: direction they travel in, CREDIT, CANCEL, UNSUBSCRIBE and UPLOAD_CANCEL to the opposite one
#: (they answer data). ``DRAINED`` fires on the machine that drained.
BIDI_ROUTES: Final[dict[Input, Direction]] = {
    I.SEND_ACCEPT: _BOTH,
    I.RECV_ACCEPT: _BOTH,
    I.SEND_REJECT: _BOTH,
    I.RECV_REJECT: _BOTH,
    I.RECV_DATA: _RX,
    I.RECV_GAP: _RX,
    I.RECV_END: _RX,
    I.RECV_ERROR: _RX,
    I.SEND_CREDIT: _RX,
    I.SEND_CANCEL: _RX,
    I.SEND_UNSUBSCRIBE: _RX,
    I.SEND_UPLOAD_CANCEL: _RX,
    I.SEND_DATA: _TX,
    I.SEND_GAP: _TX,
    I.SEND_END: _TX,
    I.SEND_ERROR: _TX,
    I.RECV_CREDIT: _TX,
    I.RECV_CANCEL: _TX,
    I.RECV_UNSUBSCRIBE: _TX,
    I.RECV_UPLOAD_CANCEL: _TX,
    # (A bidirectional stream's client direction is never resumable: these never reach it;
    # routed by the same rule, so that the table covers every input of both machines.)
    I.SEND_UPLOAD_ACK: _RX,
    I.SEND_UPLOAD_RESULT: _RX,
    I.RECV_UPLOAD_ACK: _TX,
    I.RECV_UPLOAD_RESULT: _TX,
}

_RECV: Final[dict[int, Input]] = {
    FrameType.ACCEPT: Input.RECV_ACCEPT,
    FrameType.REJECT: Input.RECV_REJECT,
    FrameType.DATA: Input.RECV_DATA,
    FrameType.GAP: Input.RECV_GAP,
    FrameType.END: Input.RECV_END,
    FrameType.ERROR: Input.RECV_ERROR,
    FrameType.CANCEL: Input.RECV_CANCEL,
    FrameType.UNSUBSCRIBE: Input.RECV_UNSUBSCRIBE,
    FrameType.UPLOAD_CANCEL: Input.RECV_UPLOAD_CANCEL,
    FrameType.CREDIT: Input.RECV_CREDIT,
    FrameType.STREAMS: Input.RECV_STREAMS,
    FrameType.UPLOAD_ACK: Input.RECV_UPLOAD_ACK,
    FrameType.UPLOAD_RESULT: Input.RECV_UPLOAD_RESULT,
}


def recv_input(frame_type: int) -> Input | None:
    """The input a received handle frame of ``frame_type`` is (None for request frames)."""
    return _RECV.get(frame_type)


class ConnState(enum.Enum):
    """A connection's state."""

    __hash__ = object.__hash__  # identity, in C: these key the tables on the hot path

    HANDSHAKING = "HANDSHAKING"  # client: HELLO sent, waiting for WELCOME
    AWAIT_HELLO = "AWAIT_HELLO"  # server: waiting for HELLO
    HELLO_RECEIVED = "HELLO_RECEIVED"  # server: the application decides
    OPEN = "OPEN"
    DRAINING = "DRAINING"  # GOAWAY(NO_ERROR) sent or received: no new requests
    CLOSED = "CLOSED"


class ConnInput(enum.Enum):
    """What happens to a connection."""

    __hash__ = object.__hash__  # identity, in C: these key the tables on the hot path

    RECV_HELLO = "RECV_HELLO"
    SEND_WELCOME = "SEND_WELCOME"
    RECV_WELCOME = "RECV_WELCOME"
    SEND_REFUSE = "SEND_REFUSE"  # GOAWAY before WELCOME
    RECV_REFUSE = "RECV_REFUSE"
    SEND_GOAWAY = "SEND_GOAWAY"  # code 0: drain
    RECV_GOAWAY = "RECV_GOAWAY"
    SEND_PING = "SEND_PING"
    RECV_PING = "RECV_PING"
    RECV_PONG = "RECV_PONG"
    SEND_REQUEST = "SEND_REQUEST"  # SUBSCRIBE, OPEN, UPLOAD, QUERY
    RECV_REQUEST = "RECV_REQUEST"
    RECV_HANDLE_FRAME = "RECV_HANDLE_FRAME"  # any other handle frame
    DRAINED = "DRAINED"  # draining and no handle open
    FAIL = "FAIL"  # a GOAWAY with an error code either way, a timeout, end of input


_HS, _AH, _HR = ConnState.HANDSHAKING, ConnState.AWAIT_HELLO, ConnState.HELLO_RECEIVED
_OP, _DN, _CC = ConnState.OPEN, ConnState.DRAINING, ConnState.CLOSED
C = ConnInput

#: (state, input) -> new state. One table for both roles: a client never reaches AWAIT_HELLO,
#: a server never reaches HANDSHAKING. ``FAIL`` is legal from every state but CLOSED.
CONNECTION_TRANSITIONS: Final[dict[tuple[ConnState, ConnInput], ConnState]] = {
    (_HS, C.RECV_WELCOME): _OP,
    (_HS, C.RECV_REFUSE): _CC,
    (_AH, C.RECV_HELLO): _HR,
    (_HR, C.SEND_WELCOME): _OP,
    (_HR, C.SEND_REFUSE): _CC,
    **{
        (state, inp): state
        for state in (_OP, _DN)
        for inp in (C.SEND_PING, C.RECV_PING, C.RECV_PONG, C.RECV_HANDLE_FRAME)
    },
    (_OP, C.SEND_REQUEST): _OP,
    (_OP, C.RECV_REQUEST): _OP,
    (_DN, C.RECV_REQUEST): _DN,  # answered with REJECT SERVER_SHUTDOWN
    (_OP, C.SEND_GOAWAY): _DN,
    (_OP, C.RECV_GOAWAY): _DN,
    (_DN, C.SEND_GOAWAY): _DN,
    (_DN, C.RECV_GOAWAY): _DN,
    (_DN, C.DRAINED): _CC,
    **{(state, C.FAIL): _CC for state in (_HS, _AH, _HR, _OP, _DN)},
}
