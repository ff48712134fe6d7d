"""The command line end to end: real subprocesses against a live ``streamproto serve``."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy

from streamproto import ErrorCode
from streamproto._diagrams import render
from streamproto._frames import (
    Data,
    End,
    Goaway,
    Hello,
    Subscribe,
    Unknown,
    encode,
)
from transports.cli import Exit

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
WAIT = 60.0  # generous: a busy two-core machine runs the suite
CLI = [sys.executable, "-m", "streamproto"]


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*CLI, *args], check=False, capture_output=True, text=True, timeout=WAIT, cwd=ROOT, **kwargs
    )


class Served:
    """``streamproto serve cli_app:setup`` in a subprocess, at a tcp:// and a ws:// URL."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "cli_app:setup",
                "--app-dir",
                str(TESTS),
                "--url",
                "tcp://127.0.0.1:0",
                "--url",
                "ws://127.0.0.1:0/streams",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline(), self.proc.stdout.readline()]
        assert all(line.startswith("serving cli_app:setup on ") for line in lines), lines
        self.tcp, self.ws = (line.split()[-1] for line in lines)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        _, err = self.proc.communicate(timeout=WAIT)
        return self.proc.returncode, err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served({"CLI_APP_UPLOAD_DIR": str(tmp_path)})
    try:
        yield server
    finally:
        server.stop()


# -- open, tail, formats, errors ----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "ws"])
def test_open_prints_one_chunk_per_line(served: Served, scheme: str) -> None:
    url = served.tcp if scheme == "tcp" else served.ws
    done = run("open", url, "demo:count", "4")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "line 1\nline 2\nline 3\nline 4\n",
        "",
    )


def test_formats(served: Served) -> None:
    as_json = run("open", served.tcp, "demo:count", "2", "--format", "json")
    assert [json.loads(x) for x in as_json.stdout.splitlines()] == [
        {"seq": 1, "length": 6, "text": "line 1"},
        {"seq": 2, "length": 6, "text": "line 2"},
    ]
    as_hex = run("open", served.tcp, "demo:count", "2", "--format", "hex")
    assert as_hex.stdout == f"1 {b'line 1'.hex()}\n2 {b'line 2'.hex()}\n"
    raw = run("open", served.tcp, "demo:count", "3", "--format", "raw")
    assert raw.stdout == "line 1line 2line 3"


def test_tail_replays_a_finished_stream_after_seq(served: Served) -> None:
    opened = run("open", served.tcp, "demo:count", "5", "--format", "json", "--log-level", "info")
    assert opened.returncode == 0
    assert "opened demo:count/" in opened.stderr
    stream_id = opened.stderr.split("opened demo:count/")[1].split()[0]
    tail = run("tail", served.ws, "demo:count", stream_id, "--after-seq", "3")
    assert (tail.returncode, tail.stdout) == (0, "line 4\nline 5\n")


def test_missing_seqs_are_reported_never_skipped(served: Served) -> None:
    opened = run("open", served.tcp, "demo:short", "5", "--log-level", "info")
    stream_id = opened.stderr.split("opened demo:short/")[1].split()[0]
    text = run("tail", served.tcp, "demo:short", stream_id)
    assert (text.returncode, text.stdout) == (0, "line 4\nline 5\n")
    assert text.stderr == "streamproto tail: seqs 1..3 are missing (evicted)\n"
    as_json = run("tail", served.tcp, "demo:short", stream_id, "--format", "json")
    assert [json.loads(x) for x in as_json.stdout.splitlines()] == [
        {"gap": [1, 3], "reason": "EVICTED"},
        {"seq": 4, "length": 6, "text": "line 4"},
        {"seq": 5, "length": 6, "text": "line 5"},
    ]
    assert as_json.stderr == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tail_live_starts_with_what_is_written_next_and_stops_on_a_signal(signum: int) -> None:
    server = Served({"CLI_APP_LOG_LINES": "100000", "CLI_APP_LOG_INTERVAL": "0.02"})
    try:
        time.sleep(0.5)  # some lines are written before the tail comes
        with subprocess.Popen(
            [*CLI, "tail", server.tcp, "logs:app", "app", "--live", "--format", "json"],
            stdout=subprocess.PIPE,
            text=True,
        ) as tail:
            assert tail.stdout is not None
            first, second = (json.loads(tail.stdout.readline()) for _ in range(2))
            tail.send_signal(signum)
            tail.wait(WAIT)
    finally:
        _, log = server.stop()
    assert tail.returncode == Exit.INTERRUPTED
    assert "connection closed: NO_ERROR" in log  # the tail said goodbye on its way out
    assert first["seq"] > 1
    assert second["seq"] == first["seq"] + 1
    assert first["text"] == f"line {first['seq']}"


def test_a_failed_stream_exits_1_with_its_code(served: Served) -> None:
    done = run("open", served.tcp, "demo:fail")
    assert done.returncode == Exit.FAILED
    assert done.stdout == "before the failure\n"
    assert done.stderr == (
        "streamproto open: APPLICATION_4001 (4001): the application failed on purpose\n"
    )


def test_an_unknown_channel_names_its_code_and_docs_page(served: Served) -> None:
    done = run("tail", served.tcp, "logs:nope", "x")
    assert done.returncode == Exit.FAILED
    page = "docs/errors/unknown-channel.md"
    assert f"UNKNOWN_CHANNEL ({int(ErrorCode.UNKNOWN_CHANNEL)}): no channel 'logs:nope'" in (
        done.stderr
    )
    assert page in done.stderr
    assert (ROOT / page).is_file()


def test_usage_and_connection_errors() -> None:
    bad_url = run("tail", "ftp://127.0.0.1:1", "logs:app", "x")
    assert bad_url.returncode == Exit.USAGE
    assert "INVALID_ARGUMENT" in bad_url.stderr
    bad_name = run("open", "tcp://127.0.0.1:1", "no-namespace", "--retries", "0")
    assert bad_name.returncode in (Exit.USAGE, Exit.CONNECTION)
    refused = run("tail", "tcp://127.0.0.1:1", "logs:app", "x", "--retries", "0")
    assert refused.returncode == Exit.CONNECTION
    assert refused.stderr.startswith("streamproto tail: cannot connect to tcp://127.0.0.1:1")
    missing = run("upload", "tcp://127.0.0.1:1", "demo:upload", "/nonexistent/file")
    assert (missing.returncode, missing.stderr.split(":")[0]) == (Exit.USAGE, "streamproto upload")
    too_many = run("upload", "tcp://127.0.0.1:1", "demo:upload", "a", "b", "c")
    assert too_many.returncode == Exit.USAGE
    no_command = run()
    assert no_command.returncode == 2  # argparse's usage error
    assert "COMMAND" in no_command.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cli_app", "expected MODULE:ATTR"),
        ("no_such_module_here:app", "cannot import 'no_such_module_here'"),
        ("cli_app:missing", "has no attribute 'missing'"),
        ("cli_app:not_an_app", "neither a streamproto.Hub nor a function"),
    ],
)
def test_serve_refuses_what_it_cannot_serve(target: str, message: str) -> None:
    done = run("serve", target, "--app-dir", str(TESTS), "--url", "tcp://127.0.0.1:0")
    assert done.returncode == Exit.USAGE
    assert message in done.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio", "sync"])
def test_serve_a_bare_hub_on_every_backend(tmp_path: Path, backend: str) -> None:
    """At a tcp://, a ws:// and a unix:// URL; the socket file goes when the server does."""
    sock = tmp_path / "hub.sock"
    with subprocess.Popen(
        [
            *CLI,
            "serve",
            "cli_app:hub",
            "--app-dir",
            str(TESTS),
            "--backend",
            backend,
            "--url",
            "tcp://127.0.0.1:0",
            "--url",
            "ws://127.0.0.1:0/",
            "--url",
            f"unix://{sock}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[-1] for _ in range(3)]
        tails = [run("tail", url, "demo:static", "s") for url in urls]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    assert urls[2] == f"unix://{sock}"
    assert [(t.returncode, t.stdout) for t in tails] == [(0, "first\nsecond\n")] * 3
    assert proc.returncode == 0, err
    assert err.count("shutting down") == 3
    assert err.rstrip().endswith("stopped")
    assert not sock.exists()


@pytest.mark.parametrize("backend", ["asyncio", "trio", "sync"])
def test_serve_cannot_listen_twice_on_a_port(served: Served, backend: str) -> None:
    args = ["cli_app:hub", "--app-dir", str(TESTS), "--url", served.tcp, "--backend", backend]
    done = run("serve", *args)
    assert done.returncode == Exit.CONNECTION, done.stderr
    assert f"cannot listen on {served.tcp}" in done.stderr


def test_help_texts_and_the_console_script() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("serve", "tail", "open", "upload", "dump", "conformance", "diagrams"):
        assert command in done.stdout
    assert "exit codes" in done.stdout
    script = shutil.which("streamproto", path=str(Path(sys.executable).parent))
    assert script is not None
    tail_help = subprocess.run(
        [script, "tail", "--help"], check=False, capture_output=True, text=True, timeout=WAIT
    )
    assert tail_help.returncode == 0
    assert "--after-seq" in tail_help.stdout
    assert "--format {lines,raw,json,hex}" in tail_help.stdout
    # URL arguments list the registered schemes (argparse wraps help lines at spaces).
    for command in ("serve", "tail", "conformance"):
        text = " ".join(run(command, "--help").stdout.split())
        assert "http://, tcp://, unix://, ws://" in text, command


def test_diagrams_as_today() -> None:
    done = run("diagrams")
    assert (done.returncode, done.stdout) == (0, render())


# -- tail across a dropped connection, serve's shutdown, tracing --------------------------------


def test_tail_survives_a_server_side_drop(tmp_path: Path) -> None:
    # Six seconds of lines: the cut comes while they flow, however slowly the tail starts.
    lines = 150
    server = Served({"CLI_APP_LOG_LINES": str(lines), "CLI_APP_LOG_INTERVAL": "0.04"})
    trace = tmp_path / "trace.jsonl"
    try:
        with (
            FaultProxy(server.tcp) as proxy,
            subprocess.Popen(
                [*CLI, "tail", proxy.url, "logs:app", "app", "--trace", str(trace)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ) as tail,
        ):
            assert tail.stdout is not None
            assert tail.stderr is not None
            first = [tail.stdout.readline() for _ in range(5)]
            proxy.cut_all()  # both sockets of the connection close under the client
            # (not communicate(): it reads the descriptor, past what readline buffered)
            rest = tail.stdout.read()
            err = tail.stderr.read()
            tail.wait(WAIT)
    finally:
        server.stop()
    assert tail.returncode == 0, err
    assert "".join(first) + rest == "".join(f"line {i}\n" for i in range(1, lines + 1))
    records = [json.loads(x) for x in trace.read_text().splitlines()]
    hellos = [r for r in records if r["frame"]["type"] == "HELLO"]
    assert [h["event"] for h in hellos] == ["frame_sent", "frame_sent"]
    assert hellos[0]["conn"] != hellos[1]["conn"]  # a second connection
    assert hellos[0]["frame"]["resume_token_length"] == 0
    assert hellos[1]["frame"]["resume_token_length"] > 0  # it resumed the session
    welcome = [r for r in records if r["frame"]["type"] == "WELCOME"]
    assert [w["frame"]["resumed"] for w in welcome] == [False, True]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_shuts_down_gracefully_with_goaway(tmp_path: Path, signum: int) -> None:
    server = Served({"CLI_APP_LOG_LINES": "100000", "CLI_APP_LOG_INTERVAL": "0.05"}, "--grace", "1")
    trace = tmp_path / "trace.jsonl"
    tail = subprocess.Popen(
        [*CLI, "tail", server.ws, "logs:app", "app", "--trace", str(trace), "--retries", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stdout is not None
    assert tail.stdout.readline() == "line 1\n"
    started = time.monotonic()
    status, err = server.stop(signum)
    took = time.monotonic() - started
    _, tail_err = tail.communicate(timeout=WAIT)
    assert status == 0, err
    assert took < WAIT / 2
    assert f"listening on {server.tcp}" in err
    assert f"shutting down {server.ws}: GOAWAY to 1 connections, 1 s to drain" in err
    assert err.rstrip().endswith("INFO streamproto.cli stopped")
    assert "connection closed: SERVER_SHUTDOWN" in err  # the open stream did not drain in 1 s
    goaways = [
        json.loads(x)["frame"]
        for x in trace.read_text().splitlines()
        if '"GOAWAY"' in x and "frame_received" in x
    ]
    assert [g["code_name"] for g in goaways][:1] == ["NO_ERROR"]
    assert tail.returncode == Exit.CONNECTION, tail_err


# -- upload and its progress bar ----------------------------------------------------------------


def test_upload_names_the_stream_and_is_quiet_off_a_terminal(
    served: Served, tmp_path: Path
) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))
    named = run("upload", served.tcp, "demo:upload", "my-file", str(data))
    assert (named.returncode, named.stdout, named.stderr) == (0, "my-file\n", "")
    assert (tmp_path / "my-file").read_text() == "300000"
    picked = run("upload", served.ws, "demo:upload", str(data), "--chunk-size", "1000")
    assert picked.returncode == 0
    stream_id = picked.stdout.strip()
    assert (tmp_path / stream_id).read_text() == "300000"
    piped = run("upload", served.tcp, "demo:upload", "from-stdin", "-", input="hello")
    assert (piped.returncode, piped.stdout) == (0, "from-stdin\n")
    assert (tmp_path / "from-stdin").read_text() == "5"


def test_a_cancelled_upload_exits_1(served: Served, tmp_path: Path) -> None:
    data = tmp_path / "big.bin"
    data.write_bytes(bytes(2_000_000))
    done = run("upload", served.tcp, "demo:upload", "big", str(data), "--args", "cancel")
    assert done.returncode == Exit.FAILED
    assert "UPLOAD_CANCELLED" in done.stderr
    assert "enough" in done.stderr


def test_upload_draws_a_progress_bar_on_a_terminal(served: Served, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(3 << 20))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "upload", served.tcp, "demo:upload", "tty", str(data), "--chunk-size", "16384"],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=ROOT,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                block = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not block:
                break
            screen += block
        elif proc.poll() is not None:
            break
    os.close(master)
    out, _ = proc.communicate(timeout=WAIT)
    assert (proc.returncode, out) == (0, b"tty\n")
    text = screen.decode().replace("\r\n", "\n")  # (the terminal writes \n as \r\n)
    assert text.startswith("\rdata.bin [")
    final = text.rsplit("\r", 1)[1]
    assert final.startswith("data.bin [" + "#" * 30 + "] 100% 3.0 MiB/3.0 MiB ")
    assert "/s" in final
    assert (tmp_path / "tty").read_text() == str(3 << 20)


def test_progress_bar_without_a_known_size() -> None:
    import io

    from transports.cli import Progress

    now = [0.0]
    out = io.StringIO()
    bar = Progress(out, None, label="-: ", clock=lambda: now[0])
    now[0] = 2.0
    bar.update(3 << 20)
    bar.update(1)  # within the redraw interval: not drawn
    bar.finish()
    assert out.getvalue().count("\r") == 2
    assert out.getvalue().endswith("\r-: 3.0 MiB 1.5 MiB/s\x1b[K\n")


# -- dump ---------------------------------------------------------------------------------------


def capture() -> bytes:
    return b"".join(
        [
            encode(Hello(resume_token="secret-token", auth=b"password")),
            encode(Subscribe(1, "logs:app", "app", after_seq=2)),
            encode(Data(1, 3, (b"abc", b"defgh"))),
            encode(Unknown(0x7E, 0, 0, b"xyz")),
            encode(End(1, 4)),
            encode(Goaway(0, 1, "bye")),
        ]
    )


def test_dump_decodes_a_capture_into_frames(tmp_path: Path) -> None:
    path = tmp_path / "capture.bin"
    path.write_bytes(capture())
    done = run("dump", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [
        "HELLO", "SUBSCRIBE", "DATA", "DATA", "UNKNOWN", "END", "GOAWAY",
    ]  # fmt: skip
    assert "seq=4 length=5" in lines[3]
    assert "secret" not in done.stdout
    assert "password" not in done.stdout
    assert "resume_token_length=12" in lines[0]
    as_json = subprocess.run(
        [*CLI, "dump", "--json"], input=capture(), capture_output=True, timeout=WAIT, check=True
    )
    records = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert records[2] == {"type": "DATA", "handle": 1, "seq": 3, "length": 3}
    assert records[-1]["code_name"] == "NO_ERROR"


def test_dump_reports_bad_and_truncated_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(encode(End(1, 4)) + b"\x00\x00\x00\x01\x05\x00\x00\x00\x00\x01X")
    bad = run("dump", str(path))
    assert bad.returncode == Exit.FAILED
    assert bad.stdout.split()[1] == "END"
    assert bad.stderr.startswith("streamproto dump: MALFORMED_FRAME")
    path.write_bytes(capture()[:-3])
    cut = run("dump", str(path))
    assert cut.returncode == Exit.FAILED
    assert "bytes of an incomplete frame at the end" in cut.stderr
    missing = run("dump", str(tmp_path / "nothing"))
    assert missing.returncode == Exit.USAGE
