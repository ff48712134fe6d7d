"""An application the command line tests serve with ``streamproto serve cli_app:setup``."""

from __future__ import annotations

import asyncio
import os

from streamproto import ChannelOptions, ErrorCode, Hub, Window
from transports import asyncio as sp
from transports import new_hub

#: Lines the ``logs:app`` stream gets, one every ``LOG_INTERVAL`` seconds, then it ends.
LOG_LINES = int(os.environ.get("CLI_APP_LOG_LINES", "0"))
LOG_INTERVAL = float(os.environ.get("CLI_APP_LOG_INTERVAL", "0.05"))
#: Where the upload channel writes what it received.
UPLOAD_DIR = os.environ.get("CLI_APP_UPLOAD_DIR", "")


def line(seq: int) -> bytes:
    return b"line %d" % seq


async def setup(server: sp.Server) -> None:
    async def count(producer: sp.ServerProducer, args: bytes) -> None:
        for i in range(1, int(args or b"3") + 1):
            await producer.write(line(i))
        producer.close()

    async def fail(producer: sp.ServerProducer, args: bytes) -> None:
        await producer.write(b"before the failure")
        producer.fail(4001, "the application failed on purpose")

    async def store(upload: sp.ServerUpload) -> None:
        size = 0
        async for chunk in upload:
            size += len(chunk)
            if upload.args == b"cancel" and size > 100_000:
                upload.cancel(ErrorCode.UPLOAD_CANCELLED, "enough")
                return
        with open(os.path.join(UPLOAD_DIR, upload.stream_id), "w") as out:
            out.write(str(size))

    server.channel("demo:count", on_open=count)
    # Keeps two chunks of each stream: a late subscriber learns of the rest as a gap.
    server.channel("demo:short", ChannelOptions(replay=Window(chunks=2)), on_open=count)
    server.channel("demo:fail", on_open=fail)
    server.channel("demo:upload", on_upload=store)
    server.channel("logs:app", ChannelOptions())
    if LOG_LINES:
        producer = server.producer("logs:app", "app")

        async def write_logs() -> None:
            for seq in range(1, LOG_LINES + 1):
                await producer.write(line(seq))
                await asyncio.sleep(LOG_INTERVAL)
            producer.close()

        server.spawn(write_logs())


def _hub() -> Hub:
    hub = new_hub()
    producer = hub.register("demo:static").start("s")
    producer.write(b"first")
    producer.write(b"second")
    producer.close()
    return hub


#: A bare hub with one finished stream, ``demo:static``/``s``, for ``serve cli_app:hub``.
hub = _hub()
not_an_app = 42
