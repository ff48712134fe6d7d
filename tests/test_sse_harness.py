"""The SSE client harness checked on its own: the killing proxy cuts at the exact byte, the
browser runner fails clearly and leaves no browser behind, the Python SSE parser follows the
HTML standard's rules that resume depends on, and the test chunks survive SSE encoding."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import PageServer, run_page
from killproxy import KillingProxy, open_killing_proxy
from sse_contract import SseParser, chunk, encode_chunk, format_event, outcome, sse_events
from test_bench_smoke import _processes_tagged

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def payload_server() -> Iterator[int]:
    """A server that sends PAYLOAD to each connection, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(PAYLOAD)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(10)
    listener.close()


def _read_all(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = b""
        while data := sock.recv(65536):
            received += data
        return received


def test_the_proxy_cuts_after_exactly_n_bytes_then_passes_through(payload_server: int) -> None:
    with open_killing_proxy("127.0.0.1", payload_server) as proxy:
        proxy.kill_after(1234)
        assert _read_all(proxy.port) == PAYLOAD[:1234]
        assert _read_all(proxy.port) == PAYLOAD  # one cut was asked for
        assert (proxy.accepted, proxy.killed) == (2, 1)


def test_the_proxy_kills_every_live_connection_on_demand() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, open_killing_proxy("127.0.0.1", listener.getsockname()[1]) as proxy:
        clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        for _ in range(300):  # the proxy's side of the links is made after the accept
            if proxy.live() == 3:
                break
            threading.Event().wait(0.05)
        assert proxy.kill_all() == 3
        for sock in clients:
            sock.settimeout(30)
            assert sock.recv(10) == b""
            sock.close()
        for sock in accepted:
            sock.close()
        assert proxy.live() == 0


def test_close_kills_a_connection_accepted_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection the proxy accepted as ``close`` began (its link to the server still being
    made) is killed too: its client sees the end, and no pump is left running."""
    connect = socket.create_connection
    in_flight = threading.Event()
    release = threading.Event()

    def slow_connect(*args: Any, **kwargs: Any) -> socket.socket:
        if threading.current_thread().name == "killproxy-accept":
            in_flight.set()  # accepted; the link to the server is being made
            release.wait(30)
        return connect(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_connect)
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = KillingProxy(listener.getsockname())
    with listener, connect(("127.0.0.1", proxy.port), timeout=30) as client:
        assert in_flight.wait(30)
        failed: list[BaseException] = []

        def close() -> None:
            try:
                proxy.close()
            except BaseException as exc:
                failed.append(exc)

        closing = threading.Thread(target=close)
        closing.start()
        for _ in range(600):  # close has begun: the proxy accepts no more
            if proxy._closed.is_set():
                break
            threading.Event().wait(0.05)
        release.set()
        closing.join(60)
        assert not closing.is_alive()
        assert failed == []
        assert client.recv(10) == b""
        assert (proxy.accepted, proxy.live()) == (1, 0)


def test_a_page_that_never_reports_fails_clearly_and_no_browser_is_left(tmp_path: Path) -> None:
    tag = f"sse-harness-{uuid.uuid4().hex}"
    with PageServer() as pages, pytest.raises(AssertionError, match="no report within") as info:
        run_page(pages, "missing.html", {}, timeout=5, tag=tag)
    assert "chromium stderr" in str(info.value)
    left = _processes_tagged(tag)
    for _ in range(100):  # a killed process may take a moment to be gone
        if not left:
            break
        threading.Event().wait(0.1)
        left = _processes_tagged(tag)
    assert left == []


def test_the_parser_moves_the_last_id_only_when_an_event_is_complete() -> None:
    parser = SseParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b")  # the second is cut
    assert [(e.id, e.data) for e in events] == [("1", "a")]
    assert parser.last_id == "1"
    assert parser.feed(b"\n\n")[0].id == "2"


def test_the_parser_reads_every_line_end_comments_and_retry() -> None:
    parser = SseParser()
    events = parser.feed(b": hi\r\nretry: 150\r\nevent: end\r\ndata\r\n\r\nevent: x\n\ndata: a\r")
    assert [(e.event, e.data) for e in events] == [("end", "")]  # "event: x" has no data
    assert (parser.comments, parser.retry) == (1, 150)
    assert parser.feed(b"\n\n")[0].data == "a"
    assert parser.feed(b"data: b\r\rdata: c\r")[0].data == "b"  # lone CRs end lines too
    assert parser.feed(b"\r\n")[0].data == "c"  # CR, then CRLF: two line ends


@pytest.mark.parametrize("seq", range(1, 36))
def test_every_test_chunk_survives_sse_encoding(seq: int) -> None:
    body = format_event(encode_chunk(seq, chunk(seq)))
    assert outcome(sse_events(SseParser().feed(body))).chunks == [(seq, chunk(seq))]
