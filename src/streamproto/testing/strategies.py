"""Hypothesis strategies for streamproto frames, valid frame sequences and byte splits (needs
``hypothesis``: the ``dev`` or ``testing`` extra).

    from hypothesis import given, strategies as st
    from streamproto._frames import encode
    from streamproto.testing.strategies import byte_splits, conversations, frames

    @given(frames(), st.data())
    def test_my_decoder(frame, data):
        pieces = data.draw(byte_splits(encode(frame)))
        ...

    @given(conversations())
    def test_my_client_accepts_what_a_server_may_send(conversation):
        my_client.feed(conversation.to_client)   # bytes a valid server sent, in order
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import strategies as st

from .._config import Config
from .._connection import Connection, Role
from .._errors import LocalProtocolError
from .._frames import (
    U8,
    U16,
    U32,
    U64,
    Accept,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    FrameType,
    Gap,
    GapReason,
    Goaway,
    Hello,
    Open,
    OverflowPolicy,
    Ping,
    Pong,
    Query,
    QueryOp,
    Reject,
    StreamEntry,
    Streams,
    StreamState,
    Subscribe,
    Unknown,
    Unsubscribe,
    Upload,
    UploadAck,
    UploadCancel,
    UploadResult,
    Welcome,
)
from ._pair import decode_frames

__all__ = ["FRAME_STRATEGIES", "Conversation", "byte_splits", "conversations", "frames"]

u8 = st.integers(0, U8)
u16 = st.integers(0, U16)
u32 = st.integers(0, U32)
u64 = st.integers(0, U64)
handles = st.integers(1, U32)
# The decoder accepts only valid UTF-8, so no lone surrogates.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
blobs = st.binary(max_size=48)
setting_lists = st.lists(st.tuples(u16, u32), max_size=6).map(tuple)
policies = st.sampled_from(OverflowPolicy)
UNKNOWN_TYPES = sorted(set(range(256)) - set(FrameType))


@st.composite
def data_frames(draw: st.DrawFn) -> Data:
    """A DATA run (1-4 chunks) or a single fragment."""
    more = draw(st.booleans())
    count = 1 if more else draw(st.integers(1, 4))
    seq = draw(st.integers(1, U64 - count + 1))
    chunks = tuple(draw(st.lists(blobs, min_size=count, max_size=count)))
    return Data(draw(handles), seq, chunks, more)


@st.composite
def gap_frames(draw: st.DrawFn) -> Gap:
    """A GAP with 1 <= from_seq <= to_seq."""
    start = draw(st.integers(1, U64))
    return Gap(
        draw(handles), start, draw(st.integers(start, U64)), draw(st.sampled_from(GapReason))
    )


#: One strategy per frame class, every field over its whole range.
FRAME_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Hello: st.builds(Hello, u16, u16, setting_lists, text, blobs),
    Welcome: st.builds(Welcome, u16, st.booleans(), setting_lists, text, text),
    Ping: st.builds(Ping, u64),
    Pong: st.builds(Pong, u64),
    Goaway: st.builds(Goaway, u16, u32, text),
    Subscribe: st.builds(
        Subscribe, handles, text, text, u64, st.booleans(), u32, u32, policies, u8
    ),
    Open: st.builds(Open, handles, text, text, u32, u32, policies, u8, blobs, st.booleans()),
    Upload: st.builds(
        Upload, handles, text, text, blobs, st.booleans(), st.booleans(), st.booleans()
    ),
    Accept: st.builds(Accept, handles, text, u64, u64, u32, u32, st.booleans()),
    Reject: st.builds(Reject, handles, u16, text),
    Data: data_frames(),
    Gap: gap_frames(),
    End: st.builds(End, handles, u64),
    Error: st.builds(Error, handles, u16, u64, text),
    Cancel: st.builds(Cancel, handles),
    Unsubscribe: st.builds(Unsubscribe, handles),
    UploadCancel: st.builds(UploadCancel, handles, u16, text),
    UploadAck: st.builds(UploadAck, handles, u64),
    UploadResult: st.builds(UploadResult, handles, blobs),
    Credit: st.builds(Credit, handles, u32, u32),
    Query: st.builds(Query, handles, st.sampled_from(QueryOp), text, text, u8, u16),
    Streams: st.builds(
        Streams,
        handles,
        st.lists(
            st.builds(StreamEntry, text, st.sampled_from(StreamState), u16, u64, u64), max_size=4
        ).map(tuple),
        text,
    ),
    Unknown: st.builds(Unknown, st.sampled_from(UNKNOWN_TYPES), u8, u32, blobs),
}


def frames() -> st.SearchStrategy[Any]:
    """Any frame of any type."""
    return st.one_of(*FRAME_STRATEGIES.values())


def byte_splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at arbitrary points (the pieces join back to ``data``)."""
    return st.lists(st.integers(0, len(data)), max_size=8).map(
        lambda cuts: [
            data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
        ]
    )


@attrs.frozen
class Conversation:
    """What a client and a server that both follow the protocol said to each other: the
    bytes of each direction, in order, and the operations that made them."""

    to_server: bytes
    to_client: bytes
    operations: tuple[str, ...]

    def client_frames(self) -> list[Any]:
        """The client's frames (each DATA chunk as its own frame)."""
        return decode_frames(self.to_server)

    def server_frames(self) -> list[Any]:
        """The server's frames (each DATA chunk as its own frame)."""
        return decode_frames(self.to_client)


class _Talk:
    """Two connections and their transcripts, bytes delivered whole after each operation."""

    def __init__(self) -> None:
        config = Config(window_chunks=8, max_queued_chunks=8)
        self.client = Connection(Role.CLIENT, config)
        self.server = Connection(Role.SERVER, config)
        self.to_server = bytearray()
        self.to_client = bytearray()

    def move(self) -> None:
        # b"" would be the end of input, so only what was sent is delivered.
        for sender, receiver, transcript in (
            (self.client, self.server, self.to_server),
            (self.server, self.client, self.to_client),
        ):
            data = sender.data_to_send()
            transcript += data
            if data:
                receiver.receive_data(data)


_Op = Callable[[st.DrawFn, _Talk], object]
_chunks = st.binary(max_size=24)
_small_handles = st.integers(1, 3)  # few handles, so requests, answers and data meet
_app_codes = st.integers(1000, 1010)

#: What either side may try, by name; each draws its own arguments. An operation the state
#: forbids raises LocalProtocolError (or returns CLOSED) and sends nothing.
_OPERATIONS: dict[str, _Op] = {
    "subscribe": lambda d, t: t.client.subscribe(
        "t:c", d(st.sampled_from(["a", "b"])), after_seq=d(st.integers(0, 3))
    ),
    "open": lambda d, t: t.client.open("t:c", d(_chunks)),
    "upload": lambda d, t: t.client.upload("t:c", "u"),
    "upload_data": lambda d, t: t.client.send_data(d(_small_handles), d(_chunks)),
    "upload_end": lambda d, t: t.client.send_end(d(_small_handles)),
    "cancel": lambda d, t: t.client.cancel(d(_small_handles)),
    "unsubscribe": lambda d, t: t.client.unsubscribe(d(_small_handles)),
    "client_ping": lambda d, t: t.client.ping(),
    "accept": lambda d, t: t.server.accept(d(_small_handles), stream_id="s1"),
    "reject": lambda d, t: t.server.reject(d(_small_handles), d(_app_codes), "no"),
    "data": lambda d, t: t.server.send_data(d(_small_handles), d(_chunks)),
    "end": lambda d, t: t.server.send_end(d(_small_handles)),
    "error": lambda d, t: t.server.send_error(d(_small_handles), d(_app_codes), "failed"),
    "cancel_upload": lambda d, t: t.server.cancel_upload(d(_small_handles), d(_app_codes)),
    "server_ping": lambda d, t: t.server.ping(),
}


@st.composite
def conversations(draw: st.DrawFn, max_operations: int = 24) -> Conversation:
    """A valid exchange: a handshake, then random requests, data, ends, errors, cancels and
    pings from both sides, each made by a real :class:`~streamproto.Connection` and delivered
    to the other (so every frame in it is one a conforming peer may send at that point)."""
    talk = _Talk()
    talk.move()
    talk.server.accept_handshake(session_id="session", resume_token="token")  # noqa: S106
    talk.move()
    names = draw(st.lists(st.sampled_from(sorted(_OPERATIONS)), max_size=max_operations))
    for name in names:
        with contextlib.suppress(LocalProtocolError):  # not allowed now: nothing was sent
            _OPERATIONS[name](draw, talk)
        talk.move()
    return Conversation(bytes(talk.to_server), bytes(talk.to_client), tuple(names))
