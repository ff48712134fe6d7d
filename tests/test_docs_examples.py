"""Every ```python block of the docs pages and the README runs, so the docs cannot drift from
the code.

Each page's blocks run in order, in one namespace, in a fresh interpreter (``-W error``, the
package from ``src``, a temporary working directory) with a timeout: a later block may use what
an earlier one defined, and no page sees another page's state, event loop or threads.

A block that is deliberately not runnable (a fragment, a file of a project that does not exist
here) says so on the line before its fence, with a reason:

    <!-- not-run: a fragment of an async function -->
    ```python
    async for chunk in sub: ...
    ```

The comment is invisible on the rendered page. A page whose blocks use top-level ``await``
(``async for``, ``async with``) runs them all in one asyncio event loop, as ``python -m asyncio``
would; the other pages run as plain scripts. A block that names
``redis://127.0.0.1:6379/0`` runs against a redis-server this test starts on a free port (the
URL is rewritten), so the page can show the usual address.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import attrs
import pytest

from streamproto import ChannelOptions

ROOT = Path(__file__).resolve().parent.parent
PAGE_TIMEOUT = 180.0  # seconds for all the blocks of one page, on a loaded machine
REDIS_URL = "redis://127.0.0.1:6379/0"

FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the first line of code (1-based)
    code: str
    not_run: str | None  # the reason, for a block marked not to run


def closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def parse_blocks(page: str, text: str) -> list[Block]:
    """The ```python blocks of a Markdown page, with the not-run mark before each, if any.

    A fence closes on a line of the same character, at least as long as the opening one (as in
    CommonMark), so a ```python example inside a ````markdown block is not collected."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        info = opening["info"].strip().split()
        end = index + 1
        while end < len(lines) and not closes(lines[end], fence):
            end += 1
        if info and info[0] == "python":
            before = lines[index - 1] if index else ""
            mark = NOT_RUN.match(before)
            blocks.append(
                Block(
                    page=page,
                    line=index + 2,
                    code="\n".join(lines[index + 1 : end]) + "\n",
                    not_run=mark["reason"] if mark else None,
                )
            )
        index = end + 1
    return blocks


def pages() -> list[str]:
    found = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return [*found, "README.md"]


BLOCKS = {page: parse_blocks(page, (ROOT / page).read_text()) for page in pages()}
RUNNABLE = {
    page: [b for b in blocks if b.not_run is None]
    for page, blocks in BLOCKS.items()
    if any(b.not_run is None for b in blocks)
}
#: Blocks that ran, per page, filled in by the page tests and printed at the end.
RAN: dict[str, int] = {}

RUNNER = """\
import ast
import asyncio
import inspect
import json
import sys

namespace = {"__name__": "__main__"}
codes = [
    # Line numbers in tracebacks are the page's own.
    compile("\\n" * (line - 1) + code, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for page, line, code in json.load(sys.stdin)
]


def awaits(code):
    return bool(code.co_flags & inspect.CO_COROUTINE)


async def in_one_loop():
    for code in codes:
        result = eval(code, namespace)
        if awaits(code):
            await result


if any(awaits(code) for code in codes):
    asyncio.run(in_one_loop())
else:
    for code in codes:
        exec(code, namespace)
"""


def sources(blocks: list[Block], redis_url: str | None) -> str:
    """The page's blocks for the runner: path, first line and code of each."""
    found = []
    for block in blocks:
        code = block.code if redis_url is None else block.code.replace(REDIS_URL, redis_url)
        found.append((str(ROOT / block.page), block.line, code))
    return json.dumps(found)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from redis_helpers import running_redis  # only the pages that use Redis start one

    with tempfile.TemporaryDirectory() as directory, running_redis(Path(directory)) as server:
        yield server.url


# -- the parser ---------------------------------------------------------------------------------


def test_the_parser_finds_blocks_marks_and_nested_fences() -> None:
    text = "\n".join(
        [
            "# Page",
            "```python",
            "a = 1",
            "```",
            "<!-- not-run: a fragment -->",
            "```python",
            "await x",
            "```",
            "````markdown",
            "```python",
            "inside = 'a markdown example'",
            "```",
            "````",
            "```sh",
            "python3 dev.py docs",
            "```",
            "~~~python",
            "b = 2",
            "~~~",
        ]
    )
    blocks = parse_blocks("page.md", text)
    assert [(b.line, b.code, b.not_run) for b in blocks] == [
        (3, "a = 1\n", None),
        (7, "await x\n", "a fragment"),
        (18, "b = 2\n", None),
    ]


def test_a_mark_without_a_reason_is_not_a_mark() -> None:
    (block,) = parse_blocks("page.md", "<!-- not-run: -->\n```python\nx = 1\n```\n")
    assert block.not_run is None


def test_the_pages_have_blocks_to_run() -> None:
    # A parser that stopped finding blocks would pass every page test by running nothing.
    assert sum(len(blocks) for blocks in RUNNABLE.values()) >= 15
    assert {"README.md", "docs/quickstart.md", "docs/channels.md", "docs/core.md"} <= set(RUNNABLE)


def test_every_not_run_mark_sits_before_a_python_block() -> None:
    for page in pages():
        lines = (ROOT / page).read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if NOT_RUN.match(line):
                following = lines[number] if number < len(lines) else ""
                assert following.startswith("```python"), f"{page}:{number}: mark before no block"


# -- pages that must keep up with the code ------------------------------------------------------


def test_the_channels_page_explains_every_channel_option() -> None:
    # Each field is a definition term there ("`replay: Window(...)`"); a new field must be
    # explained before the suite passes, and a removed one must go.
    text = (ROOT / "docs" / "channels.md").read_text()
    explained = set(re.findall(r"^`(\w+): ", text, re.MULTILINE))
    fields = {field.name for field in attrs.fields(ChannelOptions)}
    assert explained == fields, (
        f"docs/channels.md: explain {sorted(fields - explained)}; drop {sorted(explained - fields)}"
    )


# -- the pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", sorted(RUNNABLE))
def test_page_examples_run(page: str, request: pytest.FixtureRequest) -> None:
    blocks = RUNNABLE[page]
    needs_redis = any(REDIS_URL in b.code for b in blocks)
    url = request.getfixturevalue("redis_url") if needs_redis else None
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", RUNNER],
            input=sources(blocks, url),
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT,
            check=False,
        )
    failed = result.returncode != 0
    assert not failed, f"{page}:\n{result.stdout}\n{result.stderr}"
    RAN[page] = len(blocks)


def test_print_how_many_ran(capsys: pytest.CaptureFixture[str]) -> None:
    found = sum(len(blocks) for blocks in BLOCKS.values())
    skipped = found - sum(len(blocks) for blocks in RUNNABLE.values())
    with capsys.disabled():
        print(
            f"\ndocs examples: {sum(RAN.values())} python blocks ran on {len(RAN)} pages; "
            f"{skipped} of {found} marked not-run"
        )
