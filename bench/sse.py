"""The ``sse`` workload: Server-Sent Events from one stream to one client, server in another
process, beside **sse-starlette under uvicorn**.

Every server is read by the same client, in this process: a raw socket, a small HTTP/1.1
response reader (``Content-Length``, chunked, or until close) and a small SSE parser that counts
events and their data bytes, so that the figures compare servers, not client libraries. A
stream is opened with ``POST /bench:sse`` whose body is the open's args (``count`` and ``size``,
``>II`` as in ``e2e``); the server answers with the stream's events, one per chunk of ``size``
bytes of ``x`` (text: one ``data:`` line each), then ``event: end``. The client checks the event
count and the data bytes.

``64 B`` (events/s)
    N chunks of 64 bytes, as 10 streams of N/10, each timed from connect to its end event.
``4 KiB`` (MB/s, 10^6 bytes of chunk data)
    The same with 4096-byte chunks.
``first event p50`` / ``p99`` (microseconds)
    A stream of one 64-byte chunk, timed from connect to its event (a new connection each time:
    the connect is in every server's figure alike), sequentially, many times.

The servers are measured interleaved (:func:`measure`): each server in turn takes one of its
ten 64 B and 4 KiB streams, then each in turn 25 first-event requests, and so on, so that the
machine's speed, which drifts by tens of percent from one second to the next, weighs on every
server alike; ratios come from one repeat. Each repeat starts with another server.
``client ceiling 64 B`` (events/s, info)
    The client alone, parsing a chunked body of 64-byte events held in memory (one HTTP chunk
    per event, sse-starlette's shape): a server measured near it is limited by the client.

Servers (``python -m bench.sse serve IMPL`` prints ``ready <port>``; stops when its standard
input closes):

``sse-starlette``
    An ``EventSourceResponse`` over an async generator of ``{"id", "data"}`` dicts, in a
    Starlette app run by ``uvicorn`` on h11 and the standard asyncio loop (plain ``uvicorn``).
``sse-starlette+uvloop``
    The same under ``uvicorn[standard]``'s httptools and uvloop, when they are installed (left
    out saying so when not).
``asyncio``, ``trio``, ``sync``
    streamproto's ``serve(hub, "http://127.0.0.1:0")`` with a channel ``bench:sse`` whose open
    handler writes the chunks (BLOCK policy) and closes the stream. While ``transports`` has no
    HTTP listener the server exits with code 3 and why, and the row is left out saying so.

``asyncio/ws (e2e)`` (info) is our own WebSocket path measured as ``e2e`` measures it (our
client, binary frames), for comparison with the SSE rows. ``STREAMPROTO_BENCH_SCALE``
multiplies the counts (the smoke test runs with a tiny scale).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from bench import Config, Measurement, Report, workload
from bench._peers import REQUEST
from bench.e2e import ROOT, SCALE_ENV, ServerProcess, _percentile, _watched

__all__ = ["IMPLS", "METRICS", "OURS", "PEER", "PEERS", "PEER_FAST", "SseClient", "run"]

OURS = ("asyncio", "trio", "sync")
PEER = "sse-starlette"
#: The same app under uvicorn with httptools and uvloop (``uvicorn[standard]``), when installed.
PEER_FAST = "sse-starlette+uvloop"
PEERS = (PEER, PEER_FAST)
IMPLS = (*OURS, *PEERS)
CHANNEL = "bench:sse"
SMALL = 64
LARGE = 4096
UNAVAILABLE = 3  # exit code of a server process that cannot serve HTTP here
#: First-event requests to one server before the next server's turn (see :func:`measure`).
BLOCK = 25
#: The parts each server's 64 B and 4 KiB streams are split into (see :func:`measure`).
STREAM_BLOCKS = 10

METRICS = {
    "64 B": "events/s",
    "4 KiB": "MB/s",
    "first event p50": "us",
    "first event p99": "us",
}
E2E_CASE = "asyncio/ws"


@dataclass(frozen=True)
class Sizes:
    small: int
    large: int
    round_trips: int
    repeats: int
    session_timeout: float

    def scaled(self, scale: float) -> Sizes:
        return Sizes(
            max(1, round(self.small * scale)),
            max(1, round(self.large * scale)),
            max(1, round(self.round_trips * scale)),
            self.repeats,
            self.session_timeout,
        )


FULL = Sizes(small=100_000, large=10_000, round_trips=500, repeats=5, session_timeout=180)
QUICK = Sizes(small=10_000, large=2_000, round_trips=100, repeats=1, session_timeout=60)
WARMUP_SCALE = 0.05


# -- the client: raw socket, HTTP/1.1 response reader, SSE event counter ------------------------


class _Chunked:
    """Incremental ``Transfer-Encoding: chunked`` decoder."""

    def __init__(self) -> None:
        self.buffer = b""
        self.left = 0  # bytes of the current chunk still to come
        self.crlf = False  # the CRLF after a chunk's data is still to come
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self.buffer + data if self.buffer else data
        out = []
        i, n = 0, len(buf)
        while i < n and not self.done:
            if self.left:
                take = min(self.left, n - i)
                out.append(buf[i : i + take])
                i += take
                self.left -= take
                self.crlf = not self.left
            elif self.crlf:
                if n - i < 2:
                    break
                i += 2
                self.crlf = False
            else:
                j = buf.find(b"\r\n", i)
                if j < 0:
                    break
                size = int(buf[i:j].split(b";", 1)[0], 16)
                i = j + 2
                if size == 0:
                    self.done = True
                self.left = size
        self.buffer = buf[i:]
        return b"".join(out)


class SseClient:
    """Counts the events of one ``text/event-stream`` body (LF or CRLF line ends): data events,
    their data bytes, the end. An ``error`` or ``gap`` event raises: a benchmark stream has
    neither."""

    def __init__(self) -> None:
        self.pending = b""
        self.events = 0
        self.payload = 0
        self.ended = False

    @staticmethod
    def _plain(blocks: list[bytes]) -> bool:
        """Whether every block looks like ``[id: N\n]data: VALUE``: no other field, no comment,
        one ``data: `` line per block, one line per block besides the ``id:`` lines (what a
        stream of chunks is between its first and last events)."""
        body = b"\n\n".join(blocks)
        if b"event:" in body or b"retry:" in body or b"\n:" in body or body[:1] == b":":
            return False
        n = len(blocks)
        data_lines = body.count(b"\ndata: ") + body.startswith(b"data: ")
        other_lines = body.count(b"\n") - 2 * (n - 1)  # the line ends inside blocks
        return data_lines == n == body.count(b"data:") and other_lines == body.count(b"id: ")

    def feed(self, data: bytes) -> None:
        text = self.pending + data if self.pending else data
        if b"\r" in text:
            held = text.endswith(b"\r")  # maybe half of a CRLF: wait for the rest
            text = text[:-1].replace(b"\r\n", b"\n") if held else text.replace(b"\r\n", b"\n")
            blocks = text.split(b"\n\n")
            self.pending = blocks.pop() + (b"\r" if held else b"")
        else:
            blocks = text.split(b"\n\n")
            self.pending = blocks.pop()
        if blocks and self._plain(blocks):
            # Every block is ``[id: N\n]data: VALUE``: count in C. (Were a data line not last
            # in its block, the byte count would be off and the run's check would say so.)
            self.events += len(blocks)
            self.payload += (
                sum(map(len, blocks))
                - sum(map(bytes.rfind, blocks, repeat(b"\n")))
                - 7 * len(blocks)
            )
            return
        events = payload = 0
        for block in blocks:
            at = block.find(b"event:")
            if at >= 0 and (at == 0 or block[at - 1] == 10):
                end = block.find(b"\n", at)
                name = block[at + 6 : end if end >= 0 else len(block)].strip()
                if name == b"end":
                    self.ended = True
                    break
                if name != b"message":
                    raise RuntimeError(f"unexpected event: {block[:300]!r}")
            at = block.find(b"data:")
            if at < 0 or (at and block[at - 1] != 10):
                continue  # a comment or retry advice only
            events += 1
            while at >= 0:
                start = at + 6 if block[at + 5 : at + 6] == b" " else at + 5
                end = block.find(b"\n", start)
                payload += (end if end >= 0 else len(block)) - start
                at = block.find(b"\ndata:", start)
                if at >= 0:
                    at += 1
                    payload += 1  # the LF that joins two data lines
        self.events += events
        self.payload += payload


def _read_stream(port: int, count: int, size: int, first_only: bool = False) -> tuple[float, int]:
    """Open a stream of ``count`` chunks of ``size`` bytes and read it to the end.

    Returns the seconds from connect to the end event (``first_only``: to the first event)
    and the events counted."""
    body = REQUEST.pack(count, size)
    request = (
        f"POST /{CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    perf = time.perf_counter
    started = perf()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        recv = sock.recv
        head = b""
        while b"\r\n\r\n" not in head:
            data = recv(65536)
            if not data:
                raise RuntimeError(f"the connection closed in the response head: {head!r}")
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        if status_line.split()[1] != "200":
            raise RuntimeError(f"{status_line}: {rest[:300]!r}")
        fields = (line.partition(":") for line in header_lines)
        headers = {name.strip().lower(): value.strip() for name, _, value in fields}
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        decoder = _Chunked() if chunked else None
        client = SseClient()
        data = rest
        first = 0.0
        while True:
            client.feed(decoder.feed(data) if decoder is not None else data)
            if client.events and not first:
                first = perf()
                if first_only:
                    return first - started, client.events
            if client.ended:
                elapsed = perf() - started
                break
            if decoder is not None and decoder.done:
                raise RuntimeError("the body ended before the end event")
            data = recv(262144)
            if not data:
                raise RuntimeError(f"the connection closed after {client.events} events")
    finally:
        sock.close()
    if client.events != count or client.payload != count * size:
        raise RuntimeError(
            f"received {client.events} events, {client.payload} data bytes; "
            f"expected {count}, {count * size}"
        )
    return elapsed, client.events


class _ServerFailed(Exception):
    """A request to the server ``impl`` failed (``__cause__`` says how)."""

    def __init__(self, impl: str) -> None:
        super().__init__(impl)
        self.impl = impl


def measure(ports: dict[str, int], sizes: Sizes) -> dict[str, dict[str, float]]:
    """The four figures of every server in ``ports``, by server, measured interleaved: the
    64 B and 4 KiB streams in :data:`STREAM_BLOCKS` parts and the first-event requests in
    blocks of :data:`BLOCK`, each server in turn a part or a block at a time. The machine's
    speed drifts by tens of percent from one second to the next here; interleaved, the drift
    weighs on every server alike, while each part still runs as one client's sequential
    requests do. Raises :class:`_ServerFailed` naming the server whose request failed."""

    def read(impl: str, count: int, size: int, first_only: bool = False) -> float:
        try:
            return _read_stream(ports[impl], count, size, first_only)[0]
        except Exception as exc:
            raise _ServerFailed(impl) from exc

    spent = {impl: [0.0, 0.0] for impl in ports}
    for part in range(STREAM_BLOCKS):
        small = _share(sizes.small, part)
        large = _share(sizes.large, part)
        for impl in ports:
            if small:
                spent[impl][0] += read(impl, small, SMALL)
            if large:
                spent[impl][1] += read(impl, large, LARGE)
    times: dict[str, list[float]] = {impl: [] for impl in ports}
    for start in range(0, sizes.round_trips, BLOCK):
        for impl in ports:
            for _ in range(min(BLOCK, sizes.round_trips - start)):
                times[impl].append(read(impl, 1, SMALL, first_only=True))
    return {
        impl: {
            "64 B": sizes.small / spent[impl][0],
            "4 KiB": sizes.large * LARGE / spent[impl][1] / 1e6,
            "first event p50": _percentile(times[impl], 50) * 1e6,
            "first event p99": _percentile(times[impl], 99) * 1e6,
        }
        for impl in ports
    }


def _share(total: int, part: int) -> int:
    """Part ``part`` of ``total`` split into :data:`STREAM_BLOCKS` near-equal parts."""
    return total * (part + 1) // STREAM_BLOCKS - total * part // STREAM_BLOCKS


def client_ceiling(events: int = 20_000) -> float:
    """Events/s of the client alone on a chunked body of 64-byte events held in memory."""
    event = b"id: 12345\r\ndata: " + b"x" * SMALL + b"\r\n\r\n"
    one = f"{len(event):x}\r\n".encode() + event + b"\r\n"
    body = one * events + b"0\r\n\r\n"
    best = float("inf")
    for _ in range(3):
        decoder, client = _Chunked(), SseClient()
        started = time.perf_counter()
        for i in range(0, len(body), 65536):
            client.feed(decoder.feed(body[i : i + 65536]))
        best = min(best, time.perf_counter() - started)
        if client.events != events or client.payload != events * SMALL:
            raise AssertionError(f"client ceiling: parsed {client.events} events")
    return events / best


# -- servers (run in the server process) --------------------------------------------------------


def _hub() -> Any:
    from bench.e2e import _hub as hub  # noqa: PLC0415

    return hub()


def _options() -> Any:
    from bench.e2e import _options as options  # noqa: PLC0415

    return options()


def _unavailable(why: BaseException) -> None:
    print(f"unavailable: {type(why).__name__}: {why}", file=sys.stderr, flush=True)
    os._exit(UNAVAILABLE)


async def _serve_asyncio(ready: Callable[[int], None], stop: asyncio.Event) -> None:
    from bench.e2e import _stream_async  # noqa: PLC0415
    from transports.asyncio import serve  # noqa: PLC0415

    try:
        server = await serve(_hub(), "http://127.0.0.1:0")
    except Exception as exc:
        _unavailable(exc)
    async with server:
        server.channel(CHANNEL, _options(), on_open=_stream_async)
        ready(server.port)
        await stop.wait()


async def _serve_trio(ready: Callable[[int], None]) -> None:
    import trio  # noqa: PLC0415

    from bench.e2e import _stream_async  # noqa: PLC0415
    from transports.trio import serve  # noqa: PLC0415

    try:
        manager = serve(_hub(), "http://127.0.0.1:0")
        server = await manager.__aenter__()
    except Exception as exc:
        _unavailable(exc)
    try:
        server.channel(CHANNEL, _options(), on_open=_stream_async)
        ready(server.port)
        await trio.sleep_forever()
    finally:
        await manager.__aexit__(None, None, None)


def _serve_sync(ready: Callable[[int], None]) -> None:
    import threading  # noqa: PLC0415

    from bench.e2e import _stream_sync  # noqa: PLC0415
    from transports.sync import serve  # noqa: PLC0415

    try:
        manager = serve(_hub(), "http://127.0.0.1:0")
        server = manager.__enter__()
    except Exception as exc:
        _unavailable(exc)
    with contextlib.ExitStack() as stack:
        stack.push(manager)
        server.channel(CHANNEL, _options(), on_open=_stream_sync)
        ready(server.port)
        threading.Event().wait()


def _starlette_app() -> Any:
    from sse_starlette import EventSourceResponse  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    async def events(count: int, size: int) -> AsyncIterator[dict[str, str]]:
        chunk = "x" * size
        for seq in range(1, count + 1):
            yield {"id": str(seq), "data": chunk}
        yield {"event": "end", "data": ""}

    async def open_stream(request: Request) -> EventSourceResponse:
        count, size = REQUEST.unpack(await request.body())
        return EventSourceResponse(events(count, size))

    return Starlette(routes=[Route(f"/{CHANNEL}", open_stream, methods=["POST"])])


def _serve_starlette(ready: Callable[[int], None], fast: bool) -> None:
    import uvicorn  # noqa: PLC0415

    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off"}
    if fast:
        try:
            import httptools  # noqa: F401, PLC0415
            import uvloop  # noqa: F401, PLC0415
        except ImportError as exc:
            _unavailable(exc)
        options.update(http="httptools", loop="uvloop")
    else:
        options.update(http="h11", loop="asyncio")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = uvicorn.Server(uvicorn.Config(_starlette_app(), **options))
    ready(sock.getsockname()[1])
    server.run(sockets=[sock])


def serve_main(impl: str) -> None:
    """The server process: serve ``impl`` until standard input closes."""
    from bench.e2e import _exit_on_eof, _ready  # noqa: PLC0415

    if impl in PEERS:
        _exit_on_eof(lambda: os._exit(0))
        _serve_starlette(_ready, fast=impl == PEER_FAST)
    elif impl == "trio":
        import trio  # noqa: PLC0415

        _exit_on_eof(lambda: os._exit(0))
        trio.run(_serve_trio, _ready)
    elif impl == "sync":
        _exit_on_eof(lambda: os._exit(0))
        _serve_sync(_ready)
    else:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            _exit_on_eof(lambda: loop.call_soon_threadsafe(stop.set))
            await _serve_asyncio(_ready, stop)

        asyncio.run(main())


class SseServerProcess(ServerProcess):
    """``python -m bench.sse serve IMPL`` in a child process (see :class:`ServerProcess`)."""

    def __init__(self, impl: str) -> None:
        self.case = impl
        self.port = 0
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sse", "serve", impl],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )

    def unavailable(self) -> str | None:
        """Why the server could not serve HTTP here (it exited saying so), or None."""
        if self.proc.poll() != UNAVAILABLE:
            return None
        return self.error_text(400).rpartition("unavailable: ")[2]


# -- the workload -------------------------------------------------------------------------------


def _derived(samples: dict[str, list[float]]) -> dict[str, float]:
    """Ours / each sse-starlette setup: throughputs (how many times faster) and first-event
    latency (how many times slower: below 1 is the goal). Servers measured together (one
    sample each per repeat, interleaved) are compared repeat by repeat: the median of the
    repeats' ratios. Our WebSocket path, measured apart, by the ratio of the medians."""
    derived: dict[str, float] = {}
    for peer in PEERS:
        for impl in (*OURS, f"{E2E_CASE} (e2e)"):
            for metric in ("64 B", "4 KiB", "first event p50"):
                name = f"{impl} {metric}"
                if impl.endswith("(e2e)"):
                    name = name.replace("first event", "rtt")
                mine, theirs = samples.get(name), samples.get(f"{peer} {metric}")
                if not mine or not theirs or not all(theirs):
                    continue
                if impl.endswith("(e2e)") or len(mine) != len(theirs):
                    ratio = statistics.median(mine) / statistics.median(theirs)
                else:
                    ratio = statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
                derived[f"{metric} {impl} / {peer}"] = ratio
    return derived


def _e2e_figures(sizes: Sizes, repeats: int) -> tuple[dict[str, list[float]], str | None]:
    """Our WebSocket path (asyncio, e2e's client) on the same counts: samples, or why not."""
    from bench.e2e import _figures, client_session  # noqa: PLC0415

    plan = (sizes.small, SMALL, sizes.large, LARGE, sizes.round_trips)
    samples: dict[str, list[float]] = {"64 B": [], "4 KiB": [], "rtt p50": []}
    server = ServerProcess(E2E_CASE)
    try:
        port = server.wait_ready(60)
        for _ in range(repeats):
            result = _watched(
                server, sizes.session_timeout, lambda: client_session(E2E_CASE, port, plan)
            )
            figures = _figures(result, plan)
            for metric, values in samples.items():
                values.append(figures[metric])
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    return samples, None


@workload("sse", "SSE events from one stream to one client: ours over HTTP vs sse-starlette")
def run(config: Config) -> Report:
    base = QUICK if config.quick else FULL
    scale = float(os.environ.get(SCALE_ENV, "1"))
    sizes = base.scaled(scale)
    warmup = base.scaled(scale * WARMUP_SCALE)
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    samples: dict[str, dict[str, list[float]]] = {i: {m: [] for m in METRICS} for i in IMPLS}
    servers = {impl: SseServerProcess(impl) for impl in IMPLS}
    live: list[str] = []
    try:
        for impl, server in servers.items():
            try:
                server.wait_ready(60)
                live.append(impl)
            except RuntimeError as exc:
                why = server.unavailable()
                if why is None:
                    failed[impl] = str(exc)
                else:
                    skipped[impl] = why

        def measured(what: Sizes, order: list[str]) -> dict[str, dict[str, float]] | None:
            ports = {impl: servers[impl].port for impl in order if impl not in failed}
            try:
                return _watched(
                    [servers[impl] for impl in ports],
                    what.session_timeout * len(ports),
                    lambda: measure(ports, what),
                )
            except _ServerFailed as exc:
                server, cause = servers[exc.impl], exc.__cause__
                why = f"{type(cause).__name__}: {cause} {server.error_text(300)}".strip()
                failed[exc.impl] = why
            except Exception as exc:  # the time ran out: which server hung is not known
                for impl in ports:
                    failed[impl] = f"{type(exc).__name__}: {exc}"
            print(f"  sse: failed: {failed}", file=sys.stderr)
            return None

        while any(impl not in failed for impl in live) and measured(warmup, live) is None:
            pass  # a server that fails the warm-up is left out, and the rest warm up again
        for repeat in range(sizes.repeats):
            shift = repeat % len(live) if live else 0
            results = measured(sizes, live[shift:] + live[:shift])
            for impl, figures in (results or {}).items():
                for metric, value in figures.items():
                    samples[impl][metric].append(value)
    finally:
        for server in servers.values():
            server.stop()
    measurements = [
        Measurement(f"{impl} {metric}", values, METRICS[metric])
        for impl in IMPLS
        if impl in live and impl not in failed
        for metric, values in samples[impl].items()
        if values
    ]
    e2e, e2e_failed = _e2e_figures(sizes, sizes.repeats)
    units = {"64 B": "chunks/s", "4 KiB": "MB/s", "rtt p50": "us"}
    measurements += [
        Measurement(f"{E2E_CASE} (e2e) {metric}", values, units[metric], info=True)
        for metric, values in e2e.items()
        if values
    ]
    if e2e_failed:
        failed[f"{E2E_CASE} (e2e)"] = e2e_failed
    ceiling = client_ceiling()
    measurements.append(Measurement("client ceiling 64 B", [ceiling], "events/s", info=True))
    for impl, why in {**skipped, **failed}.items():
        print(f"  {impl}: left out: {why}")
    try:
        import uvicorn  # noqa: PLC0415

        uvicorn_version: str | None = uvicorn.__version__
    except ImportError:
        uvicorn_version = None
    params = {
        "events_64B": sizes.small,
        "events_4KiB": sizes.large,
        "first_event_trips": sizes.round_trips,
        "repeats": sizes.repeats,
        "skipped": skipped,
        "failed": failed,
        "uvicorn": uvicorn_version,
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    return Report(measurements, _derived({m.name: m.samples for m in measurements}), params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sse")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an SSE benchmark server (prints 'ready <port>')")
    serve.add_argument("impl", choices=IMPLS)
    args = parser.parse_args(argv)
    serve_main(args.impl)


if __name__ == "__main__":
    main()
