"""streamproto's own HTTP listeners for the independent-client tests, in a process of their own.

It serves :data:`sse_contract.CHANNEL` as spec/HTTP.md says, from one of our servers:
``--server asyncio|trio|sync`` (``serve(hub, "http://127.0.0.1:0")`` of that backend) or
``asgi-uvicorn|asgi-hypercorn`` (:class:`transports.asgi.StreamApp` under that ASGI server):

- the stream ``fixed`` is started at launch and written with :func:`sse_contract.chunk` 1 to
  :data:`sse_contract.COUNT`, ``--pace`` seconds apart, then ended; it stays retained, so it can
  be read from seq 1 again and again;
- ``POST /{channel}`` opens a new stream of as many chunks as its body says (ASCII digits,
  empty for :data:`sse_contract.COUNT`), paced the same way;
- every origin may call (``allow_origins=("*",)``), ``retry: 200``.

Run ``python tests/sse_ours_app.py --server NAME [--pace S]``: it prints ``ready <port>`` once
it listens and stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sse_contract import CHANNEL, COUNT, chunk

from streamproto import AbortRule, ChannelOptions, HttpOptions, OverflowPolicy, Window
from transports import new_hub

FIXED = "fixed"
OPTIONS = ChannelOptions(
    replay=Window(chunks=100_000, nbytes=64 << 20),
    retention=600.0,
    default_policy=OverflowPolicy.BLOCK,
    on_last_cancel=AbortRule.CONTINUE,
)
HTTP = HttpOptions(allow_origins=("*",), retry_ms=200)


def _count(args: bytes) -> int:
    return int(args) if args.strip() else COUNT


def _ready(port: int) -> None:
    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    print(f"ready {port}", flush=True)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


async def _write_async(producer: Any, count: int, pace: float) -> None:
    for seq in range(1, count + 1):
        await producer.write(chunk(seq))
        if pace:
            await asyncio.sleep(pace)
    producer.close()


def _write_sync(producer: Any, count: int, pace: float) -> None:
    for seq in range(1, count + 1):
        producer.write(chunk(seq))
        if pace:
            time.sleep(pace)
    producer.close()


async def _run_asyncio(pace: float) -> None:
    from transports import asyncio as sp

    async def on_open(producer: Any, args: bytes) -> None:
        await _write_async(producer, _count(args), pace)

    server = await sp.serve(new_hub(), "http://127.0.0.1:0", http=HTTP)
    server.channel(CHANNEL, OPTIONS, on_open=on_open)
    fixed = asyncio.ensure_future(_write_async(server.producer(CHANNEL, FIXED), COUNT, pace))
    _ready(_port(server.address))
    await asyncio.Event().wait()
    await fixed  # pragma: no cover - the process exits from the stdin watcher


async def _run_trio(pace: float) -> None:
    import trio

    from transports import trio as sp

    async def write(producer: Any, count: int) -> None:
        for seq in range(1, count + 1):
            await producer.write(chunk(seq))
            if pace:
                await trio.sleep(pace)
        producer.close()

    async def on_open(producer: Any, args: bytes) -> None:
        await write(producer, _count(args))

    async with sp.serve(new_hub(), "http://127.0.0.1:0", http=HTTP) as server:
        server.channel(CHANNEL, OPTIONS, on_open=on_open)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, server.producer(CHANNEL, FIXED), COUNT)
            _ready(_port(server.address))
            await trio.sleep_forever()


def _run_sync(pace: float) -> None:
    from transports import sync as sp

    def on_open(producer: Any, args: bytes) -> None:
        _write_sync(producer, _count(args), pace)

    server = sp.serve(new_hub(), "http://127.0.0.1:0", http=HTTP)
    server.channel(CHANNEL, OPTIONS, on_open=on_open)
    producer = server.producer(CHANNEL, FIXED)
    threading.Thread(target=_write_sync, args=(producer, COUNT, pace), daemon=True).start()
    _ready(_port(server.address))
    threading.Event().wait()


def _run_asgi(kind: str, pace: float) -> None:
    from transports.asgi import StreamApp

    app = StreamApp(new_hub(), http=HTTP)

    async def on_open(producer: Any, args: bytes) -> None:
        await _write_async(producer, _count(args), pace)

    app.channel(CHANNEL, OPTIONS, on_open=on_open)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    tasks: list[asyncio.Task[None]] = []

    async def lifespan_started() -> None:
        if not tasks:  # the first request starts the fixed stream, in the server's loop
            producer = app.producer(CHANNEL, FIXED)
            tasks.append(asyncio.ensure_future(_write_async(producer, COUNT, pace)))

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        await lifespan_started()
        await app(scope, receive, send)

    _ready(sock.getsockname()[1])
    if kind == "hypercorn":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.accesslog = config.errorlog = None
        asyncio.run(serve(wrapped, config))  # type: ignore[arg-type]
    else:
        import uvicorn

        uvicorn.Server(uvicorn.Config(wrapped, log_level="warning", lifespan="off")).run(
            sockets=[sock]
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sse_ours_app")
    parser.add_argument(
        "--server",
        choices=["asyncio", "trio", "sync", "asgi-uvicorn", "asgi-hypercorn"],
        required=True,
    )
    parser.add_argument("--pace", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.server == "asyncio":
        asyncio.run(_run_asyncio(args.pace))
    elif args.server == "trio":
        import trio

        trio.run(_run_trio, args.pace)
    elif args.server == "sync":
        _run_sync(args.pace)
    else:
        _run_asgi(args.server.split("-", 1)[1], args.pace)


if __name__ == "__main__":
    main()
