"""Hypothesis strategies for streamproto frames and byte splits (needs ``hypothesis``: the
``dev`` or ``testing`` extra).

    from hypothesis import given
    from streamproto.testing.strategies import frames, splits

    @given(frames(), splits())
    def test_my_decoder(frame, cut): ...
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

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
    Reject,
    Subscribe,
    Unknown,
    Unsubscribe,
    Upload,
    UploadCancel,
    Welcome,
)

__all__ = ["FRAME_STRATEGIES", "byte_splits", "frames"]

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
    Open: st.builds(Open, handles, text, text, u32, u32, policies, u8, blobs),
    Upload: st.builds(Upload, handles, text, text, blobs),
    Accept: st.builds(Accept, handles, text, u64, u64, u32, u32),
    Reject: st.builds(Reject, handles, u16, text),
    Data: data_frames(),
    Gap: gap_frames(),
    End: st.builds(End, handles, u64),
    Error: st.builds(Error, handles, u16, u64, text),
    Cancel: st.builds(Cancel, handles),
    Unsubscribe: st.builds(Unsubscribe, handles),
    UploadCancel: st.builds(UploadCancel, handles, u16, text),
    Credit: st.builds(Credit, handles, u32, u32),
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
