"""Typed answers: an async-generator handler on a JSON channel, and a client that reads values.

    python examples/json_answers.py [--transport tcp|ws] [--prompt "some words"]

The handler is an async generator: each token it yields is encoded by the channel's codec
(``JsonCodec[Token]``: one JSON value per chunk; the wire does not change) and written with the
stream's back-pressure; the stream ends when the generator returns. An empty prompt makes it
raise ``StreamError(4001, ...)``, and the client's loop raises that code. A client that stops
reading after a few tokens cancels the stream: the generator is closed at its next ``yield``,
and its ``finally`` reads why (``producer.abort_reason``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import TypedDict

from streamproto import AbortReason, ChannelOptions, JsonCodec, OverflowPolicy
from transports import StreamError
from transports import asyncio as sp

#: An application code (1000-65535) for "the prompt is empty".
EMPTY_PROMPT = 4001


class Token(TypedDict):
    text: str
    index: int


TOKENS: JsonCodec[Token] = JsonCodec()

#: Why each generator stopped early (the server's side of a cancel).
stopped: list[AbortReason] = []


async def answer(producer: sp.ServerProducer[Token], prompt: bytes) -> AsyncIterator[Token]:
    """The model: one token per word of the prompt, a few milliseconds apart."""
    words = prompt.decode().split()
    if not words:
        raise StreamError(EMPTY_PROMPT, "the prompt is empty")
    try:
        for index, word in enumerate(words):
            yield {"text": word, "index": index}
            await asyncio.sleep(0.002)
    finally:
        if producer.abort_reason is not None:  # the asker cancelled: closed at a yield
            stopped.append(producer.abort_reason)


async def main(transport: str, prompt: str, quiet: bool = False) -> dict[str, object]:
    say = (lambda *a: None) if quiet else print
    url = "ws://127.0.0.1:0/streamproto" if transport == "ws" else "tcp://127.0.0.1:0"
    server = await sp.serve(None, url)
    # BLOCK: the generator waits for a slow reader instead of losing its tokens.
    options = ChannelOptions(default_policy=OverflowPolicy.BLOCK)
    server.channel("llm:answers", options, on_open=answer, codec=TOKENS)
    client = await sp.connect(server.address)

    tokens: list[Token] = []
    async for token in client.open("llm:answers", prompt.encode()).decoded(TOKENS):
        tokens.append(token)  # a Token: token["text"] is a str to a type checker too
        say(f"{token['index']:>3} {token['text']}")

    try:
        async for token in client.open("llm:answers", b"").decoded(TOKENS):
            tokens.append(token)
        refused = 0
    except StreamError as exc:
        refused = exc.code
        say(f"empty prompt: {exc}")

    async for token in client.open("llm:answers", b"stop after three words please").decoded(TOKENS):
        if token["index"] == 2:
            break  # leaving the loop cancels: the last subscriber is gone, the producer aborts
    for _ in range(500):  # the generator is closed at its next yield
        if stopped:
            break
        await asyncio.sleep(0.01)
    say(f"cancelled: the producer read {stopped[0] if stopped else 'nothing'}")

    await client.close()
    await server.shutdown(timeout=1.0)
    return {"tokens": tokens, "refused": refused, "stopped": list(stopped)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    parser.add_argument("--prompt", default="streams of values share one connection")
    args = parser.parse_args()
    asyncio.run(main(args.transport, args.prompt))
