"""The wire conformance runner: drive any streamproto server through numbered cases.

    python -m streamproto conformance tcp://127.0.0.1:9000 [--json report.json] [--case C07]

Every case opens its own connection, speaks raw frames, and checks the server's answer against
one or more spec rules (h2spec and Autobahn are the models). The server must expose the
channels described in ``spec/CONFORMANCE.md``;
``streamproto.testing.reference.register_reference_channels`` adds them to a hub, which is
what our reference server (``python -m transports.reference``) does. This module does I/O
(blocking sockets), so it lives beside the adapters, not in the sans-IO core.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs

from streamproto._errors import ErrorCode, LocalProtocolError
from streamproto._frames import (
    Accept,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    Feature,
    Frame,
    FrameDecoder,
    Gap,
    GapReason,
    Goaway,
    Hello,
    Open,
    Ping,
    Pong,
    Query,
    QueryOp,
    Reject,
    Setting,
    Streams,
    StreamState,
    Subscribe,
    Unknown,
    Upload,
    UploadAck,
    UploadCancel,
    UploadResult,
    Welcome,
    encode,
)
from streamproto.testing.reference import (
    BIG,
    FAIL_CODE,
    FAIL_MESSAGE,
    FIVE,
    MANY,
    UPLOAD_CANCEL_AFTER,
    slow_chunk,
    upload_result,
)

from ._schemes import Url, endpoint, parse_url

__all__ = ["CASES", "SCHEMES", "CaseResult", "RawPeer", "Report", "run"]

# -- a raw peer ---------------------------------------------------------------------------------


class _Closed(Exception):
    pass


#: The URL schemes the runner dials: binary frames over TCP (``tcp``) or a Unix socket
#: (``unix``), and WebSocket (``ws``, and ``http``, whose listener upgrades on its path).
SCHEMES = ("http", "tcp", "unix", "ws")


def _target(url: str) -> Url:
    """``url`` parsed (``transports._schemes.parse_url``); a malformed URL, or one of a
    scheme the runner cannot dial, raises INVALID_ARGUMENT."""
    target = parse_url(url)
    if target.scheme not in SCHEMES:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"the runner dials {', '.join(f'{s}://' for s in SCHEMES)} URLs, not {url!r}",
        )
    return target


def _dial(target: Url, timeout: float) -> socket.socket:
    # The thread backend's blocking dialers (TCP, AF_UNIX) are the ones the runner needs.
    from . import sync  # noqa: PLC0415 - registers them

    sock: socket.socket = endpoint(sync.BACKEND, target).connect(target, timeout)
    return sock


class RawPeer:
    """A minimal blocking client speaking raw frames over TCP, a Unix socket or WebSocket
    (URL schemes :data:`SCHEMES`; any other raises INVALID_ARGUMENT)."""

    def __init__(self, url: str, timeout: float) -> None:
        target = _target(url)
        self.url = url
        self.timeout = timeout
        #: The subprotocol the server selected (WebSocket only).
        self.subprotocol: str | None = None
        self.sock = _dial(target, timeout)
        self.decoder = FrameDecoder(16_777_216)
        self.frames: list[Frame] = []
        self.eof = False
        self.ws: Any = None
        if target.kind != "binary":  # an HTTP listener upgrades on its path (R-HTTP-70)
            self._ws_handshake(f"{target.host}:{target.port}", target.path)

    def _ws_handshake(self, host: str, path: str) -> None:
        from wsproto import ConnectionType, WSConnection  # noqa: PLC0415 - optional extra
        from wsproto.events import Request  # noqa: PLC0415

        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(
            self.ws.send(Request(host=host, target=path, subprotocols=["streamproto.v1"]))
        )
        while True:
            self._feed_ws(self._recv())
            if getattr(self, "_accepted", False):
                return

    def _feed_ws(self, data: bytes) -> bytes:
        from wsproto.events import (  # noqa: PLC0415 - optional extra
            AcceptConnection,
            BytesMessage,
            CloseConnection,
        )
        from wsproto.events import Ping as WsPing  # noqa: PLC0415

        self.ws.receive_data(data or None)
        out = []
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self._accepted = True
                self.subprotocol = event.subprotocol
            elif isinstance(event, BytesMessage):
                out.append(bytes(event.data))
            elif isinstance(event, WsPing):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._ws_closed = True
        return b"".join(out)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def send_raw(self, data: bytes) -> None:
        if self.ws is not None:
            from wsproto.events import BytesMessage  # noqa: PLC0415 - optional extra

            data = self.ws.send(BytesMessage(data=data))
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            self.sock.sendall(data)

    def send(self, *frames: Frame) -> None:
        self.send_raw(b"".join(encode(f) for f in frames))

    def _pull(self, deadline: float) -> bool:
        """Read once; True if bytes arrived. Raises _Closed once the server closed and
        everything it sent was handed out."""
        if self.eof:
            raise _Closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self._recv()
        except TimeoutError:
            return False
        payload = data
        if self.ws is not None:
            payload = self._feed_ws(data)
            self.eof = not data or getattr(self, "_ws_closed", False)
        else:
            self.eof = not data
        self.frames.extend(self.decoder.feed(payload))
        return True

    def expect(self, kind: type, timeout: float | None = None) -> Any:
        """The next frame; it must be of ``kind`` (flattening DATA runs)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.frames:
            if not self._pull(deadline):
                raise AssertionError(f"expected {kind.__name__}, got nothing in time")
        frame = self.frames.pop(0)
        if isinstance(frame, Data) and len(frame.chunks) > 1:
            rest = Data(frame.handle, frame.seq + 1, frame.chunks[1:])
            self.frames.insert(0, rest)
            frame = Data(frame.handle, frame.seq, frame.chunks[:1])
        if not isinstance(frame, kind):
            raise AssertionError(f"expected {kind.__name__}, got {frame}")
        return frame

    def expect_quiet(self, seconds: float) -> None:
        """Nothing more arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.frames and self._pull(deadline):
            pass
        if self.frames:
            raise AssertionError(f"expected nothing, got {self.frames[0]}")

    def expect_closed(self, timeout: float | None = None) -> None:
        """The server closes the transport (after whatever it sent)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while self._pull(deadline):
                pass
        except _Closed:
            return
        raise AssertionError("the server did not close the connection")

    def handshake(self) -> Welcome:
        self.send(Hello())
        welcome: Welcome = self.expect(Welcome)
        return welcome

    def close(self) -> None:
        self.sock.close()


# -- cases --------------------------------------------------------------------------------------


@attrs.frozen
class Case:
    """One conformance case: an id, the spec rules it checks, what it checks, and the check."""

    id: str
    rules: tuple[str, ...]
    title: str
    check: Callable[[RawPeer], None]
    #: The URL schemes the case applies to (a WebSocket rule has nothing to check over TCP;
    #: an ``http://`` server runs the binary cases over its WebSocket upgrade, and the H cases).
    schemes: tuple[str, ...] = SCHEMES
    #: The FEATURES bit of the optional part it checks (0: none): a server that does not
    #: announce it skips the case (R-VER-5).
    feature: int = 0


CASES: list[Case] = []


def case(
    case_id: str, *rules: str, schemes: tuple[str, ...] = SCHEMES, feature: int = 0
) -> Callable[[Callable[[RawPeer], None]], Callable[[RawPeer], None]]:
    def register(check: Callable[[RawPeer], None]) -> Callable[[RawPeer], None]:
        title = " ".join((check.__doc__ or "").split())  # a docstring may wrap
        CASES.append(Case(case_id, rules, title, check, schemes, feature))
        return check

    return register


def _goaway(peer: RawPeer, code: ErrorCode) -> None:
    goaway: Goaway = peer.expect(Goaway)
    if goaway.code != code:
        raise AssertionError(f"expected GOAWAY {code.name}, got code {goaway.code}")
    peer.expect_closed()


@case("C01", "R-HS-1", "R-HS-3", "R-HS-6")
def _c01(peer: RawPeer) -> None:
    """HELLO is answered with WELCOME for version 1, a session id and a resume token."""
    welcome = peer.handshake()
    if welcome.version != 1 or not welcome.session_id or not welcome.resume_token:
        raise AssertionError(f"unexpected {welcome}")


@case("C02", "R-HS-2")
def _c02(peer: RawPeer) -> None:
    """HELLO without the magic STRP is MALFORMED_FRAME."""
    raw = bytearray(encode(Hello()))
    raw[10:14] = b"NOPE"  # not the magic STRP
    peer.send_raw(bytes(raw))
    _goaway(peer, ErrorCode.MALFORMED_FRAME)


@case("C03", "R-FRAME-6")
def _c03(peer: RawPeer) -> None:
    """A header announcing a body above the maximum frame size is refused from the header."""
    peer.send_raw(struct.pack(">IBBI", 1 << 30, 0x01, 0, 0))
    _goaway(peer, ErrorCode.FRAME_TOO_LARGE)


@case("C04", "R-HS-3", "R-HS-4")
def _c04(peer: RawPeer) -> None:
    """A HELLO offering only unsupported versions is refused with UNSUPPORTED_VERSION."""
    peer.send(Hello(min_version=7, max_version=9))
    _goaway(peer, ErrorCode.UNSUPPORTED_VERSION)


@case("C05", "R-HS-2")
def _c05(peer: RawPeer) -> None:
    """A known frame other than HELLO first is a PROTOCOL_ERROR."""
    peer.send(Ping(1))
    _goaway(peer, ErrorCode.PROTOCOL_ERROR)


@case("C06", "R-KA-4")
def _c06(peer: RawPeer) -> None:
    """PING is answered with PONG carrying the same payload."""
    peer.handshake()
    peer.send(Ping(0xDEADBEEF))
    pong: Pong = peer.expect(Pong)
    if pong.payload != 0xDEADBEEF:
        raise AssertionError(f"PONG payload {pong.payload}")


@case("C07", "R-FWD-1", "R-FWD-2")
def _c07(peer: RawPeer) -> None:
    """Frames of unknown type and unknown flag bits are ignored."""
    peer.handshake()
    peer.send(Unknown(0x7E, 0xFF, 5, b"future"), Unknown(0x41, 0, 0, b""))
    peer.send_raw(struct.pack(">IBBIQ", 8, 0x03, 0xF0, 0, 9))  # PING with unknown flags
    pong: Pong = peer.expect(Pong)
    if pong.payload != 9:
        raise AssertionError(f"PONG payload {pong.payload}")


@case("C08", "R-REQ-1", "R-REQ-5")
def _c08(peer: RawPeer) -> None:
    """SUBSCRIBE to an unknown channel is rejected with UNKNOWN_CHANNEL."""
    peer.handshake()
    peer.send(Subscribe(1, "conformance:nope", "x", credit_chunks=8, credit_bytes=1 << 16))
    reject: Reject = peer.expect(Reject)
    if reject.code != ErrorCode.UNKNOWN_CHANNEL:
        raise AssertionError(f"REJECT code {reject.code}")


@case("C09", "R-REQ-1", "R-REQ-5")
def _c09(peer: RawPeer) -> None:
    """SUBSCRIBE to an unknown stream is rejected with UNKNOWN_STREAM (never silence)."""
    peer.handshake()
    peer.send(Subscribe(1, "conformance:fixed", "nope", credit_chunks=8, credit_bytes=1 << 16))
    reject: Reject = peer.expect(Reject)
    if reject.code != ErrorCode.UNKNOWN_STREAM:
        raise AssertionError(f"REJECT code {reject.code}")


@case("C10", "R-NAME-1", "R-NAME-2")
def _c10(peer: RawPeer) -> None:
    """Channel names and stream ids that break the patterns are rejected with INVALID_NAME."""
    peer.handshake()
    peer.send(
        Subscribe(1, "no-colon", "x", credit_chunks=8, credit_bytes=1 << 16),
        Subscribe(2, "conformance:fixed", "bad id!", credit_chunks=8, credit_bytes=1 << 16),
    )
    for _ in range(2):
        reject: Reject = peer.expect(Reject)
        if reject.code != ErrorCode.INVALID_NAME:
            raise AssertionError(f"REJECT code {reject.code}")


def _subscribe(peer: RawPeer, stream: str, after: int = 0, credit: int = 64) -> Accept:
    channel, stream_id = stream.split("/")
    peer.send(Subscribe(1, channel, stream_id, after, credit_chunks=credit, credit_bytes=1 << 24))
    accept: Accept = peer.expect(Accept)
    return accept


@attrs.define
class Delivery:
    """What one subscription handle received, in order: ``items`` holds ``(seq, chunk)``
    for data (fragments reassembled) and ``Gap`` frames; ``outcome`` the END or ERROR."""

    items: list[tuple[int, bytes] | Gap] = attrs.Factory(list)
    outcome: End | Error | None = None
    fragments: int = 0


def _collect(peer: RawPeer, handle: int = 1, *, upto: int | None = None) -> Delivery:
    """Read the handle's frames until its outcome has arrived and every seq up to the
    outcome's ``last_seq`` was covered (END/ERROR may overtake queued DATA: R-SUB-8), or
    until data up to ``upto`` arrived."""
    got = Delivery()
    pieces: list[bytes] = []
    covered = 0
    while True:
        if got.outcome is not None and covered >= got.outcome.last_seq:
            return got
        if upto is not None and covered >= upto:
            return got
        frame = peer.expect(object)
        if getattr(frame, "handle", handle) != handle:
            continue
        if isinstance(frame, Data):
            pieces.append(frame.chunks[0])
            got.fragments += 1
            if not frame.more:
                got.items.append((frame.seq, b"".join(pieces)))
                pieces = []
                covered = frame.seq
        elif isinstance(frame, Gap):
            got.items.append(frame)
            covered = frame.to_seq
        elif isinstance(frame, End | Error):
            got.outcome = frame
        else:
            raise AssertionError(f"unexpected {frame}")


def _expect_items(got: Delivery, expected: list[tuple[int, bytes] | Gap]) -> None:
    if got.items != expected:
        raise AssertionError(f"expected {expected}, got {got.items}")


@case("C11", "R-REQ-3", "R-SUB-1", "R-SUB-2", "R-SUB-8", "R-SUB-9")
def _c11(peer: RawPeer) -> None:
    """An ended stream: ACCEPT with its seqs, every chunk in order, then END."""
    peer.handshake()
    accept = _subscribe(peer, "conformance:fixed/five")
    if (accept.first_seq, accept.last_seq) != (1, 5):
        raise AssertionError(f"ACCEPT seqs {accept.first_seq}..{accept.last_seq}")
    got = _collect(peer)
    _expect_items(got, list(enumerate(FIVE, 1)))
    if not isinstance(got.outcome, End) or got.outcome.last_seq != 5:
        raise AssertionError(f"outcome {got.outcome}")


@case("C12", "R-SUB-2", "R-SUB-5")
def _c12(peer: RawPeer) -> None:
    """A resubscribe with after_seq gets only the chunks after it."""
    peer.handshake()
    _subscribe(peer, "conformance:fixed/five", after=3)
    _expect_items(_collect(peer), [(4, FIVE[3]), (5, FIVE[4])])


@case("C13", "R-SUB-2", "R-REPLAY-1")
def _c13(peer: RawPeer) -> None:
    """Evicted chunks are reported as GAP(EVICTED) with exact bounds, then the rest."""
    peer.handshake()
    accept = _subscribe(peer, "conformance:evicted/ten")
    if (accept.first_seq, accept.last_seq) != (8, 10):
        raise AssertionError(f"ACCEPT seqs {accept.first_seq}..{accept.last_seq}")
    got = _collect(peer)
    gap = Gap(1, 1, 7, GapReason.EVICTED)
    _expect_items(got, [gap, (8, b"e-8"), (9, b"e-9"), (10, b"e-10")])


@case("C14", "R-SUB-9", "R-SUB-10")
def _c14(peer: RawPeer) -> None:
    """A failed stream replays its chunks, then ERROR with the same code and message."""
    peer.handshake()
    _subscribe(peer, "conformance:fixed/failed")
    got = _collect(peer)
    _expect_items(got, [(1, b"before-1"), (2, b"before-2")])
    error = got.outcome
    if not isinstance(error, Error) or (error.code, error.message) != (FAIL_CODE, FAIL_MESSAGE):
        raise AssertionError(f"outcome {error}")


@case("C15", "R-FLOW-1", "R-FLOW-2", "R-SUB-8")
def _c15(peer: RawPeer) -> None:
    """The server sends no more chunks than the credit allows, and resumes on CREDIT."""
    peer.handshake()
    _subscribe(peer, "conformance:fixed/five", credit=2)
    got = _collect(peer, upto=2)
    _expect_items(got, [(1, FIVE[0]), (2, FIVE[1])])
    deadline = time.monotonic() + 0.3
    while peer.frames or peer._pull(deadline):
        while peer.frames:
            frame = peer.frames.pop(0)
            if isinstance(frame, Data):
                raise AssertionError(f"DATA beyond credit: {frame}")
    peer.send(Credit(1, 3, 1 << 16))
    _expect_items(_collect(peer, upto=5), [(3, FIVE[2]), (4, FIVE[3]), (5, FIVE[4])])


@case("C16", "R-HANDLE-3")
def _c16(peer: RawPeer) -> None:
    """A request whose handle does not increase is INVALID_HANDLE."""
    peer.handshake()
    peer.send(Subscribe(5, "conformance:fixed", "five", credit_chunks=1, credit_bytes=1 << 16))
    peer.expect(Accept)
    peer.send(Subscribe(5, "conformance:fixed", "five", credit_chunks=1, credit_bytes=1 << 16))
    while True:
        frame = peer.expect(object)
        if isinstance(frame, Goaway):
            if frame.code != ErrorCode.INVALID_HANDLE:
                raise AssertionError(f"GOAWAY code {frame.code}")
            break
    peer.expect_closed()


@case("C17", "R-HANDLE-4")
def _c17(peer: RawPeer) -> None:
    """A frame on a handle never opened is INVALID_HANDLE."""
    peer.handshake()
    peer.send(Cancel(42))
    _goaway(peer, ErrorCode.INVALID_HANDLE)


@case("C18", "R-REQ-3", "R-REQ-8")
def _c18(peer: RawPeer) -> None:
    """OPEN starts a stream with the arguments, subscribed from seq 1, and names its id."""
    peer.handshake()
    peer.send(Open(1, "conformance:open", "", credit_chunks=16, credit_bytes=1 << 16, args=b"4"))
    accept: Accept = peer.expect(Accept)
    if not accept.stream_id or (accept.first_seq, accept.last_seq) != (1, 0):
        raise AssertionError(f"unexpected {accept}")
    got = _collect(peer)
    _expect_items(got, [(seq, b"o-%d" % seq) for seq in range(1, 5)])
    if not isinstance(got.outcome, End):
        raise AssertionError(f"outcome {got.outcome}")


@case("C19", "R-UP-1", "R-UP-2", "R-UP-3", "R-FLOW-1")
def _c19(peer: RawPeer) -> None:
    """UPLOAD is accepted with credit; data within it and END are taken without complaint."""
    peer.handshake()
    peer.send(Upload(1, "conformance:upload", "up-1"))
    accept: Accept = peer.expect(Accept)
    if accept.credit_chunks < 1 or accept.credit_bytes < 1:
        raise AssertionError(f"no credit in {accept}")
    count = min(accept.credit_chunks, 4)
    peer.send(Data(1, 1, tuple(b"u" * 10 for _ in range(count))), End(1, count))
    peer.send(Ping(5))
    peer.expect(Pong)


@case("C20", "R-FLOW-3")
def _c20(peer: RawPeer) -> None:
    """DATA beyond the granted credit is a FLOW_CONTROL_ERROR."""
    peer.handshake()
    peer.send(Upload(1, "conformance:upload", "up-2"))
    accept: Accept = peer.expect(Accept)
    chunks = tuple(b"x" for _ in range(accept.credit_chunks + 1))
    peer.send(Data(1, 1, chunks))
    _goaway(peer, ErrorCode.FLOW_CONTROL_ERROR)


@case("C21", "R-FRAG-1", "R-FRAME-5")
def _c21(peer: RawPeer) -> None:
    """A chunk larger than the frame size arrives as fragments that reassemble to it."""
    peer.handshake()
    _subscribe(peer, "conformance:fixed/big")
    got = _collect(peer)
    _expect_items(got, [(1, BIG)])
    if got.fragments < 2:
        raise AssertionError(f"{len(BIG)} bytes arrived in {got.fragments} frame(s)")


@case("C22", "R-SUB-11")
def _c22(peer: RawPeer) -> None:
    """After CANCEL the server sends nothing more on the handle (others keep working)."""
    peer.handshake()
    _subscribe(peer, "conformance:fixed/five", credit=1)
    _expect_items(_collect(peer, upto=1), [(1, FIVE[0])])
    peer.send(Cancel(1), Credit(1, 10, 1 << 16))
    peer.send(Ping(3))
    while True:
        frame = peer.expect(object)
        if isinstance(frame, Pong):
            break
        if isinstance(frame, Data):
            raise AssertionError(f"DATA after CANCEL: {frame}")
    peer.expect_quiet(0.2)


@case("C23", "R-GOAWAY-1", "R-GOAWAY-2")
def _c23(peer: RawPeer) -> None:
    """A client's GOAWAY(NO_ERROR) with nothing open ends the connection."""
    peer.handshake()
    peer.send(Goaway(0, 0, "bye"))
    peer.expect_closed()


def _upgrade_status(url: str, timeout: float) -> int:
    """The HTTP status a WebSocket upgrade that offers no subprotocol is answered with."""
    from wsproto import ConnectionType, WSConnection  # noqa: PLC0415 - optional extra
    from wsproto.events import AcceptConnection, RejectConnection, Request  # noqa: PLC0415

    parts = urlsplit(url)
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(ws.send(Request(host=parts.netloc, target=parts.path or "/")))
        while data := sock.recv(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, RejectConnection):
                    return int(event.status_code)
                if isinstance(event, AcceptConnection):
                    raise AssertionError("an upgrade without the subprotocol was accepted")
    raise AssertionError("the server closed without answering the upgrade")


@case("C24", "R-TR-5", schemes=("ws", "http"))
def _c24(peer: RawPeer) -> None:
    """The server selects streamproto.v1, and refuses an upgrade offering none with 400."""
    if peer.subprotocol != "streamproto.v1":
        raise AssertionError(f"the server selected subprotocol {peer.subprotocol!r}")
    status = _upgrade_status(peer.url, peer.timeout)
    if status != 400:
        raise AssertionError(f"an upgrade without the subprotocol got HTTP {status}, not 400")


@case("C25", "R-GOAWAY-1", "R-GOAWAY-2")
def _c25(peer: RawPeer) -> None:
    """After a client's GOAWAY(NO_ERROR) an open subscription runs to its end; then the
    server closes the connection."""
    peer.handshake()
    _subscribe(peer, "conformance:fixed/five", credit=2)
    peer.send(Goaway(0, 1, "no more requests"))
    deadline = time.monotonic() + 0.3
    try:
        while peer._pull(deadline):
            pass
    except _Closed:
        raise AssertionError("the server closed while a subscription was open") from None
    peer.send(Credit(1, 8, 1 << 16))
    got = _collect(peer)
    _expect_items(got, list(enumerate(FIVE, 1)))
    if not isinstance(got.outcome, End) or got.outcome.last_seq != 5:
        raise AssertionError(f"outcome {got.outcome}")
    peer.expect_closed()


# -- live producers (C30 and up) ----------------------------------------------------------------
# The channels conformance:slow, conformance:abort and conformance:slow-window write s-1 ... s-N,
# one chunk per millisecond, from an OPEN with args N (spec/CONFORMANCE.md).

#: Credit that never runs out within a case (chunks, bytes).
_CHUNKS, _BYTES = 1 << 20, 1 << 24


def _on(peer: RawPeer, handle: int, kind: type) -> Any:
    """The next frame of ``handle`` (frames of other handles are skipped); it must be
    ``kind``."""
    while True:
        frame = peer.expect(object)
        if getattr(frame, "handle", handle) == handle:
            if not isinstance(frame, kind):
                raise AssertionError(f"expected {kind.__name__} on handle {handle}, got {frame}")
            return frame


def _open_slow(peer: RawPeer, channel: str, count: int, *, upto: int) -> tuple[str, int]:
    """OPEN ``channel`` with args ``count`` on handle 1 and read it until seq ``upto``:
    (the stream id, the last seq read)."""
    peer.send(Open(1, channel, "", args=b"%d" % count, credit_chunks=_CHUNKS, credit_bytes=_BYTES))
    accept: Accept = _on(peer, 1, Accept)
    return accept.stream_id, _expect_slow(_collect(peer, 1, upto=upto).items, 1)


def _expect_slow(items: list[tuple[int, bytes] | Gap], first: int) -> int:
    """Data from seq ``first`` on, in order, each chunk ``s-<seq>``; returns the last seq."""
    seq = first - 1
    for item in items:
        if isinstance(item, Gap) or item != (seq + 1, slow_chunk(seq + 1)):
            raise AssertionError(f"expected seq {seq + 1} ({slow_chunk(seq + 1)!r}), got {item}")
        seq += 1
    return seq


def _expect_outcome(got: Delivery, kind: type, last_seq: int, code: int = 0) -> None:
    outcome = got.outcome
    if outcome is None or not isinstance(outcome, kind) or outcome.last_seq != last_seq:
        raise AssertionError(f"expected {kind.__name__} after seq {last_seq}, got {outcome}")
    if isinstance(outcome, Error) and outcome.code != code:
        raise AssertionError(f"expected code {code}, got {outcome}")


@case("C30", "R-REQ-8", "R-SUB-2", "R-SUB-12")
def _c30(peer: RawPeer) -> None:
    """A live stream whose channel lets producers continue is not aborted by its only
    reader's CANCEL: a new subscriber gets every chunk, then END."""
    peer.handshake()
    stream_id, _ = _open_slow(peer, "conformance:slow", 60, upto=5)
    peer.send(
        Cancel(1),
        Subscribe(2, "conformance:slow", stream_id, credit_chunks=_CHUNKS, credit_bytes=_BYTES),
    )
    _on(peer, 2, Accept)
    got = _collect(peer, 2)
    _expect_slow(got.items, 1)
    _expect_outcome(got, End, 60)


@case("C31", "R-SUB-12", "R-SUB-50", "R-SUB-9")
def _c31(peer: RawPeer) -> None:
    """The last subscriber's CANCEL aborts the producer: the stream stops there, and later
    subscribers get the chunks written, then ERROR CANCELLED, never END."""
    peer.handshake()
    stream_id, _ = _open_slow(peer, "conformance:abort", 5000, upto=3)
    peer.send(
        Cancel(1),
        Subscribe(2, "conformance:abort", stream_id, credit_chunks=_CHUNKS, credit_bytes=_BYTES),
    )
    accept: Accept = _on(peer, 2, Accept)
    last = accept.last_seq
    if not 3 <= last < 5000:
        raise AssertionError(f"ACCEPT last_seq {last} after the abort")
    got = _collect(peer, 2)
    _expect_slow(got.items, 1)
    _expect_outcome(got, Error, last, ErrorCode.CANCELLED)
    time.sleep(0.05)  # the producer wrote one chunk per millisecond: it must have stopped
    peer.send(
        Subscribe(
            3, "conformance:abort", stream_id, tail=True, credit_chunks=_CHUNKS, credit_bytes=_BYTES
        )
    )
    again: Accept = _on(peer, 3, Accept)
    if again.last_seq != last:
        raise AssertionError(f"the stream went on after the abort: last_seq {again.last_seq}")
    error: Error = _on(peer, 3, Error)  # TAIL: nothing to replay, only the outcome
    if (error.code, error.last_seq) != (ErrorCode.CANCELLED, last):
        raise AssertionError(f"expected CANCELLED after seq {last}, got {error}")


@case("C32", "R-SESS-3", "R-SESS-4", "R-SESS-5", "R-SUB-5")
def _c32(peer: RawPeer) -> None:
    """A resumed session re-subscribes with after_seq while the producer writes: every chunk
    arrives exactly once across the lost connection, then END."""
    welcome = peer.handshake()
    stream_id, seen = _open_slow(peer, "conformance:slow", 300, upto=20)
    peer.close()  # the transport is lost: the subscription is parked
    second = RawPeer(peer.url, peer.timeout)
    try:
        second.send(Hello(resume_token=welcome.resume_token))
        resumed: Welcome = second.expect(Welcome)
        if not resumed.resumed or resumed.session_id != welcome.session_id:
            raise AssertionError(f"not resumed: {resumed}")
        second.send(
            Subscribe(
                1, "conformance:slow", stream_id, seen, credit_chunks=_CHUNKS, credit_bytes=_BYTES
            )
        )
        _on(second, 1, Accept)
        got = _collect(second, 1)
        _expect_slow(got.items, seen + 1)
        _expect_outcome(got, End, 300)
    finally:
        second.close()


@case("C33", "R-SUB-3", "R-SUB-6", "R-SUB-7")
def _c33(peer: RawPeer) -> None:
    """SUBSCRIBE with TAIL to a live stream starts after ACCEPT's last_seq: no replay and no
    GAP, then every later chunk and END."""
    peer.handshake()
    stream_id, _ = _open_slow(peer, "conformance:slow", 300, upto=10)
    peer.send(
        Subscribe(
            2, "conformance:slow", stream_id, tail=True, credit_chunks=_CHUNKS, credit_bytes=_BYTES
        )
    )
    accept: Accept = _on(peer, 2, Accept)
    if accept.last_seq < 10:
        raise AssertionError(f"ACCEPT last_seq {accept.last_seq}: 10 chunks were read")
    got = _collect(peer, 2)
    _expect_slow(got.items, accept.last_seq + 1)
    _expect_outcome(got, End, 300)


@case("C34", "R-SUB-2", "R-REPLAY-1", "R-SUB-5")
def _c34(peer: RawPeer) -> None:
    """A reader that starts late on a live stream retaining 4 chunks gets GAP(EVICTED) for
    what is gone, then the retained and the live chunks, then END."""
    peer.handshake()
    stream_id, _ = _open_slow(peer, "conformance:slow-window", 200, upto=20)
    peer.send(
        Subscribe(
            2, "conformance:slow-window", stream_id, credit_chunks=_CHUNKS, credit_bytes=_BYTES
        )
    )
    accept: Accept = _on(peer, 2, Accept)
    first = accept.first_seq
    if not (first > 1 and accept.last_seq - first + 1 <= 4):
        raise AssertionError(f"ACCEPT seqs {first}..{accept.last_seq}: 4 chunks are retained")
    got = _collect(peer, 2)
    if not got.items or got.items[0] != Gap(2, 1, first - 1, GapReason.EVICTED):
        raise AssertionError(f"expected GAP 1..{first - 1} EVICTED first, got {got.items[:1]}")
    _expect_slow(got.items[1:], first)
    _expect_outcome(got, End, 200)


@case("C35", "R-UP-5", "R-HANDLE-5")
def _c35(peer: RawPeer) -> None:
    """The server cancels an upload with UPLOAD_CANCEL(UPLOAD_CANCELLED) after its third
    chunk; a later DATA on the handle is discarded and the connection goes on."""
    peer.handshake()
    peer.send(Upload(1, "conformance:upload-cancel", "uc-1"))
    accept: Accept = peer.expect(Accept)
    credit, sent = accept.credit_chunks, 0
    while True:
        if sent < UPLOAD_CANCEL_AFTER and credit > 0:
            sent += 1
            credit -= 1
            peer.send(Data(1, sent, (b"u-%d" % sent,)))
            continue
        frame = peer.expect(object)
        if isinstance(frame, Credit):
            credit += frame.chunks
        elif isinstance(frame, UploadCancel):
            break
        else:
            raise AssertionError(f"unexpected {frame}")
    if frame.code != ErrorCode.UPLOAD_CANCELLED:
        raise AssertionError(f"UPLOAD_CANCEL code {frame.code}")
    peer.send(Data(1, sent + 1, (b"late",)), Ping(35))
    while not isinstance(frame := peer.expect(object), Pong):
        if not isinstance(frame, Credit):  # a CREDIT sent before the cancel may trail it
            raise AssertionError(f"unexpected {frame}")


@case("C40", "R-JOIN-1", "R-JOIN-4")
def _c40(peer: RawPeer) -> None:
    """Run-or-join: a second OPEN of a running stream id with flag JOIN is accepted with flag
    JOINED and reads the stream from seq 1 while the first requester reads on; both get every
    chunk, then END."""
    peer.handshake()
    peer.send(
        Open(
            1,
            "conformance:slow",
            "join-1",
            _CHUNKS,
            _BYTES,
            args=b"200",
            join=True,
        )
    )
    first: Accept = _on(peer, 1, Accept)
    if first.joined or first.stream_id != "join-1":
        raise AssertionError(f"the first OPEN starts the stream: {first}")
    _expect_slow(_collect(peer, 1, upto=5).items, 1)
    peer.send(Open(2, "conformance:slow", "join-1", _CHUNKS, _BYTES, args=b"200", join=True))
    second: Accept = _on(peer, 2, Accept)
    if not second.joined or second.stream_id != "join-1":
        raise AssertionError(f"expected ACCEPT JOINED for join-1, got {second}")
    got = _collect(peer, 2)
    _expect_slow(got.items, 1)
    _expect_outcome(got, End, 200)


@case("C41", "R-QUERY-1", "R-QUERY-2", "R-QUERY-3", "R-VER-5")
def _c41(peer: RawPeer) -> None:
    """Stream status: a server that announces FEATURES QUERIES answers STATUS with MISSING for
    an unknown id, OPEN with its last seq while a stream runs, and ENDED after END; a LIST
    names the stream."""
    welcome = peer.handshake()
    if not dict(welcome.settings).get(Setting.FEATURES, 0) & Feature.QUERIES:
        raise AssertionError("WELCOME does not announce FEATURES QUERIES (0x01)")
    peer.send(Query(1, QueryOp.STATUS, "conformance:slow", "status-none"))
    missing: Streams = _on(peer, 1, Streams)
    if [e.state for e in missing.entries] != [StreamState.MISSING]:
        raise AssertionError(f"expected one MISSING entry, got {missing}")
    peer.send(Open(2, "conformance:slow", "status-1", _CHUNKS, _BYTES, args=b"100"))
    _on(peer, 2, Accept)
    _expect_slow(_collect(peer, 2, upto=5).items, 1)
    peer.send(Query(3, QueryOp.STATUS, "conformance:slow", "status-1"))
    running: Streams = _on(peer, 3, Streams)
    (entry,) = running.entries
    if entry.state is not StreamState.OPEN or entry.last_seq < 5:
        raise AssertionError(f"expected OPEN at seq 5 or later, got {entry}")
    got = _collect(peer, 2)
    _expect_outcome(got, End, 100)
    peer.send(
        Query(4, QueryOp.STATUS, "conformance:slow", "status-1"),
        Query(5, QueryOp.LIST, "conformance:slow", "status-0", 0, 100),
    )
    ended: Streams = _on(peer, 4, Streams)
    if [(e.state, e.last_seq) for e in ended.entries] != [(StreamState.ENDED, 100)]:
        raise AssertionError(f"expected ENDED at seq 100, got {ended}")
    listing: Streams = _on(peer, 5, Streams)
    if "status-1" not in [e.stream_id for e in listing.entries]:
        raise AssertionError(f"the listing does not name status-1: {listing}")


# -- bidirectional streams (C50 and up) ---------------------------------------------------------
# The channel conformance:bidi serves OPEN with flag BIDI; its args pick what the server does
# (spec/CONFORMANCE.md).


def _open_bidi(peer: RawPeer, args: bytes, handle: int = 1) -> Accept:
    """OPEN conformance:bidi with flag BIDI and ``args``: its ACCEPT, which must grant the
    client's direction credit (R-BIDI-3)."""
    peer.send(Open(handle, "conformance:bidi", "", _CHUNKS, _BYTES, args=args, bidi=True))
    accept: Accept = _on(peer, handle, Accept)
    if accept.credit_chunks < 1 or accept.credit_bytes < 1:
        raise AssertionError(f"ACCEPT grants the client's direction no credit: {accept}")
    return accept


class _Writer:
    """The client's direction of a bidirectional handle: DATA under the credit the server
    grants (ACCEPT's, then CREDIT frames, which it takes from the frames it is shown)."""

    def __init__(self, peer: RawPeer, accept: Accept) -> None:
        self.peer = peer
        self.handle = accept.handle
        self.chunks = accept.credit_chunks
        self.nbytes = accept.credit_bytes
        self.seq = 0

    def credit(self, frame: Frame) -> bool:
        """Take a CREDIT of the handle; False for any other frame."""
        if isinstance(frame, Credit) and frame.handle == self.handle:
            self.chunks += frame.chunks
            self.nbytes += frame.nbytes
            return True
        return False

    def write(self, chunk: bytes) -> None:
        """Send ``chunk``, first waiting for credit (frames other than CREDIT are an error)."""
        while self.chunks < 1 or self.nbytes < 1:
            frame = self.peer.expect(object)
            if not self.credit(frame):
                raise AssertionError(f"waiting for CREDIT on handle {self.handle}, got {frame}")
        self.seq += 1
        self.chunks -= 1
        self.nbytes -= len(chunk)
        self.peer.send(Data(self.handle, self.seq, (chunk,)))


def _server_direction(peer: RawPeer, writer: _Writer) -> Delivery:
    """Read the server's direction to its outcome; CREDIT for the client's is taken."""
    got = Delivery()
    covered = 0
    while got.outcome is None or covered < got.outcome.last_seq:
        frame = peer.expect(object)
        if writer.credit(frame) or getattr(frame, "handle", 0) != writer.handle:
            continue
        if isinstance(frame, Data) and not frame.more:
            got.items.append((frame.seq, frame.chunks[0]))
            covered = frame.seq
        elif isinstance(frame, End | Error):
            got.outcome = frame
        else:
            raise AssertionError(f"unexpected {frame} on the server's direction")
    return got


@case("C50", "R-BIDI-1", "R-BIDI-3", "R-BIDI-4", "R-VER-5", feature=Feature.BIDI)
def _c50(peer: RawPeer) -> None:
    """bidirectional: one handle carries chunks both ways, each direction with its own seqs
    from 1 and its own credit; each chunk the client sends is echoed, and the server's END
    follows the client's."""
    peer.handshake()
    writer = _Writer(peer, _open_bidi(peer, b"echo"))
    for i in range(1, 6):
        writer.write(b"b-%d" % i)
    peer.send(End(1, 5))
    got = _server_direction(peer, writer)
    _expect_items(got, [(i, b"echo:b-%d" % i) for i in range(1, 6)])
    _expect_outcome(got, End, 5)


@case("C51", "R-BIDI-4", "R-BIDI-5", "R-FLOW-6", feature=Feature.BIDI)
def _c51(peer: RawPeer) -> None:
    """bidirectional: the client's END closes its direction only: the server's direction
    writes after it (how many chunks it read, past the first window: CREDIT came), then
    END."""
    peer.handshake()
    accept = _open_bidi(peer, b"count")
    writer = _Writer(peer, accept)
    total = accept.credit_chunks * 3
    for _ in range(total):
        writer.write(b"c")
    peer.send(End(1, total))
    got = _server_direction(peer, writer)
    _expect_items(got, [(1, b"read %d" % total)])
    _expect_outcome(got, End, 1)


@case("C52", "R-BIDI-5", "R-HANDLE-5", feature=Feature.BIDI)
def _c52(peer: RawPeer) -> None:
    """bidirectional: the server's END closes its direction only: the client's direction
    goes on past its first window (the server keeps granting credit) to its own END, and the
    connection stays healthy."""
    peer.handshake()
    accept = _open_bidi(peer, b"first:3")
    writer = _Writer(peer, accept)
    got = _server_direction(peer, writer)
    _expect_items(got, [(1, b"f-1"), (2, b"f-2"), (3, b"f-3")])
    _expect_outcome(got, End, 3)
    total = accept.credit_chunks * 2 + 1
    for _ in range(total):
        writer.write(b"after")
    peer.send(End(1, total), Ping(52))
    while not isinstance(frame := peer.expect(object), Pong):
        if not writer.credit(frame):
            raise AssertionError(f"unexpected {frame}")


@case("C53", "R-BIDI-5", "R-UP-5", "R-HANDLE-5", feature=Feature.BIDI)
def _c53(peer: RawPeer) -> None:
    """bidirectional: UPLOAD_CANCEL closes the client's direction only: a DATA the client
    sends after it is discarded, and the server's direction goes on to its END."""
    peer.handshake()
    writer = _Writer(peer, _open_bidi(peer, b"cancel:3"))
    for _ in range(3):
        writer.write(b"x")
    while True:
        frame = peer.expect(object)
        if writer.credit(frame):
            continue
        if not isinstance(frame, UploadCancel):
            raise AssertionError(f"expected UPLOAD_CANCEL, got {frame}")
        break
    if frame.code != ErrorCode.UPLOAD_CANCELLED:
        raise AssertionError(f"UPLOAD_CANCEL code {frame.code}")
    peer.send(Data(1, 4, (b"late",)))
    got = _server_direction(peer, writer)
    _expect_items(got, [(1, b"cancelled after 3")])
    _expect_outcome(got, End, 1)


@case("C54", "R-BIDI-5", "R-SUB-11", feature=Feature.BIDI)
def _c54(peer: RawPeer) -> None:
    """bidirectional: the client's CANCEL closes the server's direction only: the client's
    direction is still read (credit keeps coming past the first window) and ends with END."""
    peer.handshake()
    accept = _open_bidi(peer, b"count")
    writer = _Writer(peer, accept)
    peer.send(Cancel(1))
    total = accept.credit_chunks * 2 + 1
    for _ in range(total):
        writer.write(b"y")
    peer.send(End(1, total), Ping(54))
    while not isinstance(frame := peer.expect(object), Pong):
        if not writer.credit(frame) and not isinstance(frame, Data | End):
            raise AssertionError(f"unexpected {frame}")  # (DATA or END crossing the CANCEL)


@case("C55", "R-BIDI-1", feature=Feature.BIDI)
def _c55(peer: RawPeer) -> None:
    """bidirectional: an OPEN with both BIDI and JOIN is rejected with NOT_ALLOWED."""
    peer.handshake()
    peer.send(
        Open(1, "conformance:bidi", "j-1", _CHUNKS, _BYTES, args=b"echo", join=True, bidi=True)
    )
    reject: Reject = _on(peer, 1, Reject)
    if reject.code != ErrorCode.NOT_ALLOWED:
        raise AssertionError(f"expected REJECT NOT_ALLOWED, got {reject}")


@case("C56", "R-BIDI-4", "R-STATE-1", feature=Feature.BIDI)
def _c56(peer: RawPeer) -> None:
    """bidirectional: a frame its direction does not carry (UPLOAD_CANCEL from the client) is
    a connection error PROTOCOL_ERROR."""
    peer.handshake()
    _open_bidi(peer, b"echo")
    peer.send(UploadCancel(1, ErrorCode.UPLOAD_CANCELLED, "not the client's to send"))
    _goaway(peer, ErrorCode.PROTOCOL_ERROR)


@case("C36", "R-SCHED-3")
def _c36(peer: RawPeer) -> None:
    """Two subscriptions on one connection, priorities 0 and 3, each with credit for 32
    equal chunks: the higher one gets at least 20 of the first 32 chunks sent (weighted
    round robin gives it about 24; this checks a SHOULD)."""
    peer.handshake()
    peer.send(
        Subscribe(1, "conformance:fixed", "many", credit_chunks=32, credit_bytes=_BYTES),
        Subscribe(
            2, "conformance:fixed", "many", credit_chunks=32, credit_bytes=_BYTES, priority=3
        ),
    )
    order: list[int] = []
    ended: set[int] = set()
    while len(order) < 64:
        frame = peer.expect(object)
        if isinstance(frame, Data):
            if frame.chunks[0] != MANY[frame.seq - 1] or frame.more:
                raise AssertionError(f"unexpected {frame}")
            order.append(frame.handle)
        elif isinstance(frame, End) and frame.handle in {1, 2} - ended and frame.last_seq == 64:
            # The stream has ended: END is a control frame and may overtake the DATA still
            # queued (R-SCHED-1, R-SUB-8); a server that queues every chunk at once (the
            # reference server's default queue holds 256) sends it right after ACCEPT.
            ended.add(frame.handle)
        elif not isinstance(frame, Accept):
            raise AssertionError(f"unexpected {frame}")
    high = order[:32].count(2)
    if high < 20:
        raise AssertionError(f"the priority-3 subscription got {high} of the first 32 chunks")


# -- resumable uploads and results (spec section 9.1, C60 and up) -------------------------------

_UPR = int(Feature.UPLOAD_RESUME)


def _until(peer: RawPeer, handle: int, kind: type) -> tuple[Any, list[Any]]:
    """Frames of ``handle`` up to one of ``kind``: (it, the frames before it)."""
    before: list[Any] = []
    while True:
        frame = peer.expect(object)
        if getattr(frame, "handle", None) != handle:
            continue
        if isinstance(frame, kind):
            return frame, before
        before.append(frame)


def _upload_chunks(peer: RawPeer, handle: int, first: int, chunks: list[bytes]) -> None:
    """Send ``chunks`` from seq ``first``, then a PING whose PONG says the server has them."""
    peer.send(Data(handle, first, tuple(chunks)), Ping(first))
    _until_pong(peer, first)


def _until_pong(peer: RawPeer, payload: int) -> Pong:
    while True:
        frame = peer.expect(object)
        if isinstance(frame, Pong) and frame.payload == payload:
            return frame


@case("C60", "R-UPR-1", "R-UPR-3", "R-UPR-7", "R-VER-5", feature=_UPR)
def _c60(peer: RawPeer) -> None:
    """resumable upload: a RESUMABLE upload is acknowledged as the server reads it (UPLOAD_ACK
    with the CREDIT it returns, never beyond what was sent) and, after END, closed by an empty
    UPLOAD_RESULT."""
    peer.handshake()
    peer.send(Upload(1, "conformance:upload", "ra-1", b"", resumable=True))
    accept: Accept = peer.expect(Accept)
    count = accept.credit_chunks
    peer.send(Data(1, 1, tuple(b"a%d" % i for i in range(count))))
    _, before = _until(peer, 1, Credit)
    acks = [f for f in before if isinstance(f, UploadAck)]
    if not acks or not 1 <= acks[-1].seq <= count:
        raise AssertionError(f"expected UPLOAD_ACK of 1..{count} with the CREDIT, got {before}")
    peer.send(End(1, count))
    result, _ = _until(peer, 1, UploadResult)
    if result.payload != b"":
        raise AssertionError(f"expected an empty UPLOAD_RESULT without RESULT, got {result}")


@case("C61", "R-UPR-2", "R-UPR-4", "R-UPR-5", "R-UPR-7", feature=_UPR)
def _c61(peer: RawPeer) -> None:
    """resumable upload: after the transport is lost, the resumed session's UPLOAD with RESUME
    is accepted from the next seq the server expects; the rest follows once, and END is
    answered with the application's result (RESULT): every chunk counted once."""
    welcome = peer.handshake()
    peer.send(Upload(1, "conformance:upload-result", "ra-2", b"", resumable=True, result=True))
    accept: Accept = peer.expect(Accept)
    if accept.credit_chunks < 10:
        raise AssertionError(f"ACCEPT grants {accept.credit_chunks} chunks: 10 needed")
    _upload_chunks(peer, 1, 1, [b"r-%02d" % i for i in range(1, 11)])
    peer.close()  # the transport is lost: the upload is parked with the session
    second = RawPeer(peer.url, peer.timeout)
    try:
        second.send(Hello(resume_token=welcome.resume_token))
        resumed: Welcome = second.expect(Welcome)
        if not resumed.resumed:
            raise AssertionError(f"not resumed: {resumed}")
        flags = {"resumable": True, "result": True, "resume": True}
        second.send(Upload(1, "conformance:upload-result", "ra-2", b"", **flags))
        again, _ = _until(second, 1, Accept)
        if (again.first_seq, again.last_seq) != (11, 10):
            raise AssertionError(f"expected ACCEPT from seq 11 (1..10 taken), got {again}")
        second.send(Data(1, 11, tuple(b"r-%02d" % i for i in range(11, 16))), End(1, 15))
        result, _ = _until(second, 1, UploadResult)
        if result.payload != upload_result(15, 60):
            raise AssertionError(f"expected {upload_result(15, 60)!r}, got {result.payload!r}")
    finally:
        second.close()


@case("C62", "R-UPR-4", feature=_UPR)
def _c62(peer: RawPeer) -> None:
    """resumable upload: an UPLOAD with RESUME naming an upload the session does not hold is
    rejected with UNKNOWN_UPLOAD."""
    peer.handshake()
    peer.send(Upload(1, "conformance:upload", "never", b"", resumable=True, resume=True))
    reject: Reject = peer.expect(Reject)
    if reject.code != ErrorCode.UNKNOWN_UPLOAD:
        raise AssertionError(f"expected REJECT UNKNOWN_UPLOAD, got {reject}")


# -- HTTP (spec/HTTP.md) -------------------------------------------------------------------------

_HTTP = ("http",)


@attrs.frozen
class HttpAnswer:
    """A whole HTTP response, its body de-chunked."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if self.headers.get("content-type") != "application/json":
            raise AssertionError(f"{self.status} without a JSON body: {self.headers}")
        return json.loads(self.body)

    def events(self) -> list[tuple[str, str, str]]:
        """(event, data, id) of each event of an event-stream body."""
        from streamproto._sse import SseParser  # noqa: PLC0415

        if not self.headers.get("content-type", "").startswith("text/event-stream"):
            raise AssertionError(f"{self.status} is not an event stream: {self.headers}")
        return [(e.event, e.data, e.id) for e in SseParser().feed(self.body)]


def _dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


def http_request(
    url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> HttpAnswer:
    """One request on a connection of its own (``Connection: close``), read to the end."""
    parts = urlsplit(url)
    fields = {"Host": f"{parts.hostname}:{parts.port}", "Connection": "close"}
    fields.update(headers or {})
    if body or method == "POST":
        fields["Content-Length"] = str(len(body))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return _exchange(url, head.encode() + b"\r\n" + body)


def _exchange(url: str, data: bytes, timeout: float = 10.0) -> HttpAnswer:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    raw = b"".join(received)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return HttpAnswer(status, fields, body)


def _expect(answer: HttpAnswer, status: int, name: str = "") -> None:
    if answer.status != status:
        raise AssertionError(f"expected {status}, got {answer.status}: {answer.body[:200]!r}")
    if name and answer.json().get("name") != name:
        raise AssertionError(f"expected {name}, got {answer.json()}")


@case("H01", "R-HTTP-10", "R-HTTP-12", "R-HTTP-13", "R-HTTP-20", schemes=_HTTP)
def _h01(peer: RawPeer) -> None:
    """GET of an ended stream is 200 text/event-stream: retry, one event per chunk with its
    seq as id, then end."""
    answer = http_request(peer.url, "GET", "/conformance:fixed/five")
    _expect(answer, 200)
    if not answer.body.startswith(b"retry: "):
        raise AssertionError(f"no retry line first: {answer.body[:40]!r}")
    expected = [("message", c.decode(), str(i)) for i, c in enumerate(FIVE, 1)]
    events = answer.events()
    if events[:5] != expected or events[5][:2] != ("end", '{"last_seq": 5}'):
        raise AssertionError(f"unexpected events {events}")


@case("H02", "R-HTTP-11", "R-HTTP-14", schemes=_HTTP)
def _h02(peer: RawPeer) -> None:
    """Last-Event-ID resumes after it and wins over after_seq; from the end event's id of an
    ended stream the answer is 204."""
    answer = http_request(
        peer.url, "GET", "/conformance:fixed/five?after_seq=1", {"Last-Event-ID": "3"}
    )
    data = [e[1] for e in answer.events() if e[0] == "message"]
    if data != ["chunk-4", "chunk-5"]:
        raise AssertionError(f"resumed with {data}")
    by_query = http_request(peer.url, "GET", "/conformance:fixed/five?after_seq=4")
    if [e[1] for e in by_query.events() if e[0] == "message"] != ["chunk-5"]:
        raise AssertionError(f"after_seq=4 gave {by_query.events()}")
    _expect(
        http_request(peer.url, "GET", "/conformance:fixed/five", {"Last-Event-ID": "5:end"}), 204
    )


@case("H03", "R-HTTP-13", "R-HTTP-14", schemes=_HTTP)
def _h03(peer: RawPeer) -> None:
    """A failed stream replays its error event, even to a reader that had every chunk."""
    answer = http_request(peer.url, "GET", "/conformance:fixed/failed", {"Last-Event-ID": "2"})
    _expect(answer, 200)
    kind, data, _ = answer.events()[-1]
    body = json.loads(data)
    if kind != "error" or (body["code"], body["message"]) != (FAIL_CODE, FAIL_MESSAGE):
        raise AssertionError(f"unexpected {kind} {data}")


@case("H04", "R-HTTP-21", "R-HTTP-22", schemes=_HTTP)
def _h04(peer: RawPeer) -> None:
    """A chunk that is not UTF-8 text comes base64 under the event bytes, exact."""
    import base64  # noqa: PLC0415

    events = http_request(peer.url, "GET", "/conformance:fixed/big").events()
    if events[0][0] != "bytes" or base64.b64decode(events[0][1]) != BIG:
        raise AssertionError("the big chunk did not come back exactly")


@case("H05", "R-HTTP-12", schemes=_HTTP)
def _h05(peer: RawPeer) -> None:
    """History out of the replay window is a gap event (first, last, reason), id = last."""
    events = http_request(peer.url, "GET", "/conformance:evicted/ten?after_seq=0").events()
    kind, data, event_id = events[0]
    if kind != "gap" or json.loads(data) != {"first": 1, "last": 7, "reason": "evicted"}:
        raise AssertionError(f"expected the gap 1..7 first, got {events[0]}")
    if event_id != "7" or [e[1] for e in events[1:4]] != ["e-8", "e-9", "e-10"]:
        raise AssertionError(f"unexpected events {events}")


@case("H06", "R-HTTP-30", "R-HTTP-31", schemes=_HTTP)
def _h06(peer: RawPeer) -> None:
    """POST opens a stream with the body as args, names it in Stream-Id, and a GET with
    Last-Event-ID resumes it."""
    answer = http_request(peer.url, "POST", "/conformance:open", body=b"3")
    _expect(answer, 200)
    stream_id = answer.headers.get("stream-id", "")
    if [e[1] for e in answer.events() if e[0] == "message"] != ["o-1", "o-2", "o-3"]:
        raise AssertionError(f"unexpected events {answer.events()}")
    again = http_request(peer.url, "GET", f"/conformance:open/{stream_id}", {"Last-Event-ID": "2"})
    if [e[1] for e in again.events() if e[0] == "message"] != ["o-3"]:
        raise AssertionError(f"the resume gave {again.events()}")


@case("H07", "R-HTTP-40", "R-HTTP-42", schemes=_HTTP)
def _h07(peer: RawPeer) -> None:
    """An upload's body reaches the reader; the answer is 200 with the bytes counted."""
    answer = http_request(peer.url, "POST", "/conformance:upload/h07/upload", body=b"u" * 50_000)
    _expect(answer, 200)
    if answer.json()["bytes"] != 50_000:
        raise AssertionError(f"unexpected answer {answer.json()}")


@case("H08", "R-HTTP-43", schemes=_HTTP)
def _h08(peer: RawPeer) -> None:
    """A server-side upload cancel is answered 409 with its code, before the body ends."""
    parts = urlsplit(peer.url)
    head = (
        f"POST /conformance:upload-cancel/h08/upload HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"1000\r\n" + b"c" * 4096 + b"\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=10.0) as sock:
        sock.sendall(head.encode() + piece * (UPLOAD_CANCEL_AFTER + 2))
        answer = b""
        while b"}" not in answer and (more := sock.recv(65536)):
            answer += more
    if not answer.startswith(b"HTTP/1.1 409"):
        raise AssertionError(f"expected 409, got {answer[:80]!r}")
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    if body["code"] != ErrorCode.UPLOAD_CANCELLED:
        raise AssertionError(f"unexpected cancel {body}")


@case("H09", "R-HTTP-3", "R-HTTP-11", "R-HTTP-50", "R-HTTP-51", schemes=_HTTP)
def _h09(peer: RawPeer) -> None:
    """Refusals have their status and a JSON body with our code and name."""
    url = peer.url
    _expect(http_request(url, "GET", "/conformance:nothing/x"), 404, "UNKNOWN_CHANNEL")
    _expect(http_request(url, "GET", "/conformance:fixed/nothing"), 404, "UNKNOWN_STREAM")
    _expect(http_request(url, "GET", "/Not-A-Channel/x"), 400, "INVALID_NAME")
    bogus = http_request(url, "GET", "/conformance:fixed/five", {"Last-Event-ID": "x"})
    _expect(bogus, 400, "INVALID_ARGUMENT")
    _expect(http_request(url, "PUT", "/conformance:fixed/five"), 405, "NOT_ALLOWED")


@case("H10", "R-HTTP-80", schemes=_HTTP)
def _h10(peer: RawPeer) -> None:
    """Malformed HTTP is 400 and an oversize request head 431, each with a JSON body."""
    _expect(_exchange(peer.url, b"NOT HTTP AT ALL\r\n\r\n"), 400, "PROTOCOL_ERROR")
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    _expect(_exchange(peer.url, big), 431, "LIMIT_EXCEEDED")


@case("H11", "R-HTTP-90", schemes=_HTTP)
def _h11(peer: RawPeer) -> None:
    """Stream status as JSON without subscribing: ended with its seqs, failed with its code,
    missing for an unknown id (200, not 404)."""
    url = peer.url
    five = http_request(url, "GET", "/conformance:fixed/five/status")
    _expect(five, 200)
    expected = {"stream_id": "five", "state": "ended", "code": 0, "first_seq": 1, "last_seq": 5}
    if five.json() != expected:
        raise AssertionError(f"expected {expected}, got {five.json()}")
    failed = http_request(url, "GET", "/conformance:fixed/failed/status").json()
    if (failed.get("state"), failed.get("code")) != ("failed", FAIL_CODE):
        raise AssertionError(f"expected failed with {FAIL_CODE}, got {failed}")
    missing = http_request(url, "GET", "/conformance:fixed/nothing/status")
    _expect(missing, 200)
    if missing.json().get("state") != "missing":
        raise AssertionError(f"expected missing, got {missing.json()}")


@case("H12", "R-HTTP-91", schemes=_HTTP)
def _h12(peer: RawPeer) -> None:
    """A listing filtered by state, paged by limit and cursor: next names the last entry of a
    page that has more, and is empty on the last page."""
    url = peer.url
    first = http_request(url, "GET", "/conformance:fixed?state=ended&limit=2")
    _expect(first, 200)
    page = first.json()
    ids = [entry["stream_id"] for entry in page["streams"]]
    if ids != ["big", "five"] or page["next"] != "five":
        raise AssertionError(f"expected big, five and next five, got {page}")
    rest = http_request(url, "GET", "/conformance:fixed?state=ended&limit=2&after=five").json()
    ids = [entry["stream_id"] for entry in rest["streams"]]
    if ids != ["many"] or rest["next"] != "":
        raise AssertionError(f"expected many and no next page, got {rest}")
    _expect(http_request(url, "GET", "/conformance:fixed?limit=0"), 400, "INVALID_ARGUMENT")


@case("H13", "R-HTTP-93", "R-QUERY-4", schemes=_HTTP)
def _h13(peer: RawPeer) -> None:
    """A DELETE on a channel that does not delete its streams is 403 NOT_ALLOWED and changes
    nothing: the stream's status is the same afterwards."""
    url = peer.url
    _expect(http_request(url, "DELETE", "/conformance:fixed/five"), 403, "NOT_ALLOWED")
    five = http_request(url, "GET", "/conformance:fixed/five/status").json()
    if (five.get("state"), five.get("last_seq")) != ("ended", 5):
        raise AssertionError(f"expected five still ended at seq 5, got {five}")


# -- running ------------------------------------------------------------------------------------


@attrs.frozen
class CaseResult:
    """The outcome of one case."""

    id: str
    rules: tuple[str, ...]
    title: str
    passed: bool
    detail: str
    seconds: float


@attrs.frozen
class Report:
    """Every case's outcome."""

    url: str
    results: tuple[CaseResult, ...]

    @property
    def passed(self) -> int:
        """How many cases passed."""
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        """How many cases failed."""
        return len(self.results) - self.passed

    def to_json(self) -> str:
        """The report as JSON."""
        return json.dumps(
            {
                "url": self.url,
                "passed": self.passed,
                "failed": self.failed,
                "cases": [attrs.asdict(r) for r in self.results],
            },
            indent=2,
        )


def _features(url: str, timeout: float) -> int:
    """The FEATURES the server at ``url`` announces in its WELCOME (0 if it cannot say)."""
    try:
        peer = RawPeer(url, timeout)
    except OSError:
        return 0  # the cases fail on their own connections, and say why
    try:
        return dict(peer.handshake().settings).get(Setting.FEATURES, 0)
    except (AssertionError, _Closed, OSError, ValueError):
        return 0
    finally:
        peer.close()


def run(
    url: str,
    *,
    only: set[str] | None = None,
    timeout: float = 5.0,
    out: Callable[[str], None] | None = None,
) -> Report:
    """Run the cases (all, or those in ``only``) against the server at ``url``, a URL of
    one of :data:`SCHEMES` (any other, or a malformed one, raises INVALID_ARGUMENT)."""
    results = []
    scheme = _target(url).scheme  # a URL the runner cannot dial fails here, not as N/A cases
    announced: int | None = None  # the server's FEATURES, asked once a case needs them
    for item in CASES:
        if only and item.id not in only:
            continue
        if scheme not in item.schemes:
            if out is not None:
                out(f"{item.id} N/A [{', '.join(item.rules)}] {item.title} ({scheme})")
            continue
        if item.feature:
            if announced is None:
                announced = _features(url, timeout)
            if not announced & item.feature:
                if out is not None:
                    why = f"the server does not announce FEATURES 0x{item.feature:02x}"
                    out(f"{item.id} SKIP [{', '.join(item.rules)}] {item.title} ({why})")
                continue
        started = time.monotonic()
        detail = ""
        try:
            peer = RawPeer(url, timeout)
        except OSError as exc:
            passed, detail = False, f"cannot connect: {exc}"
        else:
            try:
                item.check(peer)
                passed = True
            except (AssertionError, _Closed, OSError, ValueError) as exc:
                passed, detail = False, f"{type(exc).__name__}: {exc}"
            finally:
                peer.close()
        result = CaseResult(
            item.id, item.rules, item.title, passed, detail, round(time.monotonic() - started, 3)
        )
        results.append(result)
        if out is not None:
            mark = "PASS" if passed else "FAIL"
            out(f"{item.id} {mark} [{', '.join(item.rules)}] {item.title}")
            if detail:
                out(f"     {detail}")
    report = Report(url, tuple(results))
    if out is not None:
        out(f"{report.passed} passed, {report.failed} failed")
    return report
