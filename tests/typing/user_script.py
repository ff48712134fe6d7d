"""A user's script, checked by ``mypy --strict`` with no other flags (tests/test_typing.py):
what each backend's client hands out is typed, by overloads on ``on_gap``."""

from __future__ import annotations

from typing import assert_type

import trio

from streamproto import ErrorCode
from transports import ClientStatistics, ConnectionClosed, Gap, GapError, new_hub
from transports import asyncio as sp_asyncio
from transports import sync as sp_sync
from transports import trio as sp_trio


async def with_asyncio(url: str) -> list[bytes]:
    client = await sp_asyncio.connect(url)
    out: list[bytes] = []
    async for chunk in client.subscribe("demo:tokens", "a"):
        assert_type(chunk, bytes)
        out.append(chunk)
    async for item in client.open("demo:tokens", b"3", on_gap="item"):
        assert_type(item, bytes | Gap)
        if isinstance(item, Gap):
            print(item.from_seq, item.to_seq)
    async for batch in client.subscribe("demo:tokens", "b").batches():
        assert_type(batch, list[bytes])
    assert_type(client.statistics(), ClientStatistics)
    print(client.statistics().reconnects + client.statistics().resumed)
    await client.close()
    return out


async def with_trio(url: str) -> None:
    async with sp_trio.connect(url) as client:
        async for chunk in client.subscribe("demo:tokens", "a"):
            assert_type(chunk, bytes)
        async for batch in client.subscribe("demo:tokens", "a", on_gap="item").batches():
            assert_type(batch, list[bytes | Gap])


def with_threads(url: str) -> None:
    with sp_sync.connect(url) as client:
        try:
            for chunk in client.open("demo:tokens", b"5"):
                assert_type(chunk, bytes)
        except GapError as gap:
            assert_type(gap.code, int)
            print(gap.from_seq, gap.to_seq, gap.reason)
        except ConnectionClosed as closed:
            print(closed.code == ErrorCode.CONNECTION_CLOSED)


def main() -> None:
    hub = new_hub()
    with sp_sync.serve(hub, "tcp://127.0.0.1:0") as server:
        with_threads(server.address)
    trio.run(with_trio, "tcp://127.0.0.1:1")
