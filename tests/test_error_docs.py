"""The error docs mirror the registry in ``_errors.py``.

Every ``ErrorCode`` has a page at ``code.doc_path`` with the sections Message, Cause, Fix and
Source; every page belongs to a code; ``docs/errors/index.md`` links every page; and
``spec/errors.md`` has exactly one table row per code whose fields match the registry.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamproto._errors import ErrorCode

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "errors"
SPEC_ERRORS = ROOT / "spec" / "errors.md"
HEADINGS = ("## Message", "## Cause", "## Fix", "## Source")
SPEC_COLUMNS = ["Code", "Name", "Kind", "Retryable", "Meaning", "Page"]
LINK = re.compile(r"\[[^\]]*\]\(([^)#]+)(?:#[^)]*)?\)")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _page(code: ErrorCode) -> list[str]:
    path = ROOT / code.doc_path
    assert path.is_file(), f"{code.name} has no page at {code.doc_path}"
    return path.read_text(encoding="utf-8").splitlines()


def _table(path: Path, first_column: str) -> tuple[list[str], list[list[str]]]:
    """The header and the body rows of the first markdown table whose header starts with
    ``first_column``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if _cells(line)[:1] == [first_column]]
    assert starts, f"{path.name} has no table starting with a {first_column!r} column"
    i = starts[0]
    header = _cells(lines[i])
    assert set(lines[i + 1].replace("|", "").strip()) <= set("-: "), "missing separator row"
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return header, rows


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [cell.strip() for cell in line[1:-1].split("|")]


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_page_has_title_metadata_and_sections(code: ErrorCode) -> None:
    lines = _page(code)
    assert lines[0] == f"# SP{code.value:03d} {code.name}"
    metadata = (
        f"**Code** {code.value} · **Name** `{code.name}` · **Kind** {code.kind.value} · "
        f"**Retryable** {_yes_no(code.retryable)}"
    )
    assert metadata in lines, f"{code.doc_path} lacks the line {metadata!r}"
    positions = []
    for heading in HEADINGS:
        assert lines.count(heading) == 1, f"{code.doc_path} needs exactly one {heading!r}"
        positions.append(lines.index(heading))
    assert positions == sorted(positions), f"{code.doc_path}: sections out of order"
    for start, end in zip(positions, [*positions[1:], len(lines)], strict=True):
        assert any(line.strip() for line in lines[start + 1 : end]), (
            f"{code.doc_path}: {lines[start]!r} is empty"
        )


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_page_message_shows_the_name(code: ErrorCode) -> None:
    lines = _page(code)
    message = lines[lines.index("## Message") : lines.index("## Cause")]
    assert any(line.startswith(f"> [{code.name}] ") for line in message), (
        f"{code.doc_path}: the Message section should quote '[{code.name}] ...'"
    )


def test_every_page_belongs_to_a_code() -> None:
    expected = {Path(code.doc_path).name for code in ErrorCode}
    assert len(expected) == len(ErrorCode)
    pages = {path.name for path in DOCS.glob("*.md")} - {"index.md"}
    assert pages - expected == set(), "pages without an ErrorCode"
    assert expected - pages == set(), "ErrorCodes without a page"


def test_index_links_every_page() -> None:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {target for target in LINK.findall(text) if "/" not in target}
    assert linked == {Path(code.doc_path).name for code in ErrorCode}


def test_spec_table_matches_registry() -> None:
    header, rows = _table(SPEC_ERRORS, "Code")
    assert header == SPEC_COLUMNS
    seen: set[ErrorCode] = set()
    for row in rows:
        assert len(row) == len(SPEC_COLUMNS), f"wrong number of cells: {row}"
        number, name, kind, retryable, meaning, page = row
        code = ErrorCode(int(number))
        assert code not in seen, f"duplicate row for {code.name}"
        seen.add(code)
        assert name.strip("`") == code.name
        assert kind == code.kind.value
        assert retryable == _yes_no(code.retryable)
        assert meaning == code.summary
        assert LINK.findall(page) == [f"../{code.doc_path}"]
    assert seen == set(ErrorCode), f"missing rows: {sorted(set(ErrorCode) - seen)}"
    assert [int(row[0]) for row in rows] == sorted(code.value for code in ErrorCode)
