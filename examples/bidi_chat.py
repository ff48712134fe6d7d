"""A bidirectional stream: a chat turn whose input keeps coming while the answer streams.

    python examples/bidi_chat.py [--transport tcp|ws] [--messages N]

The client opens ``chat:live`` with ``client.bidi(...)``: one handle that carries the user's
messages to the server and the assistant's tokens back. The server's ``on_bidi`` handler gets
a producer (its direction) and a reader (the client's); it answers each message with a few
tokens as it arrives, and ends its direction once the client has ended its own. The client
ends its direction after its last message (``await stream.end()``) and keeps reading: each
direction closes on its own. The answer is an ordinary stream of the channel, so a second
client (an observer) subscribes to it by id and reads the same tokens.
"""

from __future__ import annotations

import argparse
import asyncio

from transports import asyncio as sp
from transports import new_hub


async def main(transport: str, messages: int, quiet: bool = False) -> dict[str, object]:
    say = (lambda *a: None) if quiet else print
    heard: list[bytes] = []

    async def assistant(producer: sp.ServerProducer, upload: sp.ServerUpload) -> None:
        async for message in upload:  # the client's direction, as it comes
            heard.append(message)
            for word in (b"you", b"said", message):
                await producer.write(word + b" ")
            await producer.write(b"\n")
        producer.close()  # the client ended its direction: end ours

    url = "ws://127.0.0.1:0/streamproto" if transport == "ws" else "tcp://127.0.0.1:0"
    server = await sp.serve(new_hub(), url)
    server.channel("chat:live", on_bidi=assistant)
    client = await sp.connect(server.address)
    observer = await sp.connect(server.address)

    answer: list[bytes] = []
    watched: list[bytes] = []
    async with client.bidi("chat:live", b"session-1") as stream:
        say(f"stream {stream.stream_id}: the handle carries both directions")
        watch = observer.subscribe("chat:live", stream.stream_id)

        async def read_all() -> None:
            async for chunk in watch:
                watched.append(chunk)

        watching = asyncio.create_task(read_all())
        incoming = aiter(stream)
        for i in range(messages):
            await stream.write(b"message-%d" % i)
            while (token := await anext(incoming)) != b"\n":  # this message's answer
                answer.append(token)
            say(f"> message-{i}  < {b''.join(answer[-3:]).decode().strip()}")
        await stream.end()  # our direction is over; the server's goes on to its END
        answer.extend([token async for token in incoming if token != b"\n"])
    await watching
    say(f"the server heard {len(heard)} messages; the observer read {len(watched)} chunks")

    await observer.close()
    await client.close()
    await server.shutdown()
    return {"heard": heard, "answer": answer, "watched": watched}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    parser.add_argument("--messages", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.transport, args.messages))
