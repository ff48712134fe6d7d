"""The ``streamproto`` command line (also ``python -m streamproto``); docs/cli.md is its page.

    streamproto serve MODULE:ATTR --url URL [--url URL ...] [--backend asyncio|trio|sync]
    streamproto tail URL CHANNEL STREAM [--after-seq N | --live] [--format lines|raw|json|hex]
    streamproto open URL CHANNEL [ARGS] [--format ...]
    streamproto upload URL CHANNEL [ID] FILE
    streamproto dump [FILE] [--json]
    streamproto conformance URL [--json PATH] [--case ID ...]
    streamproto diagrams

Data goes to stdout, everything else (errors, gaps, progress, logs) to stderr. The client
commands run on the asyncio backend; ``serve --backend`` picks any. Exit codes (see
:class:`Exit`): 0 success, 1 the stream, upload, conformance run or dump failed, 2 usage error,
3 connection error, 130 interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import enum
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from streamproto import ErrorCode, ErrorKind, Hub, StreamProtoError, code_name
from streamproto._diagrams import render
from streamproto._frames import MAX_FRAME_SIZE_LIMIT, Frame, FrameDecoder

from ._common import Backoff, Gap
from ._hubs import new_hub
from ._schemes import schemes
from .trace import JsonLinesTrace, Tracer, frame_records

__all__ = ["Exit", "Progress", "main"]

log = logging.getLogger("streamproto.cli")

FORMATS = ("lines", "raw", "json", "hex")


class Exit(enum.IntEnum):
    """The command line's exit codes."""

    #: Done: the stream ended, the upload was taken, every conformance case passed.
    OK = 0
    #: The server answered with an error (the stream failed, the request was rejected, the
    #: upload was cancelled), a conformance case failed, or ``dump`` met invalid bytes.
    FAILED = 1
    #: Bad arguments: an invalid URL or name, a MODULE:ATTR that does not load.
    USAGE = 2
    #: No connection: the server cannot be reached, refused the handshake, or the connection
    #: was lost for good (after the reconnect attempts); ``serve`` cannot listen.
    CONNECTION = 3
    #: Interrupted: SIGINT or SIGTERM stopped a client command before it was done.
    INTERRUPTED = 130


class UsageError(Exception):
    """A bad argument found after parsing (exit 2)."""


def _error_line(prog: str, exc: StreamProtoError) -> str:
    """``prog: CODE_NAME (code): message (its docs page)``."""
    text = f"{prog}: {code_name(exc.code)} ({exc.code}): {exc.message}"
    if exc.code in ErrorCode._value2member_map_:
        text += f" (see {ErrorCode(exc.code).doc_path})"
    return text


def _exit_for(exc: StreamProtoError) -> Exit:
    """USAGE for our own bad arguments, CONNECTION for a connection's codes, else FAILED."""
    if exc.code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.INVALID_NAME):
        return Exit.USAGE
    known = ErrorCode._value2member_map_.get(exc.code)
    if exc.code == ErrorCode.CONNECTION_CLOSED or (
        isinstance(known, ErrorCode) and known.kind is ErrorKind.CONNECTION
    ):
        return Exit.CONNECTION
    return Exit.FAILED


# -- output -------------------------------------------------------------------------------------


class Printer:
    """Writes chunks and gaps to ``out`` (binary) in one of :data:`FORMATS`; gaps go to
    ``err`` except in the json format, where they are records like the chunks."""

    def __init__(self, fmt: str, out: IO[bytes], err: IO[str], prog: str) -> None:
        self.fmt = fmt
        self.out = out
        self.err = err
        self.prog = prog

    def chunk(self, seq: int, data: bytes) -> None:
        """One chunk with its seq."""
        if self.fmt == "raw":
            self.out.write(data)
        elif self.fmt == "lines":
            self.out.write(data if data.endswith(b"\n") else data + b"\n")
        elif self.fmt == "hex":
            self.out.write(b"%d %s\n" % (seq, data.hex().encode()))
        else:
            record: dict[str, Any] = {"seq": seq, "length": len(data)}
            try:
                record["text"] = data.decode()
            except UnicodeDecodeError:
                record["base64"] = base64.b64encode(data).decode()
            self.out.write(json.dumps(record).encode() + b"\n")

    def gap(self, gap: Gap) -> None:
        """Seqs that will never arrive."""
        if self.fmt == "json":
            record = {"gap": [gap.from_seq, gap.to_seq], "reason": gap.reason.name}
            self.out.write(json.dumps(record).encode() + b"\n")
        else:
            self.err.write(
                f"{self.prog}: seqs {gap.from_seq}..{gap.to_seq} are missing "
                f"({gap.reason.name.lower()})\n"
            )
            self.err.flush()


def _numbered(items: list[bytes | Gap], last_seq: int) -> Iterator[tuple[int, bytes | Gap]]:
    """A batch's items with their seqs, given the seq of the batch's last item."""
    seqs = []
    seq = last_seq
    for item in reversed(items):
        if isinstance(item, Gap):
            seqs.append(item.to_seq)
            seq = item.from_seq - 1
        else:
            seqs.append(seq)
            seq -= 1
    return zip(reversed(seqs), items, strict=True)


class Progress:
    """A one-line progress bar redrawn in place on a terminal (at most ``hz`` times a
    second, and at the end)."""

    WIDTH = 30

    def __init__(
        self,
        out: IO[str],
        total: int | None,
        *,
        label: str = "",
        clock: Callable[[], float] = time.monotonic,
        hz: float = 10.0,
    ) -> None:
        self.out = out
        self.total = total
        self.label = label
        self.clock = clock
        self.interval = 1.0 / hz
        self.done = 0
        self.started = clock()
        self._drawn = -1.0

    def update(self, nbytes: int) -> None:
        """``nbytes`` more were sent."""
        self.done += nbytes
        now = self.clock()
        if now - self._drawn >= self.interval:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        self._draw(self.clock())
        self.out.write("\n")
        self.out.flush()

    def line(self, now: float) -> str:
        """The bar as it reads at ``now``."""
        rate = self.done / max(now - self.started, 1e-6)
        done = _size(self.done)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            full = int(frac * self.WIDTH)
            bar = "#" * full + "." * (self.WIDTH - full)
            body = f"[{bar}] {frac * 100:3.0f}% {done}/{_size(self.total)}"
        else:
            body = done
        return f"{self.label}{body} {_size(rate)}/s"

    def _draw(self, now: float) -> None:
        self._drawn = now
        self.out.write("\r" + self.line(now) + "\x1b[K")
        self.out.flush()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- commands -----------------------------------------------------------------------------------


def _tracer(args: argparse.Namespace, stack: contextlib.ExitStack) -> Tracer | None:
    if not args.trace:
        return None
    if args.trace == "-":
        return JsonLinesTrace(sys.stderr)
    return JsonLinesTrace(stack.enter_context(open(args.trace, "w", encoding="utf-8")))


def _backoff(args: argparse.Namespace) -> Backoff:
    return Backoff(attempts=args.retries)


async def _read_stream(sub: Any, printer: Printer) -> None:
    out = printer.out
    async for batch in sub.batches():
        for seq, item in _numbered(batch, sub.seq):
            if isinstance(item, Gap):
                printer.gap(item)
            else:
                printer.chunk(seq, item)
        out.flush()


async def _tail(args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    from . import asyncio as sp  # noqa: PLC0415 - load the backend only for network commands

    printer = Printer(args.format, sys.stdout.buffer, sys.stderr, "streamproto tail")
    async with await sp.connect(
        args.url, reconnect=_backoff(args), timeout=args.timeout, trace=tracer
    ) as client:
        sub = client.subscribe(
            args.channel, args.stream, after_seq=args.after_seq, tail=args.live, on_gap="item"
        )
        await _read_stream(sub, printer)
    return Exit.OK


async def _open(args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    from . import asyncio as sp  # noqa: PLC0415

    printer = Printer(args.format, sys.stdout.buffer, sys.stderr, "streamproto open")
    async with await sp.connect(
        args.url, reconnect=_backoff(args), timeout=args.timeout, trace=tracer
    ) as client:
        sub = client.open(args.channel, args.args.encode(), on_gap="item")
        stream_id = await sub.accepted()
        log.info("opened %s/%s", args.channel, stream_id)
        await _read_stream(sub, printer)
    return Exit.OK


async def _upload(args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    from . import asyncio as sp  # noqa: PLC0415

    if len(args.rest) == 1:
        stream_id, path = "", args.rest[0]
    elif len(args.rest) == 2:
        stream_id, path = args.rest
    else:
        raise UsageError("upload takes URL CHANNEL [ID] FILE")
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as stack:
        if path == "-":
            source: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            try:
                source = stack.enter_context(open(path, "rb"))
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
            total = os.fstat(source.fileno()).st_size
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        progress = Progress(sys.stderr, total, label=f"{os.path.basename(path)} ") if show else None
        async with await sp.connect(
            args.url, reconnect=_backoff(args), timeout=args.timeout, trace=tracer
        ) as client:
            async with client.upload(args.channel, stream_id, args.args.encode()) as up:
                while chunk := await loop.run_in_executor(None, source.read, args.chunk_size):
                    await up.write(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
            if progress is not None:
                progress.finish()
            print(up.stream_id, flush=True)
    return Exit.OK


def load_target(target: str) -> object:
    """The object ``MODULE:ATTR`` names (ATTR may be dotted)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR, got {target!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Hub) and not callable(obj):
        raise UsageError(f"{target} is neither a streamproto.Hub nor a function of the server")
    return obj


def _app(args: argparse.Namespace) -> tuple[object, Hub]:
    sys.path.insert(0, args.app_dir)
    target = load_target(args.target)
    return target, target if isinstance(target, Hub) else new_hub()


def _serving(target: str, servers: list[Any]) -> None:
    for server in servers:
        print(f"serving {target} on {server.address}", flush=True)


def _cannot_listen(url: str, exc: BaseException) -> Exit:
    print(f"streamproto serve: cannot listen on {url}: {exc}", file=sys.stderr)
    return Exit.CONNECTION


async def _serve(args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    from . import asyncio as sp  # noqa: PLC0415

    target, hub = _app(args)
    servers: list[sp.Server] = []
    try:
        for url in args.url:
            try:
                servers.append(await sp.serve(hub, url, trace=tracer))
            except OSError as exc:
                return _cannot_listen(url, exc)
        if not isinstance(target, Hub):
            setup = target(servers[0])  # type: ignore[operator]
            if inspect.isawaitable(setup):
                await setup
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        _serving(args.target, servers)
        await stop.wait()
    finally:
        await asyncio.gather(*(server.shutdown(timeout=args.grace) for server in servers))
    log.info("stopped")
    return Exit.OK


async def _serve_trio(args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    import trio  # noqa: PLC0415 - trio is an optional extra

    from . import trio as backend  # noqa: PLC0415

    target, hub = _app(args)
    async with contextlib.AsyncExitStack() as stack:
        servers: list[backend.Server] = []
        for url in args.url:
            try:
                servers.append(
                    await stack.enter_async_context(backend.serve(hub, url, trace=tracer))
                )
            except OSError as exc:
                return _cannot_listen(url, exc)
            except BaseExceptionGroup as group:  # (trio's nursery wraps the bind's error)
                failed = group.subgroup(OSError)
                if failed is None:
                    raise
                leaf: BaseException = failed
                while isinstance(leaf, BaseExceptionGroup):
                    leaf = leaf.exceptions[0]
                return _cannot_listen(url, leaf)
        if not isinstance(target, Hub):
            setup = target(servers[0])  # type: ignore[operator]
            if inspect.isawaitable(setup):
                await setup
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            _serving(args.target, servers)
            async for _ in signals:
                break
        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(server.shutdown, args.grace)
    log.info("stopped")
    return Exit.OK


def _serve_sync(args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    import threading  # noqa: PLC0415

    from . import sync as backend  # noqa: PLC0415

    target, hub = _app(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    servers: list[backend.Server] = []
    try:
        for url in args.url:
            try:
                servers.append(backend.serve(hub, url, trace=tracer))
            except OSError as exc:
                return _cannot_listen(url, exc)
        if not isinstance(target, Hub):
            target(servers[0])  # type: ignore[operator]
        _serving(args.target, servers)
        while not stop.wait(0.5):  # (a timed wait, so the signal handler gets to run)
            pass
    finally:
        for server in servers:
            server.shutdown(timeout=args.grace)
    log.info("stopped")
    return Exit.OK


def _dump(args: argparse.Namespace) -> Exit:
    with contextlib.ExitStack() as stack:
        if args.file == "-":
            source: IO[bytes] = sys.stdin.buffer
        else:
            try:
                source = stack.enter_context(open(args.file, "rb"))
            except OSError as exc:
                raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        decoder = FrameDecoder(MAX_FRAME_SIZE_LIMIT)
        count = 0
        while block := source.read(1 << 16):
            frames: list[Frame] = []
            error = decoder.feed_into(block, frames)
            for frame in frames:
                for record in frame_records(frame):
                    count += 1
                    print(json.dumps(record) if args.json else _describe(count, record))
            if error is not None:
                print(
                    f"streamproto dump: {code_name(error.code)}: {error.message}", file=sys.stderr
                )
                return Exit.FAILED
        if decoder.buffered:
            print(
                f"streamproto dump: {decoder.buffered} bytes of an incomplete frame at the end",
                file=sys.stderr,
            )
            return Exit.FAILED
    return Exit.OK


def _describe(index: int, record: dict[str, Any]) -> str:
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k != "type")
    return f"{index:6d} {record['type']} {fields}".rstrip()


def _conformance(args: argparse.Namespace) -> Exit:
    # The runner does I/O, so it lives with the adapters.
    from .conformance import run  # noqa: PLC0415 - keeps --help fast

    report = run(args.url, only=set(args.case or ()), timeout=args.timeout, out=print)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    return Exit.OK if report.failed == 0 else Exit.FAILED


# -- parser -------------------------------------------------------------------------------------


def _url_help() -> str:
    """The help of a URL argument: the registered schemes (``transports._schemes``)."""
    listed = ", ".join(f"{name}://" for name in schemes())
    return f"{listed} (e.g. tcp://host:port, ws://host:port/path, unix:///path/to/socket)"


_EPILOG = """exit codes: 0 done; 1 the server answered with an error, a conformance case
failed, or dump met invalid bytes; 2 usage error; 3 connection error; 130 interrupted.
See docs/cli.md."""


def parser() -> argparse.ArgumentParser:
    """The argument parser (its help texts are the reference of every option)."""
    top = argparse.ArgumentParser(
        prog="streamproto",
        description="Serve, tail, open and upload streamproto streams; decode captures.",
        epilog=_EPILOG,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="stderr log level of the streamproto.* loggers (default: warning; serve: info)",
    )
    net = argparse.ArgumentParser(add_help=False, parents=[common])
    net.add_argument(
        "--trace",
        metavar="FILE",
        help="write one JSON line per frame in and out to FILE ('-': stderr)",
    )
    client = argparse.ArgumentParser(add_help=False, parents=[net])
    client.add_argument("url", help=_url_help())
    client.add_argument("channel", help="the channel, namespace:name")
    client.add_argument(
        "--retries", type=int, default=8, metavar="N", help="reconnect attempts (default 8)"
    )
    client.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="connect timeout in seconds"
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--format",
        choices=FORMATS,
        default="lines",
        help="lines: one chunk per line (default); raw: the bytes only; json: a record per "
        "chunk and gap; hex: seq and hex",
    )

    serve = commands.add_parser(
        "serve",
        parents=[net],
        help="serve an application's hub",
        description="Serve MODULE:ATTR — a streamproto.Hub, or a function that takes the "
        "(first) asyncio server and registers channels on it (it may be async) — at every "
        "--url. SIGINT or SIGTERM shuts down gracefully: GOAWAY to every connection, open "
        "streams drain for --grace seconds.",
        epilog=_EPILOG,
    )
    serve.add_argument("target", metavar="MODULE:ATTR", help="e.g. myapp.streams:hub")
    serve.add_argument("--url", action="append", required=True, help=_url_help())
    serve.add_argument(
        "--grace", type=float, default=5.0, metavar="S", help="seconds to drain (default 5)"
    )
    serve.add_argument(
        "--app-dir", metavar="DIR", default=".", help="import MODULE from DIR (default: .)"
    )
    serve.add_argument(
        "--backend",
        choices=("asyncio", "trio", "sync"),
        default="asyncio",
        help="the backend that serves (default asyncio); a setup function gets its server",
    )

    tail = commands.add_parser(
        "tail",
        parents=[client, output],
        help="print a stream's chunks as they arrive",
        description="Subscribe to CHANNEL/STREAM and print its chunks until it ends, "
        "reconnecting and resuming after a lost connection. Missing seqs are reported.",
        epilog=_EPILOG,
    )
    tail.add_argument("stream", help="the stream id")
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--after-seq", type=int, default=0, metavar="N", help="start after seq N (default 0)"
    )
    start.add_argument("--live", action="store_true", help="only chunks written from now on")

    open_ = commands.add_parser(
        "open",
        parents=[client, output],
        help="ask a channel to start a stream and print it",
        description="Send OPEN with ARGS to CHANNEL and print the stream it starts.",
        epilog=_EPILOG,
    )
    open_.add_argument("args", nargs="?", default="", help="the arguments (UTF-8 text)")

    upload = commands.add_parser(
        "upload",
        parents=[client],
        help="upload a file",
        description="Upload FILE ('-': stdin) to CHANNEL as stream ID (default: the server "
        "picks); prints the stream id. A progress bar is drawn when stderr is a terminal.",
        epilog=_EPILOG,
    )
    upload.add_argument("rest", nargs="+", metavar="[ID] FILE", help="stream id and file")
    upload.add_argument("--args", default="", help="the upload's arguments (UTF-8 text)")
    upload.add_argument(
        "--chunk-size", type=int, default=64 << 10, metavar="B", help="bytes per chunk"
    )
    upload.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the progress bar (default: when stderr is a terminal)",
    )

    dump = commands.add_parser(
        "dump",
        parents=[common],
        help="decode a captured byte stream into frames",
        description="Decode the bytes one side of a tcp:// connection sent (FILE, or stdin) "
        "into one line per frame: type and fields, sizes instead of payloads.",
        epilog=_EPILOG,
    )
    dump.add_argument("file", nargs="?", default="-", help="the capture (default: stdin)")
    dump.add_argument("--json", action="store_true", help="JSON lines, as --trace writes")

    conformance = commands.add_parser(
        "conformance",
        parents=[common],
        help="run the wire conformance cases against a server",
        epilog=_EPILOG,
    )
    conformance.add_argument("url", help=_url_help())
    conformance.add_argument("--json", metavar="PATH", help="also write a JSON report here")
    conformance.add_argument("--case", action="append", metavar="ID", help="run only these")
    conformance.add_argument("--timeout", type=float, default=5.0, help="seconds per wait")
    commands.add_parser(
        "diagrams",
        parents=[common],
        help="print the state diagrams (docs/state-machines.md)",
    )
    return top


_ASYNC = {"tail": _tail, "open": _open, "upload": _upload}


async def _until_signal(command: Any, args: argparse.Namespace, tracer: Tracer | None) -> Exit:
    """Run a client command; SIGINT or SIGTERM ends it (its client says GOAWAY on the way out)
    with status 130. Installed on the loop, so they work even where the shell ignores SIGINT
    (a background job)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def stop(signum: int) -> None:
        signalled.append(signum)
        if task is not None:
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await command(args, tracer)  # type: ignore[no-any-return]
    except asyncio.CancelledError:
        if signalled:
            return Exit.INTERRUPTED
        raise


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see :class:`Exit`)."""
    top = parser()
    args = top.parse_args(argv)
    level = args.log_level or ("info" if args.command == "serve" else "warning")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("streamproto")
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(level.upper())
    prog = f"streamproto {args.command}"
    try:
        if args.command == "diagrams":
            print(render(), end="")
            return Exit.OK
        if args.command == "dump":
            return _dump(args)
        if args.command == "conformance":
            return _conformance(args)
        with contextlib.ExitStack() as stack:
            tracer = _tracer(args, stack)
            if args.command == "serve":  # (its own signal handling: a graceful shutdown)
                if args.backend == "trio":
                    import trio  # noqa: PLC0415 - trio is an optional extra

                    return trio.run(_serve_trio, args, tracer)
                if args.backend == "sync":
                    return _serve_sync(args, tracer)
                return asyncio.run(_serve(args, tracer))
            return asyncio.run(_until_signal(_ASYNC[args.command], args, tracer))
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return Exit.USAGE
    except StreamProtoError as exc:
        print(_error_line(prog, exc), file=sys.stderr)
        return _exit_for(exc)
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, BrokenPipeError):  # (``| head``): the reader is gone, not an error
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return Exit.OK
        print(f"{prog}: cannot connect to {getattr(args, 'url', '?')}: {exc}", file=sys.stderr)
        return Exit.CONNECTION
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    finally:  # (main may run inside a program that configured logging its own way)
        root.removeHandler(handler)
        root.setLevel(saved_level)


if __name__ == "__main__":
    sys.exit(main())
