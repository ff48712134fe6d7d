"""The runnable code blocks of the docs run as shown (blocks about your own adapter, which
name modules that do not exist here, are left out by name)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
HYPOTHETICAL = ("myquic", "MyServerUnderTest")


def blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text()
    found = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return [b for b in found if not any(name in b for name in HYPOTHETICAL)]


def test_the_testing_page_has_runnable_blocks() -> None:
    assert len(blocks("testing.md")) >= 2


@pytest.mark.parametrize("index", range(len(blocks("testing.md"))))
def test_testing_page_block_runs(index: int) -> None:
    exec(compile(blocks("testing.md")[index], f"docs/testing.md block {index}", "exec"), {})


def test_the_http_page_has_runnable_blocks() -> None:
    assert len(blocks("http.md")) >= 2


@pytest.mark.parametrize("index", range(len(blocks("http.md"))))
def test_http_page_block_runs(index: int) -> None:
    exec(compile(blocks("http.md")[index], f"docs/http.md block {index}", "exec"), {})
