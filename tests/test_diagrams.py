"""The state-machine page is generated from the tables and kept in step with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproto.__main__ import main
from streamproto._diagrams import render
from streamproto._state import HANDLE_TRANSITIONS, Side

PAGE = Path(__file__).resolve().parent.parent / "docs" / "state-machines.md"


def test_the_committed_page_matches_the_tables() -> None:
    assert PAGE.read_text() == render(), "run: python -m streamproto diagrams > " + str(PAGE)


def test_every_transition_is_drawn() -> None:
    sections = render().split("\n## ")[1:]
    for side, section in zip(Side, sections, strict=False):
        assert section.startswith(side.value.capitalize())
        for (state, inp), new in HANDLE_TRANSITIONS[side].items():
            edge = f"    {state.value} --> {new.value}:"
            line = next(x for x in section.splitlines() if x.startswith(edge))
            assert inp.value in line.split(":", 1)[1].split(", ") or f" {inp.value}" in line


def test_command_prints_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagrams"]) == 0
    assert capsys.readouterr().out == render()
