"""Every example runs, quietly and with small parameters, and does what its docstring says.

examples/ is not a package, so each example is imported by path. Async examples run under
``asyncio.run`` with an exception handler that fails the test on anything the loop reports
("Task exception was never retrieved", a failing callback); pytest's ``filterwarnings = error``
catches unclosed sockets and other ResourceWarnings.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(main: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """``asyncio.run(main(...))``, failing on anything the loop's exception handler saw."""
    reported: list[dict[str, Any]] = []

    async def guarded() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        return await main(*args, **kwargs)

    result = asyncio.run(guarded())
    gc.collect()  # a task that died unobserved is reported when it is collected
    assert not reported, [ctx.get("message") for ctx in reported]
    return result


def test_every_example_is_tested() -> None:
    tested = {
        "token_streaming",
        "log_tail",
        "file_upload",
        "custom_transport",
        "conformance_check",
        "multi_process",
        "chat_app",  # tested in test_asgi.py, under uvicorn
        "json_answers",  # tested in test_producers.py
        "shared_answer",
        "bidi_chat",
        "resumable_upload",
    }
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


# -- token_streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_token_streaming_resumes_without_loss(transport: str) -> None:
    example = load("token_streaming")
    tokens = run(example.main, transport, 40, 15, quiet=True)
    assert tokens == [w + " " for w in itertools.islice(itertools.cycle(example.WORDS), 40)]


# -- shared_answer -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_shared_answer_runs_the_model_once_for_two_tabs(transport: str) -> None:
    result = run(load("shared_answer").main, transport, 30, quiet=True)
    assert result["runs"] == 1
    assert result["joined"] == [False, True]
    want = [b"token-%d " % i for i in range(30)]
    assert result["tabs"] == [want, want]
    assert result["status"] == ("ENDED", 30)


# -- bidi_chat ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_bidi_chat_answers_each_message_on_the_same_handle(transport: str) -> None:
    result = run(load("bidi_chat").main, transport, 6, quiet=True)
    messages = [b"message-%d" % i for i in range(6)]
    assert result["heard"] == messages
    words = [w + b" " for m in messages for w in (b"you", b"said", m)]
    assert result["answer"] == words
    assert result["watched"] == [c for m in messages for c in (b"you ", b"said ", m + b" ", b"\n")]


# -- log_tail -----------------------------------------------------------------------------------

LINES = 200
SLOW_DELAY = 0.004


def tail(policy: str) -> dict[str, Any]:
    example = load("log_tail")
    result: dict[str, Any] = run(example.main, policy, LINES, 10, SLOW_DELAY, quiet=True)
    assert result["fast"] == [LINES] * 10
    assert result["fast_complete"]
    assert result["fast_gaps"] == 0
    assert 0 < result["peak_queued_bytes"] <= result["queue_bound"]
    result["covered"] = example.covered(result)
    return result


def test_log_tail_drop_oldest_reports_exactly_what_was_lost() -> None:
    result = tail("drop_oldest")
    assert result["slow_error"] is None
    assert result["slow_gaps"], "the slow subscriber never overflowed"
    # Every seq is either received or named by a gap, once, in order.
    assert result["covered"] == list(range(1, LINES + 1))
    assert result["slow_seqs"] == sorted(result["slow_seqs"])
    assert result["slow_seqs"][-1] == LINES  # the newest lines survive
    assert result["slow_overflows"] == len(result["slow_gaps"])


def test_log_tail_block_paces_the_producer() -> None:
    result = tail("block")
    assert result["slow_seqs"] == list(range(1, LINES + 1))
    assert result["slow_gaps"] == []
    assert result["slow_error"] is None
    # The producer can run ahead of the slow reader by its window, the server's queue and a
    # line in hand, no more; the reader sleeps SLOW_DELAY per line.
    assert result["produce_seconds"] >= (LINES - 4 - 32 - 2) * SLOW_DELAY


def test_log_tail_error_fails_the_slow_subscription_only() -> None:
    result = tail("error")
    assert result["slow_error"] == "RESOURCE_EXHAUSTED"
    assert result["slow_gaps"] == []
    count = len(result["slow_seqs"])
    assert 0 < count < LINES
    assert result["slow_seqs"] == list(range(1, count + 1))


# -- resumable_upload ---------------------------------------------------------------------------


@pytest.mark.parametrize("cut_at", [0.02, 0.4, 1.0])
def test_resumable_upload_survives_the_cut_and_returns_the_digest(cut_at: float) -> None:
    example = load("resumable_upload")
    report = run(example.main, 256, 8, cut_at)
    assert report == {"bytes": 256 * 1024, "reconnects": 1, "resumed": 1, "digest_matches": True}


# -- file_upload --------------------------------------------------------------------------------


def check_upload(example: ModuleType, report: dict[str, Any]) -> None:
    size = report["size"]
    accepted, cancelled = report["accepted"], report["cancelled"]
    assert accepted["client_error"] is None
    assert accepted["client_sent"] == size
    assert accepted["server_status"] == "stored"
    assert accepted["server_bytes"] == size
    assert accepted["server_sha256"] == report["sha256"]
    assert cancelled["client_error"] == example.FILE_TOO_LARGE
    assert cancelled["server_status"] == "cancelled"
    assert cancelled["server_code"] == f"APPLICATION_{example.FILE_TOO_LARGE}"
    assert cancelled["server_bytes"] <= cancelled["limit"]
    assert cancelled["client_sent"] < size  # stopped before the whole file went out


def test_file_upload_stores_one_and_cancels_the_other() -> None:
    example = load("file_upload")
    report = run(example.main, 4.0, 4, quiet=True)
    check_upload(example, report)
    assert report["accepted"]["on_disk"] == report["size"]
    assert report["cancelled"]["on_disk"] is None


def test_file_upload_cancel_after_the_last_write_reaches_the_client() -> None:
    # 2 MiB fits in the server's window plus the client's queue: no write waits, so the
    # cancel can only be reported when the upload block is left.
    example = load("file_upload")
    report = run(example.main, 2.0, 4, quiet=True)
    assert report["cancelled"]["server_status"] == "cancelled"
    assert report["cancelled"]["client_error"] == example.FILE_TOO_LARGE


def test_file_upload_with_64k_chunks() -> None:
    # In a subprocess, with a timeout: this once livelocked the event loop (a Writable event
    # fired while the retried 64 KiB write was still blocked), which cannot be interrupted.
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); import file_upload; "
        "print(json.dumps(asyncio.run(file_upload.main(4.0, 64, quiet=True))))"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    )
    check_upload(load("file_upload"), json.loads(done.stdout))


# -- custom_transport ---------------------------------------------------------------------------


def test_custom_transport_runs_on_the_core_alone() -> None:
    example = load("custom_transport")
    start = time.monotonic()
    result = example.main(keepalive=1.0, quiet=True)  # the shortest interval (R-SET-30)
    assert result["subscribed"] == [b"line 2", b"line 3", b"line 4"]
    assert result["opened"] == [b"%d" % i for i in range(50)]
    assert result["uploaded"] == b"hello over a unix socket"
    assert result["keepalive_events"] >= 1
    assert result["server_stopped"]
    assert time.monotonic() - start < 8
    source = (EXAMPLES / "custom_transport.py").read_text()
    assert "import transports" not in source
    assert "from transports" not in source


def test_conformance_check_passes_our_adapters_and_prints_each_scenario() -> None:
    example = load("conformance_check")
    report = example.main("sync", "asyncio", "tcp", ["subscribe_and_receive"], quiet=True)
    assert report.passed
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "conformance_check.py"), "trio", "sync", "ws",
         "--scenario", "gap_raises_by_default", "--scenario", "chunks_larger_than_a_frame"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "trio server, sync client, over ws" in out
    assert "ok   gap_raises_by_default" in out
    assert out.strip().endswith("2 passed, 0 failed")


# -- multi_process ------------------------------------------------------------------------------


def test_multi_process_moves_a_client_between_servers_without_loss(tmp_path: Path) -> None:
    from redis_helpers import running_redis

    example = load("multi_process")
    with running_redis(tmp_path) as redis:
        tokens = run(example.main, redis.url, 40, 15, quiet=True)
    assert tokens == [w + " " for w in itertools.islice(itertools.cycle(example.WORDS), 40)]
