"""The reference channels a server must expose for the wire conformance runner
(``spec/CONFORMANCE.md``). Pure: it only registers channels and writes streams on a hub.
The runner itself does I/O and lives in ``transports.conformance``."""

from __future__ import annotations

from .._hub import ChannelOptions, Hub, Producer, UploadReader
from .._store import Window

__all__ = ["BIG", "FAIL_CODE", "FAIL_MESSAGE", "FIVE", "register_reference_channels"]

#: Chunks of the reference stream ``conformance:fixed/five``.
FIVE = [b"chunk-%d" % i for i in range(1, 6)]
FAIL_CODE = 4321
FAIL_MESSAGE = "the producer failed on purpose"
BIG = bytes(range(256)) * 400  # 102,400 bytes: larger than the default frame size


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


def _drain(reader: UploadReader) -> None:
    while reader.read_nowait() is not None:
        pass
