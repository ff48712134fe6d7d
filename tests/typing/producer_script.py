"""A user's script with typed chunks, checked by ``mypy --strict`` with no other flags
(tests/test_producers.py): producers write values of their codec's type and subscriptions hand
them out typed, on every backend; without a codec both stay ``bytes``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TypedDict, assert_type

from streamproto import JSON, AbortReason, JsonCodec
from transports import Gap
from transports import asyncio as sp_asyncio
from transports import sync as sp_sync
from transports import trio as sp_trio


class Token(TypedDict):
    text: str
    n: int


TOKENS: JsonCodec[Token] = JsonCodec()


async def answer(producer: sp_asyncio.ServerProducer[Token], args: bytes) -> AsyncIterator[Token]:
    """An async-generator handler: each item is written with back-pressure."""
    for n, word in enumerate(args.decode().split()):
        yield {"text": word, "n": n}


async def imperative(producer: sp_trio.ServerProducer[Token], args: bytes) -> None:
    await producer.write({"text": "a", "n": 0})
    written = await producer.pipe([{"text": "b", "n": 1}], end=False)
    assert_type(written, int)
    assert_type(producer.abort_reason, AbortReason | None)
    producer.close()


def threaded(producer: sp_sync.ServerProducer[Token], args: bytes) -> Iterator[Token]:
    yield {"text": "c", "n": 2}


def raw(producer: sp_sync.ServerProducer, args: bytes) -> None:
    assert_type(producer, sp_sync.ServerProducer[bytes])  # no codec: bytes, as before
    producer.write(b"chunk")
    producer.close()


async def with_asyncio() -> None:
    server = await sp_asyncio.serve(None, "tcp://127.0.0.1:0")
    server.channel("demo:tokens", on_open=answer, codec=TOKENS)
    server.channel("demo:files")
    upload = server.expect_upload("demo:files")
    assert_type(upload, sp_asyncio.ServerUpload)
    print(upload.stream_id)
    client = await sp_asyncio.connect(server.address)
    async for token in client.open("demo:tokens", b"a b").decoded(TOKENS):
        assert_type(token, Token)  # marker: value
        print(token["text"], token["n"])
    async for item in client.open("demo:tokens", b"c", on_gap="item").decoded(TOKENS):
        assert_type(item, Token | Gap)
    async for batch in client.subscribe("demo:tokens", "x").decoded(TOKENS).batches():
        assert_type(batch, list[Token])
    async for anything in client.subscribe("demo:tokens", "y").decoded(JSON):
        print(anything)
    await client.close()
    await server.shutdown()


def with_threads(url: str) -> None:
    with sp_sync.connect(url) as client:
        for token in client.open("demo:tokens").decoded(TOKENS):
            assert_type(token, Token)  # marker: value
        for chunk in client.open("demo:raw"):
            assert_type(chunk, bytes)
