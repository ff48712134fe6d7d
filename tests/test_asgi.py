"""transports.asgi under real ASGI servers (uvicorn, hypercorn), judged by httpx, httpx-sse,
raw sockets and our own WebSocket client; and the Starlette example mounting it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from streamproto import ChannelOptions, HttpOptions, Window
from transports.asgi import StreamApp
from transports.sync import connect

TIMEOUT = 20.0
ORIGIN = "http://page.example"
SERVERS = ("uvicorn", "hypercorn")


class Running:
    """An ASGI app served by a real server in a thread of its own (its own event loop)."""

    def __init__(self, kind: str, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, args=(kind, app, sock), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _run(self, kind: str, app: Any, sock: socket.socket) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve(kind, app, sock))
        finally:
            sock.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _serve(self, kind: str, app: Any, sock: socket.socket) -> None:
        if kind == "uvicorn":
            import uvicorn

            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            await self.stop.wait()
            server.should_exit = True
            await task
            sock.close()
        else:
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            sock.close()  # hypercorn binds its own (the port is free again)
            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            config.loglevel = "WARNING"
            await serve(app, config, shutdown_trigger=self.stop.wait)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(TIMEOUT)


def make_app() -> StreamApp:
    app = StreamApp(http=HttpOptions(allow_origins=(ORIGIN,), retry_ms=100))
    replay = ChannelOptions(replay=Window(chunks=1000, nbytes=1 << 20))

    async def on_open(producer: Any, args: bytes) -> None:
        for i in range(int(args or b"3")):
            await producer.write(b"%d" % i)
        producer.close()

    async def on_upload(upload: Any) -> None:
        total = 0
        limit = int(upload.args or b"0")
        async for chunk in upload:
            total += len(chunk)
            if limit and total >= limit:
                upload.cancel(1007, "enough")
                return

    app.channel("test:open", replay, on_open=on_open)
    app.channel("test:streams", replay)
    app.channel("test:upload", on_upload=on_upload)
    return app


@pytest.fixture(params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Running, StreamApp]]:
    app = make_app()
    running = Running(request.param, app)
    try:
        yield running, app
    finally:
        running.close()


def test_sse_resume_after_the_socket_is_killed(served: tuple[Running, StreamApp]) -> None:
    running, app = served
    producers: dict[str, Any] = {}

    async def start() -> None:
        producers["p"] = app.producer("test:streams", "live")
        for chunk in (b"a", b"b\nc", b"\xff"):
            await producers["p"].write(chunk)

    running.call(start)
    with socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /test:streams/live HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = b""
        while b"id: 3" not in seen:
            seen += sock.recv(65536)
        assert b" 200 " in seen.split(b"\r\n")[0]
        # killed: a reset, not a goodbye
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    async def more() -> None:
        await producers["p"].write(b"d")
        producers["p"].close()

    running.call(more)
    base = f"http://127.0.0.1:{running.port}"
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(
            client, "GET", base + "/test:streams/live", headers={"Last-Event-ID": "3"}
        ) as source:
            rest = list(source.iter_sse())
        assert [(e.event, e.data, e.id) for e in rest] == [
            ("message", "d", "4"),
            ("end", '{"last_seq": 4}', "4:end"),
        ]
        done = client.get(base + "/test:streams/live", headers={"Last-Event-ID": "4:end"})
        assert done.status_code == 204


def test_post_open_upload_errors_and_cors(served: tuple[Running, StreamApp]) -> None:
    running, _ = served
    base = f"http://127.0.0.1:{running.port}"
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(
            client, "POST", base + "/test:open", content=b"4", headers={"Origin": ORIGIN}
        ) as source:
            assert source.response.headers["access-control-allow-origin"] == ORIGIN
            stream_id = source.response.headers["stream-id"]
            assert [e.data for e in source.iter_sse() if e.event == "message"] == [
                "0",
                "1",
                "2",
                "3",
            ]
        resumed = client.get(f"{base}/test:open/{stream_id}?after_seq=2")
        assert "data: 3" in resumed.text
        status = client.get(f"{base}/test:open/{stream_id}/status").json()
        assert (status["state"], status["last_seq"]) == ("ended", 4)
        listing = client.get(base + "/test:open", params={"state": "ended"}).json()
        assert listing == {"streams": [status], "next": ""}
        kept = client.delete(f"{base}/test:open/{stream_id}")  # R-HTTP-93: not in this channel
        assert (kept.status_code, kept.json()["name"]) == (403, "NOT_ALLOWED")
        uploaded = client.post(
            base + "/test:upload/u/upload", content=(b"x" * 1000 for _ in range(2000))
        )
        assert uploaded.status_code == 200
        assert uploaded.json()["bytes"] == 2_000_000
        assert client.get(base + "/test:nope/s").status_code == 404
        assert client.get(base + "/test:streams/s?after_seq=x").status_code == 400
        assert client.put(base + "/test:streams/s").status_code == 405
        preflight = client.options(
            base + "/test:open",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "DELETE" in preflight.headers["access-control-allow-methods"]
    with socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /test:upload/c/upload?args=10 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"z" * 4096
        )
        answer = b""
        while b"}" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 409")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == 1007


def test_websocket_through_the_asgi_server(served: tuple[Running, StreamApp]) -> None:
    running, _ = served
    with connect(f"ws://127.0.0.1:{running.port}/") as client:
        assert list(client.open("test:open", b"3")) == [b"0", b"1", b"2"]


def test_the_starlette_example_mounts_it_next_to_ordinary_routes() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "chat_app.py"
    spec = importlib.util.spec_from_file_location("examples_chat_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.TOKEN_DELAY = 0.01
    running = Running("uvicorn", module.app)
    base = f"http://127.0.0.1:{running.port}"
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            page = client.get(base + "/")
            assert page.status_code == 200
            assert "EventSource" in page.text
            with connect_sse(
                client, "POST", base + "/streams/chat:answers", content=b"hi there"
            ) as source:
                stream_id = source.response.headers["stream-id"]
                first = next(source.iter_sse())
            assert first.data == "hi "
            # The reload: the page resumes with after_seq, as EventSource would.
            with connect_sse(
                client, "GET", f"{base}/streams/chat:answers/{stream_id}?after_seq=1"
            ) as source:
                rest = [e.data for e in source.iter_sse() if e.event == "message"]
            assert "".join(["hi ", *rest]) == "hi there — that is what you said. "
    finally:
        running.close()
