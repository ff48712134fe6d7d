"""Fault injection at the adapter level, on every backend x transport pair (server and client of
the same backend): cut connections (through :mod:`faultproxy`), slow and stalled consumers,
malformed and oversize frames, handle and request limits, out-of-window resumes, request
floods, credit overflow, and half-close races.

Every case is bounded (a hang is a failure, counted as one) and ends with a census once the
client and the server are closed: no task of the adapters is left on the asyncio loops or in
the trio runs (the harness's own tasks are recognised by identity), and no thread is left.
``conftest.py`` prints the counts of what ran.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import trio.testing as trio_testing
from faultproxy import Cut, FaultProxy, Stall
from harness import BACKENDS, TRANSPORTS, ClientProxy, ServerProxy

from streamproto import Config, ErrorCode, Overflow, OverflowPolicy, WriteResult
from streamproto._frames import (
    Credit,
    FrameDecoder,
    Goaway,
    Hello,
    Ping,
    Subscribe,
    Upload,
    Welcome,
    encode,
    encode_data,
)
from transports import Backoff, Gap, StreamError
from transports.testing import threads_left, upload_digest

PAIRS = [(b, t) for b in BACKENDS for t in TRANSPORTS]
WAIT = 10.0  # the bound on every wait
RETRY = Backoff(initial=0.01, maximum=0.05, attempts=40)
NO_RETRY = Backoff(attempts=0)

#: Cases run per category, plus hangs and leaks found: printed by conftest.py.
STATS: collections.Counter[str] = collections.Counter()
CATEGORIES = ("disconnect", "slow", "malformed", "handles", "resume", "flood", "credit", "races")

T = TypeVar("T")


def pair_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.fixture(params=PAIRS, ids=pair_id)
def same(request: pytest.FixtureRequest) -> tuple[str, str]:
    result: tuple[str, str] = request.param
    return result


class Hang(AssertionError):
    """A bounded wait ran out."""


@contextlib.contextmanager
def counted(category: str) -> Iterator[None]:
    """Count one case of ``category``; a timeout anywhere in it counts as a hang."""
    assert category in CATEGORIES
    STATS[category] += 1
    try:
        yield
    except Hang:
        raise
    except (TimeoutError, queue.Empty, concurrent.futures.TimeoutError) as exc:
        STATS["hangs"] += 1
        raise Hang(f"timed out: {exc!r}") from exc


def bounded(fn: Callable[[], T], timeout: float = WAIT) -> T:
    """``fn()`` in a helper thread; a Hang if it does not return within ``timeout``."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    worker = threading.Thread(target=run, name="bounded", daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        STATS["hangs"] += 1
        raise Hang(f"{fn!r} did not return within {timeout} s")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            STATS["hangs"] += 1
            raise Hang(f"never: {what}")
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def thread_census() -> Iterator[None]:
    """No thread of a case (adapters, harness loops, proxy pumps) outlives it."""
    before = {t.ident for t in threading.enumerate()}
    yield
    extra = threads_left(before)
    STATS["leaked threads"] += len(extra)
    assert extra == []


# -- task census --------------------------------------------------------------------------------


def _trio_walk(trio: Any) -> list[Any]:
    tasks = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        for nursery in stack.pop().child_nurseries:
            for child in nursery.child_tasks:
                tasks.append(child)
                stack.append(child)
    return tasks


def _trio_baseline(thread: Any) -> set[Any]:
    """The harness's own tasks in a trio thread, by identity: trio's system tasks (the
    run_sync_soon task), the thread's main task, and the direct children of its nursery as they
    are right after the proxy was made (the task that holds ``serve`` or ``connect`` open)."""

    def snapshot() -> set[Any]:
        trio = thread.trio
        me = trio.lowlevel.current_task()
        root = trio.lowlevel.current_root_task()
        own = {t for n in root.child_nurseries for t in n.child_tasks}
        own |= set(thread.nursery.child_tasks)
        own.discard(me)
        return own

    result: set[Any] = thread.call(snapshot)
    return result


def _trio_leftovers(thread: Any, baseline: set[Any], timeout: float) -> list[str]:
    async def census() -> list[str]:
        trio = thread.trio
        me = trio.lowlevel.current_task()
        deadline = trio.current_time() + timeout
        while True:
            with trio.move_on_after(1):
                await trio_testing.wait_all_tasks_blocked()
            left = [t.name for t in _trio_walk(trio) if t is not me and t not in baseline]
            if not left or trio.current_time() > deadline:
                return left
            await trio.sleep(0.01)

    result: list[str] = thread.call(census)
    return result


def _asyncio_leftovers(thread: Any, timeout: float) -> list[str]:
    async def census() -> list[str]:
        me = asyncio.current_task()
        deadline = time.monotonic() + timeout
        while True:
            left = [repr(t.get_coro()) for t in asyncio.all_tasks() if t is not me]
            if not left or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.01)

    result: list[str] = asyncio.run_coroutine_threadsafe(census(), thread.loop).result(
        timeout + WAIT
    )
    return result


class Rig:
    """A server of one backend, optionally a :class:`FaultProxy` in front of it, and clients of
    the same backend; ``close()`` closes the clients, shuts the server down, takes the task
    census in every loop thread, then stops the threads."""

    def __init__(
        self,
        backend: str,
        transport: str,
        *,
        config: Config | None = None,
        plans: dict[int, Cut | Stall] | None = None,
    ) -> None:
        self.backend = backend
        self.transport = transport
        self.baselines: dict[int, set[Any]] = {}
        self.clients: list[ClientProxy] = []
        self.proxy: FaultProxy | None = None
        self.server = ServerProxy(backend, transport, config=config)
        self._baseline(self.server)
        if plans is not None:
            self.proxy = FaultProxy(self.server.url)
            for index, plan in plans.items():
                self.proxy.plan(index, plan)

    @property
    def url(self) -> str:
        return self.proxy.url if self.proxy is not None else self.server.url

    def _baseline(self, proxy: ServerProxy | ClientProxy) -> None:
        if proxy.flavour == "trio":
            self.baselines[id(proxy)] = _trio_baseline(proxy.thread)

    def connect(self, **kwargs: Any) -> ClientProxy:
        kwargs.setdefault("reconnect", RETRY)
        client = bounded(lambda: ClientProxy(self.backend, self.url, **kwargs), 2 * WAIT)
        self.clients.append(client)
        self._baseline(client)
        return client

    def core(self, client: ClientProxy) -> Any:
        return client.client.core

    def close(self) -> None:
        leftovers: list[str] = []
        try:
            for client in self.clients:
                with contextlib.suppress(Exception):
                    bounded(lambda c=client: c.thread.call(c.client.close))  # type: ignore[misc]
            bounded(lambda: self.server.shutdown(1.0), 3 * WAIT)
            if self.proxy is not None:
                self.proxy.close()
            for proxy in [*self.clients, self.server]:
                if proxy.flavour == "asyncio":
                    leftovers += _asyncio_leftovers(proxy.thread, 5)
                elif proxy.flavour == "trio":
                    leftovers += _trio_leftovers(proxy.thread, self.baselines[id(proxy)], 5)
        finally:
            for client in self.clients:
                client.thread.stop()
            self.server.thread.stop()
        STATS["leaked tasks"] += len(leftovers)
        assert leftovers == [], f"tasks left after close: {leftovers}"


@contextlib.contextmanager
def rig(backend: str, transport: str, **kwargs: Any) -> Iterator[Rig]:
    r = Rig(backend, transport, **kwargs)
    try:
        yield r
    except BaseException:
        with contextlib.suppress(Exception):
            r.close()
        raise
    r.close()


# -- raw peers ----------------------------------------------------------------------------------


def _ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked (client) WebSocket frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = b"\x01\x02\x03\x04"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawPeer:
    """A hand-driven client socket: streamproto frames over raw TCP or over WebSocket (one
    binary message per send). ``frames()`` reads until the server closes."""

    def __init__(self, url: str) -> None:
        scheme, rest = url.split("://", 1)
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        self.ws = scheme == "ws"
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        self.decoder = FrameDecoder(max_frame_size=1 << 24)
        self.received: list[Any] = []
        self.close_code: int | None = None
        self._buf = b""
        if self.ws:
            request = (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamproto.v1\r\n\r\n"
            )
            self.sock.sendall(request.encode())
            while b"\r\n\r\n" not in self._buf:
                piece = self.sock.recv(4096)
                assert piece, "the server closed during the upgrade"
                self._buf += piece
            head, _, self._buf = self._buf.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, data: bytes, *, text: bool = False) -> None:
        self.sock.sendall(_ws_frame(data, 0x1 if text else 0x2) if self.ws else data)

    def hello(self) -> Welcome:
        self.send(encode(Hello()))
        frames = self.read_until(lambda f: isinstance(f, Welcome | Goaway))
        assert isinstance(frames[-1], Welcome), frames
        return frames[-1]

    def _payload(self, data: bytes) -> bytes:
        if not self.ws:
            return data
        self._buf += data
        out = b""
        while len(self._buf) >= 2:
            b0, b1 = self._buf[0], self._buf[1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(self._buf) < 4:
                    break
                n, head = struct.unpack_from(">H", self._buf, 2)[0], 4
            elif n == 127:
                if len(self._buf) < 10:
                    break
                n, head = struct.unpack_from(">Q", self._buf, 2)[0], 10
            if len(self._buf) < head + n:
                break
            body, self._buf = self._buf[head : head + n], self._buf[head + n :]
            if b0 & 0x0F == 0x8:
                self.close_code = struct.unpack(">H", body[:2])[0] if len(body) >= 2 else 1005
            elif b0 & 0x0F in (0x0, 0x2):
                out += body
        return out

    def read_until(self, stop: Callable[[Any], bool], timeout: float = WAIT) -> list[Any]:
        """Read frames until one satisfies ``stop`` (or the server closes)."""
        deadline = time.monotonic() + timeout
        start = len(self.received)
        while not any(stop(f) for f in self.received[start:]):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError:
                data = b""
            if not data:
                break
            self.received += self.decoder.feed(self._payload(data))
        return self.received[start:]

    def goaway(self) -> Goaway:
        """Read to the end: the last frame must be a GOAWAY; then the server closes."""
        frames = self.read_until(lambda f: False)
        goaways = [f for f in frames if isinstance(f, Goaway)]
        assert goaways, f"no GOAWAY in {frames}"
        assert frames[-1] is goaways[-1], f"frames after the GOAWAY: {frames}"
        return goaways[-1]

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def raw(url: str) -> Iterator[RawPeer]:
    peer = RawPeer(url)
    try:
        yield peer
    finally:
        peer.close()


def serves_next_client(r: Rig, tag: str) -> None:
    """The server is up: a fresh client of the same backend subscribes and reads to the end."""
    sid = f"next-{tag}"
    r.server.start("test:streams", sid)
    r.server.write(sid, b"a", b"b")
    r.server.close_stream(sid)
    client = r.connect(reconnect=NO_RETRY)
    sub = client.subscribe("test:streams", sid)
    assert sub.rest(WAIT) == [b"a", b"b"]
    assert sub.error is None


# -- 1. disconnect at every frame boundary and inside frames ------------------------------------

CHUNKS = [b"chunk-%02d" % i for i in range(40)]
CUT_UNITS = range(12)
#: Units per direction before the client can send a request (the HTTP upgrade, HELLO/WELCOME).
HANDSHAKE_UNITS = {"tcp": 1, "ws": 2}


def _settle(r: Rig, client: ClientProxy) -> None:
    """A cut in the handshake happened while ``connect`` ran: wait until the client is ready on
    a later connection, so the request does not race the lost one (see
    ``test_request_right_after_the_connection_died``)."""
    assert r.proxy is not None
    wait_for(lambda: r.proxy is not None and r.proxy.cuts == 1, "the cut")
    core = r.core(client)

    def settled() -> bool:
        return bool(client.thread.call(lambda: core.ready and core.serial >= 2))

    wait_for(settled, "ready on a new connection")


@pytest.mark.parametrize("offset", [None, "mid", 1], ids=["end", "mid", "byte1"])
@pytest.mark.parametrize("unit", CUT_UNITS)
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_disconnect_then_resume(
    same: tuple[str, str], direction: str, unit: int, offset: int | str | None
) -> None:
    """Cut at the end of unit ``unit`` of one direction, or inside it; the client reconnects,
    resumes and re-subscribes: every chunk arrives exactly once, in order, then END."""
    backend, transport = same
    cut = Cut(direction, unit, offset, rst=unit % 2 == 1)  # type: ignore[arg-type]
    with counted("disconnect"), rig(backend, transport, plans={0: cut}) as r:
        r.server.start("test:streams", "s")
        r.server.write("s", *CHUNKS)
        r.server.close_stream("s")
        client = r.connect(config=Config(window_chunks=2))
        if unit < HANDSHAKE_UNITS[transport]:
            _settle(r, client)
        sub = client.subscribe("test:streams", "s")
        items = sub.rest(WAIT)
        assert sub.error is None
        assert items == CHUNKS
        assert sub.seqs == list(range(1, len(CHUNKS) + 1))
        assert r.proxy is not None
        assert r.proxy.cuts == 1, "the workload never reached the cut point"
        assert len(r.proxy.links) >= 2


@pytest.mark.parametrize("unit", CUT_UNITS)
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_disconnect_during_an_open(same: tuple[str, str], direction: str, unit: int) -> None:
    """The same cuts under a live OPEN (the handler writes under BLOCK): either the OPEN was
    lost before its answer (CONNECTION_LOST, nothing delivered: an OPEN is not replayed), or
    every chunk arrives exactly once, in order."""
    backend, transport = same
    with counted("disconnect"), rig(backend, transport, plans={0: Cut(direction, unit)}) as r:
        client = r.connect(config=Config(window_chunks=2))
        if unit < HANDSHAKE_UNITS[transport]:
            _settle(r, client)
        sub = client.open("test:open", b"30:0", policy=OverflowPolicy.BLOCK)
        items = sub.rest(WAIT)
        if sub.error is not None:
            assert isinstance(sub.error, StreamError)
            assert sub.error.code == ErrorCode.CONNECTION_LOST
            assert items == []
        else:
            assert items == [b"%d" % i for i in range(30)]
            assert sub.seqs == list(range(1, 31))
        assert r.proxy is not None
        assert r.proxy.cuts == 1


def test_request_right_after_the_connection_died() -> None:
    """The window between a dead transport and ``lost()``: the client is still ``ready``
    while its connection is CLOSED. A subscribe made then must wait for the next connection,
    not raise the core's LocalProtocolError (and lose every other pending request)."""
    from streamproto import Connection, Role
    from transports._common import ClientCore, parse_url

    with counted("disconnect"):
        core = ClientCore(parse_url("tcp://127.0.0.1:1"), clock=time.monotonic, backoff=RETRY)
        core.new_connection()
        server = Connection(Role.SERVER, Config())
        server.receive_data(core.outgoing())
        server.accept_handshake(session_id="s", resume_token="t")
        core.receive(server.data_to_send())
        assert core.ready
        core.receive(b"")  # the transport ended; the backend has not called lost() yet
        sub = core.subscribe("test:streams", "s")  # raises CONNECTION_CLOSED today
        assert sub in core._pending  # made on the next connection


# -- 2. slow and stalled consumers --------------------------------------------------------------

SLOW_CLIENT = Config(window_chunks=16, window_bytes=1 << 20)
KB = b"." * 1000


@pytest.mark.parametrize("policy", ["drop", "block", "error"])
def test_stalled_subscriber_is_bounded(same: tuple[str, str], policy: str) -> None:
    """A subscriber that takes nothing: the server's queue stays within credit + queue bounds,
    the client's buffer within its window; then what each policy promises."""
    backend, transport = same
    with counted("slow"), rig(backend, transport) as r:
        client = r.connect(config=SLOW_CLIENT)
        r.server.start(f"test:{policy}", "p")
        sub = client.raw_subscribe(f"test:{policy}", "p", on_gap="item")
        bounded(lambda: client.wait_accepted(sub))
        peak = 0
        results = []
        for i in range(40):
            batch = [b"%06d" % (i * 25 + j) + KB for j in range(25)]
            results += r.server.try_write("p", *batch)
            peak = max(peak, r.server.queued_bytes())
        assert peak <= (16 + 8) * 1006
        core = sub._core
        assert core.buffered <= 16  # its credit window
        if policy == "block":
            assert WriteResult.BLOCKED in results
        r.server.close_stream("p")
        items, error = bounded(lambda: client.collect(sub))
        chunks = [i for i in items if isinstance(i, bytes)]
        if policy == "drop":
            assert error is None
            gaps = [i for i in items if isinstance(i, Gap)]
            assert gaps
            assert len(chunks) + sum(g.to_seq - g.from_seq + 1 for g in gaps) == 1000
            assert chunks[-1].startswith(b"000999")
        elif policy == "block":
            assert error is None
            accepted = [i for i, res in enumerate(results) if res is WriteResult.ACCEPTED]
            assert chunks == [b"%06d" % i + KB for i in accepted]
        else:
            assert isinstance(error, StreamError)
            assert error.code == ErrorCode.RESOURCE_EXHAUSTED
            assert chunks == [b"%06d" % i + KB for i in range(len(chunks))]
        wait_for(lambda: r.server.statistics().subscriptions == 0, "the subscription is freed")


@pytest.mark.parametrize("policy", ["drop", "block", "error"])
def test_reader_that_never_reads_then_closes(same: tuple[str, str], policy: str) -> None:
    """A raw subscriber that never reads its socket: the server's memory stays bounded while
    the producer writes on; once the socket closes, the server frees the subscription (after the
    session grace), a BLOCK producer may write again, and the server serves the next client."""
    backend, transport = same
    config = Config(max_queued_chunks=8, max_queued_bytes=1 << 20, session_grace=0.2)
    big = b"x" * 60_000
    with counted("slow"), rig(backend, transport, config=config) as r:
        r.server.start(f"test:{policy}", "q")
        with raw(r.url) as peer:
            peer.hello()
            peer.send(
                encode(Subscribe(1, f"test:{policy}", "q", credit_chunks=32, credit_bytes=4 << 20))
            )
            peak = 0
            for _ in range(10):
                r.server.try_write("q", *[big] * 10)
                peak = max(peak, r.server.queued_bytes())
                time.sleep(0.005)
            assert peak <= (32 + 8) * len(big)
            # ERROR: the stalled subscription already failed with RESOURCE_EXHAUSTED.
            assert r.server.statistics().subscriptions == (0 if policy == "error" else 1)
        wait_for(
            lambda: (
                r.server.statistics().subscriptions == 0
                and r.server.statistics().parked_subscriptions == 0
            ),
            "the stalled subscription is freed",
        )
        assert r.server.try_write("q", b"after") == [WriteResult.ACCEPTED]
        serves_next_client(r, policy)


def test_overflow_warnings_reach_the_producer_and_the_subscription(
    same: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """drop_oldest with a stalled subscriber: the producer's ``on_overflow`` and the
    subscription's ``on_overflow``/``recent_overflows`` get the seqs of the very gaps the
    iterator hands out, and each side logs one WARNING record, not one per drop."""
    backend, transport = same
    with (
        counted("slow"),
        caplog.at_level(logging.WARNING),
        rig(backend, transport) as r,
    ):
        client = r.connect(config=SLOW_CLIENT)
        r.server.start("test:drop", "o")
        on_server: list[Overflow] = []
        on_client: list[Overflow] = []
        r.server.producers["o"].on_overflow = on_server.append
        sub = client.raw_subscribe("test:drop", "o", on_gap="item")
        sub.on_overflow = on_client.append
        bounded(lambda: client.wait_accepted(sub))
        for i in range(40):  # 1000 chunks while the subscriber reads nothing
            r.server.try_write("o", *[b"%06d" % (i * 25 + j) + KB for j in range(25)])
        r.server.close_stream("o")
        items, error = bounded(lambda: client.collect(sub))
        assert error is None
        gaps = [(g.from_seq, g.to_seq) for g in items if isinstance(g, Gap)]
        assert gaps
        wait_for(lambda: len(on_server) == len(gaps), "the producer heard of every gap")
        session = r.core(client).session_id
        for records in (on_server, on_client, list(sub.recent_overflows)):
            assert [(o.from_seq, o.to_seq) for o in records] == gaps
            assert {(o.channel, o.stream_id, o.session_id) for o in records} == {
                ("test:drop", "o", session)
            }
            assert all(o.dropped == o.to_seq - o.from_seq + 1 for o in records)
        assert sub.overflows == len(gaps)
        dropped = sum(o.dropped for o in on_server)
        assert r.server.thread.call(r.server.producers["o"].statistics).dropped == dropped
        assert dropped > 900  # a stalled subscriber: almost everything was dropped
    hub_records = [x for x in caplog.records if x.name == "streamproto.hub"]
    client_records = [x for x in caplog.records if x.name == "streamproto.transports"]
    assert len(hub_records) == 1  # rate-limited: at most one per stream per 10 s
    assert len(client_records) == 1
    assert f"seqs {gaps[0][0]}..{gaps[0][1]}" in hub_records[0].getMessage()
    assert f"seqs {gaps[0][0]}..{gaps[0][1]}" in client_records[0].getMessage()


# -- 3. malformed and oversize frames -----------------------------------------------------------

_BEFORE_HELLO: dict[str, tuple[bytes, int]] = {
    "oversize": (struct.pack(">IBBI", 1 << 30, 0x01, 0, 0), ErrorCode.FRAME_TOO_LARGE),
    "bad-magic": (
        struct.pack(">IBBI", 8, 0x01, 0, 0) + b"XXXX\x00\x01\x00\x01",
        ErrorCode.MALFORMED_FRAME,
    ),
    "request-first": (encode(Subscribe(1, "test:streams", "s")), ErrorCode.PROTOCOL_ERROR),
    "ping-on-a-handle": (struct.pack(">IBBIQ", 8, 0x03, 0, 7, 1), ErrorCode.MALFORMED_FRAME),
    "bad-version": (encode(Hello(min_version=7, max_version=9)), ErrorCode.UNSUPPORTED_VERSION),
    "truncated-hello": (
        struct.pack(">IBBI", 5, 0x01, 0, 0) + b"STRP\x00",
        ErrorCode.MALFORMED_FRAME,
    ),
}
_AFTER_HELLO: dict[str, tuple[bytes, int]] = {
    "bad-policy": (
        encode(Subscribe(1, "test:streams", "s"))[:26]
        + b"\x09"
        + encode(Subscribe(1, "test:streams", "s"))[27:],
        ErrorCode.MALFORMED_FRAME,
    ),
    "credit-on-unopened": (encode(Credit(5, 1, 1)), ErrorCode.INVALID_HANDLE),
    "handle-reused": (
        encode(Subscribe(2, "test:streams", "nope")) + encode(Subscribe(2, "test:streams", "x")),
        ErrorCode.INVALID_HANDLE,
    ),
    "data-seq-0": (
        encode(Upload(1, "test:upload", "u")) + struct.pack(">IBBIQ", 9, 0x15, 0, 1, 0) + b"!",
        ErrorCode.MALFORMED_FRAME,
    ),
    "over-max-frame": (struct.pack(">IBBI", 65537, 0x03, 0, 0), ErrorCode.FRAME_TOO_LARGE),
    "second-hello": (encode(Hello()), ErrorCode.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("name", [*_BEFORE_HELLO, *_AFTER_HELLO])
def test_malformed_input_is_answered_with_goaway(same: tuple[str, str], name: str) -> None:
    backend, transport = same
    handshake = name in _AFTER_HELLO
    data, code = {**_BEFORE_HELLO, **_AFTER_HELLO}[name]
    with counted("malformed"), rig(backend, transport) as r:
        with raw(r.url) as peer:
            if handshake:
                peer.hello()
            peer.send(data)
            goaway = peer.goaway()
            assert goaway.code == code, goaway
            if peer.ws:
                assert peer.close_code in (None, 4000 + code)
        serves_next_client(r, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_message_closes_the_websocket(backend: str) -> None:
    """R-TR-4: a text message closes the WebSocket with 1003 (after an optional GOAWAY)."""
    transport = "ws"
    with counted("malformed"), rig(backend, transport) as r:
        with raw(r.url) as peer:
            peer.hello()
            peer.send(b"hello?", text=True)
            frames = peer.read_until(lambda f: False)
            assert all(isinstance(f, Goaway) for f in frames)
            assert peer.close_code == 1003
        serves_next_client(r, "text")


# -- 4. handle and request limits ---------------------------------------------------------------


def test_more_subscriptions_than_the_server_allows(same: tuple[str, str]) -> None:
    """MAX_SUBSCRIPTIONS 4: the 5th and later concurrent requests are rejected with
    LIMIT_EXCEEDED (R-REQ-7); once some end, new ones are accepted again."""
    backend, transport = same
    config = Config(max_subscriptions=4, max_queued_chunks=8)
    with counted("handles"), rig(backend, transport, config=config) as r:
        r.server.start("test:streams", "h")
        r.server.write("h", b"1")
        client = r.connect()
        subs = [client.raw_subscribe("test:streams", "h") for _ in range(10)]
        outcomes = []
        for sub in subs:
            try:
                bounded(lambda s=sub: client.wait_accepted(s))  # type: ignore[misc]
                outcomes.append("ok")
            except StreamError as exc:
                outcomes.append(exc.code)
        assert outcomes.count("ok") == 4
        assert outcomes.count(ErrorCode.LIMIT_EXCEEDED) == 6
        for sub in subs[:2]:
            client.thread.call(sub.close)
        wait_for(lambda: r.server.statistics().subscriptions == 2, "two left")
        more = client.raw_subscribe("test:streams", "h")
        bounded(lambda: client.wait_accepted(more))


def test_more_uploads_than_the_server_allows(same: tuple[str, str]) -> None:
    backend, transport = same
    config = Config(max_uploads=2, max_queued_chunks=8)
    with counted("handles"), rig(backend, transport, config=config) as r:
        client = r.connect()
        up = client.client

        if client.flavour == "thread":

            def run() -> Any:
                with contextlib.ExitStack() as stack:
                    stack.enter_context(up.upload("test:upload", "u1"))
                    stack.enter_context(up.upload("test:upload", "u2"))
                    try:
                        stack.enter_context(up.upload("test:upload", "u3"))
                    except StreamError as exc:
                        return exc.code
                return None

            code = bounded(run)
        else:

            async def arun() -> Any:
                async with contextlib.AsyncExitStack() as stack:
                    await stack.enter_async_context(up.upload("test:upload", "u1"))
                    await stack.enter_async_context(up.upload("test:upload", "u2"))
                    try:
                        await stack.enter_async_context(up.upload("test:upload", "u3"))
                    except StreamError as exc:
                        return exc.code
                return None

            code = bounded(lambda: client.thread.call(arun))
        assert code == ErrorCode.LIMIT_EXCEEDED
        r.server.record.wait(lambda: {"u1", "u2"} <= set(r.server.record.uploads), WAIT)
        assert client.upload("test:upload", "u4", [b"z"]) is None


def test_client_handle_space_runs_out(same: tuple[str, str]) -> None:
    """Client ``max_handle`` 3: a 4th request cannot be made on the connection, so the client
    sends GOAWAY(NO_ERROR) (R-HANDLE-6); the subscription still open carries on to its end,
    then the request is made on the next connection of the same session."""
    backend, transport = same
    with counted("handles"), rig(backend, transport) as r:
        r.server.start("test:streams", "e")
        r.server.write("e", b"1", b"2")
        r.server.close_stream("e")
        r.server.start("test:streams", "live")
        r.server.write("live", b"L1")
        client = r.connect(config=Config(max_handle=3))
        for _ in range(2):
            assert client.subscribe("test:streams", "e").rest(WAIT) == [b"1", b"2"]
        live = client.subscribe("test:streams", "live")
        assert live.take(1) == [b"L1"]
        fourth = client.subscribe("test:streams", "e")  # waits for handles
        r.server.write("live", b"L2")
        r.server.close_stream("live")
        assert live.rest(WAIT) == [b"L2"]
        assert live.error is None
        assert fourth.rest(WAIT) == [b"1", b"2"]
        assert fourth.error is None
        assert client.statistics()["reconnects"] == 1


def test_client_moves_to_a_new_connection_when_handles_run_out() -> None:
    backend, transport = "asyncio", "tcp"
    with counted("handles"), rig(backend, transport) as r:
        r.server.start("test:streams", "e")
        r.server.write("e", b"1")
        r.server.close_stream("e")
        client = r.connect(config=Config(max_handle=2))
        for _ in range(2):
            assert client.subscribe("test:streams", "e").rest(WAIT) == [b"1"]
        with contextlib.suppress(Exception):  # this one may fail with HANDLE_EXHAUSTED
            client.subscribe("test:streams", "e").rest(WAIT)
        sub = client.subscribe("test:streams", "e")  # raises HANDLE_EXHAUSTED today
        assert sub.rest(WAIT) == [b"1"]


# -- 5. resume with an out-of-window seq --------------------------------------------------------


def test_after_seq_past_the_end_of_an_ended_stream(same: tuple[str, str]) -> None:
    """R-SUB-4/7: nothing is replayed, no GAP; the subscription ends at once, normally."""
    backend, transport = same
    with counted("resume"), rig(backend, transport) as r:
        r.server.start("test:streams", "p")
        r.server.write("p", *[b"%d" % i for i in range(10)])
        r.server.close_stream("p")
        client = r.connect()
        sub = client.subscribe("test:streams", "p", after_seq=25)
        assert sub.rest(WAIT) == []
        assert sub.error is None


def test_after_seq_past_the_end_of_a_live_stream(same: tuple[str, str]) -> None:
    backend, transport = same
    with counted("resume"), rig(backend, transport) as r:
        r.server.start("test:streams", "l")
        r.server.write("l", *[b"%d" % i for i in range(1, 11)])
        client = r.connect()
        sub = client.subscribe("test:streams", "l", after_seq=12)
        bounded(lambda: client.wait_accepted(sub.sub))
        r.server.write("l", *[b"%d" % i for i in range(11, 16)])
        r.server.close_stream("l")
        assert sub.rest(WAIT) == [b"13", b"14", b"15"]
        assert sub.seqs == [13, 14, 15]
        assert sub.error is None


def test_after_seq_before_the_window(same: tuple[str, str]) -> None:
    """R-SUB-2: GAP(after_seq + 1 .. first_seq - 1, EVICTED), then the retained chunks."""
    backend, transport = same
    with counted("resume"), rig(backend, transport) as r:
        r.server.start("test:small", "w")
        r.server.write("w", *[b"%d" % i for i in range(1, 41)])
        r.server.close_stream("w")
        client = r.connect()
        sub = client.subscribe("test:small", "w", after_seq=5, on_gap="item")
        items = sub.rest(WAIT)
        assert sub.error is None
        assert isinstance(items[0], Gap)
        assert (items[0].from_seq, items[0].to_seq) == (6, 24)
        assert items[1:] == [b"%d" % i for i in range(25, 41)]


def test_resume_after_the_window_moved_on(same: tuple[str, str]) -> None:
    """Disconnected while the producer writes past the replay window: after the resume the
    client gets GAP(EVICTED) for what was lost and then the rest: each seq exactly once."""
    backend, transport = same
    with counted("resume"), rig(backend, transport, plans={}) as r:
        assert r.proxy is not None
        r.server.start("test:small", "m")
        r.server.write("m", *[b"%d" % i for i in range(1, 6)])
        client = r.connect()
        sub = client.subscribe("test:small", "m", on_gap="item")
        assert sub.take(5) == [b"%d" % i for i in range(1, 6)]
        r.proxy.pause_accepting()
        r.proxy.cut_all()
        wait_for(lambda: not bool(client.thread.call(lambda: r.core(client).ready)), "lost")
        r.server.write("m", *[b"%d" % i for i in range(6, 46)])
        r.server.close_stream("m")
        r.proxy.resume_accepting()
        rest = sub.rest(WAIT)
        assert sub.error is None
        seen = list(range(1, 6))
        for item in rest:
            if isinstance(item, Gap):
                assert item.from_seq == seen[-1] + 1
                seen += range(item.from_seq, item.to_seq + 1)
            else:
                seen.append(int(item))
        assert seen == list(range(1, 46))
        assert any(isinstance(i, Gap) for i in rest)


# -- 6. floods of requests ----------------------------------------------------------------------


def test_raw_subscribe_flood(same: tuple[str, str]) -> None:
    """Thousands of SUBSCRIBEs in one burst from a peer that reads nothing meanwhile: the server
    answers each (ACCEPT up to MAX_SUBSCRIPTIONS, then LIMIT_EXCEEDED), its queues stay
    bounded, and another client is served meanwhile."""
    backend, transport = same
    n = 3000
    config = Config(max_subscriptions=256, max_queued_chunks=8)
    with counted("flood"), rig(backend, transport, config=config) as r:
        r.server.start("test:streams", "f")
        r.server.write("f", b"x" * 100)
        with raw(r.url) as peer:
            peer.hello()
            burst = b"".join(
                encode(Subscribe(h, "test:streams", "f", credit_chunks=1, credit_bytes=1000))
                for h in range(1, n + 1)
            )
            if peer.ws:
                for i in range(0, len(burst), 45 * 100):
                    peer.send(burst[i : i + 45 * 100])
            else:
                peer.send(burst)
            time.sleep(0.2)
            assert r.server.queued_bytes() <= 256 * 100 + 256 * 8 * 100
            serves_next_client(r, "flood")
            frames = peer.read_until(
                lambda f: getattr(f, "handle", 0) == n and type(f).__name__ == "Reject"
            )
            frames = [f for f in peer.received if type(f).__name__ in ("Accept", "Reject")]
            accepted = [f for f in frames if type(f).__name__ == "Accept"]
            rejected = [f for f in frames if type(f).__name__ == "Reject"]
            assert len(accepted) == 256
            assert len(rejected) == n - 256
            assert {f.code for f in rejected} == {ErrorCode.LIMIT_EXCEEDED}
            peer.send(encode(Ping(7)))
            pong = peer.read_until(lambda f: type(f).__name__ == "Pong")
            assert pong[-1].payload == 7


def server_closed_all(r: Rig) -> bool:
    """Every connection the server has is over (or gone)."""

    def closed() -> bool:
        return all(p.driver.conn.closed for p in r.server._drivers())

    return bool(r.server.thread.call(closed))


def test_ping_flood_from_a_peer_that_never_reads(same: tuple[str, str]) -> None:
    """R-LIM-4: a peer that sends PINGs as fast as it can and reads nothing. Once the socket
    buffers are full the server stops taking output, PONGs pile up in the core, and past
    ``max_queued_control_frames`` the connection ends with EXCESSIVE_LOAD (the GOAWAY arrives
    last if the peer ever reads, or the socket is reset). The server serves the next client."""
    backend, transport = same
    config = Config(max_queued_control_frames=1000)
    with counted("flood"), rig(backend, transport, config=config) as r:
        with raw(r.url) as peer:
            peer.hello()
            pings = encode(Ping(9)) * 100
            burst = (_ws_frame(pings, 0x2) if peer.ws else pings) * 40
            peer.sock.settimeout(0.2)
            ended = False
            # Under coverage on a busy machine the server takes seconds to fill the socket
            # buffers with PONGs before its queue trips: a longer bound than other waits.
            deadline = time.monotonic() + 3 * WAIT
            while time.monotonic() < deadline and not server_closed_all(r):
                try:
                    peer.sock.sendall(burst)
                except TimeoutError:
                    continue  # the server does not read now; has it ended the connection?
                except OSError:  # reset: the server cut the connection
                    ended = True
                    break
            peer.sock.settimeout(WAIT)
            # Reading to the end: a server that kept the connection raises TimeoutError here.
            # Unread input makes the server's close a reset, which may discard the GOAWAY.
            frames = [] if ended else peer.read_until(lambda f: False)
            goaways = [f for f in frames if isinstance(f, Goaway)]
            assert [g.code for g in goaways] in ([], [ErrorCode.EXCESSIVE_LOAD])
            assert not goaways or frames[-1] is goaways[-1]  # nothing after a GOAWAY
        serves_next_client(r, "pingflood")


def test_client_api_subscribe_flood(same: tuple[str, str]) -> None:
    """2000 subscriptions made as fast as the API allows, on a server that allows 256 at once:
    256 are served to the end, the rest are rejected with LIMIT_EXCEEDED, no request hangs."""
    backend, transport = same
    config = Config(max_subscriptions=256, max_queued_chunks=8)
    with counted("flood"), rig(backend, transport, config=config) as r:
        r.server.start("test:streams", "g")
        r.server.write("g", b"g1")
        client = r.connect()

        def make_all() -> list[Any]:
            return [client.client.subscribe("test:streams", "g") for _ in range(2000)]

        subs = client.thread.call(make_all)
        outcomes: list[Any] = []
        for sub in subs:
            try:
                bounded(lambda s=sub: client.wait_accepted(s))  # type: ignore[misc]
                outcomes.append("ok")
            except StreamError as exc:
                outcomes.append(exc.code)
        assert outcomes.count("ok") == 256  # the stream stays open: none of them ends early
        assert outcomes.count(ErrorCode.LIMIT_EXCEEDED) == 2000 - 256
        r.server.close_stream("g")
        for sub, outcome in list(zip(subs, outcomes, strict=True))[:300]:
            items, error = bounded(lambda s=sub: client.collect(s))  # type: ignore[misc]
            if outcome == "ok":
                assert (items, error) == ([b"g1"], None)
            else:
                assert isinstance(error, StreamError)
                assert error.code == ErrorCode.LIMIT_EXCEEDED
        serves_next_client(r, "apiflood")


# -- 7. credit overflow -------------------------------------------------------------------------

MAX = 2**31 - 1
_CREDIT_CASES: dict[str, list[bytes]] = {
    "initial-chunks": [encode(Subscribe(1, "test:streams", "c", credit_chunks=MAX + 1))],
    "initial-bytes": [encode(Subscribe(1, "test:streams", "c", credit_bytes=MAX + 1))],
    "credit-chunks": [
        encode(Subscribe(1, "test:streams", "c", credit_chunks=MAX, credit_bytes=1)),
        encode(Credit(1, 1, 0)),
    ],
    "credit-bytes": [
        encode(Subscribe(1, "test:streams", "c", credit_chunks=1, credit_bytes=MAX)),
        encode(Credit(1, 0, 1)),
    ],
    "upload-data-before-accept": [
        encode(Upload(1, "test:upload", "ud")) + encode_data(1, 1, b"early")
    ],
}


@pytest.mark.parametrize("name", _CREDIT_CASES)
def test_credit_overflow(same: tuple[str, str], name: str) -> None:
    """R-FLOW-5 / R-FLOW-8: GOAWAY FLOW_CONTROL_ERROR; the server serves the next client."""
    backend, transport = same
    with counted("credit"), rig(backend, transport) as r:
        r.server.start("test:streams", "c")
        with raw(r.url) as peer:
            peer.hello()
            for data in _CREDIT_CASES[name]:
                peer.send(data)
            assert peer.goaway().code == ErrorCode.FLOW_CONTROL_ERROR
        serves_next_client(r, name)


def test_upload_beyond_its_credit(same: tuple[str, str]) -> None:
    backend, transport = same
    with counted("credit"), rig(backend, transport) as r:
        with raw(r.url) as peer:
            peer.hello()
            peer.send(encode(Upload(1, "test:upload", "ub")))
            frames = peer.read_until(lambda f: type(f).__name__ in ("Accept", "Goaway"))
            accept = frames[-1]
            assert type(accept).__name__ == "Accept"
            chunks = accept.credit_chunks
            peer.send(b"".join(encode_data(1, s, b"d") for s in range(1, chunks + 2)))
            assert peer.goaway().code == ErrorCode.FLOW_CONTROL_ERROR
        r.server.record.wait(lambda: "ub" in r.server.record.uploads, WAIT)
        assert r.server.record.uploads["ub"][1] == ErrorCode.UPLOAD_DISCONNECTED
        serves_next_client(r, "ub")


# -- 8. half-close races ------------------------------------------------------------------------


def test_cancel_races_the_end_of_the_stream(same: tuple[str, str]) -> None:
    backend, transport = same
    with counted("races"), rig(backend, transport) as r:
        client = r.connect()
        for i in range(8):
            sid = f"r{i}"
            r.server.start("test:streams", sid)
            r.server.write(sid, b"a", b"b", b"c")
            sub = client.subscribe("test:streams", sid)
            assert sub.take(1) == [b"a"]
            ender = threading.Thread(target=r.server.close_stream, args=(sid,))
            ender.start()
            if i % 2:
                time.sleep(0.001 * i)
            sub.close()
            ender.join(WAIT)
            sub.rest(WAIT)
            assert sub.error is None
        wait_for(lambda: r.server.statistics().subscriptions == 0, "every subscription freed")
        serves_next_client(r, "cancel")


def test_shutdown_while_the_client_subscribes(same: tuple[str, str]) -> None:
    backend, transport = same
    with counted("races"), rig(backend, transport) as r:
        r.server.start("test:streams", "sd")
        r.server.write("sd", b"1")
        client = r.connect(reconnect=NO_RETRY)
        subs = []
        stopper = threading.Thread(target=r.server.shutdown, args=(0.2,))
        codes: list[int] = []
        for i in range(60):
            if i == 10:
                stopper.start()
            try:
                subs.append(client.subscribe("test:streams", "sd"))
            except StreamError as exc:  # the client already failed: CONNECTION_LOST
                codes.append(exc.code)
        assert set(codes) <= {ErrorCode.SERVER_SHUTDOWN, ErrorCode.CONNECTION_LOST}
        stopper.join(WAIT)
        assert not stopper.is_alive()
        for sub in subs:
            items = sub.rest(WAIT)
            assert items in ([], [b"1"])
            assert isinstance(sub.error, StreamError)
            assert sub.error.code in (ErrorCode.SERVER_SHUTDOWN, ErrorCode.CONNECTION_LOST)


def test_client_closes_while_an_upload_drains(same: tuple[str, str]) -> None:
    backend, transport = same
    with counted("races"), rig(backend, transport) as r:
        client = r.connect(reconnect=NO_RETRY)
        result: list[BaseException | None] = []

        def upload() -> None:
            result.append(client.upload("test:upload", "ud", [b"u" * 1000] * 3000))

        uploader = threading.Thread(target=upload)
        uploader.start()
        wait_for(lambda: r.server.statistics().uploads == 1, "the upload started")
        bounded(lambda: client.thread.call(client.client.close))
        uploader.join(WAIT)
        assert not uploader.is_alive()
        assert result[0] is None or isinstance(result[0], StreamError)
        r.server.record.wait(lambda: "ud" in r.server.record.uploads, WAIT)
        nbytes, code, _ = r.server.record.uploads["ud"]
        if result[0] is None:
            assert (nbytes, code) == (3_000_000, 0)
        else:
            assert code == ErrorCode.UPLOAD_DISCONNECTED
        serves_next_client(r, "upload")


def test_abort_transport_during_the_handshake(same: tuple[str, str]) -> None:
    """The reconnect's WELCOME is held back; abort_transport() then kills the half-open
    connection; the client reconnects again, resumes, and the stream arrives exactly once."""
    backend, transport = same
    stall = Stall("s2c", HANDSHAKE_UNITS[transport] - 1)
    with counted("races"), rig(backend, transport, plans={1: stall}) as r:
        assert r.proxy is not None
        r.server.start("test:streams", "hs")
        r.server.write("hs", *CHUNKS[:10])
        client = r.connect()
        sub = client.subscribe("test:streams", "hs")
        assert sub.take(10) == CHUNKS[:10]
        client.abort_transport()
        if not r.proxy.stalled.wait(WAIT):
            STATS["hangs"] += 1
            raise Hang("the reconnect never reached the stall")
        client.abort_transport()
        r.proxy.release()
        r.server.write("hs", *CHUNKS[10:])
        r.server.close_stream("hs")
        assert sub.rest(WAIT) == CHUNKS[10:]
        assert sub.error is None
        assert sub.seqs == list(range(1, len(CHUNKS) + 1))
        assert len(r.proxy.links) >= 3


# -- resumable uploads (spec section 9.1) -------------------------------------------------------

UPLOAD_CHUNKS = [b"upload-%03d-" % i + b"x" * 200 for i in range(60)]
#: A small upload window, so the upload spans many CREDIT and UPLOAD_ACK round trips.
UPLOAD_SERVER = Config(window_chunks=4)


def test_an_upload_returns_the_handlers_result(same: tuple[str, str]) -> None:
    """R-UPR-7: ``result=True``: what the server's handler returned comes back to the
    uploader, once the upload is complete."""
    backend, transport = same
    with counted("resume"), rig(backend, transport, config=UPLOAD_SERVER) as r:
        client = r.connect()
        outcome = bounded(
            lambda: client.upload_result("test:upload", "r1", UPLOAD_CHUNKS, result=True)
        )
        assert outcome == upload_digest(UPLOAD_CHUNKS)
        assert r.server.wait_upload("r1") == (sum(map(len, UPLOAD_CHUNKS)), 0, "")


@pytest.mark.parametrize(
    ("direction", "unit"),
    [("c2s", 1), ("c2s", 3), ("c2s", 6), ("c2s", 10), ("s2c", 1), ("s2c", 3), ("s2c", 7)],
)
def test_a_resumable_upload_survives_a_cut(
    same: tuple[str, str], direction: str, unit: int
) -> None:
    """R-UPR-2..5: the connection is cut in the middle of a unit somewhere in the upload (its
    DATA, the server's ACCEPT, CREDIT or UPLOAD_ACK); the client reconnects, resumes the
    session and the upload: the handler reads every chunk exactly once, in order (its digest
    says so), and the uploader gets its result."""
    backend, transport = same
    cut = Cut(direction, unit + HANDSHAKE_UNITS[transport], "mid")  # type: ignore[arg-type]
    with counted("resume"), rig(backend, transport, config=UPLOAD_SERVER, plans={0: cut}) as r:
        client = r.connect()
        outcome = bounded(
            lambda: client.upload_result(
                "test:upload", "r2", UPLOAD_CHUNKS, resumable=True, result=True
            ),
            2 * WAIT,
        )
        assert outcome == upload_digest(UPLOAD_CHUNKS)
        assert r.server.wait_upload("r2") == (sum(map(len, UPLOAD_CHUNKS)), 0, "")
        assert r.proxy is not None
        assert r.proxy.cuts == 1, "the upload never reached the cut point"
        assert len(r.proxy.links) >= 2
        core = r.core(client)
        assert client.thread.call(lambda: core.resumed) >= 1  # the session, so the upload


def test_a_resumable_upload_survives_the_client_killing_its_transport(
    same: tuple[str, str],
) -> None:
    """The same after the client's own transport dies mid-upload (``abort_transport``)."""
    backend, transport = same
    with counted("resume"), rig(backend, transport, config=UPLOAD_SERVER) as r:
        client = r.connect()
        outcome = bounded(
            lambda: client.upload_result(
                "test:upload", "r3", UPLOAD_CHUNKS, resumable=True, abort_after=25
            ),
            2 * WAIT,
        )
        assert outcome == b""  # no result asked for: the empty receipt
        assert r.server.wait_upload("r3") == (sum(map(len, UPLOAD_CHUNKS)), 0, "")


def test_a_plain_upload_still_fails_when_its_transport_dies(same: tuple[str, str]) -> None:
    """R-UP-6 for uploads without RESUMABLE: the reader fails, the uploader sees the loss."""
    backend, transport = same
    with counted("resume"), rig(backend, transport, config=UPLOAD_SERVER) as r:
        client = r.connect()
        outcome = bounded(
            lambda: client.upload_result("test:upload", "r4", UPLOAD_CHUNKS, abort_after=25)
        )
        assert isinstance(outcome, StreamError)
        assert r.server.wait_upload("r4")[1] == ErrorCode.UPLOAD_DISCONNECTED
