"""The adapter conformance check: protocol scenarios run against any adapter, in the spirit of
``trio.testing.check_two_way_stream``.

An adapter author hands :func:`check_adapter` a factory of connected server/client pairs built
on their transport; the check runs every scenario (subscribe, replay and resume after a lost
transport, cancel, uploads, upload cancel and resumable uploads, each overflow policy, gaps, a
thousand streams, fragmented chunks, shutdown) against fresh pairs and reports each one.

The check is pure: it calls the pair only through the blocking interfaces below
(:class:`ServerUnderTest`, :class:`ClientUnderTest`), so it knows nothing of event loops,
threads or sockets. Each call must return or raise within a bounded time; a hang in the adapter
becomes a ``TimeoutError`` in the scenario. ``transports.testing`` implements the interfaces
for adapters shaped like the asyncio, trio and thread adapters of the ``transports`` package.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs

from .._config import Config
from .._connection import WriteResult
from .._errors import ErrorCode, LocalProtocolError
from .._frames import StreamState

__all__ = [
    "CONFORMANCE_CLIENT_WINDOW",
    "CONFORMANCE_SERVER_CONFIG",
    "SCENARIOS",
    "ClientUnderTest",
    "ConformanceError",
    "ConformanceReport",
    "PairFactory",
    "PairOptions",
    "ScenarioResult",
    "ServerUnderTest",
    "SubscriptionUnderTest",
    "check_adapter",
    "upload_digest",
]

#: The server configuration every pair must use: the overflow scenarios bound the server's
#: queue by it (8 queued chunks per subscription).
CONFORMANCE_SERVER_CONFIG = Config(max_queued_chunks=8, max_queued_bytes=1 << 20)
#: The client's receive window (chunks) in the slow-consumer scenarios.
CONFORMANCE_CLIENT_WINDOW = 16


@attrs.frozen
class PairOptions:
    """How a scenario wants its pair built.

    ``reconnect``: the client reconnects and resumes after a lost transport, quickly (a first
    retry within about 20 ms, at least 20 attempts); when false it never retries.
    ``client_config``: the client's ``Config`` (None: the adapter's default). The server always
    uses :data:`CONFORMANCE_SERVER_CONFIG`.
    ``timeout``: the longest one step of a scenario (a ``take``, a wait) may wait, in seconds,
    before it raises ``TimeoutError`` saying what it waited for. :func:`check_adapter` sets it.
    """

    reconnect: bool = True
    client_config: Config | None = None
    timeout: float = 20.0


class SubscriptionUnderTest(Protocol):
    """A subscription the pair iterates in the background as soon as it is made.

    Items are chunks (``bytes``) or gaps (objects with ``from_seq`` and ``to_seq``, when the
    subscription was made with ``on_gap="item"``)."""

    @property
    def error(self) -> BaseException | None:
        """How the iteration ended: None for a normal end, else the exception (with ``code``;
        a gap error also has ``from_seq`` and ``to_seq``)."""

    @property
    def seqs(self) -> Sequence[int]:
        """The subscription's ``seq`` after each item, in order."""

    def take(self, n: int) -> list[Any]:
        """The next ``n`` items (fewer if the stream ends first)."""

    def rest(self) -> list[Any]:
        """Every remaining item, once the stream has ended."""

    def stop_after_next(self) -> None:
        """Break out of the iteration after the next item (which must send CANCEL)."""

    def close(self) -> None:
        """Close the subscription (which must send CANCEL)."""


class ServerUnderTest(Protocol):
    """A server of the adapter under test, serving a hub with the conformance channels:

    ``test:streams`` and ``test:open`` keep 100,000 chunks for replay (``test:streams`` lets
    clients delete its streams); ``test:small`` keeps the
    last 16; ``test:drop``, ``test:block`` and ``test:error`` default to that overflow policy;
    OPEN on ``test:open`` with args ``b"COUNT:DELAY_MS"`` writes ``b"0"``, ``b"1"``, ... with a
    pause between chunks and ends, stopping once the producer is aborted (counted by
    :meth:`wait_aborted`); ``test:upload`` reads uploads, cancelling one with code 1007 and
    message ``"enough"`` once it has read the number of bytes in its args (if any), and
    returns :func:`upload_digest` of the chunks it read as the upload's result (when the
    uploader asks for one);
    ``test:bidi`` serves bidirectional streams: with args ``b"echo"`` it writes back each
    chunk it reads and ends after the client's direction ended, with ``b"first:COUNT"`` it
    writes ``b"0"``, ``b"1"``, ... and ends first, then reads on (``b"slow:COUNT"``: one chunk
    per millisecond); either way the bytes it read
    are reported as an upload's (:meth:`wait_upload`, by the stream's id)."""

    def start(self, channel: str, stream_id: str) -> None:
        """Start a stream that the scenario writes."""

    def write(self, stream_id: str, *chunks: bytes) -> None:
        """``write_nowait`` each chunk."""

    def try_write(self, stream_id: str, *chunks: bytes) -> list[WriteResult]:
        """``write_nowait`` each chunk; the results."""

    def close_stream(self, stream_id: str) -> None:
        """End the stream normally."""

    def wait_aborted(self, count: int) -> None:
        """Block until ``count`` OPEN handlers have seen their producer aborted."""

    def wait_upload(self, stream_id: str) -> tuple[int, int, str]:
        """Block until the upload handler for ``stream_id`` finished: (bytes read, code,
        message); code 0 for a normal end."""

    def queued_bytes(self) -> int:
        """Bytes queued in the server's connections (not yet written to the transport)."""

    def shutdown(self, timeout: float) -> None:
        """Shut the server down gracefully (GOAWAY), waiting at most ``timeout`` seconds."""


class ClientUnderTest(Protocol):
    """A client of the adapter under test, connected to the paired server."""

    def subscribe(self, channel: str, stream_id: str) -> SubscriptionUnderTest:
        """Subscribe and start iterating at once."""

    def open(
        self, channel: str, args: bytes, *, stream_id: str = "", join: bool = False
    ) -> SubscriptionUnderTest:
        """Open a stream with ``args`` (and ``stream_id``, ``join`` as the client's ``open``
        takes them) and start iterating at once."""

    def raw_open(
        self, channel: str, args: bytes, *, stream_id: str = "", join: bool = False
    ) -> Any:
        """Open without iterating (a requester that has not read yet); the result has
        ``joined`` once accepted."""

    def status(self, channel: str, stream_id: str) -> Any:
        """The client's ``status``: an entry with ``state``, ``code``, ``first_seq`` and
        ``last_seq``; raises with ``code`` if refused."""

    def list_streams(self, channel: str, **kwargs: Any) -> Any:
        """The client's ``list_streams`` (``status``, ``after``, ``limit``): a page with
        ``entries`` and ``next``."""

    def delete(self, channel: str, stream_id: str) -> Any:
        """The client's ``delete``: the entry as it was."""

    def raw_subscribe(self, channel: str, stream_id: str, *, on_gap: str = "raise") -> Any:
        """Subscribe without iterating (a consumer that has not read yet)."""

    def wait_accepted(self, sub: Any) -> str:
        """Block until the server accepted ``sub``; its stream id."""

    def collect(self, sub: Any) -> tuple[list[Any], BaseException | None]:
        """Iterate ``sub`` to its end: (items, the exception it ended with or None)."""

    def upload(
        self,
        channel: str,
        stream_id: str,
        chunks: Iterable[bytes],
        args: bytes = b"",
        *,
        abort_after: int | None = None,
    ) -> BaseException | None:
        """Upload every chunk and end; the exception the upload ended with, if any. With
        ``abort_after``, kill the transport after writing that many chunks."""

    def upload_result(
        self,
        channel: str,
        stream_id: str,
        chunks: Iterable[bytes],
        args: bytes = b"",
        *,
        abort_after: int | None = None,
        resumable: bool = False,
        result: bool = False,
    ) -> bytes | BaseException:
        """Upload every chunk and end, with the client's ``upload`` flags ``resumable`` and
        ``result`` as given; the upload's result (``b""`` without one) once the block and the
        result are through, or the exception the upload ended with. With ``abort_after``,
        kill the transport after writing that many chunks (a resumable upload goes on after
        the reconnect)."""

    def bidi(
        self,
        channel: str,
        chunks: Iterable[bytes],
        args: bytes = b"",
        *,
        lockstep: bool = False,
        abort_after: int | None = None,
    ) -> tuple[str, list[bytes], BaseException | None]:
        """Open a bidirectional stream with ``args``, write every chunk (with ``lockstep``,
        reading one chunk of the server's direction after each), end the client's direction
        and read the server's to its end: (stream id, chunks read, the exception, if any).
        With ``abort_after``, kill the transport after writing that many chunks, stop writing
        at the first write that raises (the exception returned) and read the server's
        direction on to its end."""

    def abort_transport(self) -> None:
        """Kill the transport without a goodbye (as a network failure would)."""

    def wait_resumed(self, count: int) -> None:
        """Block until the client has resumed its session ``count`` times."""

    def statistics(self) -> Mapping[str, int]:
        """The client's counters (``reconnects``, ``resumed``, ...)."""

    def pause(self, seconds: float) -> None:
        """Let ``seconds`` of real time pass (the adapter keeps running)."""


#: Builds a connected pair for one scenario; leaving the context closes both ends.
PairFactory = Callable[[PairOptions], AbstractContextManager[tuple[ServerUnderTest, Any]]]


class ScenarioFailed(AssertionError):
    """A scenario saw the adapter break the protocol's promise."""


def _step(scenario: Callable[..., object], exc: BaseException) -> str:
    """The scenario's line that ``exc`` came through."""
    lineno = 0
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is scenario.__code__:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f"{scenario.__name__}, line {lineno}"


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioFailed(message)


def _code(error: BaseException | None) -> object:
    return getattr(error, "code", None)


def _is_gap(item: object) -> bool:
    return hasattr(item, "from_seq") and hasattr(item, "to_seq")


def upload_digest(chunks: Iterable[bytes]) -> bytes:
    """What the ``test:upload`` handler returns for an upload of ``chunks`` (its result, when
    the uploader asks for one): the chunk count and a hash of the chunks in order, so that a
    lost, repeated or reordered chunk changes it."""
    h = hashlib.sha256()
    count = 0
    for chunk in chunks:
        h.update(len(chunk).to_bytes(4, "big") + chunk)
        count += 1
    return b"%d:%s" % (count, h.hexdigest()[:16].encode())


# -- the scenarios ------------------------------------------------------------------------------
# Each takes the pair factory, builds the pairs it needs, and raises on a broken promise.


def _subscribe_and_receive(make: PairFactory) -> None:
    """Replayed and live chunks arrive in order with their seqs, then the end (R-SUB-1,
    R-SUB-2, R-SUB-9)."""
    with make(PairOptions()) as (server, client):
        server.start("test:streams", "s1")
        server.write("s1", b"a", b"b", b"c")
        sub = client.subscribe("test:streams", "s1")
        _expect(sub.take(3) == [b"a", b"b", b"c"], "the replayed chunks, in order")
        server.write("s1", b"d")
        server.close_stream("s1")
        _expect(sub.rest() == [b"d"], "the live chunk, then the end")
        _expect(sub.error is None, f"a normal end, not {sub.error!r}")
        _expect(list(sub.seqs) == [1, 2, 3, 4], f"seqs 1-4, not {list(sub.seqs)}")


def _resume_after_lost_transport(make: PairFactory) -> None:
    """A killed transport is resumed: nothing lost, nothing twice (R-SESS-3, R-SUB-5)."""
    with make(PairOptions(reconnect=True)) as (_server, client):
        sub = client.open("test:open", b"300:1")
        first = sub.take(40)
        client.abort_transport()
        rest = sub.rest()
        _expect(sub.error is None, f"a normal end, not {sub.error!r}")
        _expect(first + rest == [b"%d" % i for i in range(300)], "every chunk exactly once")
        _expect(list(sub.seqs) == list(range(1, 301)), "seqs 1-300 across the reconnect")
        stats = client.statistics()
        _expect(stats["reconnects"] >= 1 and stats["resumed"] >= 1, f"a resume, not {stats}")


def _close_aborts_the_producer(make: PairFactory) -> None:
    """Closing a subscription sends CANCEL, which aborts the only subscriber's producer
    (R-SUB-11, R-SUB-12)."""
    with make(PairOptions()) as (server, client):
        sub = client.open("test:open", b"1000000:1")
        _expect(len(sub.take(5)) == 5, "the first chunks")
        sub.close()
        server.wait_aborted(1)


def _breaking_out_sends_cancel(make: PairFactory) -> None:
    """Leaving the iteration early sends CANCEL too (R-SUB-11)."""
    with make(PairOptions()) as (server, client):
        sub = client.open("test:open", b"1000000:1")
        sub.stop_after_next()
        sub.rest()
        server.wait_aborted(1)


def _upload_and_upload_cancel(make: PairFactory) -> None:
    """An upload reaches the reader whole; the server's cancel reaches the writer with its
    code (R-UP-1, R-UP-5)."""
    with make(PairOptions()) as (server, client):
        error = client.upload("test:upload", "u1", [b"x" * 1000] * 100)
        _expect(error is None, f"the upload ends normally, not {error!r}")
        outcome = server.wait_upload("u1")
        _expect(outcome == (100_000, 0, ""), f"the reader got 100,000 bytes, not {outcome}")
        error = client.upload("test:upload", "u2", itertools.repeat(b"y" * 1000, 100_000), b"20000")
        _expect(_code(error) == 1007, f"the writer sees the cancel's code, not {error!r}")
        outcome = server.wait_upload("u2")
        _expect(outcome[1:] == (1007, "enough"), f"the reader cancelled, not {outcome}")


def _uploader_disconnect(make: PairFactory) -> None:
    """A lost uploader fails the reader with UPLOAD_DISCONNECTED (R-UP-6)."""
    with make(PairOptions(reconnect=False)) as (server, client):
        chunks = itertools.repeat(b"z" * 100, 1000)
        error = client.upload("test:upload", "u3", chunks, abort_after=50)
        _expect(error is not None, "the writer sees the lost transport")
        outcome = server.wait_upload("u3")
        _expect(outcome[1] == ErrorCode.UPLOAD_DISCONNECTED, f"UPLOAD_DISCONNECTED: {outcome}")


def _resumable_upload_after_lost_transport(make: PairFactory) -> None:
    """A resumable upload asking for a result, whose transport is killed mid-upload, goes on
    after the reconnect from the server's next seq: the reader gets every chunk exactly once,
    in order, and the uploader the handler's result (R-UPR-2..7)."""
    chunks = [b"r%03d-" % i + b"z" * 500 for i in range(80)]
    with make(PairOptions(reconnect=True)) as (server, client):
        outcome = client.upload_result(
            "test:upload", "ru1", chunks, resumable=True, result=True, abort_after=30
        )
        _expect(not isinstance(outcome, BaseException), f"the upload ends normally: {outcome!r}")
        _expect(outcome == upload_digest(chunks), f"the result of all 80 chunks once: {outcome!r}")
        read = server.wait_upload("ru1")
        _expect(read == (sum(map(len, chunks)), 0, ""), f"the reader read them all: {read}")
        stats = client.statistics()
        _expect(stats["reconnects"] >= 1 and stats["resumed"] >= 1, f"a resume, not {stats}")


def _slow_options() -> PairOptions:
    window = CONFORMANCE_CLIENT_WINDOW
    return PairOptions(client_config=Config(window_chunks=window, window_bytes=1 << 20))


def _queue_bound(chunk_size: int) -> int:
    return (CONFORMANCE_CLIENT_WINDOW + CONFORMANCE_SERVER_CONFIG.max_queued_chunks) * chunk_size


def _slow_consumer_drop_oldest(make: PairFactory) -> None:
    """drop_oldest keeps the server's memory bounded and reports every dropped seq as a gap;
    the newest chunks survive (R-OVF-2)."""
    with make(_slow_options()) as (server, client):
        server.start("test:drop", "d1")
        sub = client.raw_subscribe("test:drop", "d1", on_gap="item")
        client.wait_accepted(sub)
        peak = 0
        for i in range(50):
            server.write("d1", *[b"%06d" % (i * 100 + j) + b"." * 994 for j in range(100)])
            peak = max(peak, server.queued_bytes())
        server.close_stream("d1")
        _expect(peak <= _queue_bound(1000), f"queued bytes bounded: peak {peak}")
        items, error = client.collect(sub)
        _expect(error is None, f"a normal end, not {error!r}")
        chunks = [i for i in items if not _is_gap(i)]
        dropped = sum(g.to_seq - g.from_seq + 1 for g in items if _is_gap(g))
        _expect(dropped > 0, "gaps reported")
        _expect(len(chunks) + dropped == 5000, "every seq delivered or reported dropped")
        _expect(chunks[-1].startswith(b"004999"), "the newest chunk survives")


def _slow_consumer_block(make: PairFactory) -> None:
    """block refuses writes beyond the bound and loses nothing it accepted (R-OVF-3)."""
    with make(_slow_options()) as (server, client):
        server.start("test:block", "b1")
        sub = client.raw_subscribe("test:block", "b1")
        client.wait_accepted(sub)
        results = server.try_write("b1", *[b"%06d" % i for i in range(1000)])
        accepted = [i for i, r in enumerate(results) if r is WriteResult.ACCEPTED]
        _expect(WriteResult.BLOCKED in results, "writes beyond the bound are BLOCKED")
        _expect(server.queued_bytes() <= _queue_bound(6), "queued bytes bounded")
        _expect(accepted == list(range(len(accepted))), "nothing accepted after BLOCKED")
        server.close_stream("b1")
        items, error = client.collect(sub)
        _expect(error is None, f"a normal end, not {error!r}")
        _expect(items == [b"%06d" % i for i in accepted], "every accepted chunk, in order")


def _slow_consumer_error(make: PairFactory) -> None:
    """error fails the subscription with RESOURCE_EXHAUSTED after an unbroken prefix
    (R-OVF-4)."""
    with make(_slow_options()) as (server, client):
        server.start("test:error", "e1")
        sub = client.raw_subscribe("test:error", "e1")
        client.wait_accepted(sub)
        server.write("e1", *[b"%06d" % i for i in range(200)])
        _expect(server.queued_bytes() <= _queue_bound(6), "queued bytes bounded")
        items, error = client.collect(sub)
        _expect(_code(error) == ErrorCode.RESOURCE_EXHAUSTED, f"RESOURCE_EXHAUSTED: {error!r}")
        _expect(items == [b"%06d" % i for i in range(len(items))], "an unbroken prefix")


def _gap_raises_by_default(make: PairFactory) -> None:
    """Evicted chunks are never skipped silently: the iterator raises with the exact gap
    (R-REPLAY-1)."""
    with make(PairOptions()) as (server, client):
        server.start("test:small", "g1")
        server.write("g1", *[b"%d" % i for i in range(40)])  # the window keeps the last 16
        server.close_stream("g1")
        items, error = client.collect(client.raw_subscribe("test:small", "g1"))
        _expect(items == [], "nothing before the gap")
        bounds = (getattr(error, "from_seq", None), getattr(error, "to_seq", None))
        _expect(bounds == (1, 24), f"a gap error for seqs 1-24, not {error!r}")


def _a_thousand_streams(make: PairFactory) -> None:
    """A thousand subscriptions share one connection, each complete (R-HANDLE-1)."""
    with make(PairOptions()) as (server, client):
        for i in range(1000):
            server.start("test:streams", f"m{i}")
            server.write(f"m{i}", b"%d-a" % i, b"%d-b" % i)
        subs = [client.raw_subscribe("test:streams", f"m{i}") for i in range(1000)]
        for i in range(1000):
            server.close_stream(f"m{i}")
        outcomes = [client.collect(sub) for sub in subs]
        bad = [i for i, out in enumerate(outcomes) if out != ([b"%d-a" % i, b"%d-b" % i], None)]
        _expect(bad == [], f"streams {bad[:5]} incomplete or failed")


def _chunks_larger_than_a_frame(make: PairFactory) -> None:
    """Chunks above the frame size are fragmented and reassembled (R-FRAG-1)."""
    big = bytes(range(256)) * 1000
    with make(PairOptions()) as (server, client):
        server.start("test:streams", "big")
        server.write("big", big, b"small", big[::-1])
        server.close_stream("big")
        sub = client.subscribe("test:streams", "big")
        _expect(sub.rest() == [big, b"small", big[::-1]], "the chunks reassembled")


def _shutdown_sends_goaway(make: PairFactory) -> None:
    """A server shutdown ends the client's open subscription with SERVER_SHUTDOWN (or, if the
    GOAWAY was lost, CONNECTION_LOST) (R-GOAWAY-1)."""
    with make(PairOptions(reconnect=False)) as (server, client):
        server.start("test:streams", "long")
        server.write("long", b"1")
        sub = client.subscribe("test:streams", "long")
        _expect(sub.take(1) == [b"1"], "the first chunk")
        server.shutdown(0.3)
        sub.rest()
        lost = (ErrorCode.SERVER_SHUTDOWN, ErrorCode.CONNECTION_LOST)
        _expect(_code(sub.error) in lost, f"the subscription ends with the shutdown: {sub.error!r}")


def _buffered_chunks_survive_a_reconnect(make: PairFactory) -> None:
    """Chunks buffered when the transport dies are handed out after the resume; the credit
    they carried died with the old connection (R-FLOW-6, R-SESS-3)."""
    with make(_slow_options()) as (server, client):
        server.start("test:streams", "r1")
        server.write("r1", *[b"%03d" % i for i in range(100)])
        server.close_stream("r1")
        sub = client.raw_subscribe("test:streams", "r1")
        client.pause(0.3)  # the window fills the client's buffer; nobody reads
        client.abort_transport()
        client.wait_resumed(1)
        client.pause(0.2)
        items, error = client.collect(sub)
        _expect(error is None, f"a normal end, not {error!r}")
        _expect(items == [b"%03d" % i for i in range(100)], "every chunk exactly once")


def _open_is_lossless_by_default(make: PairFactory) -> None:
    """An OPEN's own stream is lossless by default: a requester that has not read yet holds
    its producer back instead of losing chunks to an overflow gap (R-OVF-6)."""
    with make(_slow_options()) as (_server, client):
        sub = client.raw_open("test:open", b"2000:0")
        client.wait_accepted(sub)
        client.pause(0.3)  # the producer fills the window and the queue; nobody reads
        items, error = client.collect(sub)
        _expect(error is None, f"no gap and a normal end, not {error!r}")
        _expect(items == [b"%d" % i for i in range(2000)], "every chunk, in order")


def _run_or_join(make: PairFactory) -> None:
    """Two OPENs of one stream id with JOIN share one producer, and both requesters read
    the whole stream from seq 1 (R-JOIN-1, R-JOIN-4)."""
    with make(PairOptions()) as (_server, client):
        first = client.open("test:open", b"300:1", stream_id="shared", join=True)
        _expect(len(first.take(20)) == 20, "the first requester reads")
        second = client.raw_open("test:open", b"300:1", stream_id="shared", join=True)
        _expect(client.wait_accepted(second) == "shared", "the joiner is accepted")
        _expect(second.joined, "the joiner's ACCEPT says JOINED")
        want = [b"%d" % i for i in range(300)]
        rest, error = client.collect(second)
        _expect(error is None, f"the joiner ends normally, not {error!r}")
        _expect(rest == want, "the joiner reads the whole stream from seq 1")
        _expect(first.rest() == want[20:], "the first requester reads the rest")
        _expect(first.error is None, f"a normal end, not {first.error!r}")


def _stream_status(make: PairFactory) -> None:
    """Stream status and discovery: a status query answers missing, open with its last seq,
    ended or failed with its code, without subscribing; a listing pages through the
    channel's streams in id order, filtered by state (R-QUERY-1..3)."""
    with make(PairOptions()) as (server, client):
        missing = client.status("test:streams", "q0")
        _expect(missing.state is StreamState.MISSING, f"MISSING, not {missing}")
        for name in ("q1", "q2", "q3"):
            server.start("test:streams", name)
        server.write("q1", b"a", b"b", b"c")
        server.close_stream("q2")
        open_ = client.status("test:streams", "q1")
        _expect((open_.state, open_.last_seq) == (StreamState.OPEN, 3), f"OPEN at 3, not {open_}")
        ended = client.status("test:streams", "q2")
        _expect(ended.state is StreamState.ENDED, f"ENDED, not {ended}")
        first = client.list_streams("test:streams", limit=2)
        _expect([e.stream_id for e in first.entries] == ["q1", "q2"], f"page 1: {first}")
        _expect(first.next == "q2", f"a next page after q2, not {first.next!r}")
        rest = client.list_streams("test:streams", after=first.next, limit=2)
        _expect([e.stream_id for e in rest.entries] == ["q3"] and not rest.next, f"{rest}")
        live = client.list_streams("test:streams", status=StreamState.OPEN)
        _expect([e.stream_id for e in live.entries] == ["q1", "q3"], f"open ones: {live}")


def _stream_delete(make: PairFactory) -> None:
    """Deleting a stream ends its reader with STREAM_DELETED, and the stream is missing
    afterwards (R-QUERY-4)."""
    with make(PairOptions()) as (server, client):
        server.start("test:streams", "doomed")
        server.write("doomed", b"x")
        sub = client.subscribe("test:streams", "doomed")
        _expect(sub.take(1) == [b"x"], "the first chunk")
        was = client.delete("test:streams", "doomed")
        _expect(was.state is StreamState.OPEN, f"it was OPEN, not {was}")
        sub.rest()
        _expect(_code(sub.error) == ErrorCode.STREAM_DELETED, f"STREAM_DELETED: {sub.error!r}")
        gone = client.status("test:streams", "doomed")
        _expect(gone.state is StreamState.MISSING, f"MISSING afterwards, not {gone}")


def _bidi_echo(make: PairFactory) -> None:
    """One handle carries chunks both ways, each direction with its own seqs and credit
    (R-BIDI-1, R-BIDI-4): 300 chunks of 1000 bytes, more than either window, in lockstep."""
    with make(PairOptions()) as (server, client):
        chunks = [b"%04d" % i + b"x" * 996 for i in range(300)]
        sid, got, error = client.bidi("test:bidi", chunks, b"echo", lockstep=True)
        _expect(error is None, f"both directions end normally, not {error!r}")
        _expect(got == chunks, f"every chunk echoed once, in order ({len(got)} of 300)")
        outcome = server.wait_upload(sid)
        _expect(outcome == (300_000, 0, ""), f"the reader got 300,000 bytes, not {outcome}")


def _bidi_half_close(make: PairFactory) -> None:
    """The server's END closes its direction only: the client's runs on to its own END
    (R-BIDI-5)."""
    with make(PairOptions()) as (server, client):
        sid, got, error = client.bidi("test:bidi", [b"y" * 500] * 200, b"first:3")
        _expect(error is None, f"both directions end normally, not {error!r}")
        _expect(got == [b"0", b"1", b"2"], f"the server's three chunks, not {got[:5]}")
        outcome = server.wait_upload(sid)
        _expect(outcome == (100_000, 0, ""), f"the reader got 100,000 bytes, not {outcome}")


def _bidi_resume_after_lost_transport(make: PairFactory) -> None:
    """A lost transport fails the client's direction (the server's reader sees
    UPLOAD_DISCONNECTED) and resumes the server's: every chunk exactly once (R-BIDI-8)."""
    with make(PairOptions(reconnect=True)) as (server, client):
        chunks = itertools.repeat(b"u" * 10, 100_000)
        sid, got, error = client.bidi("test:bidi", chunks, b"slow:300", abort_after=20)
        _expect(_code(error) == ErrorCode.CONNECTION_LOST, f"the writer sees the loss: {error!r}")
        _expect(got == [b"%d" % i for i in range(300)], f"every chunk once ({len(got)} of 300)")
        outcome = server.wait_upload(sid)
        _expect(outcome[1] == ErrorCode.UPLOAD_DISCONNECTED, f"the reader: {outcome}")


#: Every scenario by name, in the order :func:`check_adapter` runs them.
SCENARIOS: Mapping[str, Callable[[PairFactory], None]] = {
    "subscribe_and_receive": _subscribe_and_receive,
    "resume_after_lost_transport": _resume_after_lost_transport,
    "close_aborts_the_producer": _close_aborts_the_producer,
    "breaking_out_sends_cancel": _breaking_out_sends_cancel,
    "upload_and_upload_cancel": _upload_and_upload_cancel,
    "uploader_disconnect": _uploader_disconnect,
    "resumable_upload_after_lost_transport": _resumable_upload_after_lost_transport,
    "slow_consumer_drop_oldest": _slow_consumer_drop_oldest,
    "slow_consumer_block": _slow_consumer_block,
    "slow_consumer_error": _slow_consumer_error,
    "gap_raises_by_default": _gap_raises_by_default,
    "a_thousand_streams": _a_thousand_streams,
    "chunks_larger_than_a_frame": _chunks_larger_than_a_frame,
    "shutdown_sends_goaway": _shutdown_sends_goaway,
    "buffered_chunks_survive_a_reconnect": _buffered_chunks_survive_a_reconnect,
    "open_is_lossless_by_default": _open_is_lossless_by_default,
    "run_or_join": _run_or_join,
    "stream_status": _stream_status,
    "stream_delete": _stream_delete,
    "bidi_echo": _bidi_echo,
    "bidi_half_close": _bidi_half_close,
    "bidi_resume_after_lost_transport": _bidi_resume_after_lost_transport,
}


@attrs.frozen
class ScenarioResult:
    """One scenario's outcome: ``error`` is None when it passed."""

    name: str
    doc: str
    error: BaseException | None = None
    #: Where it failed: the scenario function and its line (``"_subscribe_and_receive, line
    #: 212"``, in ``streamproto/testing/_conformance.py``), or ``""``.
    step: str = ""

    @property
    def passed(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        if self.error is None:
            return f"{self.name}: pass"
        where = f" at {self.step}" if self.step else ""
        return f"{self.name}: FAIL{where}: {self.error!r}"


@attrs.frozen
class ConformanceReport:
    """Every scenario's result, in order."""

    results: tuple[ScenarioResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[ScenarioResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def __str__(self) -> str:
        lines = [str(r) for r in self.results]
        lines.append(
            f"{len(self.results) - len(self.failures)} passed, {len(self.failures)} failed"
        )
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """The adapter failed scenarios; ``report`` has them all."""

    def __init__(self, report: ConformanceReport) -> None:
        super().__init__(str(report))
        self.report = report


def check_adapter(
    make_pair: PairFactory,
    *,
    scenarios: Iterable[str] | None = None,
    raise_on_failure: bool = True,
    timeout: float = 5.0,
) -> ConformanceReport:
    """Run the protocol scenarios against an adapter.

    ``make_pair(options)`` returns a context manager that yields a connected
    ``(server, client)`` pair (:class:`ServerUnderTest`, :class:`ClientUnderTest`) built on the
    adapter's transport as ``options`` (:class:`PairOptions`) asks, and closes both on exit.
    Each scenario builds its own pairs. ``scenarios`` picks names from :data:`SCENARIOS` (all by
    default). A scenario that raises anything, including a ``TimeoutError`` from a pair that
    hung, fails; no step waits longer than ``timeout`` seconds (passed to the factory as
    :attr:`PairOptions.timeout`). Each result names the scenario, the step it failed at (its
    line in the scenario) and what was expected. Returns the report, or raises
    :class:`ConformanceError` with it if any scenario failed and ``raise_on_failure`` is true;
    an unknown scenario name raises ``LocalProtocolError(INVALID_ARGUMENT)``.

    ``transports.testing.pair_factory`` makes ``make_pair`` for adapters shaped like those of
    the ``transports`` package::

        from streamproto.testing import check_adapter
        from transports.testing import pair_factory

        check_adapter(pair_factory("asyncio", "asyncio", "tcp"))
    """
    names = list(SCENARIOS) if scenarios is None else list(scenarios)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"unknown scenarios: {unknown}")
    if not timeout > 0:
        raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"timeout must be > 0: {timeout!r}")

    def make(options: PairOptions) -> AbstractContextManager[tuple[ServerUnderTest, Any]]:
        return make_pair(attrs.evolve(options, timeout=timeout))

    results = []
    for name in names:
        scenario = SCENARIOS[name]
        doc = " ".join((scenario.__doc__ or "").split())
        try:
            scenario(make)
        except Exception as exc:  # every failure is reported, none stops the others
            results.append(ScenarioResult(name, doc, exc, _step(scenario, exc)))
        else:
            results.append(ScenarioResult(name, doc))
    report = ConformanceReport(tuple(results))
    if raise_on_failure and not report.passed:
        raise ConformanceError(report)
    return report
