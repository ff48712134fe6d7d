"""The golden vectors in spec/vectors/ (format: spec/vectors/README.md), in both directions.

Every valid vector is decoded whole, one byte at a time, in two pseudo-random splits and followed
by the start of another frame; every invalid vector fails with exactly its code, whole and one
byte at a time, and keeps failing.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from streamproto import Connection, Role, Setting
from streamproto._errors import ErrorCode, FrameError
from streamproto._frames import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_HANDSHAKE_BODY,
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
)

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
U16, U32, U64 = 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF

CLASSES: dict[str, type[Any]] = {
    "HELLO": Hello,
    "WELCOME": Welcome,
    "PING": Ping,
    "PONG": Pong,
    "GOAWAY": Goaway,
    "SUBSCRIBE": Subscribe,
    "OPEN": Open,
    "UPLOAD": Upload,
    "ACCEPT": Accept,
    "REJECT": Reject,
    "DATA": Data,
    "GAP": Gap,
    "END": End,
    "ERROR": Error,
    "CANCEL": Cancel,
    "UNSUBSCRIBE": Unsubscribe,
    "UPLOAD_CANCEL": UploadCancel,
    "UPLOAD_ACK": UploadAck,
    "UPLOAD_RESULT": UploadResult,
    "CREDIT": Credit,
    "QUERY": Query,
    "STREAMS": Streams,
    "UNKNOWN": Unknown,
}
BYTE_FIELDS = {"auth", "args", "body"}

# -- reading the vectors (what another implementation writes too) ------------------------------


def from_hex(value: Any) -> bytes:
    """A bytes value: hex, ``{"repeat": hex, "count": n}`` or a list of those."""
    if isinstance(value, str):
        return bytes.fromhex(value)
    if isinstance(value, dict):
        assert set(value) == {"repeat", "count"}, value
        count: int = value["count"]
        return bytes.fromhex(value["repeat"]) * count
    assert isinstance(value, list), value
    return b"".join(from_hex(part) for part in value)


def frame_from_json(obj: dict[str, Any]) -> Frame:
    cls = CLASSES[obj["type"]]
    names = [field.name for field in attrs.fields(cls)]
    keys = ["type_byte" if (cls is Unknown and n == "type") else n for n in names]
    # The vectors use the spec's field names: CREDIT's ``bytes`` is the codec's ``nbytes``.
    pairs = zip(names, keys, strict=True)
    keys = ["bytes" if (cls is Credit and n == "nbytes") else k for n, k in pairs]
    assert sorted(obj) == sorted(["type", *keys]), f"{obj['type']} must list every field"
    kwargs: dict[str, Any] = {}
    for name, key in zip(names, keys, strict=True):
        value = obj[key]
        if name in BYTE_FIELDS or (cls is UploadResult and name == "payload"):
            value = from_hex(value)
        elif cls is Data and name == "chunks":
            value = tuple(from_hex(chunk) for chunk in value)
        elif name == "settings":
            value = tuple((k, v) for k, v in value)
        elif name == "policy":
            value = OverflowPolicy[value]
        elif name == "reason":
            value = GapReason[value]
        elif name == "op":
            value = QueryOp[value]
        elif name == "entries":
            value = tuple(
                StreamEntry(
                    e["stream_id"],
                    StreamState[e["state"]],
                    e["code"],
                    e["first_seq"],
                    e["last_seq"],
                )
                for e in value
            )
        kwargs[name] = value
    frame: Frame = cls(**kwargs)
    return frame


def load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return vectors


FRAME_VECTORS = load("frames.json")
INVALID_VECTORS = load("invalid.json")


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


def random_cuts(name: str, size: int) -> list[list[int]]:
    """Two deterministic pseudo-random splits: in two pieces, and in up to six."""
    rng = random.Random(name)
    return [[rng.randint(0, size)], [rng.randint(0, size) for _ in range(5)]]


def decoder_for(vector: dict[str, Any]) -> FrameDecoder:
    budget = vector.get("unknown_budget")
    return FrameDecoder(
        vector.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE),
        unknown_budget=None if budget is None else (budget[0], budget[1]),
    )


def params(vectors: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(vector, id=vector["name"]) for vector in vectors]


# -- valid frames -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", params(FRAME_VECTORS))
def test_decode_whole(vector: dict[str, Any]) -> None:
    frame = frame_from_json(vector["frame"])
    decoder = decoder_for(vector)
    assert decoder.feed(from_hex(vector["hex"])) == [frame]
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", params(FRAME_VECTORS))
def test_encode(vector: dict[str, Any]) -> None:
    frame = frame_from_json(vector["frame"])
    raw = from_hex(vector["hex"])
    if vector.get("canonical", True):
        assert encode(frame) == raw
    else:
        assert encode(frame) != raw
        assert decoder_for(vector).feed(encode(frame)) == [frame]


@pytest.mark.parametrize("vector", params(FRAME_VECTORS))
def test_decode_byte_at_a_time(vector: dict[str, Any]) -> None:
    frame = frame_from_json(vector["frame"])
    raw = from_hex(vector["hex"])
    decoder = decoder_for(vector)
    out: list[Frame] = []
    for i in range(len(raw)):
        out += decoder.feed(raw[i : i + 1])
        assert decoder.buffered <= HEADER_SIZE + decoder.max_frame_size
    assert normalize(out) == normalize([frame])
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", params(FRAME_VECTORS))
def test_decode_split(vector: dict[str, Any]) -> None:
    frame = frame_from_json(vector["frame"])
    raw = from_hex(vector["hex"])
    for cuts in random_cuts(vector["name"], len(raw)):
        decoder = decoder_for(vector)
        out: list[Frame] = []
        for piece in pieces(raw, cuts):
            out += decoder.feed(piece)
        assert normalize(out) == normalize([frame]), cuts
        assert decoder.buffered == 0


NEXT = encode(Ping(0x1122334455667788))


@pytest.mark.parametrize("vector", params(FRAME_VECTORS))
@pytest.mark.parametrize("keep", [1, 4, 9, HEADER_SIZE, len(NEXT) - 1])
def test_decode_with_trailing_data(vector: dict[str, Any], keep: int) -> None:
    """The start of the next frame stays buffered and completes it later."""
    frame = frame_from_json(vector["frame"])
    decoder = decoder_for(vector)
    assert decoder.feed(from_hex(vector["hex"]) + NEXT[:keep]) == [frame]
    assert decoder.buffered == keep
    assert decoder.feed(NEXT[keep:]) == [Ping(0x1122334455667788)]
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", params(FRAME_VECTORS))
def test_decode_followed_by_whole_frames(vector: dict[str, Any]) -> None:
    frame = frame_from_json(vector["frame"])
    raw = from_hex(vector["hex"])
    decoder = decoder_for(vector)
    ping = Ping(0x1122334455667788)
    assert decoder.feed(NEXT + raw + NEXT) == [ping, frame, ping]
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", params([v for v in FRAME_VECTORS if "keepalive_ms" in v]))
def test_keepalive_vectors(vector: dict[str, Any]) -> None:
    """R-SET-30: the receiver of the HELLO (a server) or WELCOME (a client) takes the value."""
    frame = frame_from_json(vector["frame"])
    conn = Connection(Role.SERVER if isinstance(frame, Hello) else Role.CLIENT)
    conn.receive_data(from_hex(vector["hex"]))
    assert conn.peer_settings[Setting.KEEPALIVE_MS] == vector["keepalive_ms"]


# -- invalid input ------------------------------------------------------------------------------


def expected(vector: dict[str, Any]) -> tuple[ErrorCode, int]:
    return ErrorCode[vector["error"]], vector.get("frames_before", 0)


@pytest.mark.parametrize("vector", params(INVALID_VECTORS))
def test_invalid_whole(vector: dict[str, Any]) -> None:
    code, frames_before = expected(vector)
    raw = from_hex(vector["hex"])
    with pytest.raises(FrameError) as info:
        decoder_for(vector).feed(raw)
    assert info.value.code == code
    decoder = decoder_for(vector)
    out: list[Frame] = []
    error = decoder.feed_into(raw, out)
    assert error is not None
    assert error.code == code
    assert len(normalize(out)) == frames_before
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", params(INVALID_VECTORS))
def test_invalid_byte_at_a_time(vector: dict[str, Any]) -> None:
    code, frames_before = expected(vector)
    raw = from_hex(vector["hex"])
    decoder = decoder_for(vector)
    out: list[Frame] = []
    error = None
    for i in range(len(raw)):
        error = decoder.feed_into(raw[i : i + 1], out)
        if error is not None:
            break
    assert error is not None
    assert error.code == code
    assert len(normalize(out)) == frames_before


@pytest.mark.parametrize("vector", params(INVALID_VECTORS))
def test_invalid_error_is_sticky(vector: dict[str, Any]) -> None:
    """After a framing error nothing decodes again, not even a valid frame."""
    code, _ = expected(vector)
    decoder = decoder_for(vector)
    out: list[Frame] = []
    error = decoder.feed_into(from_hex(vector["hex"]), out)
    assert error is not None
    seen = len(out)
    for more in (b"", NEXT, NEXT[:3]):
        assert decoder.feed_into(more, out) is error
        with pytest.raises(FrameError) as info:
            decoder.feed(more)
        assert info.value is error
        assert info.value.code == code
    assert len(out) == seen
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    "vector",
    [pytest.param(v, id=v["name"]) for v in INVALID_VECTORS if v["error"] == "FRAME_TOO_LARGE"],
)
def test_oversize_is_refused_from_the_header(vector: dict[str, Any]) -> None:
    """The FRAME_TOO_LARGE vectors end with a bare header: no body is ever needed."""
    raw = from_hex(vector["hex"])
    header = raw[-HEADER_SIZE:]
    decoder = decoder_for(vector)
    limit = decoder.max_frame_size
    if header[4] in (FrameType.HELLO, FrameType.WELCOME):
        limit = min(limit, MAX_HANDSHAKE_BODY)  # R-FRAME-7
    assert int.from_bytes(header[:4], "big") > limit
    out: list[Frame] = []
    for i in range(len(raw) - HEADER_SIZE):
        assert decoder.feed_into(raw[i : i + 1], out) is None
    for i in range(HEADER_SIZE - 1):
        assert decoder.feed_into(header[i : i + 1], out) is None
        assert decoder.buffered == i + 1
    error = decoder.feed_into(header[-1:], out)
    assert error is not None
    assert error.code == ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered == 0


# -- the vector files themselves ----------------------------------------------------------------


@pytest.mark.parametrize("vectors", [FRAME_VECTORS, INVALID_VECTORS], ids=["frames", "invalid"])
def test_names_are_unique(vectors: list[dict[str, Any]]) -> None:
    names = [vector["name"] for vector in vectors]
    assert len(names) == len(set(names))


def test_invalid_vector_keys() -> None:
    for vector in INVALID_VECTORS:
        assert set(vector) <= {
            "name", "hex", "error", "max_frame_size", "frames_before", "unknown_budget"
        }  # fmt: skip
        assert vector["error"] in {"MALFORMED_FRAME", "FRAME_TOO_LARGE", "EXCESSIVE_LOAD"}
        # EXCESSIVE_LOAD only comes from a decoder that counts unknown frames (R-FWD-30).
        assert ("unknown_budget" in vector) == (vector["error"] == "EXCESSIVE_LOAD")
        from_hex(vector["hex"])


def test_frame_vectors_cover_every_type_flag_and_enum() -> None:
    frames = [frame_from_json(vector["frame"]) for vector in FRAME_VECTORS]
    assert {vector["frame"]["type"] for vector in FRAME_VECTORS} == set(CLASSES)
    assert {f.policy for f in frames if isinstance(f, Subscribe | Open)} == set(OverflowPolicy)
    assert {f.reason for f in frames if isinstance(f, Gap)} == set(GapReason)
    assert any(isinstance(f, Welcome) and f.resumed for f in frames)
    assert any(isinstance(f, Subscribe) and f.tail for f in frames)
    for flag in ("resumable", "result", "resume"):
        assert any(isinstance(f, Upload) and getattr(f, flag) for f in frames), flag
    assert any(isinstance(f, Data) and f.more for f in frames)
    assert any(isinstance(f, Data) and len(f.chunks) > 1 for f in frames)
    assert any(isinstance(f, Data) and f.chunks == (b"",) for f in frames)
    assert any(isinstance(f, Data) and f.seq == U64 for f in frames)
    assert any(isinstance(f, Ping) and f.payload == U64 for f in frames)
    assert {getattr(f, "handle", 0) for f in frames} >= {1, U32}
    assert any(getattr(f, "code", 0) == U16 for f in frames)
    known = set(FrameType)
    assert all(f.type not in known for f in frames if isinstance(f, Unknown))
    assert any(not vector.get("canonical", True) for vector in FRAME_VECTORS)
    maxed = [v for v in FRAME_VECTORS if "max_frame_size" in v]
    assert maxed
    for vector in maxed:
        assert len(from_hex(vector["hex"])) == HEADER_SIZE + vector["max_frame_size"]


def test_type_byte_matches_the_frame_class() -> None:
    for vector in FRAME_VECTORS:
        cls = CLASSES[vector["frame"]["type"]]
        raw = from_hex(vector["hex"])
        if cls is Unknown:
            assert raw[4] == vector["frame"]["type_byte"]
            assert raw[4] not in set(FrameType)
        else:
            assert cls.TYPE is FrameType[vector["frame"]["type"]]
            assert raw[4] == cls.TYPE


def test_generate_reproduces_the_committed_files() -> None:
    """spec/vectors/generate.py and the committed JSON agree, so neither drifts."""
    spec = importlib.util.spec_from_file_location("_generate_vectors", VECTORS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.outputs().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"run spec/vectors/generate.py ({path.name})"
        )
    for vector in FRAME_VECTORS:
        assert module.frame_to_json(frame_from_json(vector["frame"])) == vector["frame"]
