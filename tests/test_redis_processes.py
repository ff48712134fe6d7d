"""Several real server processes sharing one real Redis (``python -m transports.reference
--store redis://...``): a stream opened on one is replayed and tailed on another, a client
that leaves A finishes reading on B, a cancel on B reaches A's producer, and A killed with -9
fails its stream (PRODUCER_LOST) once its lease expires. A runs asyncio; B runs the thread
and trio backends in turn, so their drivers are exercised too. Bidirectional streams (spec
§6.4, on ``redis_chat_app.py``'s ``chat:live``): B follows and replays the server's direction
of a stream opened on A, only A's handler reads the client's, the id is A's while it runs,
and DELETE across processes acts as for one-way streams."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from redis_helpers import RedisCluster, RedisServer, redis_cluster, redis_server

from streamproto import ErrorCode, OverflowPolicy, StreamEntry, StreamState
from streamproto.testing.reference import slow_chunk
from transports import StreamError
from transports import sync as client_backend
from transports.conformance import run as run_conformance

__all__ = ["redis_cluster", "redis_server"]  # the fixtures

TIMEOUT = 60.0


#: The reference server plus ``chat:live`` (bidirectional streams; its handler tells when it
#: runs), run as ``python redis_chat_app.py`` with the reference server's arguments.
CHAT_APP = str(Path(__file__).with_name("redis_chat_app.py"))
CHAT = "chat:live"


class Reference:
    """A reference server process (or ``app``, a script that serves the reference server with
    more channels: its output is kept for :meth:`finish`)."""

    def __init__(self, redis_url: str, backend: str = "asyncio", app: str | None = None) -> None:
        command = [sys.executable, *(["-m", "transports.reference"] if app is None else [app])]
        command += ["tcp://127.0.0.1:0", "--backend", backend, "--store", redis_url]
        stderr = None if app is None else subprocess.PIPE
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("reference server on tcp://127.0.0.1:"), line
        self.url = line.split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def finish(self) -> tuple[str, str]:
        """Stop an ``app`` server; what it printed after it listened, and its log."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=20)
        return out, err

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _starting(store_url: str) -> Iterator[Callable[..., Reference]]:
    started: list[Reference] = []

    def start(backend: str = "asyncio", app: str | None = None) -> Reference:
        ref = Reference(store_url, backend, app)
        started.append(ref)
        return ref

    yield start
    for ref in started:
        ref.stop()


@pytest.fixture
def servers(redis_server: RedisServer) -> Iterator[Callable[..., Reference]]:
    yield from _starting(redis_server.url)


@pytest.fixture
def cluster_servers(redis_cluster: RedisCluster) -> Iterator[Callable[..., Reference]]:
    """Reference servers on the local 3-master Redis Cluster (``--store redis+cluster://``)."""
    yield from _starting(redis_cluster.store_url)


def connect(url: str) -> Any:
    return client_backend.connect(
        url, reconnect=client_backend.Backoff(attempts=0), timeout=TIMEOUT
    )


def subscribe_elsewhere(client: Any, channel: str, stream_id: str, **options: Any) -> Any:
    """Subscribe on another process than the stream's producer: accepted at the first try,
    since the producer's process answered the OPEN only once Redis held the stream."""
    sub = client.subscribe(channel, stream_id, **options)
    sub.accepted(TIMEOUT)
    return sub


def read_all(sub: Any) -> list[tuple[int, bytes]]:
    out = []
    for chunk in sub:
        out.append((sub.seq, chunk))
    return out


@pytest.mark.parametrize(
    ("store", "backend_a", "backend_b"),
    [
        ("redis", "asyncio", "sync"),
        ("redis", "sync", "trio"),
        ("redis", "trio", "asyncio"),
        ("cluster", "asyncio", "sync"),
    ],
)
def test_a_stream_opened_on_a_is_read_to_its_end_on_b(
    request: pytest.FixtureRequest, store: str, backend_a: str, backend_b: str
) -> None:
    """Every backend opens (its driver answers the claim) and follows; on a Redis Cluster
    too, where B follows the stream through its node's sharded pub/sub."""
    servers = request.getfixturevalue("servers" if store == "redis" else "cluster_servers")
    a, b = servers(backend_a), servers(backend_b)
    count = 600
    with connect(a.url) as first:
        sub = first.open("conformance:slow", b"%d" % count)
        stream_id = sub.accepted(TIMEOUT)
        seen = []
        for chunk in sub:
            seen.append((sub.seq, chunk))
            if len(seen) == 40:
                break
        # B has no copy of the stream yet: its status comes from the store (R-QUERY-2).
        with connect(b.url) as other:
            running = other.status("conformance:slow", stream_id)
            assert (running.state, running.code) == (StreamState.OPEN, 0)
            assert running.last_seq >= 40
            assert other.status("conformance:slow", "nothing-here").state is StreamState.MISSING
    # The connection to A is gone; the client goes on on B from the last seq it saw.
    last = seen[-1][0]
    with connect(b.url) as second:
        rest = read_all(second.subscribe("conformance:slow", stream_id, after_seq=last))
        whole = read_all(second.subscribe("conformance:slow", stream_id))
        ended = second.status("conformance:slow", stream_id)
    assert seen + rest == [(i, slow_chunk(i)) for i in range(1, count + 1)]
    assert whole == seen + rest
    assert (ended.state, ended.last_seq) == (StreamState.ENDED, count)


def test_a_cancel_on_b_aborts_the_producer_on_a(servers: Any, redis_server: RedisServer) -> None:
    a, b = servers(), servers()
    with connect(a.url) as first, connect(b.url) as second:
        opened = first.open("conformance:abort", b"100000")
        stream_id = opened.accepted(TIMEOUT)
        follower = subscribe_elsewhere(
            second, "conformance:abort", stream_id, tail=True, policy=OverflowPolicy.DROP_OLDEST
        )
        next(iter(opened))
        opened.close()  # A's last listener: B still listens, so nothing stops
        time.sleep(0.5)  # (either order of the two cancels aborts: this one tests B's last)
        follower.close()  # the last listener anywhere: A's producer is aborted
        # Wait for the outcome in Redis (a tailing read would wait forever if it never came).
        meta = f"sp:{{conformance:abort/{stream_id}}}:m"
        with redis.Redis.from_url(redis_server.url) as client:
            deadline = time.monotonic() + TIMEOUT
            while client.hget(meta, "status") != b"aborted":
                assert time.monotonic() < deadline, "the producer was not aborted"
                time.sleep(0.05)
        for conn in (first, second):
            with pytest.raises(StreamError, match="CANCELLED"):
                read_all(conn.subscribe("conformance:abort", stream_id, tail=True))


def test_a_producer_killed_with_9_fails_its_stream_after_its_lease(servers: Any) -> None:
    a, b = servers(), servers()
    with connect(a.url) as first:
        opened = first.open("conformance:slow", b"100000")
        with connect(b.url) as second:
            stream_id = opened.accepted(TIMEOUT)
            follower = subscribe_elsewhere(second, "conformance:slow", stream_id)
            chunks = iter(follower)  # (leaving a for loop would close the subscription)
            for _ in range(20):
                next(chunks)
            started = time.monotonic()
            a.kill()
            with pytest.raises(StreamError) as caught:
                for _ in chunks:
                    pass
            assert caught.value.code == ErrorCode.PRODUCER_LOST
            assert "stopped renewing its lease" in str(caught.value)
            assert time.monotonic() - started < TIMEOUT


class SwitchProxy:
    """A TCP proxy in front of the servers, as a load balancer: ``switch`` points it at
    another server and drops the connections it carries."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.live: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.target.removeprefix("tcp://").rsplit(":", 1)
            server = socket.create_connection((host, int(port)))
            with self.lock:
                self.live += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        src.close()  # each pump closes the socket it reads; the other pump closes dst

    def switch(self, target: str) -> None:
        with self.lock:
            self.target = target
            live, self.live = self.live, []
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        self.switch(self.target)


def test_a_client_whose_connection_drops_resumes_on_b_with_its_token(servers: Any) -> None:
    """Behind a load balancer: the connection to A drops, the client reconnects (presenting
    its session token, which B does not know) and lands on B, which resumes each of its
    subscriptions from the last seq it saw: every chunk once, in order."""
    a, b = servers(), servers()
    proxy = SwitchProxy(a.url)
    count = 600
    try:
        with client_backend.connect(proxy.url, timeout=TIMEOUT) as client:
            sub = client.open("conformance:slow", b"%d" % count)
            sub.accepted(TIMEOUT)
            chunks = iter(sub)
            seen: list[tuple[int, bytes]] = []
            while len(seen) < 40:
                chunk = next(chunks)
                seen.append((sub.seq, chunk))
            proxy.switch(b.url)
            for chunk in chunks:
                seen.append((sub.seq, chunk))
            assert client.statistics().reconnects >= 1
    finally:
        proxy.close()
    assert seen == [(i, slow_chunk(i)) for i in range(1, count + 1)]


def test_the_conformance_runner_sees_a_redis_backed_server_as_a_plain_one(
    redis_server: RedisServer,
) -> None:
    """Every case of the wire conformance runner gets the same verdict from a reference
    server whose streams live in Redis as from one that keeps them in memory."""
    verdicts = []
    for store in ([], ["--store", redis_server.url]):
        command = [sys.executable, "-m", "transports.reference", "tcp://127.0.0.1:0", *store]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            report = run_conformance(url, timeout=10.0)
            verdicts.append({r.id: r.passed for r in report.results})
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
            if proc.stdout is not None:
                proc.stdout.close()
    memory, redis_backed = verdicts
    assert redis_backed == memory


# -- bidirectional streams (spec §6.4) across processes -----------------------------------------


def handler_lines(out: str, stream_id: str) -> list[str]:
    """What a chat app's handler printed about ``stream_id``."""
    return [line for line in out.splitlines() if line.split()[1:2] == [stream_id]]


def status_once_at(client: Any, channel: str, stream_id: str, last_seq: int) -> StreamEntry:
    """STATUS, asked again until it shows ``last_seq``: a chunk a client has from A reaches
    Redis a moment later."""
    deadline = time.monotonic() + TIMEOUT
    while (entry := client.status(channel, stream_id)).last_seq < last_seq:
        assert time.monotonic() < deadline, entry
        time.sleep(0.02)
    return entry


@pytest.mark.parametrize(
    ("backend_a", "backend_b"), [("asyncio", "sync"), ("sync", "trio"), ("trio", "asyncio")]
)
def test_the_servers_direction_of_a_bidi_stream_on_a_is_followed_on_b(
    servers: Any, redis_server: RedisServer, backend_a: str, backend_b: str
) -> None:
    """R-BIDI-7 across processes: the server's direction is a stream of the channel. A client
    of B follows it live (each echo before the client writes again), gets its END, and
    replays it whole afterwards; STATUS on B answers from the store. The client's direction
    is point to point: A's handler reads all of it, B's is never called, and Redis holds the
    server's direction only."""
    a, b = servers(backend_a, CHAT_APP), servers(backend_b, CHAT_APP)
    count = 20
    expected = [(1, b"hello")] + [(i + 1, b"echo:m-%d" % i) for i in range(1, count + 1)]
    with connect(a.url) as talker, connect(b.url) as watcher:
        with talker.bidi(CHAT) as stream:
            stream_id = stream.stream_id
            answers = iter(stream)
            assert next(answers) == b"hello"
            # B has no copy: the store answers (which has "hello" a moment after the client).
            running = status_once_at(watcher, CHAT, stream_id, 1)
            assert running == StreamEntry(stream_id, StreamState.OPEN, 0, 1, 1)
            follower = subscribe_elsewhere(watcher, CHAT, stream_id)
            followed = iter(follower)
            assert (next(followed), follower.seq) == (b"hello", 1)
            for seq, chunk in expected[1:]:
                stream.write(chunk.removeprefix(b"echo:"))
                assert next(answers) == chunk
                assert (next(followed), follower.seq) == (chunk, seq)
            stream.end()  # the client's direction ends, then the handler ends the server's
            assert list(answers) == []
        assert list(followed) == []  # B's subscriber got the END (an ERROR would raise)
        replay = read_all(watcher.subscribe(CHAT, stream_id))
        ended = watcher.status(CHAT, stream_id)
    assert replay == expected
    assert ended == StreamEntry(stream_id, StreamState.ENDED, 0, 1, count + 1)
    with redis.Redis.from_url(redis_server.url) as client:
        entries = client.xrange(f"sp:{{{CHAT}/{stream_id}}}:s")
    assert [fields.get(b"d") for _, fields in entries] == [c for _, c in expected] + [None]
    (out_a, err_a), (out_b, err_b) = a.finish(), b.finish()
    reads = [f"read {stream_id} m-{i}" for i in range(1, count + 1)]
    assert handler_lines(out_a, stream_id) == [f"bidi {stream_id}", *reads]
    assert handler_lines(out_b, stream_id) == []
    # B's STATUS followed the stream for a moment: its driver took that in its stride (the
    # tailing loop once read an emptied set of streams and logged Redis as unreachable).
    assert (err_a, err_b) == ("", "")


def test_a_bidi_streams_id_is_not_reused_on_another_process_while_it_runs(servers: Any) -> None:
    """R-BIDI-1 and R-REQ-8 across processes: while A's bidi stream runs, B refuses an OPEN
    of its id, bidirectional or one-way, with STREAM_EXISTS: the claim in Redis decides while
    B does not know the stream, B's copy once it follows it. B's handler is never called. Once
    the stream ended, a new claim of the id on B replaces it."""
    a, b = servers("asyncio", CHAT_APP), servers("sync", CHAT_APP)
    with connect(a.url) as first, connect(b.url) as second:
        with first.bidi(CHAT) as stream:
            stream_id = stream.stream_id
            answers = iter(stream)
            assert next(answers) == b"hello"

            def refused(message: str) -> None:
                with pytest.raises(StreamError) as caught, second.bidi(CHAT, stream_id=stream_id):
                    pass
                assert (caught.value.code, caught.value.message) == (
                    ErrorCode.STREAM_EXISTS,
                    f"stream {stream_id!r} {message}",
                )
                with pytest.raises(StreamError) as caught:
                    second.open(CHAT, stream_id=stream_id).accepted(TIMEOUT)
                assert caught.value.code == ErrorCode.STREAM_EXISTS

            refused("is open in another process")  # the claim in Redis
            follower = subscribe_elsewhere(second, CHAT, stream_id)
            followed = iter(follower)
            assert next(followed) == b"hello"
            refused("is open")  # B's copy of the stream
            stream.write(b"m-1")  # the stream runs on, both directions
            assert next(answers) == next(followed) == b"echo:m-1"
            stream.end()
            assert list(answers) == list(followed) == []
        with second.bidi(CHAT, stream_id=stream_id) as again:  # a new generation, on B
            assert next(iter(again)) == b"hello"
            again.end()
    reads = [f"read {stream_id} m-1"]
    assert handler_lines(a.finish()[0], stream_id) == [f"bidi {stream_id}", *reads]
    assert handler_lines(b.finish()[0], stream_id) == [f"bidi {stream_id}"]


def erased(service: RedisServer | RedisCluster, stream_id: str) -> list[Any]:
    """The entries Redis keeps of a deleted stream, once its producer's process erased it."""
    meta = f"sp:{{{CHAT}/{stream_id}}}:m"
    client: Any = (
        redis.Redis.from_url(service.url)
        if isinstance(service, RedisServer)
        else redis.cluster.RedisCluster.from_url(service.url)
    )
    with client:
        deadline = time.monotonic() + TIMEOUT
        while not client.hexists(meta, "deleted"):
            assert time.monotonic() < deadline, "the stream was not erased"
            time.sleep(0.02)
        return list(client.xrange(f"sp:{{{CHAT}/{stream_id}}}:s"))


def assert_gone(clients: Iterator[Any] | tuple[Any, ...], stream_id: str) -> None:
    """R-QUERY-4 through every process: STATUS answers MISSING, SUBSCRIBE UNKNOWN_STREAM."""
    for client in clients:
        assert client.status(CHAT, stream_id).state is StreamState.MISSING
        with pytest.raises(StreamError) as caught:
            client.subscribe(CHAT, stream_id).accepted(TIMEOUT)
        assert caught.value.code == ErrorCode.UNKNOWN_STREAM


@pytest.mark.parametrize("bidi", [True, False], ids=["bidi", "one-way"])
def test_a_delete_is_refused_on_b_and_ends_the_servers_direction_on_a(
    servers: Any, redis_server: RedisServer, bidi: bool
) -> None:
    """DELETE acts on the streams of the process that answers (spec §17): B refuses to delete
    a stream A produces (NOT_ALLOWED), before and while it follows it, and the stream runs on;
    the same DELETE through A, the producer's process, ends it everywhere (STREAM_DELETED)
    and erases it from Redis, so that no process finds it afterwards (R-QUERY-4). The
    server's direction of a bidi stream behaves in this as a one-way stream does, and the
    client's direction runs on to A's handler after the delete."""
    a, b = servers("trio", CHAT_APP), servers("asyncio", CHAT_APP)
    with (
        connect(a.url) as first,
        connect(b.url) as second,
        contextlib.ExitStack() as stack,
    ):
        own: Any = stack.enter_context(first.bidi(CHAT)) if bidi else first.open(CHAT)
        stream_id = own.stream_id if bidi else own.accepted(TIMEOUT)
        mine = iter(own)
        assert next(mine) == b"hello"
        theirs: Iterator[bytes] = iter(())
        for follows in (False, True):
            with pytest.raises(StreamError) as caught:
                second.delete(CHAT, stream_id)
            assert caught.value.code == ErrorCode.NOT_ALLOWED
            if not follows:
                theirs = iter(subscribe_elsewhere(second, CHAT, stream_id))
                assert next(theirs) == b"hello"
        if bidi:
            own.write(b"m-1")
            assert next(mine) == next(theirs) == b"echo:m-1"
        assert first.delete(CHAT, stream_id).state is StreamState.OPEN  # as it was
        for chunks in (mine, theirs):
            with pytest.raises(StreamError) as caught:
                next(chunks)
            assert caught.value.code == ErrorCode.STREAM_DELETED
        assert_gone((first, second), stream_id)
        if bidi:
            own.write(b"m-2")  # the client's direction is still open
            own.end()
        (outcome,) = erased(redis_server, stream_id)  # no chunk left in Redis
        assert outcome[1][b"c"] == b"%d" % ErrorCode.STREAM_DELETED
    if bidi:
        reads = [f"read {stream_id} m-{i}" for i in (1, 2)]
        assert handler_lines(a.finish()[0], stream_id) == [f"bidi {stream_id}", *reads]


@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_a_finished_bidi_stream_deleted_on_a_is_gone_from_every_process(
    request: pytest.FixtureRequest, store: str
) -> None:
    """A bidi stream that ended, deleted through A: erased from Redis (or a Redis Cluster),
    so neither A (which released its copy) nor B (which never loaded it) finds it
    (R-QUERY-4)."""
    servers = request.getfixturevalue("servers" if store == "redis" else "cluster_servers")
    service = request.getfixturevalue("redis_server" if store == "redis" else "redis_cluster")
    a, b = servers("asyncio", CHAT_APP), servers("sync", CHAT_APP)
    with connect(a.url) as first, connect(b.url) as second:
        with first.bidi(CHAT) as stream:
            stream.write(b"m-1")
            stream.end()
            assert list(stream) == [b"hello", b"echo:m-1"]
        stream_id = stream.stream_id
        assert first.delete(CHAT, stream_id).state is StreamState.ENDED  # as it was
        assert_gone((first,), stream_id)
        (outcome,) = erased(service, stream_id)  # its chunks went, not its END
        assert outcome[1][b"o"] == b"ended"
        assert_gone((second,), stream_id)
