"""Smoke test of the end-to-end benchmark: ``python -m bench --quick e2e`` with tiny counts runs
in a subprocess, writes a results file with the expected shape, leaves no server process behind,
and ``python -m bench.docs`` renders it. Nothing here is timed: the figures only have to exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METRICS = {"64 B": "chunks/s", "4 KiB": "MB/s", "rtt p50": "us", "rtt p99": "us"}
#: Always measured: ours on asyncio and the peers that the dev extras install.
REQUIRED = ("asyncio/tcp", "asyncio/ws", "raw/tcp", "websockets/ws")
#: Measured when their backend imports (trio, sync) or their package is installed (grpc).
OPTIONAL = ("trio/tcp", "trio/ws", "sync/tcp", "sync/ws", "grpc/h2")


def _processes_tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``tag`` (Linux /proc only)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if tag.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
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
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "e2e"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text(encoding="utf-8")), out, tag


def test_results_have_the_expected_shape(results: tuple[dict, Path, str]) -> None:
    document, _, _ = results
    assert set(document) == {"meta", "workloads"}
    assert document["meta"]["quick"] is True
    assert list(document["workloads"]) == ["e2e"]
    e2e = document["workloads"]["e2e"]
    assert {"params", "measurements", "derived", "seconds"} <= set(e2e)
    params = e2e["params"]
    assert params["failed"] == {}, params["failed"]
    assert {"chunks_64B", "chunks_4KiB", "round_trips", "repeats", "skipped"} <= set(params)
    measured = {m["name"]: m for m in e2e["measurements"]}
    for m in measured.values():
        assert {"name", "unit", "median", "min", "max", "samples"} <= set(m)
        assert len(m["samples"]) == params["repeats"] == 1
        assert 0 < m["min"] <= m["median"] <= m["max"]
    for case in REQUIRED + OPTIONAL:
        if case in REQUIRED or case not in params["skipped"]:
            for metric, unit in METRICS.items():
                assert measured[f"{case} {metric}"]["unit"] == unit
        else:
            assert not any(name.startswith(f"{case} ") for name in measured)
    assert "64 B asyncio/tcp / raw/tcp" in e2e["derived"]
    assert "64 B asyncio/tcp / websockets/ws" in e2e["derived"]


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
    text = page.read_text(encoding="utf-8")
    assert "| **asyncio/tcp** |" in text
    assert "### Ours against the peers" in text
    assert "### Targets" in text
    assert "quick mode" in text
