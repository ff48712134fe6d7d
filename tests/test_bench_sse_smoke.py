"""Smoke test of the SSE benchmark: ``python -m bench --quick sse`` with tiny counts runs in a
subprocess, writes results with the expected shape (sse-starlette measured; each of our
backends measured or left out with the reason), leaves no server process behind, and the docs
page renders it. Its client is checked on bodies shaped as the servers send them. Nothing here
is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_bench_smoke import ROOT, _processes_tagged

sys.path.insert(0, str(ROOT))

from bench.sse import OURS, PEER, PEER_FAST, SseClient, _Chunked

METRICS = {
    "64 B": "events/s",
    "4 KiB": "MB/s",
    "first event p50": "us",
    "first event p99": "us",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench-sse") / "results.json"
    tag = f"streamproto-bench-smoke-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "STREAMPROTO_BENCH_SCALE": "0.02",
        "STREAMPROTO_BENCH_SMOKE_TAG": tag,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "sse"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text(encoding="utf-8")), out, tag


def test_results_have_the_expected_shape(results: tuple[dict, Path, str]) -> None:
    document, _, _ = results
    sse = document["workloads"]["sse"]
    params = sse["params"]
    assert params["failed"] == {}, params["failed"]
    measured = {m["name"]: m for m in sse["measurements"]}
    for m in measured.values():
        assert 0 < m["min"] <= m["median"] <= m["max"]
    for impl in (PEER, PEER_FAST, *OURS):
        if impl == PEER or impl not in params["skipped"]:
            for metric, unit in METRICS.items():
                assert measured[f"{impl} {metric}"]["unit"] == unit
        else:
            assert params["skipped"][impl], impl  # left out with a reason
            assert not any(name.startswith(f"{impl} ") for name in measured)
    for impl in OURS:
        if impl not in params["skipped"]:
            assert f"64 B {impl} / {PEER}" in sse["derived"]
    assert measured["asyncio/ws (e2e) 64 B"]["info"] is True
    assert measured["client ceiling 64 B"]["unit"] == "events/s"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_no_server_process_is_left_behind(results: tuple[dict, Path, str]) -> None:
    _, _, tag = results
    assert _processes_tagged(tag) == []


def test_docs_page_renders(results: tuple[dict, Path, str], tmp_path: Path) -> None:
    _, path, _ = results
    page = tmp_path / "benchmarks.md"
    subprocess.run(
        [sys.executable, "-m", "bench.docs", "--json", str(path), "--out", str(page)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert f"| {PEER} 64 B |" in page.read_text(encoding="utf-8")


def _read(body: bytes, piece: int, chunked: bool) -> SseClient:
    client, decoder = SseClient(), _Chunked()
    for i in range(0, len(body), piece):
        data = body[i : i + piece]
        client.feed(decoder.feed(data) if chunked else data)
    return client


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_the_client_counts_events_however_the_body_is_cut(piece: int, sep: bytes) -> None:
    events = [b"retry: 200", b": heartbeat"]
    events += [b"id: %d%sdata: %s" % (i, sep, b"x" * i) for i in range(1, 41)]
    events += [b"id: 41%sdata: ab%sdata: c" % (sep, sep), b"event: end%sdata: " % sep]
    body = b"".join(event + sep + sep for event in events)
    plain = _read(body, piece, chunked=False)
    assert (plain.events, plain.payload, plain.ended) == (41, sum(range(41)) + 4, True)
    framed = b"".join(b"%x\r\n%s\r\n" % (len(e) + 2 * len(sep), e + sep + sep) for e in events)
    chunked = _read(framed + b"0\r\n\r\n", piece, chunked=True)
    assert (chunked.events, chunked.payload, chunked.ended) == (41, sum(range(41)) + 4, True)


def test_the_client_refuses_an_error_event() -> None:
    with pytest.raises(RuntimeError, match="unexpected event"):
        SseClient().feed(b'event: error\ndata: {"code": 1}\n\n')


@pytest.mark.parametrize("ids", [True, False])
def test_the_clients_fast_path_counts_plain_streams(ids: bool) -> None:
    """Blocks of ``[id]`` and one ``data:`` line are counted in bulk; the same as one by one."""
    events = [(b"id: %d\n" % i if ids else b"") + b"data: " + b"y" * (i % 9) for i in range(99)]
    body = b"".join(event + b"\n\n" for event in events)
    assert SseClient._plain(body.split(b"\n\n")[:-1])
    whole, by_byte = _read(body, 1 << 20, chunked=False), _read(body, 1, chunked=False)
    assert (
        (whole.events, whole.payload)
        == (by_byte.events, by_byte.payload)
        == (99, sum(i % 9 for i in range(99)))
    )
    assert not SseClient._plain([b"id: 1\ndata: a\ndata: b"])  # two data lines: counted slowly
