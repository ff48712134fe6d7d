"""Producer ergonomics on every backend: generator handlers, ``pipe``, exceptions carrying a
code, the abort's reason, server-allocated upload ids, codecs, and the producer wrapper used
without our servers (a hub run by someone else)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import BACKENDS, ClientProxy, ServerProxy
from hub_helpers import HubHarness
from test_batches import make_sub

from streamproto import (
    BYTES,
    JSON,
    AbortReason,
    ChannelOptions,
    Config,
    DecodeError,
    ErrorCode,
    FunctionCodec,
    JsonCodec,
    MemoryStore,
    OverflowPolicy,
    StoreFailed,
    StreamProtoError,
    Window,
    handler_failure,
    msgpack_codec,
)
from transports import StreamError
from transports import asyncio as sp_asyncio
from transports import sync as sp_sync
from transports import trio as sp_trio
from transports._common import _Run
from transports.testing import SubProxy

BLOCK = ChannelOptions(default_policy=OverflowPolicy.BLOCK, replay=Window(chunks=16))
DEADLINE = 20.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(backend: str) -> Iterator[ServerProxy]:
    srv = ServerProxy(backend, "tcp")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ServerProxy) -> Iterator[ClientProxy]:
    cli = ClientProxy(server.backend, server.url)
    try:
        yield cli
    finally:
        cli.close()


def register(server: ServerProxy, name: str, options: ChannelOptions | None, **kw: Any) -> None:
    server.thread.call(lambda: server.server.channel(name, options, **kw))


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {DEADLINE:g} s for {what}")
        time.sleep(0.01)


def generator_handler(backend: str, items: Callable[[Any, bytes], Iterator[Any]]) -> Any:
    """``items(producer, args)`` as the backend's kind of generator handler."""
    if backend == "sync":
        return items

    async def agen(producer: Any, args: bytes) -> AsyncIterator[Any]:
        for item in items(producer, args):
            yield item

    return agen


def imperative_handler(backend: str, body: Callable[[Any], Iterator[Any]]) -> Any:
    """A coroutine (or plain) handler writing what ``body(producer)`` yields, one ``write``
    each (``body`` may raise after some)."""
    if backend == "sync":

        def run(producer: Any, args: bytes) -> None:
            for item in body(producer):
                producer.write(item)

        return run

    async def arun(producer: Any, args: bytes) -> None:
        for item in body(producer):
            await producer.write(item)

    return arun


# -- generator handlers, pipe and exceptions -------------------------------------------------


def test_a_generator_handler_streams_its_items_then_ends(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    def count(producer: Any, args: bytes) -> Iterator[bytes]:
        for i in range(int(args)):
            yield b"%d" % i

    register(server, "p:gen", BLOCK, on_open=generator_handler(backend, count))
    sub = client.open("p:gen", b"300")
    assert sub.rest() == [b"%d" % i for i in range(300)]
    assert sub.error is None
    assert sub.seqs[-1] == 300


def test_a_generator_handler_is_held_back_by_a_slow_block_subscriber(
    backend: str,
) -> None:
    # A window of 4 chunks under BLOCK: a generator whose items were written without waiting
    # would lose all but the first few (BLOCKED writes write nothing).
    srv = ServerProxy(backend, "tcp")
    cli = ClientProxy(backend, srv.url, config=Config(window_chunks=4, window_bytes=1 << 16))
    try:

        def big(producer: Any, args: bytes) -> Iterator[bytes]:
            for i in range(2000):
                yield i.to_bytes(4, "big") * 256

        register(srv, "p:block", BLOCK, on_open=generator_handler(backend, big))
        sub = cli.open("p:block", b"")
        got = sub.rest()
        assert sub.error is None
        assert [int.from_bytes(chunk[:4], "big") for chunk in got] == list(range(2000))
    finally:
        cli.close()
        srv.stop()


@pytest.mark.parametrize("kind", ["generator", "imperative"])
def test_an_exception_with_a_code_fails_the_stream_with_that_code(
    server: ServerProxy, client: ClientProxy, backend: str, kind: str
) -> None:
    def two_then_refuse(*_: Any) -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise StreamError(4001, "quota used up")

    handler = (
        generator_handler(backend, two_then_refuse)
        if kind == "generator"
        else imperative_handler(backend, two_then_refuse)
    )
    register(server, "p:code", BLOCK, on_open=handler)
    sub = client.open("p:code", b"")
    assert sub.rest() == [b"a", b"b"]
    assert isinstance(sub.error, StreamError)
    assert (sub.error.code, sub.error.message) == (4001, "quota used up")


def test_any_other_exception_fails_the_stream_with_handler_failed(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    def broken(*_: Any) -> Iterator[bytes]:
        yield b"a"
        raise KeyError("model")

    register(server, "p:bug", BLOCK, on_open=generator_handler(backend, broken))
    sub = client.open("p:bug", b"")
    assert sub.rest() == [b"a"]
    assert isinstance(sub.error, StreamError)
    assert sub.error.code == ErrorCode.HANDLER_FAILED
    assert "KeyError" in sub.error.message


def test_pipe_writes_a_source_and_ends_the_stream(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    written: list[int] = []
    if backend == "sync":

        def handler(producer: Any, args: bytes) -> None:
            written.append(producer.pipe(iter([b"x", b"y", b"z"])))

    else:

        async def source() -> AsyncIterator[bytes]:
            for chunk in (b"x", b"y", b"z"):
                yield chunk

        async def handler(producer: Any, args: bytes) -> None:  # type: ignore[misc]
            written.append(await producer.pipe(source()))

    register(server, "p:pipe", BLOCK, on_open=handler)
    sub = client.open("p:pipe", b"")
    assert sub.rest() == [b"x", b"y", b"z"]
    assert sub.error is None
    # pipe returns once it ended the stream: the END may reach the client first.
    wait_for(lambda: written == [3], "pipe returned how many it wrote")


# -- the abort and its reason ----------------------------------------------------------------


def test_a_cancel_stops_a_generator_and_the_producer_reads_why(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    reasons: list[AbortReason | None] = []

    def forever(producer: Any, args: bytes) -> Iterator[bytes]:
        try:
            i = 0
            while True:
                i += 1
                yield b"%d" % i
                if backend == "sync":
                    time.sleep(0.001)
        finally:  # runs when the runner closes the generator after the abort
            reasons.append(producer.abort_reason)

    if backend == "sync":
        handler: Any = forever
    else:
        sleep = asyncio.sleep if backend == "asyncio" else trio.sleep

        async def handler(producer: Any, args: bytes) -> AsyncIterator[bytes]:
            try:
                i = 0
                while True:
                    i += 1
                    yield b"%d" % i
                    await sleep(0.001)
            finally:
                reasons.append(producer.abort_reason)

    register(server, "p:forever", BLOCK, on_open=handler)
    sub = client.open("p:forever", b"")
    assert sub.take(5) == [b"1", b"2", b"3", b"4", b"5"]
    sub.stop_after_next()  # breaks out of the loop: CANCEL, the last subscriber leaves
    wait_for(lambda: bool(reasons), "the generator to be closed")
    reason = reasons[0]
    assert reason is not None
    assert reason.code == ErrorCode.CANCELLED
    assert "the last subscriber cancelled" in reason.message


# -- server-allocated upload ids -------------------------------------------------------------


def test_expect_upload_allocates_an_id_the_client_uploads_to(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    register(server, "p:up", BLOCK)  # no on_upload: only expected ids are taken
    upload = server.thread.call(lambda: server.server.expect_upload("p:up"))
    sid = upload.stream_id
    assert sid
    assert client.upload("p:up", sid, [b"one", b"two"]) is None

    if backend == "sync":
        got = list(upload)
    else:

        async def read_all() -> list[bytes]:
            return [chunk async for chunk in upload]

        got = server.thread.call(read_all)
    assert got == [b"one", b"two"]
    # Not expected (any more): refused, since the channel takes no uploads of its own.
    refused = client.upload("p:up", sid, [b"again"])
    assert isinstance(refused, StreamError)
    assert refused.code == ErrorCode.NOT_ALLOWED


def test_expect_upload_on_an_unknown_channel_raises(server: ServerProxy) -> None:
    with pytest.raises(StreamProtoError) as info:
        server.thread.call(lambda: server.server.expect_upload("p:nothing"))
    assert info.value.code == ErrorCode.UNKNOWN_CHANNEL


# -- codecs ----------------------------------------------------------------------------------


def test_a_json_channel_carries_values_both_ways(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    values = [{"token": "hello", "n": 1}, [1, 2.5, None], "é", 7]

    def items(producer: Any, args: bytes) -> Iterator[Any]:
        yield from values

    register(server, "p:json", BLOCK, on_open=generator_handler(backend, items), codec=JSON)
    sub = SubProxy(client, lambda: client.client.open("p:json", b"").decoded(JSON))
    assert sub.rest() == values
    assert sub.error is None
    # The wire carries the JSON text: a subscriber without a codec sees the bytes.
    raw = client.subscribe("p:json", sub.sub.stream_id)
    assert raw.rest() == [b'{"token":"hello","n":1}', b"[1,2.5,null]", '"é"'.encode(), b"7"]


def test_a_producer_of_a_json_channel_writes_values(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    register(server, "p:jw", BLOCK, codec=JSON)
    producer = server.thread.call(lambda: server.server.producer("p:jw", "s1"))
    sub = SubProxy(client, lambda: client.client.subscribe("p:jw", "s1").decoded(JSON))
    client.wait_accepted(sub.sub)
    if backend == "sync":
        producer.write({"a": 1})
        producer.write_many([{"b": 2}, {"c": 3}])
    else:

        async def write() -> None:
            await producer.write({"a": 1})
            await producer.write_many([{"b": 2}, {"c": 3}])

        server.thread.call(write)
    assert server.thread.call(lambda: producer.write_nowait({"d": 4})).name == "ACCEPTED"
    server.thread.call(producer.close)
    assert sub.rest() == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]


def test_a_value_the_codec_cannot_encode_is_the_writers_error(
    server: ServerProxy, backend: str
) -> None:
    register(server, "p:bad", BLOCK, codec=JSON)
    producer = server.thread.call(lambda: server.server.producer("p:bad", "s1"))
    with pytest.raises(StreamProtoError) as info:
        server.thread.call(lambda: producer.write_nowait({1, 2}))
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert "json cannot encode a set" in info.value.message


def test_a_payload_the_codec_cannot_decode_raises_decode_error_with_its_seq(
    server: ServerProxy, client: ClientProxy, backend: str
) -> None:
    register(server, "p:raw", BLOCK)
    server.start("p:raw", "s1")
    server.write("s1", b'{"ok":true}', b"\xff not json", b"[3]")
    server.close_stream("s1")
    sub = SubProxy(client, lambda: client.client.subscribe("p:raw", "s1").decoded(JSON))
    assert sub.rest() == [{"ok": True}]
    error = sub.error
    assert isinstance(error, DecodeError)
    assert (error.code, error.seq, error.data) == (ErrorCode.DECODE_FAILED, 2, b"\xff not json")
    # Batches: the error ends the batch before it, and is raised by the next one.
    batches = client.raw_subscribe("p:raw", "s1")
    client.thread.call(lambda: batches.decoded(JSON))
    items, error = client.collect(client.thread.call(batches.batches))
    assert items == [[{"ok": True}]]
    assert isinstance(error, DecodeError)
    assert error.seq == 2
    # Skipping it: a subscription after its seq reads on.
    rest = SubProxy(
        client, lambda: client.client.subscribe("p:raw", "s1", after_seq=2).decoded(JSON)
    )
    assert rest.rest() == [[3]]
    assert rest.error is None


def test_msgpack_codec_round_trips() -> None:
    codec = msgpack_codec()
    value = {"a": [1, 2], "b": b"\x00raw", "c": None}
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(DecodeError):
        codec.decode(b"\xc1")


def test_json_codec_rules() -> None:
    assert JSON.encode({"é": 1}) == '{"é":1}'.encode()
    typed: JsonCodec[dict[str, int]] = JsonCodec()
    assert typed.decode(b'{"a":1}') == {"a": 1}
    with pytest.raises(StreamProtoError) as info:
        JSON.encode(float("nan"))
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(DecodeError):
        JSON.decode(b"NaN")


def test_handler_failure_keeps_codes_a_stream_may_end_with() -> None:
    assert handler_failure(StreamError(4001, "x")) == (4001, "x")
    assert handler_failure(StreamProtoError(ErrorCode.NOT_ALLOWED, "no")) == (
        ErrorCode.NOT_ALLOWED,
        "no",
    )
    # A local code is never sent: the handler failed.
    code, message = handler_failure(StreamProtoError(ErrorCode.STREAM_CLOSED, "closed"))
    assert code == ErrorCode.HANDLER_FAILED
    assert message.startswith("StreamProtoError:")
    assert handler_failure(StreamProtoError(999, "reserved"))[0] == ErrorCode.HANDLER_FAILED
    assert handler_failure(ValueError("v")) == (ErrorCode.HANDLER_FAILED, "ValueError: v")


# -- the producer wrapper without our servers ------------------------------------------------


def _embedded() -> tuple[HubHarness, Any, int]:
    """A hub run by 'another framework' (the in-memory harness), a BLOCK channel with a
    window of 4 chunks, a stream and a subscriber to it."""
    harness = HubHarness()
    harness.hub.register("e:values", BLOCK)
    client = harness.connect(Config(window_chunks=4))
    handle = client.conn.subscribe("e:values", "s1")
    return harness, client, handle


VALUES = [{"n": i} for i in range(50)]


def _received(client: Any, handle: int) -> list[Any]:
    return [JSON.decode(chunk) for _, chunk in client.chunks(handle)]


def test_the_asyncio_producer_works_on_a_hub_without_our_server() -> None:
    async def main() -> list[Any]:
        harness, client, handle = _embedded()
        producer: sp_asyncio.ServerProducer[dict[str, int]] = sp_asyncio.ServerProducer(
            harness.hub.channel("e:values").start("s1"),  # type: ignore[union-attr]
            codec=JSON,
        )
        harness.pump()
        task = asyncio.ensure_future(producer.pipe(VALUES))
        while not task.done():  # the framework's loop: move bytes, let the producer run
            harness.pump()
            await asyncio.sleep(0)
        assert task.result() == 50
        harness.pump()
        return _received(client, handle)

    assert asyncio.run(main()) == VALUES


def test_the_trio_producer_works_on_a_hub_without_our_server() -> None:
    async def main() -> list[Any]:
        harness, client, handle = _embedded()
        producer: sp_trio.ServerProducer[dict[str, int]] = sp_trio.ServerProducer(
            harness.hub.channel("e:values").start("s1"),  # type: ignore[union-attr]
            codec=JSON,
        )
        harness.pump()
        done: list[int] = []

        async def run() -> None:
            done.append(await producer.pipe(VALUES))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            while not done:
                harness.pump()
                await trio.sleep(0)
        assert done == [50]
        harness.pump()
        return _received(client, handle)

    assert trio.run(main) == VALUES


def test_the_thread_producer_works_on_a_hub_without_our_server() -> None:
    harness, client, handle = _embedded()
    lock = threading.RLock()
    producer: sp_sync.ServerProducer[dict[str, int]] = sp_sync.ServerProducer(
        harness.hub.channel("e:values").start("s1"),  # type: ignore[union-attr]
        codec=JSON,
        lock=lock,
    )
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(producer.pipe(VALUES)))
    with lock:
        harness.pump()
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while not done and time.monotonic() < deadline:
        with lock:  # every hub call under the producer's lock
            harness.pump()
        time.sleep(0.001)
    thread.join(DEADLINE)
    assert done == [50]
    harness.pump()
    assert _received(client, handle) == VALUES


def test_function_codecs_report_what_they_cannot_do(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BYTES.name == "bytes"
    assert BYTES.encode(bytearray(b"ab")) == b"ab"
    assert BYTES.decode(b"ab") == b"ab"
    assert repr(BYTES) == "<codec bytes>"
    with pytest.raises(StreamProtoError, match="bytes cannot encode a str"):
        BYTES.encode("ab")  # type: ignore[arg-type]
    text = FunctionCodec("text", lambda v: v, lambda b: b.decode())  # encodes to str: a bug
    with pytest.raises(StreamProtoError, match="text encoder returned str, not bytes") as info:
        text.encode("x")
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    monkeypatch.setitem(sys.modules, "msgpack", None)  # as if the extra were not installed
    with pytest.raises(StreamProtoError, match="pip install streamproto") as missing:
        msgpack_codec()
    assert missing.value.code == ErrorCode.INVALID_STATE


def test_the_hub_producer_records_why_it_was_aborted() -> None:
    from test_hub_shared import SharedFake

    harness = HubHarness()
    harness.hub.register("h:ch", on_open=lambda producer, args: None)
    client = harness.connect()
    handle = client.conn.open("h:ch")
    harness.pump()
    stream_id = client.of(handle)[0].stream_id  # type: ignore[attr-defined]
    producer = harness.hub.channel("h:ch").producer(stream_id)  # type: ignore[union-attr]
    assert producer is not None
    assert producer.abort_reason is None
    producer.write(b"x")
    client.conn.cancel(handle)
    harness.pump()
    assert producer.abort_reason == AbortReason(
        ErrorCode.CANCELLED, "aborted at seq 1: the last subscriber cancelled"
    )

    shared = HubHarness(store=SharedFake(MemoryStore()))
    shared.hub.register("h:ch")
    lost = shared.hub.channel("h:ch").start("s1")  # type: ignore[union-attr]
    shared.hub.handle_store_event(
        StoreFailed(("h:ch", "s1"), lost.generation, ErrorCode.STORE_UNAVAILABLE, "gone")
    )
    assert lost.abort_reason == AbortReason(ErrorCode.STORE_UNAVAILABLE, "gone")


PRODUCER_SCRIPT = Path(__file__).parent / "typing" / "producer_script.py"


def test_a_users_script_with_typed_chunks_passes_mypy_strict(tmp_path: Path) -> None:
    """Values typed by the codec on both ends; a wrong type is caught where it is used."""
    text = PRODUCER_SCRIPT.read_text()
    (tmp_path / "script.py").write_text(text)
    wrong = text.replace("assert_type(token, Token)  # marker: value", "assert_type(token, bytes)")
    wrong = wrong.replace('producer.write({"text": "a", "n": 0})', 'producer.write(b"a")')
    (tmp_path / "wrong.py").write_text(wrong)
    env = {**os.environ, "MYPYPATH": str(Path(__file__).parent.parent / "src")}
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]

    def check(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*mypy, name], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    ok = check("script.py")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = check("wrong.py")
    assert bad.returncode == 1
    assert bad.stdout.count('Expression is of type "Token", not "bytes"') == 2, bad.stdout
    assert 'Argument 1 to "write" of "ServerProducer" has incompatible type "bytes"' in bad.stdout


# -- the example -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_the_json_answers_example_streams_typed_tokens(transport: str) -> None:
    path = Path(__file__).parent.parent / "examples" / "json_answers.py"
    spec = importlib.util.spec_from_file_location("examples_json_answers", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = asyncio.run(example.main(transport, "one two three", quiet=True))
    assert result["tokens"] == [
        {"text": "one", "index": 0},
        {"text": "two", "index": 1},
        {"text": "three", "index": 2},
    ]
    assert result["refused"] == 4001
    [reason] = result["stopped"]
    assert reason.code == ErrorCode.CANCELLED


def test_a_thread_producer_reads_server_shutdown_as_its_abort_reason() -> None:
    server = sp_sync.serve(None, "tcp://127.0.0.1:0")
    server.channel("p:threads", BLOCK)
    producer = server.producer("p:threads", "s1")
    assert producer.abort_reason is None
    server.shutdown(timeout=0.5)
    assert producer.aborted.is_set()
    assert producer.abort_reason == AbortReason(ErrorCode.SERVER_SHUTDOWN, "the server shut down")


# -- the docs page ---------------------------------------------------------------------------

DOCS_PRELUDE = """
from collections.abc import AsyncIterator
from typing import TypedDict

from streamproto import JSON, JsonCodec
from transports import asyncio as sp


class Token(TypedDict):
    text: str


async def upstream_tokens(args: bytes) -> AsyncIterator[bytes]:
    for word in args.split():
        yield word


tokens: list[Token] = [{"text": "a"}, {"text": "b"}]
"""


def test_the_producers_page_blocks_run_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).parent.parent / "docs" / "producers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 6

    async def main() -> None:
        server = await sp_asyncio.serve(None, "tcp://127.0.0.1:0")
        client = await sp_asyncio.connect(server.address)
        namespace: dict[str, Any] = {"server": server, "client": client, "hub": server.hub}
        exec(DOCS_PRELUDE, namespace)
        try:
            for index, block in enumerate(blocks):
                code = compile(
                    block,
                    f"docs/producers.md block {index}",
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                )
                result = eval(code, namespace)
                if result is not None:
                    await result
        finally:
            await client.close()
            await server.shutdown(timeout=0.5)
        assert namespace["producer"].last_seq == 2  # the embedding block piped two tokens

    asyncio.run(main())
    assert capsys.readouterr().out.split() == ["a", "typed", "answer"]


def test_a_batch_stops_before_a_payload_it_cannot_decode() -> None:
    """The batch poll with a codec: values up to the bad payload, then its DecodeError
    (``seq`` moves to it only then), then the values after it; credit for all three."""
    sub, core = make_sub()
    sub.codec = JSON
    sub.buffer.append(_Run(1, (b'{"ok":true}', b"oops", b"[3]")))
    assert sub.poll_many(10) == [{"ok": True}]
    assert sub.seq == 1
    with pytest.raises(DecodeError) as info:
        sub.poll_many(10)
    assert (info.value.seq, info.value.data, sub.seq) == (2, b"oops", 2)
    assert sub.poll_many(10) == [[3]]
    assert sub.seq == 3
    assert sum(chunks for chunks, _ in core.consumed) == 3
    assert sub.poll_many(10) is None  # nothing buffered, not over: wait
    # A codec of your own that raises anything else: still a DecodeError, with the cause.

    class Strict:
        name = "strict"

        def encode(self, value: str) -> bytes:
            return value.encode("ascii")

        def decode(self, data: bytes) -> str:
            return data.decode("ascii")

    sub.codec = Strict()
    sub.buffer.append(_Run(4, ("é".encode(),)))
    with pytest.raises(DecodeError, match="not strict: UnicodeDecodeError") as caught:
        sub.poll_value()
    assert caught.value.seq == 4
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_abort_interrupts_a_generator_waiting_inside_an_await(backend: str) -> None:
    """A generator waiting (for a model, say) between items is cancelled there at once,
    not at its next yield; its ``finally`` runs and reads why. The server goes on."""
    srv = ServerProxy(backend, "tcp")
    cli = ClientProxy(backend, srv.url)
    seen: list[tuple[str, AbortReason | None]] = []
    sleep_forever = trio.sleep_forever if backend == "trio" else asyncio.Event().wait
    try:

        async def stuck(producer: Any, args: bytes) -> AsyncIterator[bytes]:
            try:
                yield b"first"
                await sleep_forever()  # never returns on its own
                yield b"never"
            except BaseException as exc:
                seen.append((type(exc).__name__, producer.abort_reason))
                raise

        register(srv, "p:stuck", BLOCK, on_open=stuck)
        sub = cli.open("p:stuck", b"")
        assert sub.take(1) == [b"first"]
        sub.close()  # CANCEL: the last subscriber leaves, the producer aborts
        wait_for(lambda: bool(seen), "the generator to be interrupted")
        [(name, reason)] = seen
        assert name == ("Cancelled" if backend == "trio" else "CancelledError")
        assert reason is not None
        assert reason.code == ErrorCode.CANCELLED
        # The task that ran it ended quietly: the next OPEN is served as usual.
        again = cli.open("p:stuck", b"")
        assert again.take(1) == [b"first"]
    finally:
        cli.close()
        srv.stop()
