"""The README's examples run as written (docs that drift from the code are a known pitfall)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "readme"})


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = re.findall(r"^python3 dev\.py (\w+)", README.read_text(), re.MULTILINE)
    assert commands == ["demo", "test"]
