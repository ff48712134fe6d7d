"""Token streaming with resume: an LLM-style producer, a client whose connection drops
mid-answer, and an answer that arrives whole — no token lost, none repeated.

    python examples/token_streaming.py [--transport tcp|ws] [--tokens N] [--drop-at K]

The server and the client run in one process but talk over a real loopback socket. The
client opens a stream on ``llm:answers`` (the open request carries the prompt, and the client
is subscribed before the first token is written). After ``--drop-at`` tokens the client's
socket is killed without a goodbye; the client reconnects with backoff, resumes its session
with its resume token, re-subscribes after the last seq it saw, and the channel's replay
window fills in what was written meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from streamproto import ChannelOptions, Window
from transports import Backoff, new_hub
from transports import asyncio as sp

ANSWER = (
    "Streams of chunks share one connection; each has its own credit, its own order and its "
    "own replay window, so a dropped socket costs a reconnect and nothing else."
)
WORDS = ANSWER.split()


async def answer(producer: sp.ServerProducer, prompt: bytes) -> None:
    """The model: one token every few milliseconds until the answer is complete."""
    for word in itertools.islice(itertools.cycle(WORDS), int(prompt.decode() or 40)):
        if producer.aborted.is_set():  # the asker cancelled: stop generating
            return
        await producer.write(word.encode() + b" ")
        await asyncio.sleep(0.002)
    producer.close()


async def main(transport: str, tokens: int, drop_at: int, quiet: bool = False) -> list[str]:
    say = (lambda *a: None) if quiet else print
    hub = new_hub()  # time.monotonic and 128-bit random ids
    url = "ws://127.0.0.1:0/streamproto" if transport == "ws" else "tcp://127.0.0.1:0"
    server = await sp.serve(hub, url)
    server.channel("llm:answers", ChannelOptions(replay=Window(chunks=4096)), on_open=answer)
    say(f"server listening on {server.address}")

    client = await sp.connect(server.address, reconnect=Backoff(initial=0.05, attempts=10))
    received: list[tuple[int, str]] = []
    stream = client.open("llm:answers", str(tokens).encode())
    async for token in stream:
        received.append((stream.seq, token.decode()))
        if not quiet:
            print(token.decode(), end="", flush=True)
        if len(received) == drop_at:
            say(f"\n\n[after token {stream.seq}: the client's socket is killed]\n")
            client.abort_transport()
    stats = client.statistics()
    seqs = [seq for seq, _ in received]
    say(
        f"\n\nreceived {len(received)} tokens, seqs 1..{seqs[-1]}, "
        f"reconnects={stats.reconnects} resumed={stats.resumed} gaps={stats.gaps}"
    )
    if seqs != list(range(1, tokens + 1)):
        raise SystemExit(f"tokens lost or repeated: {seqs}")
    say("every token arrived exactly once, in order, across the reconnect")
    await client.close()
    await server.shutdown(timeout=1.0)
    return [token for _, token in received]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--drop-at", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(main(args.transport, args.tokens, args.drop_at))
