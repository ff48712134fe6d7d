"""Two server processes, one Redis: a client moves from one to the other mid-stream.

    python examples/multi_process.py [--store redis://127.0.0.1:6379/0] [--tokens N]
                                     [--switch-after K]

The script starts two server processes (A and B, each ``--serve``) whose hubs keep their
streams in the same Redis (``transports.redis.RedisStore``). The client opens a token stream
on A and reads ``--switch-after`` tokens; then it leaves A, as if A's connection dropped, and
subscribes to the same stream on B from the last seq it saw. B has never seen the stream: its
hub looks it up in Redis, replays what the client missed and tails what A still writes. The
client gets every token exactly once, in order.

Needs a running Redis (``redis-server --port 6379``) and the ``redis`` extra
(``pip install streamproto[redis]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import subprocess
import sys
from typing import Any

from streamproto import ChannelOptions, Window
from transports import asyncio as sp
from transports import new_hub
from transports.redis import RedisStore, open_asyncio_driver

CHANNEL = "llm:tokens"
WORDS = ["every", "token", "once", "in", "order", "whichever", "server", "you", "ask"]
PACE = 0.01  # seconds between tokens


async def serve(store_url: str) -> None:
    """One server process: a hub on the shared Redis store, until interrupted."""
    store = RedisStore(store_url)
    hub = new_hub(store=store)
    server = await sp.serve(hub, "tcp://127.0.0.1:0")

    async def generate(producer: sp.ServerProducer, args: bytes) -> None:
        for word in itertools.islice(itertools.cycle(WORDS), int(args)):
            if producer.aborted.is_set():
                return
            await producer.write(word.encode() + b" ")
            await asyncio.sleep(PACE)
        producer.close()

    server.channel(CHANNEL, ChannelOptions(replay=Window(chunks=10_000)), on_open=generate)
    async with open_asyncio_driver(store, server):
        print(f"serving on {server.address}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.shutdown(timeout=1.0)


def start_server(store_url: str) -> tuple[subprocess.Popen[str], str]:
    """Start a server process; return it and its address."""
    command = [sys.executable, __file__, "--serve", "--store", store_url]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603 - ourselves
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, line.split()[-1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def main(
    store_url: str, tokens: int = 60, switch_after: int = 20, *, quiet: bool = False
) -> list[str]:
    """Run A and B, read ``switch_after`` tokens on A and the rest on B; return them all."""
    say: Any = (lambda *_: None) if quiet else print
    a_proc, a_url = await asyncio.to_thread(start_server, store_url)
    b_proc, b_url = await asyncio.to_thread(start_server, store_url)
    got: list[str] = []
    try:
        client = await sp.connect(a_url)
        sub = client.open(CHANNEL, b"%d" % tokens)
        async for chunk in sub:
            got.append(chunk.decode())
            if len(got) == switch_after:
                break
        stream_id, last = sub.stream_id, sub.seq
        await client.close()
        say(f"A ({a_url}): seqs 1..{last} of stream {stream_id}; leaving A")
        client = await sp.connect(b_url)
        async for chunk in client.subscribe(CHANNEL, stream_id, after_seq=last):
            got.append(chunk.decode())
        await client.close()
        say(f"B ({b_url}): seqs {last + 1}..{len(got)}, then the end")
        say("".join(got))
    finally:
        for proc in (a_proc, b_proc):
            await asyncio.to_thread(stop_server, proc)
    return got


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--switch-after", type=int, default=20)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if options.serve:
            asyncio.run(serve(options.store))
        else:
            asyncio.run(main(options.store, options.tokens, options.switch_after))
