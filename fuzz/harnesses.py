"""Fuzz targets: one invariant each — the input is accepted, or rejected with a documented
error code; no other exception escapes, and buffers stay within their configured bounds.

Each target takes raw bytes. ``run.py`` drives them with atheris (coverage-guided); the test
suite replays the seed corpus and a bounded smoke run through the same functions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from streamproto import (
    ChannelOptions,
    Config,
    Connection,
    ConnectionTerminated,
    ErrorCode,
    FrameError,
    HandshakeRequested,
    Hub,
    OpenRequested,
    Role,
    SubscribeRequested,
    UploadRequested,
    Window,
)
from streamproto._frames import (
    HEADER_SIZE,
    Data,
    FrameDecoder,
    Hello,
    Welcome,
    encode,
)

MAX_FRAME = 16_384
CONFIG = Config(
    max_frame_size=MAX_FRAME,
    max_chunk_size=65_536,
    window_chunks=8,
    window_bytes=4096,
    max_queued_chunks=8,
    max_queued_bytes=4096,
    max_connection_queued_bytes=65_536,
    max_subscriptions=16,
    max_uploads=4,
)
DOCUMENTED = frozenset(ErrorCode)
HELLO = encode(Hello())
WELCOME = encode(Welcome(session_id="s", resume_token="t"))


class InvariantError(AssertionError):
    """A fuzz invariant was broken (this is a finding)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantError(message)


def _splits(data: bytes) -> list[bytes]:
    """Split ``data`` at points drawn from its first byte, so the fuzzer explores splits."""
    if not data:
        return [b""]
    step = data[0] % 7 + 1
    body = data[1:]
    pieces = []
    offset = 0
    for size in itertools.cycle((step, step * 3 + 1, 1, step * 11)):
        if offset >= len(body):
            break
        pieces.append(body[offset : offset + size])
        offset += size
    return pieces or [b""]


def _normalize(frames: list[object]) -> list[object]:
    out: list[object] = []
    for frame in frames:
        if isinstance(frame, Data) and not frame.more:
            out.extend(Data(frame.handle, frame.seq + i, (c,)) for i, c in enumerate(frame.chunks))
        else:
            out.append(frame)
    return out


def fuzz_decoder(data: bytes) -> None:
    """Decoder: frames or FrameError with a documented code; the buffer stays bounded; what
    decodes re-encodes to bytes that decode to the same frames."""
    decoder = FrameDecoder(MAX_FRAME)
    frames: list[object] = []
    for piece in _splits(data):
        try:
            frames.extend(decoder.feed(piece))
        except FrameError as exc:
            _check(exc.code in (ErrorCode.MALFORMED_FRAME, ErrorCode.FRAME_TOO_LARGE), repr(exc))
            break
        _check(decoder.buffered <= HEADER_SIZE + MAX_FRAME, f"buffered {decoder.buffered}")
    again = FrameDecoder(1 << 24).feed(b"".join(encode(f) for f in frames))  # type: ignore[arg-type]
    _check(_normalize(again) == _normalize(frames), "re-encoding changed the frames")


def _drive(conn: Connection, data: bytes, on_event: Callable[[object], None]) -> None:
    for piece in _splits(data):
        events = conn.receive_data(piece) if piece else []
        for event in events:
            if isinstance(event, ConnectionTerminated) and not event.by_peer:
                # Our own verdicts carry documented codes; a peer's GOAWAY may carry any code
                # (application codes refuse handshakes too), which is reported as sent.
                _check(event.code in DOCUMENTED, f"undocumented code {event.code}")
            on_event(event)
        conn.data_to_send()
        stats = conn.statistics()
        _check(stats.queued_bytes <= CONFIG.max_connection_queued_bytes, "queue unbounded")
        _check(stats.buffered_bytes <= HEADER_SIZE + MAX_FRAME, "decoder unbounded")
        if conn.closed:
            return
    conn.handle_timer(1e9)  # every timer fires; nothing may raise


def fuzz_server(data: bytes) -> None:
    """A server connection fed a valid HELLO (when the first byte is even) then fuzz bytes.
    It accepts the handshake and every request, and writes to what it accepted."""
    conn = Connection(Role.SERVER, CONFIG)
    prefix = HELLO if data[:1] and data[0] % 2 == 0 else b""

    def on_event(event: object) -> None:
        if isinstance(event, HandshakeRequested):
            conn.accept_handshake(session_id="s", resume_token="t")
        elif isinstance(event, SubscribeRequested | OpenRequested | UploadRequested):
            conn.accept(event.handle, stream_id="x", first_seq=3, last_seq=9)
            if not isinstance(event, UploadRequested):
                for _ in range(3):
                    conn.send_data(event.handle, b"payload" * 50)

    _drive(conn, prefix + data, on_event)


def fuzz_client(data: bytes) -> None:
    """A client connection fed a WELCOME (when the first byte is even) then fuzz bytes, with
    a subscription, an open and an upload in flight."""
    conn = Connection(Role.CLIENT, CONFIG)
    conn.data_to_send()
    if data[:1] and data[0] % 2 == 0:
        conn.receive_data(WELCOME)
        conn.subscribe("fuzz:a", "s1", after_seq=2)
        conn.open("fuzz:a", b"args")
        upload = conn.upload("fuzz:a", "u1")
        conn.send_data(upload, b"up" * 100)
    _drive(conn, data, lambda event: None)


def fuzz_hub(data: bytes) -> None:
    """A hub behind a server connection, fed a valid HELLO then fuzz bytes."""
    clock = itertools.count()
    ids = itertools.count()
    hub = Hub(clock=lambda: float(next(clock)), ids=lambda: f"id{next(ids)}")
    channel = hub.register("fuzz:a", ChannelOptions(replay=Window(chunks=4, nbytes=1024)))
    hub.register(
        "fuzz:b", on_open=lambda producer, args: producer.write(args), on_upload=lambda r: None
    )
    producer = channel.start("s1")
    for i in range(6):
        producer.write(b"chunk %d" % i)
    conn = Connection(Role.SERVER, CONFIG)
    peer = hub.attach(conn)
    _drive(conn, HELLO + data, lambda event: peer.handle_events([event]))  # type: ignore[list-item]
    producer.write(b"after")
    hub.handle_timer()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decoder": fuzz_decoder,
    "server": fuzz_server,
    "client": fuzz_client,
    "hub": fuzz_hub,
}
