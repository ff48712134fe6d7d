"""The ``e2e`` workload: streamproto end to end, server in another process, over loopback.

Every backend (asyncio, trio, threads) over every transport (raw TCP, WebSocket), and beside
them the peers of :mod:`bench._peers` (a bare length-prefix asyncio Protocol, ``websockets``,
``grpc.aio``), each measured the same way with the same sizes and counts:

``64 B`` (chunks/s)
    The server's open handler writes N chunks of 64 bytes as fast as it can and ends the
    stream (BLOCK policy: nothing is dropped, so this is delivered throughput); the client
    opens the stream with a large credit window (4096 chunks, 16 MiB) and counts chunks until
    the end. Timed from ``open`` to the end of the stream.
``64 B write_many`` (chunks/s)
    The same stream, the server's handler writing bursts of 64 chunks with
    ``ServerProducer.write_many`` (same bytes to the client) instead of one ``write`` per chunk.
``64 B batched`` (chunks/s)
    The ``write_many`` stream, read by the client with ``sub.batches()`` (lists of whatever
    has arrived) instead of one ``async for`` step per chunk: both ends batched.
``4 KiB`` (MB/s, 10^6 bytes)
    The same with 4096-byte chunks.
``rtt p50`` / ``rtt p99`` (microseconds)
    The client opens a stream on an echo channel whose handler writes the open's 64-byte
    ``args`` back as one chunk and ends; timed from ``open`` to the first chunk, sequentially,
    many times. The percentiles are taken per repeat; the report shows their median.

Each (implementation, transport) pair gets one server process (``python -m bench.e2e serve
IMPL TRANSPORT``, which prints ``ready <port>``), started before and killed after the run; the
client runs in this process, one connection per session. Sessions run round-robin over the
cases, each case once per repeat (5 repeats in full mode, 1 in quick mode), after a short
warm-up session. A watchdog kills a server whose session takes too long: the case is then
reported as failed, not timed. ``STREAMPROTO_BENCH_SCALE`` multiplies the counts (the smoke
test runs with a tiny scale); ``STREAMPROTO_BENCH_CASES`` (``asyncio/tcp,websockets/ws``...)
runs only the cases it names.

``python -m bench.e2e profile`` profiles the asyncio TCP 64 B path in both processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import Config, Measurement, Report, workload
from bench._peers import PEERS, REQUEST, Plan, SessionResult, peer_available, serve_peer
from bench._peers import session as peer_session

__all__ = ["BACKENDS", "TARGETS", "TRANSPORTS", "Sizes", "run"]

BACKENDS = ("asyncio", "trio", "sync")
TRANSPORTS = ("tcp", "ws")
SMALL = 64
LARGE = 4096
STREAM_CHANNEL = "bench:stream"
STREAM_MANY_CHANNEL = "bench:stream-many"
BURST = 64  # chunks per write_many in the "64 B write_many" figure
ECHO_CHANNEL = "bench:echo"
SCALE_ENV = "STREAMPROTO_BENCH_SCALE"
CASES_ENV = "STREAMPROTO_BENCH_CASES"
ROOT = Path(__file__).resolve().parent.parent

#: Metric name -> unit. Throughputs: higher is better; latencies: lower is better.
METRICS = {
    "64 B": "chunks/s",
    "64 B write_many": "chunks/s",
    "64 B batched": "chunks/s",
    "4 KiB": "MB/s",
    "rtt p50": "us",
    "rtt p99": "us",
}
LOWER_IS_BETTER = frozenset({"rtt p50", "rtt p99"})

#: Targets from the benchmark issue: (measured, denominator or None, comparison, bound).
#: A ratio of two throughputs is numerator/denominator (how many times faster); of two
#: latencies, numerator/denominator too (how many times slower). For "trio and sync within
#: 1.5x of asyncio", throughput ratios are asyncio/backend so that <= 1.5 is the goal.
TARGETS: list[tuple[str, str | None, str, float]] = [
    ("asyncio/tcp 64 B", None, ">=", 1_000_000),
    ("asyncio/tcp 64 B batched", None, ">=", 1_000_000),
    ("asyncio/tcp 64 B", "websockets/ws 64 B", ">=", 6),
    ("asyncio/tcp 64 B", "grpc/h2 64 B", ">=", 30),
    ("asyncio/ws 64 B", "websockets/ws 64 B", ">=", 6),
    ("asyncio/tcp 4 KiB", None, ">=", 1000),
    ("asyncio/tcp rtt p50", "raw/tcp rtt p50", "<=", 1.1),
    ("asyncio/tcp rtt p50", "websockets/ws rtt p50", "<", 1),
    ("asyncio/tcp rtt p50", "grpc/h2 rtt p50", "<", 1),
]
for _backend in ("trio", "sync"):
    for _transport in TRANSPORTS:
        for _metric in ("64 B", "4 KiB"):
            TARGETS.append(
                (f"asyncio/{_transport} {_metric}", f"{_backend}/{_transport} {_metric}", "<=", 1.5)
            )
        TARGETS.append(
            (f"{_backend}/{_transport} rtt p50", f"asyncio/{_transport} rtt p50", "<=", 1.5)
        )


@dataclass(frozen=True)
class Sizes:
    """Counts of one mode."""

    small: int  # 64 B chunks per stream
    large: int  # 4 KiB chunks per stream
    round_trips: int
    repeats: int
    session_timeout: float

    def plan(self, scale: float = 1.0) -> Plan:
        return (
            max(1, round(self.small * scale)),
            SMALL,
            max(1, round(self.large * scale)),
            LARGE,
            max(1, round(self.round_trips * scale)),
        )


FULL = Sizes(small=100_000, large=10_000, round_trips=1_000, repeats=5, session_timeout=180)
QUICK = Sizes(small=10_000, large=2_000, round_trips=200, repeats=1, session_timeout=30)
WARMUP_SCALE = 0.05


def case_names() -> list[str]:
    """Every case, ``impl/transport``: ours first, then the peers; only those named in
    ``STREAMPROTO_BENCH_CASES`` (comma-separated) when it is set, for a quicker comparison."""
    ours = [f"{b}/{t}" for b in BACKENDS for t in TRANSPORTS]
    every = ours + [f"{peer}/{transport}" for peer, transport in PEERS.items()]
    chosen = os.environ.get(CASES_ENV)
    if not chosen:
        return every
    wanted = {name.strip() for name in chosen.split(",")}
    return [case for case in every if case in wanted]


def _unavailable(impl: str) -> str | None:
    """None if ``impl`` can run here, else why not."""
    if impl in PEERS:
        return peer_available(impl)
    try:
        importlib.import_module(f"transports.{impl}")
    except Exception as exc:  # a backend being written may fail in any way
        return f"transports.{impl} does not import: {type(exc).__name__}: {exc}"
    return None


# -- our servers (run in the server process) ----------------------------------------------------


def _hub() -> Any:
    from streamproto import Hub  # noqa: PLC0415

    return Hub(clock=time.monotonic, ids=lambda: secrets.token_urlsafe(16))


def _options() -> Any:
    from streamproto import ChannelOptions, OverflowPolicy  # noqa: PLC0415

    return ChannelOptions(default_policy=OverflowPolicy.BLOCK)


def _url(transport: str) -> str:
    return "tcp://127.0.0.1:0" if transport == "tcp" else "ws://127.0.0.1:0/bench"


async def _stream_async(producer: Any, args: bytes) -> None:
    count, size = REQUEST.unpack(args)
    chunk = b"x" * size
    write = producer.write
    for _ in range(count):
        await write(chunk)
    producer.close()


async def _stream_many_async(producer: Any, args: bytes) -> None:
    count, size = REQUEST.unpack(args)
    burst = [b"x" * size] * BURST
    write_many = producer.write_many
    for start in range(0, count, BURST):
        await write_many(burst[: min(BURST, count - start)])
    producer.close()


async def _echo_async(producer: Any, args: bytes) -> None:
    await producer.write(args)
    producer.close()


def _stream_sync(producer: Any, args: bytes) -> None:
    count, size = REQUEST.unpack(args)
    chunk = b"x" * size
    write = producer.write
    for _ in range(count):
        write(chunk)
    producer.close()


def _stream_many_sync(producer: Any, args: bytes) -> None:
    count, size = REQUEST.unpack(args)
    burst = [b"x" * size] * BURST
    write_many = producer.write_many
    for start in range(0, count, BURST):
        write_many(burst[: min(BURST, count - start)])
    producer.close()


def _echo_sync(producer: Any, args: bytes) -> None:
    producer.write(args)
    producer.close()


def _register(server: Any, *, sync: bool) -> None:
    stream, many, echo = (
        (_stream_sync, _stream_many_sync, _echo_sync)
        if sync
        else (_stream_async, _stream_many_async, _echo_async)
    )
    server.channel(STREAM_CHANNEL, _options(), on_open=stream)
    server.channel(STREAM_MANY_CHANNEL, _options(), on_open=many)
    server.channel(ECHO_CHANNEL, _options(), on_open=echo)


async def _serve_asyncio(transport: str, ready: Callable[[int], None], stop: Any) -> None:
    from transports.asyncio import serve  # noqa: PLC0415

    async with await serve(_hub(), _url(transport)) as server:
        _register(server, sync=False)
        ready(server.port)
        await stop.wait()


async def _serve_trio(transport: str, ready: Callable[[int], None]) -> None:
    import trio  # noqa: PLC0415

    from transports.trio import serve  # noqa: PLC0415

    async with serve(_hub(), _url(transport)) as server:
        _register(server, sync=False)
        ready(server.port)
        await trio.sleep_forever()


def _serve_sync(transport: str, ready: Callable[[int], None]) -> None:
    from transports.sync import serve  # noqa: PLC0415

    with serve(_hub(), _url(transport)) as server:
        _register(server, sync=True)
        ready(server.port)
        threading.Event().wait()


def _ready(port: int) -> None:
    print(f"ready {port}", flush=True)


def _exit_on_eof(then: Callable[[], None]) -> None:
    """Call ``then`` once standard input closes (the parent stopped us, or died)."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        then()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def serve_main(
    impl: str, transport: str, profile: str | None = None, profiler: str = "cprofile"
) -> None:
    """The server process: serve ``impl`` over ``transport`` until standard input closes
    (asyncio and peers: under ``profiler`` if ``profile`` names a file for its output)."""
    if impl == "trio":
        import trio  # noqa: PLC0415

        _exit_on_eof(lambda: os._exit(0))
        trio.run(_serve_trio, transport, _ready)
        return
    if impl == "sync":
        _exit_on_eof(lambda: os._exit(0))
        _serve_sync(transport, _ready)
        return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _exit_on_eof(lambda: loop.call_soon_threadsafe(stop.set))
        if impl == "asyncio":
            await _serve_asyncio(transport, _ready, stop)
        else:
            await serve_peer(impl, _ready, stop)

    if profile is None:
        asyncio.run(main())
        return
    with _profiled(profiler, profile):
        asyncio.run(main())


@contextlib.contextmanager
def _profiled(kind: str, path: str) -> Iterator[None]:
    """Profile the block: cProfile stats, or pyinstrument's flat text, written to ``path``."""
    if kind == "pyinstrument":
        from pyinstrument import Profiler  # noqa: PLC0415

        sampler = Profiler(interval=0.0005, async_mode="disabled")
        sampler.start()
        try:
            yield
        finally:
            sampler.stop()
            text = sampler.output_text(flat=True, flat_time="self", show_all=True)
            Path(path).write_text(text, encoding="utf-8")
        return
    import cProfile  # noqa: PLC0415

    tracer = cProfile.Profile()
    tracer.enable()
    try:
        yield
    finally:
        tracer.disable()
        tracer.dump_stats(path)


# -- our clients (run in this process) ----------------------------------------------------------


def _client_config() -> Any:
    from streamproto import Config as ConnConfig  # noqa: PLC0415

    return ConnConfig(window_chunks=4096, window_bytes=16 << 20)


def _no_reconnect() -> Any:
    from transports import Backoff  # noqa: PLC0415

    return Backoff(attempts=0)


def _check(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"{what}: received {got} chunks, expected {want}")


async def _async_session(client: Any, plan: Plan) -> SessionResult:
    """The measurements of one session, for the asyncio and trio clients (same API)."""
    from streamproto import OverflowPolicy  # noqa: PLC0415

    small_count, small_size, large_count, large_size, round_trips = plan
    perf = time.perf_counter

    async def stream(
        count: int, size: int, channel: str = STREAM_CHANNEL, batched: bool = False
    ) -> float:
        started = perf()
        received = 0
        args = REQUEST.pack(count, size)
        sub = client.open(channel, args, policy=OverflowPolicy.BLOCK)
        if batched:
            async for batch in sub.batches():
                received += len(batch)
        else:
            async for _ in sub:
                received += 1
        elapsed = perf() - started
        _check("stream", received, count)
        return elapsed

    result: SessionResult = {
        "small_s": await stream(small_count, small_size),
        "small_many_s": await stream(small_count, small_size, STREAM_MANY_CHANNEL),
        "small_batched_s": await stream(small_count, small_size, STREAM_MANY_CHANNEL, True),
        "large_s": await stream(large_count, large_size),
    }
    payload = b"x" * small_size
    rtts = []
    for _ in range(round_trips):
        started = perf()
        first = 0.0
        async for chunk in client.open(ECHO_CHANNEL, payload):
            if not first:
                first = perf()
                _check("echo", len(chunk), len(payload))
        rtts.append(first - started)
    result["rtt_s"] = rtts
    return result


async def _asyncio_session(address: str, plan: Plan) -> SessionResult:
    from transports.asyncio import connect  # noqa: PLC0415

    async with await connect(address, config=_client_config(), reconnect=_no_reconnect()) as client:
        return await _async_session(client, plan)


async def _trio_session(address: str, plan: Plan) -> SessionResult:
    from transports.trio import connect  # noqa: PLC0415

    async with connect(address, config=_client_config(), reconnect=_no_reconnect()) as client:
        return await _async_session(client, plan)


def _sync_session(address: str, plan: Plan) -> SessionResult:
    from streamproto import OverflowPolicy  # noqa: PLC0415
    from transports.sync import connect  # noqa: PLC0415

    small_count, small_size, large_count, large_size, round_trips = plan
    perf = time.perf_counter
    with connect(address, config=_client_config(), reconnect=_no_reconnect()) as client:

        def stream(
            count: int, size: int, channel: str = STREAM_CHANNEL, batched: bool = False
        ) -> float:
            started = perf()
            received = 0
            args = REQUEST.pack(count, size)
            sub = client.open(channel, args, policy=OverflowPolicy.BLOCK)
            if batched:
                for batch in sub.batches():
                    received += len(batch)
            else:
                for _ in sub:
                    received += 1
            elapsed = perf() - started
            _check("stream", received, count)
            return elapsed

        result: SessionResult = {
            "small_s": stream(small_count, small_size),
            "small_many_s": stream(small_count, small_size, STREAM_MANY_CHANNEL),
            "small_batched_s": stream(small_count, small_size, STREAM_MANY_CHANNEL, True),
            "large_s": stream(large_count, large_size),
        }
        payload = b"x" * small_size
        rtts = []
        for _ in range(round_trips):
            started = perf()
            first = 0.0
            for chunk in client.open(ECHO_CHANNEL, payload):
                if not first:
                    first = perf()
                    _check("echo", len(chunk), len(payload))
            rtts.append(first - started)
        result["rtt_s"] = rtts
        return result


def client_session(case: str, port: int, plan: Plan) -> SessionResult:
    """One client session of ``case`` (``impl/transport``) against its server on ``port``."""
    impl, transport = case.split("/")
    if impl in PEERS:
        return peer_session(impl, port, plan)
    address = _url(transport).replace(":0", f":{port}", 1)
    if impl == "asyncio":
        return asyncio.run(_asyncio_session(address, plan))
    if impl == "trio":
        import trio  # noqa: PLC0415

        return trio.run(_trio_session, address, plan)  # type: ignore[no-any-return]
    return _sync_session(address, plan)


# -- server processes ---------------------------------------------------------------------------


class ServerProcess:
    """``python -m bench.e2e serve IMPL TRANSPORT`` in a child process. ``stop()`` always
    leaves no process behind: stdin closes (the server exits), then terminate, then kill."""

    def __init__(self, case: str, profile: str | None = None, profiler: str = "cprofile") -> None:
        impl, transport = case.split("/")
        self.case = case
        self.port = 0
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH")) if p
        )
        command = [sys.executable, "-m", "bench.e2e", "serve", impl, transport]
        if profile is not None:
            command += ["--profile", profile, "--profiler", profiler]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )

    def wait_ready(self, timeout: float) -> int:
        """The port, once the server printed ``ready <port>``; raises if it did not."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    continue
                line = self.proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith("ready "):
                    self.port = int(line.split()[1])
                    return self.port
                if not line and self.proc.poll() is not None:
                    break
        raise RuntimeError(f"the {self.case} server did not start: {self.error_text()}")

    def error_text(self, limit: int = 600) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return text[-limit:] or f"exit code {self.proc.poll()}"

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def stop(self, grace: float = 5.0) -> None:
        proc = self.proc
        try:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            self.stderr.close()


def _watched(
    server: ServerProcess | list[ServerProcess], timeout: float, fn: Callable[[], Any]
) -> Any:
    """``fn()``, but kill the server, or each of a list of servers (which makes the client
    fail), if it takes ``timeout``."""
    servers = server if isinstance(server, list) else [server]
    timer = threading.Timer(timeout, lambda: [each.kill() for each in servers])
    timer.daemon = True
    timer.start()
    try:
        return fn()
    except Exception as exc:
        if not timer.is_alive():
            raise TimeoutError(f"no result within {timeout:.0f} s (server killed)") from exc
        raise
    finally:
        timer.cancel()


# -- the workload -------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _figures(result: SessionResult, plan: Plan) -> dict[str, float]:
    small_count, _small, large_count, large_size, _trips = plan
    rtts = result["rtt_s"]
    figures = {
        "64 B": small_count / result["small_s"],
        "4 KiB": large_count * large_size / result["large_s"] / 1e6,
        "rtt p50": _percentile(rtts, 50) * 1e6,
        "rtt p99": _percentile(rtts, 99) * 1e6,
    }
    if "small_many_s" in result:  # ours, not the peers
        figures["64 B write_many"] = small_count / result["small_many_s"]
        figures["64 B batched"] = small_count / result["small_batched_s"]
    return figures


def target_rows(median: dict[str, float]) -> list[dict[str, Any]]:
    """The targets with the measured value (None where a case is missing) and whether met."""
    rows = []
    for name, denominator, op, bound in TARGETS:
        value: float | None = median.get(name)
        if denominator is not None:
            den = median.get(denominator)
            value = None if value is None or not den else value / den
        met = None
        if value is not None:
            met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
        label = name if denominator is None else f"{name} / {denominator}"
        rows.append({"target": label, "op": op, "bound": bound, "value": value, "met": met})
    return rows


def _print_targets(rows: list[dict[str, Any]]) -> None:
    print("\ne2e targets (from the benchmark issue), measured medians:")
    width = max(len(row["target"]) for row in rows)
    for row in rows:
        value, bound = row["value"], row["bound"]
        shown = "n/a" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        print(f"  {row['target']:<{width}}  {shown:>12}  target {row['op']} {bound:,}  {verdict}")


def _derived(median: dict[str, float], cases: list[str]) -> dict[str, float]:
    """The headline ratios: asyncio (tcp, ws) / each peer, and trio and sync / asyncio on the
    same transport. Throughput ratios say how many times faster, latency ratios how many times
    slower. (The docs page has every backend against every peer.)"""
    derived: dict[str, float] = {}

    def ratio(num: str, den: str, metric: str) -> None:
        a, b = median.get(f"{num} {metric}"), median.get(f"{den} {metric}")
        if a is not None and b:
            derived[f"{metric} {num} / {den}"] = a / b

    peers = [c for c in cases if c.split("/")[0] in PEERS]
    for metric in ("64 B", "4 KiB", "rtt p50"):
        for transport in TRANSPORTS:
            for peer in peers:
                ratio(f"asyncio/{transport}", peer, metric)
        for backend in BACKENDS[1:]:
            for transport in TRANSPORTS:
                ratio(f"{backend}/{transport}", f"asyncio/{transport}", metric)
    for backend in BACKENDS:  # what batching buys end to end
        for transport in TRANSPORTS:
            b = median.get(f"{backend}/{transport} 64 B")
            for metric in ("64 B write_many", "64 B batched"):
                a = median.get(f"{backend}/{transport} {metric}")
                if a is not None and b:
                    derived[f"{metric} / 64 B, {backend}/{transport}"] = a / b
    for transport in TRANSPORTS:  # both ends batched, against the peers' 64 B streams
        a = median.get(f"asyncio/{transport} 64 B batched")
        for peer in peers:
            b = median.get(f"{peer} 64 B")
            if a is not None and b:
                derived[f"64 B batched asyncio/{transport} / 64 B {peer}"] = a / b
    return derived


@workload("e2e", "end to end over loopback, server in another process, vs raw/websockets/grpc")
def run(config: Config) -> Report:
    sizes = QUICK if config.quick else FULL
    scale = float(os.environ.get(SCALE_ENV, "1"))
    plan = sizes.plan(scale)
    warmup = sizes.plan(scale * WARMUP_SCALE)
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    cases: list[str] = []
    for case in case_names():
        why = _unavailable(case.split("/")[0])
        if why is None:
            cases.append(case)
        else:
            skipped[case] = why
    loadavg_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    samples: dict[str, dict[str, list[float]]] = {c: {m: [] for m in METRICS} for c in cases}
    servers: dict[str, ServerProcess] = {}
    try:
        for case in cases:
            servers[case] = ServerProcess(case)
        live: list[str] = []
        for case in cases:
            try:
                servers[case].wait_ready(60)
                live.append(case)
            except RuntimeError as exc:
                failed[case] = str(exc)

        def one(case: str, what: Plan) -> SessionResult | None:
            server = servers[case]
            try:
                return _watched(
                    server,
                    sizes.session_timeout,
                    lambda: client_session(case, server.port, what),
                )
            except Exception as exc:
                failed[case] = f"{type(exc).__name__}: {exc} {server.error_text(300)}".strip()
                print(f"  e2e: {case} failed: {failed[case]}", file=sys.stderr)
                return None

        for case in list(live):
            if one(case, warmup) is None:
                live.remove(case)
        for repeat in range(sizes.repeats):
            shift = repeat % len(live) if live else 0
            for case in live[shift:] + live[:shift]:
                if case in failed:
                    continue
                result = one(case, plan)
                if result is None:
                    continue
                for metric, value in _figures(result, plan).items():
                    samples[case][metric].append(value)
    finally:
        for server in servers.values():
            server.stop()
    measurements = [
        Measurement(f"{case} {metric}", values, METRICS[metric])
        for case in cases
        if case not in failed
        for metric, values in samples[case].items()
        if values
    ]
    median = {m.name: m.median for m in measurements}
    rows = target_rows(median)
    _print_targets(rows)
    for case, why in {**skipped, **failed}.items():
        print(f"  {case}: left out: {why}")
    derived = _derived(median, [c for c in cases if c not in failed])
    params = {
        "chunk_bytes": [SMALL, LARGE],
        "chunks_64B": plan[0],
        "chunks_4KiB": plan[2],
        "round_trips": plan[4],
        "repeats": sizes.repeats,
        "client_window": "4096 chunks / 16 MiB",
        "skipped": skipped,
        "failed": failed,
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    return Report(measurements, derived, params)


# -- profiling ----------------------------------------------------------------------------------


def profile_main(chunks: int, top: int, transport: str, profiler: str) -> None:
    """Profile ``asyncio/<transport>`` 64 B streams in both processes and print the top
    functions by own time on each side (cProfile: deterministic, but its per-call overhead
    inflates small functions; pyinstrument: sampling, closer to real proportions)."""
    import pstats  # noqa: PLC0415

    case = f"asyncio/{transport}"
    with tempfile.TemporaryDirectory() as tmp:
        server_path = str(Path(tmp) / "server.prof")
        client_path = str(Path(tmp) / "client.prof")
        server = ServerProcess(case, profile=server_path, profiler=profiler)
        try:
            port = server.wait_ready(30)
            client_session(case, port, (1000, SMALL, 1, LARGE, 1))  # warm up
            started = time.perf_counter()
            with _profiled(profiler, client_path):
                result = client_session(case, port, (chunks, SMALL, 1, LARGE, 1))
            wall = time.perf_counter() - started
        finally:
            server.stop(grace=60)
        print(
            f"{case}: {chunks} chunks of {SMALL} B in {result['small_s']:.2f} s under {profiler} "
            f"({chunks / result['small_s']:,.0f} chunks/s; client session {wall:.2f} s; the "
            "server's profile covers its whole life, warm-up included)"
        )
        for side, path in (("client", client_path), ("server", server_path)):
            print(f"\n== {side}: top {top} functions by own time ==")
            if profiler == "pyinstrument":
                lines = Path(path).read_text(encoding="utf-8").splitlines()
                print("\n".join(lines[: top + 8]))
            else:
                pstats.Stats(path).strip_dirs().sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a benchmark server (prints 'ready <port>')")
    serve.add_argument("impl", choices=[*BACKENDS, *PEERS])
    serve.add_argument("transport", choices=[*TRANSPORTS, "h2"])
    serve.add_argument("--profile", help="asyncio and peers: profile the server to this file")
    serve.add_argument("--profiler", choices=["cprofile", "pyinstrument"], default="cprofile")
    prof = sub.add_parser("profile", help="profile the asyncio 64 B path, both processes")
    prof.add_argument("--chunks", type=int, default=200_000)
    prof.add_argument("--top", type=int, default=25)
    prof.add_argument("--transport", choices=TRANSPORTS, default="tcp")
    prof.add_argument("--profiler", choices=["cprofile", "pyinstrument"], default="cprofile")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve_main(args.impl, args.transport, args.profile, args.profiler)
    else:
        profile_main(args.chunks, args.top, args.transport, args.profiler)


if __name__ == "__main__":
    main()
