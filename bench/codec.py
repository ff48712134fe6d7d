"""The ``codec`` workload: DATA frames through ``encode_data`` and ``FrameDecoder`` against the
cheapest pure-Python framing of the same payloads (a ``struct`` length prefix).

The bare framing is the floor for any framing written in Python: one ``pack`` and one
concatenation per frame to encode, one ``unpack_from`` and one slice per frame to decode. The
headline figure is (ours encode + decode) / (bare encode + decode) per payload size.

Ours decodes the joined batch with one ``FrameDecoder.feed``: consecutive DATA frames of one
handle arrive as one run, the receive path's best and common case. The informational row feeds
one frame per call (a transport that delivers one message per frame), which builds one ``Data``
object per frame.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from bench import Config, Report, measure, workload
from streamproto._frames import Data, Frame, FrameDecoder, encode_data

SIZES = (64, 4096)
FRAMES_PER_BATCH = 1000
_LENGTH = struct.Struct(">I")
_pack = _LENGTH.pack


def bare_encode(payload: bytes) -> bytes:
    return _pack(len(payload)) + payload


def bare_decode(buf: bytes) -> list[bytes]:
    unpack_from = _LENGTH.unpack_from
    out: list[bytes] = []
    append = out.append
    off = 0
    end = len(buf)
    while off < end:
        (size,) = unpack_from(buf, off)
        off += 4
        append(buf[off : off + size])
        off += size
    return out


def _cases(size: int, count: int) -> dict[str, tuple[Callable[[], object], int]]:
    rng = random.Random(size)
    payloads = [rng.randbytes(size) for _ in range(count)]
    items = list(enumerate(payloads, 1))
    join = b"".join

    def ours_encode() -> bytes:
        return join([encode_data(1, seq, p) for seq, p in items])

    def bare_encode_batch() -> bytes:
        return join([bare_encode(p) for _seq, p in items])

    ours_buf = ours_encode()
    bare_buf = bare_encode_batch()
    ours_frames = [encode_data(1, seq, p) for seq, p in items]

    def ours_decode() -> object:
        return FrameDecoder().feed(ours_buf)

    def bare_decode_batch() -> object:
        return bare_decode(bare_buf)

    def ours_decode_per_frame() -> list[list[Frame]]:
        feed = FrameDecoder().feed
        return [feed(frame) for frame in ours_frames]

    # Check that every case does the work it claims before timing it.
    per_frame = [frame for frames in ours_decode_per_frame() for frame in frames]
    if (
        ours_decode() != [Data(1, 1, tuple(payloads))]
        or bare_decode_batch() != payloads
        or per_frame != [Data(1, seq, (p,)) for seq, p in items]
        or len(ours_buf) != len(bare_buf) + count * 14
    ):
        raise RuntimeError(f"codec workload self-check failed for {size}-byte payloads")

    label = f"{size} B"
    return {
        f"{label} encode ours": (ours_encode, count),
        f"{label} encode bare": (bare_encode_batch, count),
        f"{label} decode ours": (ours_decode, count),
        f"{label} decode bare": (bare_decode_batch, count),
        f"{label} decode ours, 1 feed per frame": (ours_decode_per_frame, count),
    }


@workload("codec", "encode/decode DATA frames vs a bare struct length prefix (ns/frame)")
def run(config: Config) -> Report:
    count = FRAMES_PER_BATCH
    cases: dict[str, tuple[Callable[[], object], int]] = {}
    for size in SIZES:
        cases.update(_cases(size, count))
    info = frozenset(name for name in cases if name.endswith("1 feed per frame"))
    measurements = measure(cases, config, info=info)
    median = {m.name: m.median for m in measurements}
    derived = {}
    for size in SIZES:
        label = f"{size} B"
        ours = median[f"{label} encode ours"] + median[f"{label} decode ours"]
        bare = median[f"{label} encode bare"] + median[f"{label} decode bare"]
        derived[f"{label} ratio ours/bare (encode+decode)"] = ours / bare
    return Report(measurements, derived, {"frames_per_batch": count, "payload_sizes": SIZES})
