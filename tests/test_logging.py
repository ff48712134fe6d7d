"""What the adapters log, at which level, with which ids (docs/logging.md is the policy)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from streamproto import Config, ErrorCode
from transports import Backoff, StreamError, new_hub
from transports import asyncio as sp

WAIT = 30.0


def messages(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


def test_a_connection_is_logged_with_its_ids(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[str, str]:
        server = await sp.serve(None, "tcp://127.0.0.1:0")
        server.channel("demo:logs")
        producer = server.producer("demo:logs", "s1")
        client = await sp.connect(server.address)
        sub = client.subscribe("demo:logs", "s1")
        await producer.write(b"payload-that-is-never-logged")
        producer.close()
        assert [chunk async for chunk in sub] == [b"payload-that-is-never-logged"]
        session = client.core.session_id
        address = server.address
        await client.close()
        await server.shutdown(timeout=WAIT)
        return session, address

    with caplog.at_level(logging.DEBUG, logger="streamproto"):
        session, address = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert messages(caplog, "streamproto.server", logging.INFO)[0] == f"listening on {address}"
    # (the server may see the client's close before or after its shutdown starts)
    assert any(
        re.fullmatch(f"shutting down {address}: GOAWAY to [01] connections, {WAIT:g} s to drain", m)
        for m in messages(caplog, "streamproto.server", logging.INFO)
    )
    server_info = [
        r
        for r in caplog.records
        if r.name == "streamproto.server" and r.levelno == logging.INFO and hasattr(r, "conn_id")
    ]
    assert [r.getMessage().split("] ", 1)[1] for r in server_info] == [
        "connection open",
        "connection closed: NO_ERROR: drained",
    ]
    for record in server_info:
        assert record.session_id == session  # type: ignore[attr-defined]
        assert record.conn_id.startswith("c")  # type: ignore[attr-defined]
        assert record.getMessage().startswith(f"[{record.conn_id} {session}] ")  # type: ignore[attr-defined]
    client_info = messages(caplog, "streamproto.client", logging.INFO)
    assert len(client_info) == 1
    assert client_info[0].endswith(f"{session}] connected to {address}")
    debug = messages(caplog, "streamproto.server", logging.DEBUG)
    assert any(m.endswith("connection accepted") for m in debug)
    assert any("SubscribeRequested(h=1 demo:logs/'s1'" in m for m in debug)
    assert any("HandshakeCompleted" in m for m in messages(caplog, "streamproto.client", 10))
    assert "payload-that-is-never-logged" not in caplog.text  # data events are not logged
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_info_carries_no_per_event_records(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with await sp.serve(None, "tcp://127.0.0.1:0") as server:
            server.channel("demo:logs")
            async with await sp.connect(server.address) as client:
                sub = client.subscribe("demo:logs", "missing")
                with pytest.raises(StreamError):
                    await sub.accepted()

    with caplog.at_level(logging.INFO, logger="streamproto"):
        asyncio.run(asyncio.wait_for(main(), WAIT))
    assert {r.levelno for r in caplog.records} == {logging.INFO}
    # listening, connection open and closed, shutting down; client connected
    assert len(caplog.records) == 5


def test_reconnect_and_resume_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with await sp.serve(None, "tcp://127.0.0.1:0") as server:
            server.channel("demo:logs")
            producer = server.producer("demo:logs", "s1")
            client = await sp.connect(server.address, reconnect=Backoff(initial=0.01))
            sub = client.subscribe("demo:logs", "s1")
            await sub.accepted()
            client.abort_transport()
            await asyncio.sleep(0.05)
            await producer.write(b"after")
            producer.close()
            assert [chunk async for chunk in sub] == [b"after"]
            await client.close()

    with caplog.at_level(logging.DEBUG, logger="streamproto"):
        asyncio.run(asyncio.wait_for(main(), WAIT))
    info = [m.split("] ", 1)[1] for m in messages(caplog, "streamproto.client", logging.INFO)]
    assert info[0].startswith("connected to tcp://127.0.0.1:")
    assert info[1].startswith("connection lost: CONNECTION_LOST")
    assert info[2] == "reconnected: session resumed"
    debug = messages(caplog, "streamproto.client", logging.DEBUG)
    assert any("reconnecting in " in m and "(attempt 1 of 8)" in m for m in debug)
    ids = {r.conn_id for r in caplog.records if r.name == "streamproto.client"}  # type: ignore[attr-defined]
    assert len(ids) == 2  # a new connection id for the new connection, the same session


def test_giving_up_and_refusals_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        hub = new_hub(authenticate=lambda auth: auth == b"ok")
        server = await sp.serve(hub, "tcp://127.0.0.1:0", config=Config(max_connections=1))
        with pytest.raises(StreamError) as refused:
            await sp.connect(server.address, auth=b"wrong", reconnect=Backoff(attempts=0))
        assert refused.value.code == ErrorCode.AUTH_FAILED
        first = await sp.connect(server.address, auth=b"ok", reconnect=Backoff(attempts=0))
        with pytest.raises(StreamError) as busy:
            await sp.connect(server.address, auth=b"ok", reconnect=Backoff(attempts=0))
        assert busy.value.code == ErrorCode.SERVER_BUSY
        await server.shutdown(timeout=WAIT)
        while first.core.failure is None:
            await asyncio.sleep(0.01)
        await first.close()

    with caplog.at_level(logging.INFO, logger="streamproto"):
        asyncio.run(asyncio.wait_for(main(), WAIT))
    client_info = messages(caplog, "streamproto.client", logging.INFO)
    assert any(
        m.endswith("handshake refused: AUTH_FAILED: authentication failed") for m in client_info
    )
    [capacity] = messages(caplog, "streamproto.server", logging.WARNING)
    assert capacity.startswith("at capacity (1 connections, max_connections=1")
    assert capacity.endswith("1 connections refused with SERVER_BUSY so far")
    warnings = messages(caplog, "streamproto.client", logging.WARNING)
    assert any(m.endswith("giving up: SERVER_BUSY: the server is busy") for m in warnings)
    # The shutdown drained the idle connection: a lost connection, and no retries left.
    assert any("giving up: CONNECTION_LOST" in m for m in warnings), warnings
    server_info = messages(caplog, "streamproto.server", logging.INFO)
    assert any(
        m.endswith("connection closed: AUTH_FAILED: authentication failed") for m in server_info
    )


def test_the_logging_page_runs() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "logging.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3
    loggers = [logging.getLogger(n) for n in ("streamproto", "streamproto.server")]
    saved = [(lg.level, list(lg.handlers)) for lg in loggers]
    root_handlers = list(logging.getLogger().handlers)
    try:
        for index, block in enumerate(blocks):
            exec(compile(block, f"docs/logging.md block {index}", "exec"), {"__name__": "docs"})
    finally:  # the page configures logging: undo it for the tests that follow
        for lg, (level, handlers) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.handlers[:] = handlers
        logging.getLogger().handlers[:] = root_handlers
