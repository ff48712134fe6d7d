"""House rules checked on the source: the core does no I/O and reads no clock or randomness,
and no ``assert`` guards anything in ``src/`` (it vanishes under ``python -O``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
CORE = sorted((SRC / "streamproto").rglob("*.py"))
BANNED = {
    "asyncio", "trio", "socket", "threading", "time", "random", "uuid", "os", "selectors",
    "ssl", "secrets", "subprocess",
}  # fmt: skip


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(SRC)))
def test_the_core_is_sans_io(path: Path) -> None:
    assert imported(path) & BANNED == set()


def test_the_core_depends_on_attrs_only() -> None:
    stdlib_ok = {
        "__future__", "enum", "struct", "collections", "typing", "re", "heapq", "logging",
        "attrs", "argparse", "sys", "json", "itertools", "functools", "contextlib",
        "base64", "binascii", "codecs", "urllib",  # pure codecs: SSE text, URL paths (HTTP)
        "hashlib",  # a pure digest: the conformance kit's upload result
    }  # fmt: skip
    # Extras, imported on demand: the testing kit's hypothesis, the msgpack codec.
    optional = {"strategies.py": {"hypothesis"}, "_codec.py": {"msgpack"}}
    third_party = {
        name for path in CORE for name in imported(path) - optional.get(path.name, set())
    } - stdlib_ok
    assert third_party <= {"streamproto", "transports"}


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_assert_in_src(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserts == [], f"{path}: assert on lines {asserts}"
