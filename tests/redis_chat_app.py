"""The reference server with one more channel, for the bidirectional cases of
``test_redis_processes.py``: ``python redis_chat_app.py URL --store REDIS --backend B`` takes the
arguments of ``python -m transports.reference`` and serves its channels plus ``chat:live``.

``chat:live`` allows deletes. Its bidirectional handler writes ``hello``, answers each chunk
``c`` of the client's direction with ``echo:c``, and ends its direction once the client's is
over; it prints ``bidi <stream id>`` when it is called and ``read <stream id> <chunk>`` for each
chunk it reads, so a test can tell which process's handler ran. A one-way OPEN of the channel
writes ``hello`` and leaves its stream open.
"""

from __future__ import annotations

import sys

from streamproto import ChannelOptions, Hub, Producer, ReplayStore, UploadReader, WriteResult
from transports import reference

CHAT = "chat:live"


def _chat(producer: Producer, reader: UploadReader, args: bytes) -> None:
    sid = producer.stream_id
    print(f"bidi {sid}", flush=True)
    producer.write(b"hello")

    def step() -> None:
        while (chunk := reader.read_nowait()) is not None:
            print(f"read {sid} {chunk.decode()}", flush=True)
            if producer.closed:  # deleted meanwhile: the client's direction runs on
                continue
            if producer.write(b"echo:" + chunk) is not WriteResult.ACCEPTED:
                # The tests wait for each echo before they write again: never full.
                raise RuntimeError("the echo found no room")
        if reader.outcome is not None and not producer.closed:
            producer.close()

    reader.on_readable = step


def _hello(producer: Producer, args: bytes) -> None:
    producer.write(b"hello")


def _hub(store: ReplayStore | None = None) -> Hub:
    hub = _reference_hub(store)
    hub.register(CHAT, ChannelOptions(allow_delete=True), on_open=_hello, on_bidi=_chat)
    return hub


_reference_hub = reference.reference_hub
reference.reference_hub = _hub  # every backend's serve builds its hub with it

if __name__ == "__main__":
    reference.main(sys.argv[1:])
