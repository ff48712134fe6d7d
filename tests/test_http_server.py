"""The http:// listener of every backend, judged by httpx + httpx-sse and raw sockets.

Each backend serves the conformance application (``transports.testing.ServerProxy``) over
``http://``; the clients here are independent HTTP clients, not ours.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse

from streamproto import ErrorCode, Refuse
from streamproto._http import HttpOptions
from streamproto._sse import SseParser, decode_chunk
from transports.sync import connect
from transports.testing import BACKENDS, ServerProxy

ORIGIN = "http://page.example:8000"
TIMEOUT = 20.0


def _authenticate(auth: bytes) -> object:
    if auth == b"Bearer bad":
        return Refuse(ErrorCode.AUTH_FAILED, "bad token")
    return auth.decode() or None


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProxy]:
    proxy = ServerProxy(
        request.param, "http", http=HttpOptions(allow_origins=(ORIGIN,), retry_ms=250)
    )
    try:
        yield proxy
    finally:
        proxy.stop()


def base(server: ServerProxy) -> str:
    return f"http://127.0.0.1:{server.server.port}"


def raw(server: ServerProxy, data: bytes, *, read_until_close: bool = True) -> bytes:
    """Send ``data`` on a fresh socket; return what the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.server.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        parts = []
        while True:
            part = sock.recv(65536)
            if not part:
                break
            parts.append(part)
            if not read_until_close:
                break
        return b"".join(parts)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def json_of(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"application/json" in head
    return dict(json.loads(body))


def sse_events(client: httpx.Client, method: str, url: str, **kwargs: object) -> list[object]:
    """Every event of one SSE response, as httpx-sse parses it, until the server ends it."""
    with connect_sse(client, method, url, **kwargs) as source:  # type: ignore[arg-type]
        assert source.response.status_code == 200
        assert source.response.headers["content-type"] == "text/event-stream"
        return list(source.iter_sse())


# -- reading --------------------------------------------------------------------------------


def test_sse_reads_a_stream_to_its_end_byte_exact(server: ServerProxy) -> None:
    chunks = [b"plain", b"two\nlines\n", b"", b"cr\r\nhere", b"\xff\x00binary", "ünï".encode()]
    server.start("test:streams", "s1")
    server.write("s1", *chunks)
    server.close_stream("s1")
    with httpx.Client(timeout=TIMEOUT) as client:
        events = sse_events(client, "GET", base(server) + "/test:streams/s1")
    data = [e for e in events if e.event in ("message", "bytes")]  # type: ignore[attr-defined]
    got = [decode_chunk(_ours(e)) for e in data]
    assert got == chunks
    assert [e.id for e in data] == [str(i) for i in range(1, 7)]  # type: ignore[attr-defined]
    assert events[-1].event == "end"  # type: ignore[attr-defined]
    assert json.loads(events[-1].data) == {"last_seq": 6}  # type: ignore[attr-defined]


def _ours(event: object) -> object:
    from streamproto._sse import SseEvent

    return SseEvent(event.event, event.data, event.id)  # type: ignore[attr-defined]


def test_sse_live_then_resume_with_last_event_id_after_the_socket_is_cut(
    server: ServerProxy,
) -> None:
    server.start("test:streams", "live")
    server.write("live", b"a", b"b")
    port = server.server.port
    request = b"GET /test:streams/live HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    parser = SseParser()
    seen: list[object] = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        buf = b""
        while b"id: 2" not in buf:
            buf += sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0]
        assert b"text/event-stream" in head
        seen += parser.feed(_unchunk(body))
        # The client goes; meanwhile the stream goes on.
    server.write("live", b"c", b"d")
    server.close_stream("live")
    with httpx.Client(timeout=TIMEOUT) as client:
        rest = sse_events(
            client, "GET", base(server) + "/test:streams/live", headers={"Last-Event-ID": "2"}
        )
    assert [e.data for e in seen] == ["a", "b"]  # type: ignore[attr-defined]
    assert [e.data for e in rest if e.event == "message"] == ["c", "d"]  # type: ignore[attr-defined]
    assert rest[-1].event == "end"  # type: ignore[attr-defined]


def _unchunk(body: bytes) -> bytes:
    """The payload of a (possibly incomplete) chunked body."""
    out = b""
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def test_after_seq_query_and_last_event_id_precedence(server: ServerProxy) -> None:
    server.start("test:streams", "q")
    server.write("q", b"1", b"2", b"3")
    server.close_stream("q")
    with httpx.Client(timeout=TIMEOUT) as client:
        by_query = sse_events(client, "GET", base(server) + "/test:streams/q?after_seq=1")
        both = sse_events(
            client,
            "GET",
            base(server) + "/test:streams/q?after_seq=0",
            headers={"Last-Event-ID": "2"},
        )
    assert [e.data for e in by_query if e.event == "message"] == ["2", "3"]  # type: ignore[attr-defined]
    assert [e.data for e in both if e.event == "message"] == ["3"]  # type: ignore[attr-defined]


def test_resume_of_a_finished_stream_at_its_end_is_204(server: ServerProxy) -> None:
    server.start("test:streams", "done")
    server.write("done", b"x")
    server.close_stream("done")
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.get(
            base(server) + "/test:streams/done", headers={"Last-Event-ID": "1:end"}
        )
        assert response.status_code == 204
        assert response.content == b""
        # The connection is kept for the next request.
        again = client.get(base(server) + "/test:streams/done", headers={"Last-Event-ID": "0"})
        assert again.status_code == 200
        assert b"event: end" in again.content


def test_a_failed_stream_replays_its_error(server: ServerProxy) -> None:
    server.start("test:streams", "bad")
    server.write("bad", b"x")
    server.fail_stream("bad", 1234, "it broke")
    with httpx.Client(timeout=TIMEOUT) as client:
        events = sse_events(client, "GET", base(server) + "/test:streams/bad")
    assert events[-1].event == "error"  # type: ignore[attr-defined]
    body = json.loads(events[-1].data)  # type: ignore[attr-defined]
    assert body["code"] == 1234
    assert body["message"] == "it broke"


# -- status and listing ---------------------------------------------------------------------


def test_status_and_listing_as_json(server: ServerProxy) -> None:
    server.start("test:streams", "s-open")
    server.write("s-open", b"a", b"b")
    server.start("test:streams", "s-failed")
    server.fail_stream("s-failed", 1234, "it broke")
    url = base(server) + "/test:streams"
    with httpx.Client(timeout=TIMEOUT) as client:
        live = client.get(f"{url}/s-open/status", headers={"Origin": ORIGIN})
        assert live.status_code == 200
        assert live.headers["content-type"] == "application/json"
        assert live.headers["access-control-allow-origin"] == ORIGIN
        body = live.json()
        assert (body["stream_id"], body["state"], body["code"]) == ("s-open", "open", 0)
        assert body["last_seq"] == 2
        failed = client.get(f"{url}/s-failed/status").json()
        assert (failed["state"], failed["code"]) == ("failed", 1234)
        assert client.get(f"{url}/nope/status").json()["state"] == "missing"
        assert client.get(base(server) + "/test:nope/s/status").status_code == 404
        assert client.post(f"{url}/s-open/status").headers["allow"] == "GET, OPTIONS"
        first = client.get(url, params={"state": "open,failed", "limit": "1"}).json()
        assert [e["stream_id"] for e in first["streams"]] == ["s-failed"]
        assert first["next"] == "s-failed"
        rest = client.get(url, params={"state": "open,failed", "after": first["next"]}).json()
        assert [e["stream_id"] for e in rest["streams"]] == ["s-open"]
        assert rest["next"] == ""
        assert client.get(url, params={"state": "ended"}).json() == {"streams": [], "next": ""}
        assert client.get(url, params={"limit": "0"}).json()["name"] == "INVALID_ARGUMENT"
        # R-HTTP-93: a delete answers the stream as it was; the channel allows deletes.
        deleted = client.delete(f"{url}/s-open", headers={"Origin": ORIGIN})
        assert deleted.status_code == 200
        assert deleted.headers["access-control-allow-origin"] == ORIGIN
        assert (deleted.json()["state"], deleted.json()["last_seq"]) == ("open", 2)
        assert client.get(f"{url}/s-open/status").json()["state"] == "missing"
        assert client.get(f"{url}/s-open").status_code == 404
        assert client.delete(f"{url}/s-open").json()["state"] == "missing"
        server.start("test:open", "kept")
        kept = client.delete(base(server) + "/test:open/kept")
        assert (kept.status_code, kept.json()["name"]) == (403, "NOT_ALLOWED")
        status = client.get(base(server) + "/test:open/kept/status").json()["state"]
        assert status == "open"


# -- open and upload ------------------------------------------------------------------------


def test_post_opens_a_stream_and_names_it_for_a_later_resume(server: ServerProxy) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(
            client, "POST", base(server) + "/test:open", content=b"5:0", headers={"Origin": ORIGIN}
        ) as source:
            assert source.response.status_code == 200
            stream_id = source.response.headers["stream-id"]
            assert "Stream-Id" in source.response.headers["access-control-expose-headers"]
            assert source.response.headers["access-control-allow-origin"] == ORIGIN
            events = list(source.iter_sse())
        assert [e.data for e in events if e.event == "message"] == ["0", "1", "2", "3", "4"]
        rest = sse_events(
            client,
            "GET",
            f"{base(server)}/test:open/{stream_id}",
            headers={"Last-Event-ID": "3"},
        )
        # seqs 4 and 5 carry "3" and "4"
        assert [e.data for e in rest if e.event == "message"] == ["3", "4"]  # type: ignore[attr-defined]
        ended = client.get(f"{base(server)}/test:open/{stream_id}", headers={"Last-Event-ID": "5"})
        assert ended.status_code == 200  # the last chunk's id: the end is sent again
        assert ended.content.endswith(b'id: 5:end\nevent: end\ndata: {"last_seq": 5}\n\n')
        gone = client.get(
            f"{base(server)}/test:open/{stream_id}", headers={"Last-Event-ID": "5:end"}
        )
        assert gone.status_code == 204


def test_post_joins_a_running_stream_by_name(server: ServerProxy) -> None:
    server.start("test:open", "j")
    server.write("j", b"a")
    url = base(server) + "/test:open"
    with httpx.Client(timeout=TIMEOUT) as client:
        taken = client.post(url, params={"stream_id": "j"}, content=b"1:0")
        assert taken.status_code == 409
        assert taken.json()["name"] == "STREAM_EXISTS"
        with connect_sse(
            client,
            "POST",
            url,
            params={"stream_id": "j", "join": "1"},
            content=b"1:0",
            headers={"Origin": ORIGIN},
        ) as source:
            headers = source.response.headers
            assert (headers["stream-id"], headers["stream-joined"]) == ("j", "true")
            assert "Stream-Joined" in headers["access-control-expose-headers"]
            server.write("j", b"b")
            server.close_stream("j")
            events = list(source.iter_sse())
        assert [e.data for e in events if e.event == "message"] == ["a", "b"]
        assert events[-1].event == "end"
        with connect_sse(
            client, "POST", url, params={"stream_id": "k", "join": "1"}, content=b"2:0"
        ) as source:
            assert source.response.headers["stream-joined"] == "false"
            assert [e.data for e in source.iter_sse() if e.event == "message"] == ["0", "1"]


def test_upload_streams_a_chunked_body_to_the_reader(server: ServerProxy) -> None:
    pieces = [b"x" * 1000] * 3000  # three windows of credit: read as the reader reads

    def body() -> Iterator[bytes]:
        yield from pieces

    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.post(base(server) + "/test:upload/u1/upload", content=body())
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == 3_000_000
    assert server.wait_upload("u1") == (3_000_000, 0, "")


def test_upload_with_content_length(server: ServerProxy) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.post(base(server) + "/test:upload/u2/upload", content=b"y" * 5000)
    assert response.status_code == 200
    assert server.wait_upload("u2") == (5000, 0, "")


def test_server_cancel_of_an_upload_answers_at_once(server: ServerProxy) -> None:
    # The handler cancels (1007 "enough") once it read 10 bytes; the uploader has sent the
    # head and a first piece of a body it announced much larger, and learns the code at once.
    port = server.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /test:upload/u3/upload?args=10 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"z" * 4096
        )
        response = b""
        while b"}" not in response:
            part = sock.recv(65536)
            if not part:
                break
            response += part
    assert status_of(response) == 409
    assert b"connection: close" in response.lower()
    assert json_of(response)["code"] == 1007
    assert server.wait_upload("u3")[1] == 1007


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "status", "code"),
    [
        (b"GET /test:nothing/s HTTP/1.1", 404, ErrorCode.UNKNOWN_CHANNEL),
        (b"GET /test:streams/nope HTTP/1.1", 404, ErrorCode.UNKNOWN_STREAM),
        (b"GET /BAD/s HTTP/1.1", 400, ErrorCode.INVALID_NAME),
        (b"GET /test:streams/bad%20id HTTP/1.1", 400, ErrorCode.INVALID_NAME),
        (b"GET /test:streams/s?after_seq=-1 HTTP/1.1", 400, ErrorCode.INVALID_ARGUMENT),
        (b"PUT /test:streams/s HTTP/1.1", 405, ErrorCode.NOT_ALLOWED),
        (b"DELETE /test:open/s HTTP/1.1", 403, ErrorCode.NOT_ALLOWED),
        (b"GET / HTTP/1.1", 404, ErrorCode.UNKNOWN_CHANNEL),
        (b"GET /test:streams/s/x/y HTTP/1.1", 404, ErrorCode.UNKNOWN_STREAM),
        (b"POST /test:streams HTTP/1.1", 403, ErrorCode.NOT_ALLOWED),
    ],
)
def test_error_statuses(server: ServerProxy, request_line: bytes, status: int, code: int) -> None:
    body = b"Content-Length: 0\r\n" if request_line.startswith(b"POST") else b""
    response = raw(server, request_line + b"\r\nHost: x\r\nConnection: close\r\n" + body + b"\r\n")
    assert status_of(response) == status
    answer = json_of(response)
    assert answer["code"] == code
    assert answer["name"] == ErrorCode(code).name


def test_bogus_last_event_id_is_400(server: ServerProxy) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.get(base(server) + "/test:streams/s", headers={"Last-Event-ID": "12abc"})
    assert response.status_code == 400
    assert response.json()["name"] == "INVALID_ARGUMENT"


def test_malformed_http_is_400_and_closed(server: ServerProxy) -> None:
    response = raw(server, b"THIS IS NOT HTTP\r\n\r\n")
    assert status_of(response) == 400
    assert json_of(response)["name"] == "PROTOCOL_ERROR"


def test_oversize_headers_are_431(server: ServerProxy) -> None:
    response = raw(
        server, b"GET /test:streams/s HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    )
    assert status_of(response) == 431


def test_oversize_open_body_is_413(server: ServerProxy) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.post(base(server) + "/test:open", content=b"1" * (65 << 10))
        assert response.status_code == 413
        assert response.json()["name"] == "LIMIT_EXCEEDED"

        def chunked() -> Iterator[bytes]:
            yield b"1" * (40 << 10)
            yield b"1" * (40 << 10)

        streamed = client.post(base(server) + "/test:open", content=chunked())
        assert streamed.status_code == 413


def test_pipelined_requests_are_not_answered_but_the_first_is(server: ServerProxy) -> None:
    server.start("test:streams", "p")
    server.write("p", b"x")
    server.close_stream("p")
    one = b"GET /test:streams/p HTTP/1.1\r\nHost: x\r\n\r\n"
    response = raw(server, one + one)
    assert response.count(b"HTTP/1.1 ") == 1
    assert b"event: end" in response


def test_keep_alive_serves_several_requests(server: ServerProxy) -> None:
    server.start("test:streams", "k")
    server.close_stream("k")
    with httpx.Client(timeout=TIMEOUT) as client:
        for _ in range(3):
            assert client.get(base(server) + "/test:streams/k").status_code == 200
            assert client.get(base(server) + "/test:nope/k").status_code == 404


# -- CORS and auth ----------------------------------------------------------------------------


def test_cors_preflight_and_origins(server: ServerProxy) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        preflight = client.options(
            base(server) + "/test:open",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == "content-type"
        other = client.get(
            base(server) + "/test:streams/s", headers={"Origin": "http://evil.example"}
        )
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("backend", BACKENDS)
def test_auth_headers_reach_the_hooks(backend: str) -> None:
    from streamproto import Hub

    seen: list[object] = []

    def authorize(request: object) -> object:
        seen.append(request.principal)  # type: ignore[attr-defined]
        return True if request.principal == "Bearer good" else Refuse(ErrorCode.FORBIDDEN)  # type: ignore[attr-defined]

    hub = Hub(
        clock=time.monotonic,
        ids=iter(f"i{n}" for n in range(10**6)).__next__,
        authenticate=_authenticate,
        authorize=authorize,
    )
    proxy = ServerProxy(backend, "http", hub=hub)
    try:
        proxy.start("test:streams", "a")
        proxy.close_stream("a")
        url = f"http://127.0.0.1:{proxy.server.port}/test:streams/a"
        with httpx.Client(timeout=TIMEOUT) as client:
            assert client.get(url, headers={"Authorization": "Bearer good"}).status_code == 200
            refused = client.get(url, headers={"Authorization": "Bearer other"})
            assert refused.status_code == 403
            assert refused.json()["name"] == "FORBIDDEN"
            failed = client.get(url, headers={"Authorization": "Bearer bad"})
            assert failed.status_code == 401
            assert failed.json()["name"] == "AUTH_FAILED"
        assert seen[:2] == ["Bearer good", "Bearer other"]
    finally:
        proxy.stop()


# -- one port for HTTP and WebSocket --------------------------------------------------------


def test_websocket_upgrade_on_the_same_port(server: ServerProxy) -> None:
    server.start("test:streams", "w")
    server.write("w", b"one", b"two")
    server.close_stream("w")
    with connect(server.url.replace("http://", "ws://")) as client:
        assert list(client.subscribe("test:streams", "w")) == [b"one", b"two"]
    with httpx.Client(timeout=TIMEOUT) as http:  # the same listener still speaks HTTP
        assert http.get(base(server) + "/test:streams/w").status_code == 200


def test_websocket_upgrade_without_a_key_is_refused(server: ServerProxy) -> None:
    response = raw(
        server,
        b"GET /sp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    assert status_of(response) == 400


# -- load -------------------------------------------------------------------------------------


def test_a_client_that_never_reads_stays_bounded(server: ServerProxy) -> None:
    # test:drop drops the oldest for a slow subscriber: the server keeps a window, not 40 MB.
    server.start("test:drop", "flood")
    port = server.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /test:drop/flood HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + TIMEOUT
        while server.statistics().subscriptions < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # the request is read by the server's own thread or loop
        chunk = b"f" * 4000
        for _ in range(100):
            server.write("flood", *([chunk] * 100))  # 40 MB in all, none read
        queued = server.queued_bytes()
        stats = server.statistics()
        assert stats.subscriptions == 1
    # Other clients are unaffected.
    server.start("test:streams", "other")
    server.write("other", b"fine")
    server.close_stream("other")
    with httpx.Client(timeout=TIMEOUT) as client:
        events = sse_events(client, "GET", base(server) + "/test:streams/other")
    assert [e.data for e in events if e.event == "message"] == ["fine"]  # type: ignore[attr-defined]
    assert queued < 8 << 20
    print(f"never-reading SSE client: {queued} bytes queued after 40 MB written")


def test_many_concurrent_sse_clients_on_one_stream(server: ServerProxy) -> None:
    clients = 1000 if server.backend != "sync" else 200  # threads: two per socket
    server.start("test:streams", "fan")
    port = server.server.port
    request = b"GET /test:streams/fan HTTP/1.1\r\nHost: x\r\n\r\n"
    socks = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.sendall(request)
        socks.append(sock)
    deadline = time.monotonic() + 60
    while server.statistics().subscriptions < clients and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.statistics().subscriptions == clients
    server.write("fan", b"hello", b"world")
    server.close_stream("fan")
    complete = 0
    results: dict[int, bytes] = {}

    def read(i: int, sock: socket.socket) -> None:
        data = b""
        with sock:
            while b"event: end" not in data:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        results[i] = data

    threads = [threading.Thread(target=read, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    for data in results.values():
        body = SseParser().feed(_unchunk(data.partition(b"\r\n\r\n")[2]))
        if [e.data for e in body if e.event == "message"] == ["hello", "world"]:
            complete += 1
    print(f"{server.backend}: {complete}/{clients} concurrent SSE clients got every chunk")
    assert complete == clients


def test_base64_events_decode(server: ServerProxy) -> None:
    server.start("test:streams", "b")
    server.write("b", b"\x00\x01\xfe")
    server.close_stream("b")
    with httpx.Client(timeout=TIMEOUT) as client:
        events = sse_events(client, "GET", base(server) + "/test:streams/b")
    assert events[0].event == "bytes"  # type: ignore[attr-defined]
    assert base64.b64decode(events[0].data) == b"\x00\x01\xfe"  # type: ignore[attr-defined]


def test_shutdown_answers_503_to_new_requests_and_ends_streams(server: ServerProxy) -> None:
    server.start("test:streams", "sd")
    port = server.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /test:streams/sd HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in sock.recv(65536)
        server.shutdown(0.5)
        rest = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            rest += part
    assert b"event: end" not in rest  # cut, not ended: an EventSource reconnects elsewhere


@pytest.mark.parametrize("backend", BACKENDS)
def test_slow_request_head_is_408_and_heartbeats_flow(backend: str) -> None:
    from streamproto import Config

    options = HttpOptions(header_timeout=0.5)
    proxy = ServerProxy(backend, "http", Config(keepalive=1), http=options)
    try:
        port = proxy.server.port
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /test:streams/s HTTP/1.1\r\nHost:")  # and nothing more
            answer = b""
            while part := sock.recv(65536):
                answer += part
        assert status_of(answer) == 408
        # An idle keep-alive connection is closed quietly after the same time.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            assert sock.recv(65536) == b""
        # An event stream with nothing to say sends a comment every keepalive interval.
        proxy.start("test:streams", "quiet")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /test:streams/quiet HTTP/1.1\r\nHost: x\r\n\r\n")
            seen = b""
            while seen.count(b": ping") < 2:
                seen += sock.recv(65536)
        assert b" 200 " in seen.split(b"\r\n")[0]
    finally:
        proxy.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_over_the_connection_cap_every_request_is_503(backend: str) -> None:
    from streamproto import Config

    proxy = ServerProxy(backend, "http", Config(max_connections=1))
    try:
        port = proxy.server.port
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as first:
            first.sendall(b"GET /test:nothing/x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 404 " in first.recv(65536)  # served, and kept open
            answer = raw(proxy, b"GET /test:nothing/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == 503
        assert json_of(answer)["name"] == "SERVER_BUSY"
    finally:
        proxy.stop()
