"""The wire conformance runner passes in full against every server backend, over TCP,
WebSocket and HTTP; and the runner's own reporting works (JSON, case selection, failures)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import BACKENDS, TRANSPORTS, ServerProxy
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from streamproto import ErrorCode, Feature, LocalProtocolError, Setting
from streamproto.__main__ import main
from streamproto._frames import Welcome, encode
from transports import _schemes, reference
from transports._schemes import Scheme
from transports.conformance import CASES, http_request, run

#: Cases left out of the run against our servers, and why (none today).
PENDING: set[str] = set()


@pytest.mark.parametrize("transport", [*TRANSPORTS, "http"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_passes_against_our_servers(backend: str, transport: str) -> None:
    server = ServerProxy(backend, transport)
    try:
        report = run(server.url, only={c.id for c in CASES} - PENDING, timeout=5.0)
    finally:
        server.stop()
    failures = [f"{r.id}: {r.detail}" for r in report.results if not r.passed]
    assert failures == []
    assert report.passed == len(
        [c for c in CASES if transport in c.schemes and c.id not in PENDING]
    )


@contextlib.contextmanager
def reference_server(url: str, backend: str, *extra: str) -> Iterator[str]:
    """``python -m transports.reference URL --backend B``: yields the address it prints once
    it listens; on the way out, an interrupt must end it with status 0."""
    command = [sys.executable, "-m", "transports.reference", url, "--backend", backend, *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"reference server on {url.partition(':')[0]}:"), line
        yield line.split()[-1]
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert status == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_reference_server_runs_on_every_backend(backend: str) -> None:
    """``python -m transports.reference URL --backend B`` says where it listens, serves the
    reference channels (live producers included) and exits cleanly on an interrupt. C36 runs
    here too: with the reference server's default queue (256 chunks) END overtakes the
    queued DATA (R-SUB-8), which the run above, on an 8-chunk queue, never shows."""
    with reference_server("tcp://127.0.0.1:0", backend) as url:
        report = run(url, only={"C01", "C11", "C31", "C36"}, timeout=5.0)
    assert [(r.id, r.passed, r.detail) for r in report.results] == [
        ("C01", True, ""),
        ("C11", True, ""),
        ("C31", True, ""),
        ("C36", True, ""),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_reference_server_serves_http_on_every_backend(backend: str) -> None:
    """``python -m transports.reference http://... --allow-origin O`` serves the reference
    channels over HTTP/SSE and WebSocket on one port, with CORS for ``O``."""
    origin = "http://localhost:8000"
    with reference_server("http://127.0.0.1:0", backend, "--allow-origin", origin) as url:
        report = run(url, only={"C01", "H01", "H06"}, timeout=5.0)
        answer = http_request(url, "OPTIONS", "/conformance:open", {"Origin": origin})
    assert [(r.id, r.passed, r.detail) for r in report.results] == [
        ("C01", True, ""),
        ("H01", True, ""),
        ("H06", True, ""),
    ]
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == origin


def test_the_reference_server_help_names_what_it_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its URL schemes from the registry (the built-in four, and any a test module of this
    process registered too), and both Redis URL forms ``--store`` takes."""
    with pytest.raises(SystemExit):
        reference.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    registered = _schemes.schemes()
    assert {"http", "tcp", "unix", "ws"} <= set(registered)
    assert ", ".join(f"{name}://" for name in registered) in text
    assert "redis://host:port/db, or redis+cluster://host:port" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_runner_dials_a_unix_socket(tmp_path: Path, backend: str) -> None:
    """Over ``unix://`` the runner runs every binary case, as over TCP, against the
    reference server listening on a Unix socket; the WebSocket and HTTP cases are N/A."""
    with reference_server(f"unix://{tmp_path / 'ref.sock'}", backend) as url:
        assert url == f"unix://{tmp_path / 'ref.sock'}"
        report = run(url, timeout=5.0)
    assert [f"{r.id}: {r.detail}" for r in report.results if not r.passed] == []
    over_tcp = [c.id for c in CASES if "tcp" in c.schemes]
    assert [r.id for r in report.results] == over_tcp


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://127.0.0.1:1", "no URL scheme 'foo' is registered"),
        ("tcp://127.0.0.1", "expected tcp://host:port"),
        ("unix://host/x.sock", "expected unix:///absolute/path"),
    ],
)
def test_a_url_the_runner_cannot_dial_is_invalid_argument(url: str, message: str) -> None:
    """Before any case runs (it used to report every case N/A, and pass)."""
    lines: list[str] = []
    with pytest.raises(LocalProtocolError, match=message) as caught:
        run(url, out=lines.append)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert lines == []


def test_a_registered_scheme_the_runner_does_not_speak_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheme an application registered (its own transport) is not one the runner knows
    how to dial."""
    monkeypatch.setitem(_schemes._SCHEMES, "mine", Scheme("mine", "binary"))
    expected = "the runner dials http://, tcp://, unix://, ws:// URLs, not 'mine://127.0.0.1:1'"
    with pytest.raises(LocalProtocolError, match=re.escape(expected)):
        run("mine://127.0.0.1:1")


def test_the_command_line_refuses_a_url_it_cannot_dial(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "foo://127.0.0.1:1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "INVALID_ARGUMENT" in captured.err


def test_every_case_cites_spec_rules() -> None:
    folder = Path(__file__).resolve().parent.parent / "spec"
    spec = (folder / "PROTOCOL.md").read_text() + (folder / "HTTP.md").read_text()
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case.rules
        assert case.title
        for rule in case.rules:
            assert f"**{rule}.**" in spec, f"{case.id} cites {rule}, which the spec lacks"


def test_the_case_table_matches_the_cases() -> None:
    """spec/CONFORMANCE.md lists every case with the runner's own rules and title."""
    table = (Path(__file__).resolve().parent.parent / "spec" / "CONFORMANCE.md").read_text()
    for case in CASES:
        row = f"| {case.id} | {', '.join(case.rules)} | {case.title} |"
        assert row in table, f"{case.id}: no row {row!r}"


def test_command_line_writes_a_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ServerProxy("asyncio", "tcp")
    try:
        path = tmp_path / "report.json"
        status = main(
            ["conformance", server.url, "--case", "C01", "--case", "C06", "--json", str(path)]
        )
    finally:
        server.stop()
    assert status == 0
    report = json.loads(path.read_text())
    assert (report["passed"], report["failed"]) == (2, 0)
    assert [c["id"] for c in report["cases"]] == ["C01", "C06"]
    assert "C01 PASS" in capsys.readouterr().out


def test_a_server_that_is_not_there_fails_every_case() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["conformance", f"tcp://127.0.0.1:{port}", "--case", "C01"]) == 1


def test_a_silent_server_fails_with_a_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        report = run(f"tcp://127.0.0.1:{port}", only={"C01"}, timeout=0.3)
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert report.failed == 1
    assert "nothing in time" in report.results[0].detail


def test_websocket_only_cases_are_not_applicable_over_tcp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ServerProxy("asyncio", "tcp")
    try:
        report = run(server.url, only={"C24", "C01"}, out=print)
    finally:
        server.stop()
    assert [r.id for r in report.results] == ["C01"]
    assert "C24 N/A [R-TR-5]" in capsys.readouterr().out


def test_c24_fails_a_server_that_selects_no_subprotocol() -> None:
    """A WebSocket server that accepts every upgrade and selects no subprotocol."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    conns: list[socket.socket] = []

    def serve() -> None:
        # The case's own connection; the case fails before it makes another.
        conn, _ = listener.accept()
        conns.append(conn)
        ws = WSConnection(ConnectionType.SERVER)
        while not any(isinstance(e, Request) for e in ws.events()):
            ws.receive_data(conn.recv(65536))
        conn.sendall(ws.send(AcceptConnection()))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        report = run(f"ws://127.0.0.1:{port}/", only={"C24"}, timeout=2.0)
    finally:
        thread.join(5)
        for conn in conns:
            conn.close()
        listener.close()
    assert not thread.is_alive()
    (result,) = report.results
    assert not result.passed
    assert result.detail == "AssertionError: the server selected subprotocol None"


def test_rule_index_repeats_every_rule_verbatim() -> None:
    """§18 lists every rule of the body once, with the same text, so the spec says one thing."""
    spec = (Path(__file__).resolve().parent.parent / "spec" / "PROTOCOL.md").read_text()
    body, index = spec.split("## 18. Rule index")
    rules = re.findall(r"^- \*\*(R-[A-Z]+-\d+)\.\*\* (.*)$", body, re.M)
    listed = re.findall(r"^\d+[a-z]?\. \*\*(R-[A-Z]+-\d+)\*\* \(§[\d.]+\) (.*)$", index, re.M)
    assert len(rules) == len({rule for rule, _ in rules})
    assert listed == rules


def test_cases_of_a_feature_the_server_does_not_announce_are_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """R-VER-5: the bidirectional (FEATURES 0x02) and resumable-upload (0x04) cases are
    skipped, with the reason, against a server whose WELCOME announces only QUERIES; they
    count neither way."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served: list[socket.socket] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        served.append(conn)
        welcome = Welcome(settings=((Setting.FEATURES, int(Feature.QUERIES)),), session_id="s")
        conn.recv(4096)  # its HELLO
        conn.sendall(encode(welcome))

    thread = threading.Thread(target=serve_one)
    thread.start()
    try:
        optional = {f"C5{i}" for i in range(7)} | {"C60", "C61", "C62"}
        report = run(f"tcp://127.0.0.1:{port}", only=optional, out=print)
    finally:
        thread.join(5)
        for conn in served:
            conn.close()
        listener.close()
    assert report.results == ()
    out = capsys.readouterr().out
    for case_id in sorted(optional):
        assert f"{case_id} SKIP" in out
    assert "bidirectional:" in out
    assert "resumable upload:" in out
    assert "(the server does not announce FEATURES 0x02)" in out
    assert "(the server does not announce FEATURES 0x04)" in out


def test_a_server_that_cannot_say_its_features_skips_them() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run(f"tcp://127.0.0.1:{port}", only={"C60"}).results == ()
