"""``bench.docs`` keeps a history of the headline ratios: one entry per full run it renders,
none for a smoke run, none twice; the page shows them as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.docs import HEADLINES, headlines, record, render, write


def _document(*, quick: bool = False, time: str = "2026-12-06T10:00:00+0000") -> dict[str, Any]:
    return {
        "meta": {"commit": "abc1234", "time": time, "quick": quick, "repeats": 5},
        "workloads": {
            "core": {
                "params": {},
                "measurements": [],
                "derived": {"64 B ours throughput / bare throughput": 0.31},
            }
        },
    }


def test_a_full_run_gives_an_entry_with_the_ratios_it_has() -> None:
    entry = headlines(_document())
    assert entry == {
        "commit": "abc1234",
        "time": "2026-12-06T10:00:00+0000",
        "ratios": {"core 64 B ÷ bare": 0.31},
    }


def test_quick_runs_and_runs_without_headlines_are_not_recorded() -> None:
    assert headlines(_document(quick=True)) is None
    empty = _document()
    empty["workloads"] = {}
    assert headlines(empty) is None
    assert record(empty, []) == []


def test_a_run_is_recorded_once() -> None:
    once = record(_document(), [])
    assert len(once) == 1
    assert record(_document(), once) is once
    assert len(record(_document(time="2026-12-06T11:00:00+0000"), once)) == 2


def test_the_page_ends_with_the_history_table(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(_document()), encoding="utf-8")
    history = tmp_path / "history.json"
    page = write(results, tmp_path / "benchmarks.md", history)
    text = page.read_text(encoding="utf-8")
    assert "## History" in text
    assert "| `abc1234` | 2026-12-06 10:00 |" in text
    assert text.rstrip().endswith("|")
    assert all(column in text for column, _, _ in HEADLINES)
    assert len(json.loads(history.read_text(encoding="utf-8"))) == 1
    write(results, tmp_path / "benchmarks.md", history)  # the same run again: not added
    assert len(json.loads(history.read_text(encoding="utf-8"))) == 1


def test_an_empty_history_says_so() -> None:
    assert "No full run recorded yet." in render({"meta": {}, "workloads": {}}, [])
    assert "## History" not in render({"meta": {}, "workloads": {}})


def test_the_committed_history_parses() -> None:
    path = Path(__file__).resolve().parent.parent / "bench" / "history.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    columns = {column for column, _, _ in HEADLINES}
    for entry in entries:
        assert set(entry["ratios"]) <= columns
