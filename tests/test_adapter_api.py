"""The adapter-authoring API (``transports.adapter``): URL schemes are pluggable, ``unix://``
runs on every backend, and a transport written with public names only passes the
conformance kit."""

from __future__ import annotations

import ast
import asyncio
import collections
import inspect
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import mini_backend
import pytest
import trio
from test_docs_snippets import blocks

import transports
from streamproto import ErrorCode, LocalProtocolError
from streamproto.testing import check_adapter
from transports import adapter as api
from transports import asyncio as aio
from transports import sync
from transports import trio as tri
from transports.testing import BACKENDS, Adapter, adapter, pair_factory

# -- a transport of our own, written against the public API only -------------------------------
#
# ``pair:NAME`` connects through socket pairs within the process: a listener is a queue of the
# far ends that clients made for its name. It is the smallest real byte stream there is, which
# leaves the adapter nothing to do but what the registry asks of it.

_LISTENERS: dict[str, Any] = {}
_LISTENERS_LOCK = threading.Lock()


def _unbind(url: api.Url) -> None:
    with _LISTENERS_LOCK:
        _LISTENERS.pop(url.path, None)


PAIR = api.Scheme("pair", "binary", target="path", unbind=_unbind)


def _bind(url: api.Url, listener: Any) -> None:
    with _LISTENERS_LOCK:
        if url.path in _LISTENERS:
            raise OSError(f"{url.path} is in use")
        _LISTENERS[url.path] = listener


def _listener(url: api.Url) -> Any:
    with _LISTENERS_LOCK:
        listener = _LISTENERS.get(url.path)
    if listener is None:
        raise ConnectionRefusedError(f"nobody listens on {url.address(0)}")
    return listener


class _ThreadListener:
    """What the thread backend accepts from: ``fileno`` is readable while a socket waits."""

    def __init__(self, url: api.Url) -> None:
        self.url = url
        self._ready_r, self._ready_w = socket.socketpair()
        self._waiting: collections.deque[socket.socket] = collections.deque()
        self._lock = threading.Lock()

    def push(self, sock: socket.socket) -> None:
        with self._lock:
            self._waiting.append(sock)
        self._ready_w.send(b"x")

    def fileno(self) -> int:
        return self._ready_r.fileno()

    def getsockname(self) -> str:
        return self.url.path

    def accept(self) -> tuple[socket.socket, None]:
        self._ready_r.recv(1)
        with self._lock:
            return self._waiting.popleft(), None

    def close(self) -> None:
        with self._lock:
            for sock in self._waiting:
                sock.close()
            self._waiting.clear()
        self._ready_r.close()
        self._ready_w.close()


def _sync_listen(url: api.Url, backlog: int) -> _ThreadListener:
    listener = _ThreadListener(url)
    _bind(url, listener)
    return listener


def _sync_connect(url: api.Url, timeout: float) -> socket.socket:
    near, far = socket.socketpair()
    _listener(url).push(far)
    return near


class _AsyncioListener(asyncio.AbstractServer):
    """What the asyncio backend serves from: each far end becomes a connection of the
    server's protocol on the server's loop."""

    def __init__(self, url: api.Url, factory: Callable[[], asyncio.Protocol]) -> None:
        self.url = url
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        self.serving = True

    def push(self, sock: socket.socket) -> None:
        asyncio.run_coroutine_threadsafe(
            self.loop.connect_accepted_socket(self.factory, sock), self.loop
        )

    def close(self) -> None:
        self.serving = False

    async def wait_closed(self) -> None:
        pass

    def is_serving(self) -> bool:
        return self.serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop


async def _asyncio_listen(
    url: api.Url, factory: Callable[[], asyncio.Protocol], backlog: int
) -> _AsyncioListener:
    listener = _AsyncioListener(url, factory)
    _bind(url, listener)
    return listener


async def _asyncio_connect(
    url: api.Url, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    near, far = socket.socketpair()
    try:
        _listener(url).push(far)
    except OSError:
        near.close()
        far.close()
        raise
    return await asyncio.get_running_loop().create_connection(factory, sock=near)


api.register_scheme("sync", PAIR, listen=_sync_listen, connect=_sync_connect, replace=True)
api.register_scheme("asyncio", PAIR, listen=_asyncio_listen, connect=_asyncio_connect, replace=True)


@pytest.mark.parametrize("backend", ["sync", "asyncio"])
def test_a_transport_built_on_the_public_api_passes_the_conformance_kit(backend: str) -> None:
    mine = attrs.evolve(adapter(backend), urls={"pair": f"pair:conformance-{backend}"})
    report = check_adapter(pair_factory(mine, mine, "pair"))
    assert report.passed, str(report)
    assert f"conformance-{backend}" not in _LISTENERS  # the server unbound its name


def test_the_conformance_kit_still_catches_a_broken_transport() -> None:
    # A listener that accepts and never answers: the handshake cannot complete.
    def deaf_connect(url: api.Url, timeout: float) -> socket.socket:
        near, far = socket.socketpair()
        deaf.append(far)
        return near

    deaf: list[socket.socket] = []
    broken = api.Scheme("deaf", "binary", target="path")
    api.register_scheme("sync", broken, listen=_sync_listen, connect=deaf_connect, replace=True)
    try:
        with pytest.raises(TimeoutError):
            sync.connect("deaf:x", timeout=0.5)
    finally:
        for sock in deaf:
            sock.close()


# -- a backend of our own, written against the public API only ---------------------------------


def test_a_backend_built_on_the_public_api_passes_the_conformance_kit() -> None:
    mini = Adapter("asyncio", serve=mini_backend.serve, connect=mini_backend.connect)
    report = check_adapter(pair_factory(mini, mini, "tcp"))
    assert report.passed, str(report)
    # and it interoperates with ours, both ways
    names = ["subscribe_and_receive", "resume_after_lost_transport", "upload_and_upload_cancel"]
    for server, client in ((mini, "sync"), ("trio", mini)):
        report = check_adapter(pair_factory(server, client, "tcp"), scenarios=names)
        assert report.passed, str(report)


def test_that_backend_imports_nothing_private() -> None:
    tree = ast.parse(Path(mini_backend.__file__).read_text())
    imported = [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    ours = [(m, n) for m, n in imported if m.split(".")[0] in ("streamproto", "transports")]
    assert ("transports.adapter", "ServerBase") in ours
    private = [(m, n) for m, n in ours if n.startswith("_") or "._" in f".{m}"]
    assert private == []


# -- the registry -------------------------------------------------------------------------------


def test_an_unknown_scheme_is_a_typed_error_listing_what_is_registered() -> None:
    with pytest.raises(api.UnknownSchemeError) as info:
        transports.parse_url("quic://127.0.0.1:4433")
    error = info.value
    assert isinstance(error, LocalProtocolError)
    assert error.code == ErrorCode.INVALID_ARGUMENT
    assert error.scheme == "quic"
    assert error.backend is None
    assert {"tcp", "ws", "http", "unix", "pair"} <= set(error.registered)
    assert "no URL scheme 'quic' is registered" in str(error)
    assert "tcp://" in str(error)
    assert "unix://" in str(error)


def test_a_scheme_another_backend_registered_is_refused_with_this_backends_list() -> None:
    async def dial() -> None:
        await aio.connect("deaf:x")  # registered for the thread backend only

    api.register_scheme(
        "sync", api.Scheme("deaf", "binary", target="path"), listen=_sync_listen,
        connect=_sync_connect, replace=True,
    )  # fmt: skip
    with pytest.raises(api.UnknownSchemeError) as info:
        asyncio.run(dial())
    assert info.value.backend == "asyncio"
    assert "deaf" not in info.value.registered
    assert info.value.registered == api.schemes("asyncio")
    assert "for the asyncio backend" in str(info.value)
    with pytest.raises(api.UnknownSchemeError, match="for the asyncio backend"):
        asyncio.run(_serve_and_close("deaf:x"))


async def _serve_and_close(url: str) -> None:
    server = await aio.serve(None, url)
    await server.shutdown(0)


def test_registering_a_scheme_twice_needs_replace() -> None:
    with pytest.raises(LocalProtocolError, match="already registered for sync"):
        api.register_scheme("sync", PAIR, listen=_sync_listen, connect=_sync_connect)
    other = api.Scheme("pair", "websocket", target="path")
    with pytest.raises(LocalProtocolError, match="already registered as"):
        api.register_scheme("trio", other, listen=_sync_listen, connect=_sync_connect)
    assert "pair" not in api.schemes("trio")
    for bad in ("", "1tcp", "tc-p", "tcp+tls", "ünix"):
        with pytest.raises(LocalProtocolError, match="a scheme name is a letter"):
            api.register_scheme("sync", api.Scheme(bad, "binary"), listen=print, connect=print)


def test_urls_of_each_target_parse_and_print_back() -> None:
    tcp = api.parse_url("tcp://127.0.0.1:9000")
    assert (tcp.scheme, tcp.host, tcp.port, tcp.kind) == ("tcp", "127.0.0.1", 9000, "binary")
    assert tcp.address(9001) == "tcp://127.0.0.1:9001"
    assert api.parse_url("ws://h:1/sp").address(2) == "ws://h:2/sp"
    assert api.parse_url("http://h:1/").address(2) == "http://h:2"
    unix = api.parse_url("unix:///run/app.sock")
    assert (unix.host, unix.port, unix.path, unix.kind) == ("", 0, "/run/app.sock", "binary")
    assert unix.address(0) == "unix:///run/app.sock"
    assert api.parse_url("unix:app.sock").address(0) == "unix:app.sock"
    assert isinstance(unix.framing(client=True), api.RawFraming)
    assert isinstance(api.parse_url("http://h:1").framing(client=True), api.WsFraming)
    for bad in ("unix://host/app.sock", "unix:", "unix:///a.sock?x=1", "tcp://h", "tcp://h:x"):
        with pytest.raises(LocalProtocolError) as info:
            api.parse_url(bad)
        assert info.value.code == ErrorCode.INVALID_ARGUMENT
        assert not isinstance(info.value, api.UnknownSchemeError)


def test_every_public_name_is_documented() -> None:
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
    for cls in (api.ServerBase, api.ClientBase):  # the hooks a backend supplies
        hooks = [n for n, v in vars(cls).items() if getattr(v, "__isabstractmethod__", False)]
        assert hooks, cls
        assert all(f"``{cls.__name__}.{hook}``" in api.__doc__ or hook in api.__doc__
                   for hook in hooks)  # fmt: skip


# -- unix:// on the three backends --------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # Short: a Unix socket path is limited to about 100 bytes.
    path = tempfile.mkdtemp(prefix="sp-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_UNIX_SCENARIOS = [
    "subscribe_and_receive",
    "resume_after_lost_transport",
    "upload_and_upload_cancel",
    "uploader_disconnect",
    "buffered_chunks_survive_a_reconnect",
    "shutdown_sends_goaway",
]


def _on_unix(backend: str, path: str) -> Adapter:
    return attrs.evolve(adapter(backend), urls={"unix": f"unix://{path}"})


@pytest.mark.parametrize("backend", BACKENDS)
def test_unix_sockets_subscribe_upload_and_resume_on_every_backend(
    backend: str, socket_dir: str
) -> None:
    path = os.path.join(socket_dir, f"{backend}.sock")
    ours = _on_unix(backend, path)
    report = check_adapter(pair_factory(ours, ours, "unix"), scenarios=_UNIX_SCENARIOS)
    assert report.passed, str(report)
    assert not os.path.exists(path)  # the server removed its socket file


def test_unix_sockets_between_backends(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "mixed.sock")
    make = pair_factory(_on_unix("trio", path), _on_unix("asyncio", path), "unix")
    report = check_adapter(make, scenarios=["subscribe_and_receive", "resume_after_lost_transport"])
    assert report.passed, str(report)


def test_a_unix_server_replaces_a_stale_socket_but_not_a_file(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "stale.sock")
    stale = api.unix_listener(path, 1)
    stale.close()  # the file stays, as after a crash
    assert os.path.exists(path)
    with sync.serve(None, f"unix://{path}") as server:
        assert server.address == f"unix://{path}"
        assert server.port == 0
        with sync.connect(server.address) as client:
            assert client.statistics().reconnects == 0
    assert not os.path.exists(path)
    other = os.path.join(socket_dir, "file")
    with open(other, "w") as f:
        f.write("not a socket")
    with pytest.raises(OSError, match="in use"):
        sync.serve(None, f"unix://{other}")
    assert os.path.exists(other)
    api.remove_socket_file(api.parse_url(f"unix://{other}"))  # only ever a socket
    assert os.path.exists(other)


def test_a_unix_client_without_a_server_fails_to_connect(socket_dir: str) -> None:
    url = f"unix://{os.path.join(socket_dir, 'nobody.sock')}"
    with pytest.raises(FileNotFoundError):
        sync.connect(url, timeout=2.0)
    with pytest.raises(FileNotFoundError):
        asyncio.run(aio.connect(url, timeout=2.0))

    async def dial() -> None:
        async with tri.connect(url, timeout=2.0):
            pass

    with pytest.raises(FileNotFoundError):
        trio.run(dial)


# -- the guide ----------------------------------------------------------------------------------


def test_the_guides_examples_run_in_order() -> None:
    found = blocks("adapters.md")
    assert len(found) == 2
    namespace: dict[str, Any] = {}
    for index, block in enumerate(found):
        exec(compile(block, f"docs/adapters.md block {index}", "exec"), namespace)
    shutil.rmtree(namespace["RUNDIR"], ignore_errors=True)
