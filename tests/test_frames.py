"""The codec (_frames.py) and the error registry (_errors.py), beyond the golden vectors.

Together with test_vectors.py this covers both modules 100% (branches included). Round trips are
compared in a normalized form (one single-chunk Data per DATA frame) because a DATA run decodes
as one Data when it arrives in one read and as several when it is split.
"""

from __future__ import annotations

import re
import struct
import typing
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproto._errors import (
    APPLICATION_CODE_MAX,
    APPLICATION_CODE_MIN,
    ErrorCode,
    ErrorKind,
    FrameError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    StreamProtoError,
    code_name,
    is_application_code,
    is_retryable,
)
from streamproto._frames import (
    DEFAULT_MAX_FRAME_SIZE,
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
    FrameDecoder,
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
    encode,
    encode_data,
)
from streamproto.testing import strategies
from streamproto.testing.strategies import FRAME_STRATEGIES

U8, U16, U32, U64 = 0xFF, 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF


def normalize(frames: Iterable[Frame]) -> list[Frame]:
    """One single-chunk Data per DATA frame, so runs compare equal however they were split."""
    out: list[Frame] = []
    for frame in frames:
        if isinstance(frame, Data):
            out.extend(
                Data(frame.handle, frame.seq + i, (chunk,), frame.more)
                for i, chunk in enumerate(frame.chunks)
            )
        else:
            out.append(frame)
    return out


def pieces(raw: bytes, cuts: Iterable[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted(cuts):
        yield raw[start:cut]
        start = cut
    yield raw[start:]


def decode_all(raw: bytes, cuts: Iterable[int] = (), **kwargs: Any) -> list[Frame]:
    decoder = FrameDecoder(**kwargs)
    out: list[Frame] = []
    for piece in pieces(raw, cuts):
        out += decoder.feed(piece)
    assert decoder.buffered == 0
    return out


def code_of(raw: bytes) -> ErrorCode:
    with pytest.raises(FrameError) as info:
        FrameDecoder().feed(raw)
    return ErrorCode(info.value.code)


def header(length: int, ftype: int, flags: int = 0, handle: int = 0) -> bytes:
    return struct.pack(">IBBI", length, ftype, flags, handle)


def data_header(length: int, flags: int, handle: int, seq: int) -> bytes:
    return struct.pack(">IBBIQ", length, FrameType.DATA, flags, handle, seq)


# -- strategies ---------------------------------------------------------------------------------

# The strategies ship in streamproto.testing.strategies, for users' own tests too.
frames = strategies.frames()
text = strategies.text
blobs = strategies.blobs


def test_strategies_cover_every_frame_class() -> None:
    assert set(FRAME_STRATEGIES) == set(typing.get_args(Frame))


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", FRAME_STRATEGIES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_each_type(cls: type[Any], data: st.DataObject) -> None:
    """Each frame, fed whole, decodes to exactly itself (a Data run included)."""
    frame = data.draw(FRAME_STRATEGIES[cls])
    raw = encode(frame)
    assert FrameDecoder().feed(raw) == [frame]
    assert FrameDecoder().feed(bytearray(raw)) == [frame]
    assert FrameDecoder().feed(memoryview(raw)) == [frame]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(frames, max_size=8), data=st.data())
def test_round_trip_any_split(batch: list[Frame], data: st.DataObject) -> None:
    """Any sequence of frames, its bytes split anywhere, decodes to the same frames."""
    raw = b"".join(map(encode, batch))
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    decoder = FrameDecoder()
    out: list[Frame] = []
    for piece in pieces(raw, cuts):
        out += decoder.feed(piece)
        assert decoder.buffered <= HEADER_SIZE + decoder.max_frame_size
    assert normalize(out) == normalize(batch)
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(frames, max_size=6), junk=st.binary(max_size=40), data=st.data())
def test_any_input_decodes_or_fails_with_a_frame_error(
    batch: list[Frame], junk: bytes, data: st.DataObject
) -> None:
    """Accept, or reject with FrameError and the documented code: nothing else escapes, and
    the frames before the bad one are the same however the input is split."""
    raw = b"".join(map(encode, batch)) + junk
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=6))
    results = []
    for split in ((), cuts):
        decoder = FrameDecoder()
        out: list[Frame] = []
        error = None
        for piece in pieces(raw, split):
            error = decoder.feed_into(piece, out)
            if error is not None:
                break
        results.append((normalize(out), error))
        if error is not None:
            assert error.code in {ErrorCode.MALFORMED_FRAME, ErrorCode.FRAME_TOO_LARGE}
    (whole, whole_error), (split_out, split_error) = results
    assert whole[: len(split_out)] == split_out or split_out[: len(whole)] == whole
    if whole_error is None or split_error is None:
        # A decoder may refuse an oversize length from the first 4 bytes of a header; another
        # read pattern meets the same header only once it is whole.
        assert whole_error is None or whole_error.code == ErrorCode.FRAME_TOO_LARGE
        assert split_error is None or split_error.code == ErrorCode.FRAME_TOO_LARGE
    else:
        assert whole_error.code == split_error.code
        assert whole == split_out


# -- DATA runs ----------------------------------------------------------------------------------


def test_consecutive_data_decodes_as_one_run() -> None:
    raw = encode_data(1, 5, b"a") + encode_data(1, 6, b"b") + encode_data(1, 7, b"")
    assert FrameDecoder().feed(raw) == [Data(1, 5, (b"a", b"b", b""))]
    assert encode(Data(1, 5, (b"a", b"b", b""))) == raw


def test_data_runs_break_on_handle_seq_more_and_other_frames() -> None:
    raw = b"".join(
        [
            encode_data(1, 1, b"a"),
            encode_data(1, 2, b"b"),
            encode_data(2, 3, b"c"),  # another handle
            encode_data(2, 5, b"d"),  # a seq jump
            encode_data(2, 5, b"e"),  # a repeated seq
            encode_data(2, 6, b"f", flags=1),  # a fragment
            encode_data(2, 6, b"g"),  # its last fragment starts a run
            encode_data(2, 7, b"h"),
            encode(Ping(1)),
            encode_data(2, 8, b"i"),  # the run does not resume across another frame
        ]
    )
    assert FrameDecoder().feed(raw) == [
        Data(1, 1, (b"a", b"b")),
        Data(2, 3, (b"c",)),
        Data(2, 5, (b"d",)),
        Data(2, 5, (b"e",)),
        Data(2, 6, (b"f",), more=True),
        Data(2, 6, (b"g", b"h")),
        Ping(1),
        Data(2, 8, (b"i",)),
    ]


def test_data_run_split_across_reads_comes_out_in_pieces() -> None:
    raw = encode(Data(7, 1, (b"a", b"b", b"c", b"d")))
    decoder = FrameDecoder()
    first = decoder.feed(raw[:40])  # two whole frames and a partial third
    assert first == [Data(7, 1, (b"a", b"b"))]
    assert decoder.buffered == 40 - 38
    assert decoder.feed(raw[40:]) == [Data(7, 3, (b"c", b"d"))]


def test_data_run_up_to_the_last_seq() -> None:
    run = Data(1, U64 - 1, (b"x", b"y"))
    assert FrameDecoder().feed(encode(run)) == [run]
    # After seq 2**64-1 no seq can continue the run.
    raw = encode(run) + encode_data(1, 0, b"z")
    out: list[Frame] = []
    error = FrameDecoder().feed_into(raw, out)
    assert error is not None
    assert error.code == ErrorCode.MALFORMED_FRAME
    assert out == [run]


def test_data_fragment_and_unknown_flag_bits() -> None:
    assert FrameDecoder().feed(encode_data(1, 2, b"x", flags=0x03)) == [
        Data(1, 2, (b"x",), more=True)
    ]
    raw = encode_data(1, 2, b"x", flags=0x02) + encode_data(1, 3, b"y", flags=0x80)
    assert FrameDecoder().feed(raw) == [Data(1, 2, (b"x", b"y"))]


def test_data_run_kept_before_a_malformed_frame() -> None:
    raw = encode(Data(1, 1, (b"a", b"b"))) + header(0, FrameType.PING)
    out: list[Frame] = []
    error = FrameDecoder().feed_into(raw, out)
    assert error is not None
    assert error.code == ErrorCode.MALFORMED_FRAME
    assert out == [Data(1, 1, (b"a", b"b"))]


def test_data_run_kept_before_an_oversize_header() -> None:
    raw = encode(Data(1, 1, (b"a", b"b"))) + header(DEFAULT_MAX_FRAME_SIZE + 1, FrameType.PING)
    out: list[Frame] = []
    error = FrameDecoder().feed_into(raw, out)
    assert error is not None
    assert error.code == ErrorCode.FRAME_TOO_LARGE
    assert out == [Data(1, 1, (b"a", b"b"))]


@pytest.mark.parametrize(
    "raw",
    [
        data_header(9, 0, 0, 0) + b"x",
        data_header(8, 0, 0, 0),
        encode_data(1, 1, b"a") + data_header(9, 0, 0, 2) + b"b",
    ],
    ids=["seq-0", "seq-0-empty", "right-after-a-run"],
)
def test_data_handle_0_is_a_frame_error(raw: bytes) -> None:
    assert code_of(raw) == ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize(
    "raw",
    [
        encode_data(1, 1, b"a") + encode(Ping(0)) + data_header(9, 0, 0, 2) + b"b",
        encode_data(1, 1, b"a") + encode_data(1, 2, b"b", 1) + data_header(9, 0, 0, 2) + b"c",
    ],
    ids=["after-ping", "after-fragment"],
)
def test_data_handle_0_after_a_flushed_run_is_a_frame_error(raw: bytes) -> None:
    assert code_of(raw) == ErrorCode.MALFORMED_FRAME


# -- the decoder's buffering and limits ---------------------------------------------------------


def test_decoder_limits() -> None:
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert FrameDecoder(MIN_MAX_FRAME_SIZE).max_frame_size == MIN_MAX_FRAME_SIZE
    assert FrameDecoder(MAX_FRAME_SIZE_LIMIT).max_frame_size == MAX_FRAME_SIZE_LIMIT


@pytest.mark.parametrize(
    "size", [-1, 0, 64, MIN_MAX_FRAME_SIZE - 1, MAX_FRAME_SIZE_LIMIT + 1, 1 << 32]
)
def test_decoder_rejects_max_frame_size_out_of_range(size: int) -> None:
    with pytest.raises(ValueError, match=r"max_frame_size must be in 16384\.\.16777216"):
        FrameDecoder(size)


@pytest.mark.parametrize("limit", [MIN_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE, 1 << 20])
def test_body_exactly_at_the_limit(limit: int) -> None:
    frame = Data(1, 1, (bytes(range(256)) * ((limit - 8) // 256) + b"\x01" * ((limit - 8) % 256),))
    raw = encode(frame)
    assert len(raw) == HEADER_SIZE + limit
    assert decode_all(raw, max_frame_size=limit) == [frame]
    assert normalize(decode_all(raw, [1, 10, 17, limit], max_frame_size=limit)) == [frame]
    unknown = Unknown(0x7F, 0, 0, b"\x00" * limit)
    assert decode_all(encode(unknown), [5, 999], max_frame_size=limit) == [unknown]
    over = encode(Unknown(0x7F, 0, 0, b"\x00" * (limit + 1)))
    with pytest.raises(FrameError) as info:
        FrameDecoder(limit).feed(over[:HEADER_SIZE])
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_body_exactly_at_the_limit_byte_at_a_time() -> None:
    frame = Data(9, 3, (b"\x5a" * (DEFAULT_MAX_FRAME_SIZE - 8),))
    raw = encode(frame)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(raw)):
        out += decoder.feed(raw[i : i + 1])
    assert out == [frame]
    assert decoder.buffered == 0


@pytest.mark.parametrize("keep", range(4, HEADER_SIZE))
def test_oversize_length_refused_from_a_partial_header(keep: int) -> None:
    """Given at least the 4 length bytes in one read, the decoder refuses at once."""
    raw = encode(Ping(5)) + encode(Data(1, 1, (b"a", b"b")))
    raw += header(DEFAULT_MAX_FRAME_SIZE + 1, FrameType.DATA, 0, 1)[:keep]
    out: list[Frame] = []
    decoder = FrameDecoder()
    error = decoder.feed_into(raw, out)
    assert error is not None
    assert error.code == ErrorCode.FRAME_TOO_LARGE
    assert out == [Ping(5), Data(1, 1, (b"a", b"b"))]
    assert decoder.buffered == 0


def test_partial_header_waits_for_the_rest() -> None:
    raw = encode(Goaway(0, 3, "bye"))
    decoder = FrameDecoder()
    assert decoder.feed(raw[:3]) == []
    assert decoder.buffered == 3
    assert decoder.feed(raw[3:12]) == []  # now the header is whole: wait for the body
    assert decoder.buffered == 12
    assert decoder.feed(b"") == []
    assert decoder.feed(raw[12:-1]) == []
    assert decoder.buffered == len(raw) - 1
    assert decoder.feed(memoryview(raw)[-1:]) == [Goaway(0, 3, "bye")]
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []


def test_pending_bytes_complete_with_several_frames() -> None:
    ping, pong = encode(Ping(1)), encode(Pong(2))
    decoder = FrameDecoder()
    assert decoder.feed(ping[:5]) == []
    assert decoder.feed(bytearray(ping[5:] + pong + pong[:2])) == [Ping(1), Pong(2)]
    assert decoder.buffered == 2
    assert decoder.feed(memoryview(pong)[2:]) == [Pong(2)]


def test_feed_into_appends_and_keeps_earlier_frames() -> None:
    out: list[Frame] = [Ping(0)]
    decoder = FrameDecoder()
    assert decoder.feed_into(encode(Pong(1)) + encode(Cancel(2)), out) is None
    assert out == [Ping(0), Pong(1), Cancel(2)]
    error = decoder.feed_into(encode(End(3, 4)) + header(1, FrameType.END, 0, 3) + b"\x00", out)
    assert error is not None
    assert out == [Ping(0), Pong(1), Cancel(2), End(3, 4)]
    with pytest.raises(FrameError) as info:
        decoder.feed(encode(Ping(1)))
    assert info.value is error
    assert str(error) == "[MALFORMED_FRAME] body too short"
    assert error.message == "body too short"


def test_feed_raises_and_loses_the_frames_before() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(encode(Ping(1)) + header(0, FrameType.PING))
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (header(0, FrameType.PING, 0, 1), "PING must use handle 0"),
        (header(0, FrameType.CANCEL), "CANCEL needs a handle"),
        (header(2, FrameType.GOAWAY) + b"\x00\x00", "body too short"),
        (header(8, FrameType.GOAWAY) + b"\x00" * 6 + b"\x00\x09", "string runs past the end"),
        (header(6, FrameType.HELLO) + b"STRp\x00\x01", "HELLO does not start with the magic"),
        (
            header(10, FrameType.WELCOME) + b"\x00\x01\x00\x02\x00\x01\x00\x00\x00\x00",
            "settings run past the end",
        ),
        (header(11, FrameType.GOAWAY) + b"\x00" * 6 + b"\x00\x03\xff\xfe\xfd", "not valid UTF-8"),
        (header(1, FrameType.CANCEL, 0, 1) + b"\x00", "trailing bytes after the last field"),
        (header(17, FrameType.GAP, 0, 1) + b"\x00" * 16 + b"\x09", "unknown gap reason 9"),
        (header(17, FrameType.GAP, 0, 1) + b"\x00" * 16 + b"\x01", "1 <= from_seq <= to_seq"),
        (header(7, FrameType.DATA, 0, 1) + b"\x00" * 7, "DATA needs a handle and a seq >= 1"),
        (header(U32, 0x40), "frame body of 4294967295 bytes exceeds 65536"),
        (
            header(22, FrameType.SUBSCRIBE, 0, 1) + b"\x00" * 16 + b"\x09\x00" + b"\x00" * 4,
            "unknown overflow policy 9",
        ),
    ],
)
def test_error_messages_state_the_violated_constraint(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=re.escape(message)) as info:
        FrameDecoder().feed(raw)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


# -- constructors -------------------------------------------------------------------------------

LONG_ASCII = "x" * (U16 + 1)
LONG_UTF8 = "é" * (U16 // 2 + 1)  # 32768 characters, 65536 bytes
TOO_MANY = tuple((1, 1) for _ in range(U16 + 1))


def _bad(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
    name = ",".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    return pytest.param(cls, args, kwargs, id=f"{cls.__name__}({name[:40]})")


INVALID_CONSTRUCTIONS = [
    # u8
    _bad(Subscribe, 1, "c", "s", priority=U8 + 1),
    _bad(Subscribe, 1, "c", "s", priority=-1),
    _bad(Open, 1, "c", priority=U8 + 1),
    _bad(Unknown, U8 + 1),
    _bad(Unknown, -1),
    _bad(Unknown, 0x7F, flags=U8 + 1),
    # u16
    _bad(Hello, min_version=U16 + 1),
    _bad(Hello, max_version=-1),
    _bad(Welcome, version=U16 + 1),
    _bad(Goaway, code=U16 + 1),
    _bad(Reject, 1, U16 + 1),
    _bad(Reject, 1, -1),
    _bad(Error, 1, U16 + 1),
    _bad(UploadCancel, 1, U16 + 1),
    # u32
    _bad(Goaway, last_handle=U32 + 1),
    _bad(Goaway, last_handle=-1),
    _bad(Subscribe, 1, "c", "s", credit_chunks=U32 + 1),
    _bad(Subscribe, 1, "c", "s", credit_bytes=-1),
    _bad(Open, 1, "c", credit_chunks=U32 + 1),
    _bad(Open, 1, "c", credit_bytes=U32 + 1),
    _bad(Accept, 1, "s", credit_chunks=U32 + 1),
    _bad(Accept, 1, "s", credit_bytes=U32 + 1),
    _bad(Credit, 1, U32 + 1, 0),
    _bad(Credit, 1, 0, U32 + 1),
    _bad(Unknown, 0x7F, handle=U32 + 1),
    # u64
    _bad(Ping, U64 + 1),
    _bad(Ping, -1),
    _bad(Pong, U64 + 1),
    _bad(Subscribe, 1, "c", "s", after_seq=U64 + 1),
    _bad(Accept, 1, "s", first_seq=U64 + 1),
    _bad(Accept, 1, "s", last_seq=-1),
    _bad(Data, 1, U64 + 1, (b"",)),
    _bad(Data, 1, -1, (b"",)),
    _bad(Gap, 1, U64 + 1, U64 + 1, GapReason.EVICTED),
    _bad(Gap, 1, 1, U64 + 1, GapReason.EVICTED),
    _bad(End, 1, U64 + 1),
    _bad(Error, 1, 1, last_seq=U64 + 1),
    # handles
    *(
        _bad(cls, handle, *rest)
        for cls, rest in [
            (Subscribe, ("c", "s")),
            (Open, ("c",)),
            (Upload, ("c",)),
            (Accept, ("s",)),
            (Reject, (100,)),
            (Data, (1, (b"",))),
            (Gap, (1, 1, GapReason.EVICTED)),
            (End, (0,)),
            (Error, (111,)),
            (Cancel, ()),
            (Unsubscribe, ()),
            (UploadCancel, ()),
            (Credit, ()),
        ]
        for handle in (0, U32 + 1, -1)
    ),
    # strings longer than 65535 bytes of UTF-8
    _bad(Hello, resume_token=LONG_ASCII),
    _bad(Welcome, session_id=LONG_UTF8),
    _bad(Welcome, resume_token=LONG_ASCII),
    _bad(Goaway, message=LONG_UTF8),
    _bad(Subscribe, 1, LONG_ASCII, ""),
    _bad(Subscribe, 1, "", LONG_UTF8),
    _bad(Open, 1, LONG_UTF8),
    _bad(Open, 1, "c", LONG_ASCII),
    _bad(Upload, 1, LONG_ASCII),
    _bad(Upload, 1, "c", LONG_UTF8),
    _bad(Accept, 1, LONG_UTF8),
    _bad(Reject, 1, 100, LONG_ASCII),
    _bad(Error, 1, 111, message=LONG_UTF8),
    _bad(UploadCancel, 1, message=LONG_ASCII),
    # settings
    _bad(Hello, settings=[(1, 2)]),
    _bad(Hello, settings=TOO_MANY),
    _bad(Hello, settings=([1, 2],)),
    _bad(Hello, settings=((1, 2, 3),)),
    _bad(Hello, settings=((1,),)),
    _bad(Hello, settings=((U16 + 1, 0),)),
    _bad(Hello, settings=((-1, 0),)),
    _bad(Welcome, settings=((1, U32 + 1),)),
    _bad(Welcome, settings=((1, -1),)),
    _bad(Welcome, settings=None),
    # chunks
    _bad(Data, 1, 1, ()),
    _bad(Data, 1, 1, [b"x"]),
    _bad(Data, 1, 1, b"x"),
    _bad(Data, 1, 1, (b"x", b"y"), more=True),
    _bad(Data, 1, U64, (b"x", b"y")),
    _bad(Data, 1, U64 - 1, (b"x", b"y", b"z")),
    # enums
    _bad(Subscribe, 1, "c", "s", policy=4),
    _bad(Open, 1, "c", policy=-1),
    _bad(Gap, 1, 1, 1, 0),
    _bad(Gap, 1, 1, 1, 3),
]


@pytest.mark.parametrize(("cls", "args", "kwargs"), INVALID_CONSTRUCTIONS)
def test_constructors_reject_out_of_range_values(
    cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"must|is not a valid|carries exactly one"):
        cls(*args, **kwargs)


def test_constructors_accept_the_bounds() -> None:
    longest = "é" * (U16 // 2) + "x"  # 65535 bytes
    frames: list[Frame] = [
        Hello(0, U16, ((0, 0), (U16, U32)), longest, b""),
        Welcome(U16, True, (), longest, longest),
        Subscribe(U32, longest, longest, U64, True, U32, U32, OverflowPolicy.ERROR, U8),
        Data(U32, U64, (b"",), more=True),
        Data(1, U64 - 2, (b"", b"", b"")),
        Gap(1, U64, U64, GapReason.OVERFLOW),
        Unknown(U8, U8, U32, b""),
        Unknown(0, 0, 0),
    ]
    limit = FrameDecoder(MAX_FRAME_SIZE_LIMIT)
    for frame in frames[2:]:
        assert limit.feed(encode(frame)) == [frame]
    # HELLO and WELCOME may hold such strings, but no receiver takes them (R-FRAME-7).
    for frame in frames[:2]:
        with pytest.raises(FrameError) as info:
            FrameDecoder(MAX_FRAME_SIZE_LIMIT).feed(encode(frame))
        assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_enum_fields_are_converted() -> None:
    assert Subscribe(1, "c", "s", policy=2).policy is OverflowPolicy.BLOCK
    assert Open(1, "c", policy=1).policy is OverflowPolicy.DROP_OLDEST
    assert Gap(1, 1, 1, 2).reason is GapReason.OVERFLOW


def test_frames_are_frozen() -> None:
    frame = Ping(1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        frame.payload = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cls", "args"),
    [
        (Data, (1, 0, (b"x",))),
        (Gap, (1, 0, 5, GapReason.EVICTED)),
        (Gap, (1, 5, 4, GapReason.EVICTED)),
        (Goaway, (0, 0, "\ud800")),
        (Reject, (1, 100, "a\udfffb")),
        (Unknown, (0x03,)),
    ],
    ids=[
        "data-seq-0",
        "gap-from-0",
        "gap-from-after-to",
        "lone-surrogate",
        "lone-surrogate-2",
        "unknown-with-a-known-type",
    ],
)
def test_constructors_reject_what_the_decoder_rejects(cls: type[Any], args: tuple[Any]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        cls(*args)


# -- __str__ ------------------------------------------------------------------------------------

HUGE = b"\xff" * 1_000_000
LONGEST = "é" * (U16 // 2)
H = U32

STR_CASES: list[tuple[Frame, list[str]]] = [
    (Hello(1, 2, ((1, 65536), (3, 30000)), LONGEST, HUGE), ["HELLO", "v1-2", "1000000B"]),
    (Welcome(1, True, ((1, 2),), LONGEST, LONGEST), ["WELCOME", "v1", "resumed=True"]),
    (Ping(U64), ["PING", str(U64)]),
    (Pong(U64), ["PONG", str(U64)]),
    (Goaway(U16, U32, LONGEST), ["GOAWAY", "code=65535", f"last={U32}", "'éé"]),
    (
        Subscribe(H, LONGEST, LONGEST, 123, False, 10, 20, 1, 0),
        ["SUBSCRIBE", f"h={H}", "after=123"],
    ),
    (Subscribe(5, "news", "s", tail=True), ["SUBSCRIBE", "h=5", "'news'/'s'", "tail", "DEFAULT"]),
    (Open(H, LONGEST, LONGEST, U32, U32, 2, U8, HUGE), ["OPEN", f"h={H}", "args=b'\\xff"]),
    (Upload(H, LONGEST, LONGEST, HUGE), ["UPLOAD", f"h={H}"]),
    (Accept(H, LONGEST, U64, U64, U32, U32), ["ACCEPT", f"h={H}", f"seq={U64}..{U64}"]),
    (Reject(H, U16, LONGEST), ["REJECT", f"h={H}", "code=65535"]),
    (Data(H, U64 - 2, (HUGE, HUGE, HUGE)), ["DATA", f"h={H}", f"..{U64}", "3x", "3000000B"]),
    (Data(H, U64, (HUGE,), more=True), ["DATA", f"h={H}", "1x", "1000000B MORE"]),
    (Gap(H, U64, U64, GapReason.OVERFLOW), ["GAP", f"h={H}", "OVERFLOW"]),
    (End(H, U64), ["END", f"h={H}", f"last={U64}"]),
    (Error(H, U16, U64, LONGEST), ["ERROR", f"h={H}", "code=65535", f"last={U64}"]),
    (Cancel(H), ["CANCEL", f"h={H}"]),
    (Unsubscribe(H), ["UNSUBSCRIBE", f"h={H}"]),
    (UploadCancel(H, U16, LONGEST), ["UPLOAD_CANCEL", f"h={H}", "code=65535"]),
    (UploadAck(H, U64), ["UPLOAD_ACK", f"h={H}", f"seq={U64}"]),
    (UploadResult(H, b"r" * 300), ["UPLOAD_RESULT", f"h={H}"]),
    (Credit(H, U32, U32), ["CREDIT", f"h={H}", f"+{U32}/+{U32}B"]),
    (Unknown(U8, U8, H, HUGE), ["UNKNOWN", "type=0xff", f"h={H}", "1000000B"]),
    (Open(3, "llm:chat", "a", join=True), ["OPEN", "h=3", "join"]),
    (Accept(3, "a", 1, 12, joined=True), ["ACCEPT", "seq=1..12", "joined"]),
    (Query(H, QueryOp.LIST, LONGEST, LONGEST, 6, 100), ["QUERY", f"h={H}", "LIST"]),
    (
        Streams(H, (StreamEntry(LONGEST, StreamState.FAILED, 1001, 1, 9),) * 500, LONGEST),
        ["STREAMS", f"h={H}", "500 entries", "next='"],
    ),
]


@pytest.mark.parametrize(("frame", "facts"), STR_CASES, ids=lambda x: type(x).__name__)
def test_str_is_short_and_informative(frame: Frame, facts: list[str]) -> None:
    text = str(frame)
    assert len(text) < 120, text
    assert "\n" not in text
    for fact in facts:
        assert fact in text


def test_str_covers_every_frame_class() -> None:
    assert {type(frame) for frame, _ in STR_CASES} == set(FRAME_STRATEGIES)
    entry = StreamEntry("s", StreamState.ABORTED, 106, 1, 4)
    assert str(entry) == "'s' ABORTED code=106 seq=1..4"
    assert str(StreamEntry("s", StreamState.OPEN)) == "'s' OPEN seq=1..0"


@pytest.mark.parametrize(
    "frame",
    [
        Hello(settings=tuple((i, U32) for i in range(40))),
        Subscribe(H, LONGEST, LONGEST, U64, False, U32, U32, OverflowPolicy.DROP_OLDEST, U8),
    ],
    ids=["hello-many-settings", "subscribe-max-ints-long-strings"],
)
def test_str_is_short_in_the_worst_case(frame: Frame) -> None:
    assert len(str(frame)) < 120, str(frame)


# -- the error registry -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ErrorCode, ids=lambda c: c.name)
def test_every_code_has_a_registry_row(code: ErrorCode) -> None:
    expected_kind = (
        ErrorKind.CONNECTION if code < 100 else ErrorKind.STREAM if code < 200 else ErrorKind.LOCAL
    )
    assert code < 300
    assert code.kind is expected_kind
    assert isinstance(code.retryable, bool)
    assert code.summary
    assert "\n" not in code.summary
    assert code.doc_path == f"docs/errors/{code.name.lower().replace('_', '-')}.md"
    assert code_name(code) == code.name
    assert is_retryable(code) is code.retryable
    assert not is_application_code(code)


def test_error_code_examples() -> None:
    assert ErrorCode.FRAME_TOO_LARGE.doc_path == "docs/errors/frame-too-large.md"
    assert ErrorCode.HANDSHAKE_TIMEOUT.retryable
    assert not ErrorCode.PROTOCOL_ERROR.retryable
    assert ErrorCode.UPLOAD_DISCONNECTED.kind is ErrorKind.STREAM
    assert ErrorCode.INVALID_ARGUMENT.kind is ErrorKind.LOCAL
    assert ErrorCode.MALFORMED_FRAME.summary == "a frame's fields could not be decoded"


@pytest.mark.parametrize(
    ("code", "name", "application", "retryable"),
    [
        (0, "NO_ERROR", False, False),
        (5, "HANDSHAKE_TIMEOUT", False, True),
        (99, "UNKNOWN_99", False, False),
        (299, "UNKNOWN_299", False, False),
        (999, "UNKNOWN_999", False, False),
        (APPLICATION_CODE_MIN, "APPLICATION_1000", True, False),
        (4242, "APPLICATION_4242", True, False),
        (APPLICATION_CODE_MAX, "APPLICATION_65535", True, False),
        (APPLICATION_CODE_MAX + 1, "UNKNOWN_65536", False, False),
        (-1, "UNKNOWN_-1", False, False),
    ],
)
def test_code_helpers(code: int, name: str, application: bool, retryable: bool) -> None:
    assert code_name(code) == name
    assert is_application_code(code) is application
    assert is_retryable(code) is retryable


def test_exceptions() -> None:
    error = LocalProtocolError(ErrorCode.STREAM_CLOSED, "write after close")
    assert str(error) == "[STREAM_CLOSED] write after close"
    assert error.code == ErrorCode.STREAM_CLOSED
    assert error.message == "write after close"
    assert not error.retryable
    assert isinstance(error, ProtocolError)
    assert isinstance(error, StreamProtoError)
    assert isinstance(error, Exception)

    remote = RemoteProtocolError(ErrorCode.INTERNAL_ERROR, "boom")
    assert remote.retryable
    assert str(remote) == "[INTERNAL_ERROR] boom"

    app = StreamProtoError(1234, "quota")
    assert str(app) == "[APPLICATION_1234] quota"
    assert app.code == 1234
    assert not app.retryable

    frame_error = FrameError(ErrorCode.FRAME_TOO_LARGE, "too big")
    assert isinstance(frame_error, RemoteProtocolError)
    assert not isinstance(frame_error, LocalProtocolError)
    assert frame_error.args == ("[FRAME_TOO_LARGE] too big",)


# -- unknown-frame budget and handshake size (R-FWD-30, R-FRAME-7) ------------------------------


BUDGET = (MIN_UNKNOWN_FRAMES, MIN_UNKNOWN_BYTES)


def test_unknown_budget_must_allow_the_minimum() -> None:
    for budget in [(MIN_UNKNOWN_FRAMES - 1, MIN_UNKNOWN_BYTES), (MIN_UNKNOWN_FRAMES, 1)]:
        with pytest.raises(ValueError, match="unknown_budget"):
            FrameDecoder(unknown_budget=budget)


def test_a_budgeted_decoder_skips_unknown_frames_unbuilt() -> None:
    decoder = FrameDecoder(unknown_budget=BUDGET)
    raw = encode(Unknown(0x40, 1, 2, b"x")) + encode(Ping(1)) + encode(Unknown(0x41))
    assert decoder.feed(raw) == [Ping(1)]
    assert decoder.buffered == 0
    # Without a budget they decode as Unknown, as before.
    assert FrameDecoder().feed(raw) == [Unknown(0x40, 1, 2, b"x"), Ping(1), Unknown(0x41)]


@pytest.mark.parametrize("step", [1, 7, 10, 11, 4096])
def test_the_unknown_run_is_counted_across_reads(step: int) -> None:
    unknown = encode(Unknown(0x40, 0, 0, b"ab"))
    raw = unknown * MIN_UNKNOWN_FRAMES + encode(Ping(2)) + unknown * (MIN_UNKNOWN_FRAMES + 1)
    decoder = FrameDecoder(unknown_budget=BUDGET)
    out: list[Frame] = []
    error = None
    for i in range(0, len(raw), step):
        error = decoder.feed_into(raw[i : i + step], out)
        if error is not None:
            break
    assert out == [Ping(2)]
    assert error is not None
    assert error.code == ErrorCode.EXCESSIVE_LOAD
    assert f"{MIN_UNKNOWN_FRAMES + 1} unknown frames" in error.message


def test_an_oversize_unknown_frame_in_a_run_is_too_large() -> None:
    decoder = FrameDecoder(unknown_budget=BUDGET)
    raw = encode(Unknown(0x40)) + struct.pack(">IBBI", DEFAULT_MAX_FRAME_SIZE + 1, 0x40, 0, 0)
    with pytest.raises(FrameError) as info:
        decoder.feed(raw)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("ftype", [FrameType.HELLO, FrameType.WELCOME])
@pytest.mark.parametrize("cut", [5, 9])
def test_an_oversize_handshake_frame_is_refused_from_its_type_byte(
    ftype: FrameType, cut: int
) -> None:
    header = struct.pack(">IBBI", MAX_HANDSHAKE_BODY + 1, ftype, 0, 0)
    decoder = FrameDecoder(MAX_FRAME_SIZE_LIMIT)
    with pytest.raises(FrameError) as info:
        decoder.feed(header[:cut])
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    # Another type with the same length only waits for its body.
    other = struct.pack(">IBBI", MAX_HANDSHAKE_BODY + 1, FrameType.PING, 0, 0)
    assert FrameDecoder(MAX_FRAME_SIZE_LIMIT).feed(other[:cut]) == []


def test_a_streams_answer_is_a_tuple_of_at_most_u16_entries() -> None:
    entry = StreamEntry("s", StreamState.OPEN)
    with pytest.raises(ValueError, match="at most"):
        Streams(1, [entry])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        Streams(1, (entry,) * (U16 + 1))
