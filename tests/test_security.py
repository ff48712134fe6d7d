"""Principals, authorization, concealment and ids over real sockets, on every backend and
transport: another principal's resume token takes nothing over, unauthorized requests are
refused with FORBIDDEN, concealed refusals are the very bytes an unknown channel gets, and every
entry point that makes a hub gives it 128-bit random ids."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import BACKENDS, TRANSPORTS, ClientProxy, ServerProxy

from streamproto import (
    AccessRequest,
    ChannelOptions,
    Connection,
    ErrorCode,
    Event,
    HandshakeCompleted,
    Hub,
    Refuse,
    RequestAccepted,
    RequestKind,
    RequestRejected,
    Role,
)
from transports import ID_BYTES, Backoff, StreamError, default_ids, new_hub, parse_url
from transports import asyncio as aio_backend
from transports import sync as sync_backend
from transports import trio as trio_backend

PAIRS = [(b, t) for b in BACKENDS for t in TRANSPORTS]
WAIT = 10.0
RETRY = Backoff(initial=0.01, maximum=0.05, attempts=40)
NO_RETRY = Backoff(attempts=0)
URLSAFE = re.compile(r"^[A-Za-z0-9_-]{22}$")
HIDDEN = "sec:hidden"


def who(auth: bytes) -> object:
    return {b"alice": "alice", b"mallory": "mallory"}.get(auth, Refuse(ErrorCode.AUTH_FAILED))


def alice_only(request: AccessRequest) -> bool:
    return request.principal == "alice"


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def backend_transport(request: pytest.FixtureRequest) -> tuple[str, str]:
    result: tuple[str, str] = request.param
    return result


@contextlib.contextmanager
def secured(backend: str, transport: str) -> Iterator[ServerProxy]:
    """A server whose hub knows alice and mallory and lets only alice in; with a concealed
    channel ``sec:hidden`` that has an open stream ``hidden``."""
    hub = Hub(clock=time.monotonic, ids=default_ids, authenticate=who, authorize=alice_only)
    server = ServerProxy(backend, transport, hub=hub)
    try:
        server.thread.call(server.server.channel, HIDDEN, ChannelOptions(conceal=True))
        server.start(HIDDEN, "hidden")
        yield server
    finally:
        server.stop()


class WireClient:
    """The sans-IO client connection over a real socket, keeping every byte the server sent
    (out of its WebSocket messages, if any), so that replies compare byte for byte."""

    def __init__(self, url: str, *, auth: bytes = b"", resume_token: str = "") -> None:
        target = parse_url(url)
        self.sock = socket.create_connection((target.host, target.port), timeout=WAIT)
        self.framing = target.framing(client=True)
        self.conn = Connection(
            Role.CLIENT, now=time.monotonic(), auth=auth, resume_token=resume_token
        )
        self.received = b""
        self.events: list[Event] = []

    def until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            out = self.framing.wrap(self.conn.data_to_send() if self.framing.ready else b"")
            if out:
                self.sock.sendall(out)
            if done():
                return
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            payload = self.framing.receive(data)
            if payload:  # (the upgrade response has none; b"" would mean end of input)
                self.received += payload
                self.events += self.conn.receive_data(payload)

    def handshake(self) -> HandshakeCompleted:
        self.until(lambda: any(isinstance(e, HandshakeCompleted) for e in self.events))
        (done,) = [e for e in self.events if isinstance(e, HandshakeCompleted)]
        return done

    def reply(self, request: Callable[[Connection], int]) -> tuple[bytes, Event]:
        """The bytes the server answered ``request`` with, and the client's event for them."""
        self.handshake()
        start = len(self.received)
        handle = request(self.conn)

        def answered() -> bool:
            return any(
                isinstance(e, RequestAccepted | RequestRejected) and e.handle == handle
                for e in self.events
            )

        self.until(answered)
        (event,) = [e for e in self.events if getattr(e, "handle", None) == handle]
        return self.received[start:], event

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def wire(url: str, **kwargs: Any) -> Iterator[WireClient]:
    client = WireClient(url, **kwargs)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def client(backend: str, url: str, **kwargs: Any) -> Iterator[ClientProxy]:
    proxy = ClientProxy(backend, url, **kwargs)
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_resume_token_does_not_cross_principals(backend_transport: tuple[str, str]) -> None:
    backend, transport = backend_transport
    with (
        secured(backend, transport) as server,
        client(backend, server.url, auth=b"alice", reconnect=RETRY) as alice,
    ):
        core = alice.client.core
        token, session = alice.thread.call(lambda: (core.resume_token, core.session_id))
        server.start("test:streams", "s")
        sub = alice.subscribe("test:streams", "s")
        server.write("s", b"one")
        assert sub.take(1, WAIT) == [b"one"]

        with wire(server.url, auth=b"mallory", resume_token=token) as thief:
            stolen = thief.handshake()
            assert stolen.resumed is False
            assert stolen.session_id != session
            server.write("s", b"two")
            assert sub.take(1, WAIT) == [b"two"]  # alice's connection was left alone
            assert alice.statistics()["reconnects"] == 0

        alice.abort_transport()
        alice.wait_resumed(1)  # her own token still resumes her session
        assert alice.thread.call(lambda: core.session_id) == session
        server.write("s", b"three")
        assert sub.take(1, WAIT) == [b"three"]


def test_unauthorized_requests_are_forbidden(backend_transport: tuple[str, str]) -> None:
    backend, transport = backend_transport
    with secured(backend, transport) as server:
        server.start("test:streams", "s")
        server.write("s", b"x")
        # A channel's own hook replaces the hub's: this one is mallory's.
        server.thread.call(
            lambda: server.server.channel("sec:own", authorize=lambda r: r.principal == "mallory")
        )
        server.start("sec:own", "own")
        server.write("own", b"own")
        with client(backend, server.url, auth=b"mallory", reconnect=NO_RETRY) as mallory:
            assert mallory.subscribe("sec:own", "own").take(1, WAIT) == [b"own"]
            sub = mallory.subscribe("test:streams", "s")
            opened = mallory.open("test:open", b"2:0")
            assert sub.rest(WAIT) == []
            assert opened.rest(WAIT) == []
            failed = mallory.upload("test:upload", "up-m", [b"data"])
            for error in (sub.error, opened.error, failed):
                assert isinstance(error, StreamError)
                assert error.code == ErrorCode.FORBIDDEN
        with client(backend, server.url, auth=b"alice", reconnect=NO_RETRY) as alice:
            assert alice.subscribe("test:streams", "s").take(1, WAIT) == [b"x"]
            assert alice.open("test:open", b"2:0").rest(WAIT) == [b"0", b"1"]
            assert alice.upload("test:upload", "up-a", [b"data"]) is None
            assert server.wait_upload("up-a") == (4, 0, "")


REQUESTS: dict[str, Callable[[Connection], int]] = {
    "subscribe-open-stream": lambda c: c.subscribe(HIDDEN, "hidden"),
    "subscribe-unknown-stream": lambda c: c.subscribe(HIDDEN, "nothing-here"),
    "open": lambda c: c.open(HIDDEN, b"args"),
    "upload": lambda c: c.upload(HIDDEN, "up"),
}


def test_concealed_refusals_are_the_bytes_of_an_unknown_channel(
    backend_transport: tuple[str, str],
) -> None:
    backend, transport = backend_transport
    elsewhere = ServerProxy(backend, transport, hub=new_hub(authenticate=who))  # no sec:hidden
    try:
        with secured(backend, transport) as server:
            for name, request in REQUESTS.items():
                with wire(elsewhere.url, auth=b"mallory") as probe:
                    unknown, event = probe.reply(request)
                assert isinstance(event, RequestRejected)
                assert event.code == ErrorCode.UNKNOWN_CHANNEL, name
                with wire(server.url, auth=b"mallory") as thief:
                    concealed, _ = thief.reply(request)
                assert concealed == unknown, name
                with wire(server.url, auth=b"alice") as owner:
                    _, event = owner.reply(request)
                assert getattr(event, "code", None) != ErrorCode.UNKNOWN_CHANNEL, name
    finally:
        elsewhere.stop()


# -- ids ----------------------------------------------------------------------------------------


def test_default_ids_carry_128_random_bits() -> None:
    ids = [default_ids() for _ in range(10_000)]
    assert ID_BYTES * 8 == 128
    assert all(URLSAFE.match(i) for i in ids)  # 22 characters of a 64-letter alphabet
    assert len(set(ids)) == len(ids)
    # Every position takes many values: nothing is a fixed prefix or a counter.
    assert all(len({i[k] for i in ids}) >= 60 for k in range(21))


def _random_ids(session_id: str, token: str, stream_id: str) -> None:
    assert URLSAFE.match(session_id), session_id
    assert URLSAFE.match(token), token
    assert URLSAFE.match(stream_id), stream_id  # picked by the server for an empty OPEN id
    assert len({session_id, token, stream_id}) == 3


def test_asyncio_serve_without_a_hub_uses_random_ids() -> None:
    async def main() -> None:
        async with await aio_backend.serve(None, "tcp://127.0.0.1:0") as server:

            async def one(producer: Any, args: bytes) -> None:
                await producer.write(b"x")
                producer.close()

            server.channel("sec:ids", on_open=one)
            cl = await aio_backend.connect(server.address, reconnect=NO_RETRY)
            async with cl:
                sub = cl.open("sec:ids")
                assert [c async for c in sub] == [b"x"]
                _random_ids(cl.core.session_id, cl.core.resume_token, sub.stream_id)

    asyncio.run(main())


def test_trio_serve_without_a_hub_uses_random_ids() -> None:
    async def main() -> None:
        async with trio_backend.serve(None, "tcp://127.0.0.1:0") as server:

            async def one(producer: Any, args: bytes) -> None:
                await producer.write(b"x")
                producer.close()

            server.channel("sec:ids", on_open=one)
            async with trio_backend.connect(server.address, reconnect=NO_RETRY) as cl:
                sub = cl.open("sec:ids")
                assert [c async for c in sub] == [b"x"]
                _random_ids(cl.core.session_id, cl.core.resume_token, sub.stream_id)

    trio.run(main)


def test_sync_serve_without_a_hub_uses_random_ids() -> None:
    def one(producer: Any, args: bytes) -> None:
        producer.write(b"x")
        producer.close()

    with sync_backend.serve(None, "tcp://127.0.0.1:0") as server:
        server.channel("sec:ids", on_open=one)
        with sync_backend.connect(server.address, reconnect=NO_RETRY) as cl:
            sub = cl.open("sec:ids")
            assert list(sub) == [b"x"]
            _random_ids(cl.core.session_id, cl.core.resume_token, sub.stream_id)


# -- the security page --------------------------------------------------------------------------


def test_the_security_page_examples_run_and_decide_as_described() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    found = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(found) == 2
    ns: dict[str, Any] = {}
    for i, block in enumerate(found):
        exec(compile(block, f"docs/security.md block {i}", "exec"), ns)
    assert isinstance(ns["hub"], Hub)
    authenticate, authorize = ns["authenticate"], ns["authorize"]
    assert authenticate(b"t-bob") == "bob"
    assert authenticate(b"nope") == Refuse(ErrorCode.AUTH_FAILED, "bad token")

    def ask(principal: str, kind: RequestKind, channel: str) -> object:
        return authorize(AccessRequest(principal, kind, channel, "s"))

    assert ask("bob", RequestKind.SUBSCRIBE, "app:logs") is True
    assert ask("bob", RequestKind.SUBSCRIBE, "app:other") is False
    assert ask("bob", RequestKind.OPEN, "app:logs") is False
    assert ask("alice", RequestKind.UPLOAD, "app:logs") is True
    assert ask("bob", RequestKind.SUBSCRIBE, "billing:x") == Refuse(4030, "admins only")
