"""The reference channels a server must expose for the wire conformance runner
(``spec/CONFORMANCE.md``). Pure: it only registers channels and writes streams on a hub; the
live producers are paced by the hub's own clock (:meth:`Hub.call_later`), so they run the same
under every adapter and under a test clock. The runner itself does I/O and lives in
``transports.conformance``."""

from __future__ import annotations

from .._connection import WriteResult
from .._errors import ErrorCode
from .._hub import AbortRule, ChannelOptions, Hub, OpenHandler, Producer, UploadReader
from .._store import Window

__all__ = [
    "BIDI_CANCEL_MESSAGE",
    "BIG",
    "FAIL_CODE",
    "FAIL_MESSAGE",
    "FIVE",
    "MANY",
    "SLOW_INTERVAL",
    "SLOW_MAX",
    "UPLOAD_CANCEL_AFTER",
    "UPLOAD_CANCEL_MESSAGE",
    "register_reference_channels",
    "slow_chunk",
    "upload_result",
]

#: Chunks of the reference stream ``conformance:fixed/five``.
FIVE = [b"chunk-%d" % i for i in range(1, 6)]
FAIL_CODE = 4321
FAIL_MESSAGE = "the producer failed on purpose"
BIG = bytes(range(256)) * 400  # 102,400 bytes: larger than the default frame size
#: Chunks of ``conformance:fixed/many``: 64 chunks of 4,096 bytes, for the priority case.
MANY = [(b"m-%d-" % i).ljust(4096, b".") for i in range(1, 65)]
#: The live producers write one chunk per this many seconds of the hub's clock.
SLOW_INTERVAL = 0.001
#: The most chunks one OPEN of a live channel writes (its stream is retained whole).
SLOW_MAX = 100_000
#: ``conformance:upload-cancel`` cancels an upload once it has read this many chunks.
UPLOAD_CANCEL_AFTER = 3
UPLOAD_CANCEL_MESSAGE = f"cancelled after {UPLOAD_CANCEL_AFTER} chunks"

_WHOLE = Window(chunks=SLOW_MAX, nbytes=SLOW_MAX * 16)
#: ``conformance:bidi`` in mode ``cancel:N`` cancels the client's direction with this message.
BIDI_CANCEL_MESSAGE = "enough"


def slow_chunk(seq: int) -> bytes:
    """The chunk a live reference producer writes at ``seq``."""
    return b"s-%d" % seq


def register_reference_channels(hub: Hub) -> None:
    """The channels and streams a server under test must expose (spec/CONFORMANCE.md)."""
    fixed = hub.register("conformance:fixed", ChannelOptions(retention=86_400))
    five = fixed.start("five")
    for chunk in FIVE:
        five.write(chunk)
    five.close()
    failed = fixed.start("failed")
    failed.write(b"before-1")
    failed.write(b"before-2")
    failed.fail(FAIL_CODE, FAIL_MESSAGE)
    big = fixed.start("big")
    big.write(BIG)
    big.close()
    many = fixed.start("many")
    many.write_many(MANY)
    many.close()
    evicted = hub.register(
        "conformance:evicted", ChannelOptions(replay=Window(chunks=3), retention=86_400)
    )
    ten = evicted.start("ten")
    for i in range(1, 11):
        ten.write(b"e-%d" % i)
    ten.close()

    def on_open(producer: Producer, args: bytes) -> None:
        for i in range(1, int(args or b"3") + 1):
            producer.write(b"o-%d" % i)
        producer.close()

    hub.register("conformance:open", on_open=on_open)

    def on_upload(reader: UploadReader) -> None:
        reader.on_readable = lambda: _drain(reader)

    hub.register("conformance:upload", on_upload=on_upload)

    # Live producers: the same paced writer under three channel rules.
    paced = _paced(hub)
    keep = AbortRule.CONTINUE  # readers that leave, cancel or vanish do not stop it
    hub.register(
        "conformance:slow", ChannelOptions(replay=_WHOLE, on_last_cancel=keep), on_open=paced
    )
    hub.register("conformance:abort", ChannelOptions(replay=_WHOLE), on_open=paced)
    hub.register(
        "conformance:slow-window",
        ChannelOptions(replay=Window(chunks=4), on_last_cancel=keep),
        on_open=paced,
    )

    def cancel_after(reader: UploadReader) -> None:
        reader.on_readable = _CancelAfter(reader).read

    hub.register("conformance:upload-cancel", on_upload=cancel_after)
    hub.register("conformance:bidi", ChannelOptions(retention=60), on_bidi=_bidi)

    def counted(reader: UploadReader) -> None:
        reader.on_readable = _Counted(reader).read

    hub.register("conformance:upload-result", on_upload=counted)


def _drain(reader: UploadReader) -> None:
    while reader.read_nowait() is not None:
        pass


def upload_result(chunks: int, nbytes: int) -> bytes:
    """The result ``conformance:upload-result`` answers an upload with, when asked for one."""
    return b"chunks=%d bytes=%d" % (chunks, nbytes)


class _Counted:
    """Reads an upload and, once it ended, gives the result: what it counted."""

    def __init__(self, reader: UploadReader) -> None:
        self.reader = reader
        self.chunks = self.nbytes = 0

    def read(self) -> None:
        reader = self.reader
        while (chunk := reader.read_nowait()) is not None:
            self.chunks += 1
            self.nbytes += len(chunk)
        if reader.outcome == (0, "") and reader.wants_result:
            # (Called again for every later event of the reader: set the result once.)
            reader.on_readable = None
            reader.set_result(upload_result(self.chunks, self.nbytes))


class _CancelAfter:
    """Reads an upload and cancels it (UPLOAD_CANCELLED) once it has read a few chunks."""

    def __init__(self, reader: UploadReader) -> None:
        self.reader = reader
        self.read_chunks = 0

    def read(self) -> None:
        reader = self.reader
        while reader.outcome is None and reader.read_nowait() is not None:
            self.read_chunks += 1
            if self.read_chunks == UPLOAD_CANCEL_AFTER:
                reader.cancel(ErrorCode.UPLOAD_CANCELLED, UPLOAD_CANCEL_MESSAGE)


class _Bidi:
    """``conformance:bidi``: a bidirectional stream whose ``args`` pick what the server does
    (spec/CONFORMANCE.md): ``echo`` (or empty) writes back ``echo:<chunk>`` for each chunk
    and ends after the client's direction did; ``count`` writes ``read <n>`` once the client's
    direction is over, then ends; ``first:N`` writes ``f-1`` ... ``f-N`` and ends at once, then
    reads on; ``cancel:N`` cancels the client's direction after N chunks (UPLOAD_CANCELLED,
    ``enough``), then writes ``cancelled after N`` and ends."""

    def __init__(self, producer: Producer, reader: UploadReader, args: bytes) -> None:
        mode, _, count = args.partition(b":")
        self.producer = producer
        self.reader = reader
        self.mode = mode or b"echo"
        self.count = int(count or b"0")
        self.read_chunks = 0
        self.pending: list[bytes] = []  # echoes a BLOCK subscriber had no room for yet
        if self.mode == b"first":
            for i in range(1, self.count + 1):
                producer.write(b"f-%d" % i)
            producer.close()
        reader.on_readable = self.step
        producer.on_writable = self.step

    def step(self) -> None:
        producer, reader = self.producer, self.reader
        while True:
            while self.pending and not producer.closed:
                if producer.write(self.pending[0]) is WriteResult.BLOCKED:
                    return  # not reading on holds the client back; on_writable calls again
                self.pending.pop(0)
            chunk = reader.read_nowait()
            if chunk is None:
                break
            self.read_chunks += 1
            if self.mode == b"echo":
                self.pending.append(b"echo:" + chunk)
            elif self.mode == b"cancel" and self.read_chunks == self.count:
                reader.cancel(ErrorCode.UPLOAD_CANCELLED, BIDI_CANCEL_MESSAGE)
        if reader.outcome is not None and not producer.closed:
            if self.mode == b"count":
                producer.write(b"read %d" % self.read_chunks)
            elif self.mode == b"cancel":
                producer.write(b"cancelled after %d" % self.read_chunks)
            producer.close()


def _bidi(producer: Producer, reader: UploadReader, args: bytes) -> None:
    _Bidi(producer, reader, args)


def _paced(hub: Hub) -> OpenHandler:
    def on_open(producer: Producer, args: bytes) -> None:
        _Paced(hub, producer, min(int(args or b"3"), SLOW_MAX)).step()

    return on_open


class _Paced:
    """Writes ``slow_chunk(1)`` ... ``slow_chunk(count)``, one per SLOW_INTERVAL of the hub's
    clock, then ends the stream; stops when the stream was aborted (the hub finished it)."""

    def __init__(self, hub: Hub, producer: Producer, count: int) -> None:
        self.hub = hub
        self.producer = producer
        self.count = count

    def step(self) -> None:
        producer = self.producer
        producer.on_writable = None
        if producer.closed:  # aborted
            return
        seq = producer.last_seq + 1
        if seq > self.count:  # OPEN with args 0
            producer.close()
        elif producer.write(slow_chunk(seq)) is WriteResult.BLOCKED:
            producer.on_writable = self.step  # a BLOCK subscriber has no room: wait for it
        elif seq == self.count:
            producer.close()
        else:
            self.hub.call_later(SLOW_INTERVAL, self.step)
