"""README serves its reader: the two commands first, every runtime library named with its reason, and
its "How the code is laid out" names files that exist, so a newcomer's path is true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    start = text.index("## How the code is laid out")
    return text[start : text.index("\n## ", start + 1)].replace("<br/>", " ")  # the diagram's line breaks


def test_every_named_file_exists() -> None:
    """Each monitor/, probes/ or tests/ path the section names (a kind's placeholder aside) is in the tree."""
    named = set(re.findall(r"\b((?:monitor|probes|tests)/[\w./<>]*[\w>/])", _section()))
    placeholders = ("<", "KIND")  # `probes/<kind>.py`, `probes/KIND.py` in the diagram
    missing = sorted(p for p in named if not any(x in p for x in placeholders) and not (ROOT / p).exists())
    assert named
    assert missing == []


def test_the_newcomers_test_classes_exist() -> None:
    """A test class the paths name (`TestEventContent`) is in the test file named beside it."""
    named = re.findall(r"`(tests/[\w/]+\.py)`, `(Test\w+)`", _section())
    assert named, "the section names no test class beside its file"
    for path, test_class in named:
        assert f"class {test_class}" in (ROOT / path).read_text("utf-8"), (path, test_class)


def test_the_two_commands_come_first() -> None:
    """The README's first block is `make demo` and `make test`, and CI runs exactly that test command."""
    text = (ROOT / "README.md").read_text("utf-8")
    first_block = text.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text("utf-8").splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"


def test_every_runtime_library_is_named_with_its_reason() -> None:
    """Each runtime dependency of pyproject.toml is in "Libraries and why" (a declared library nobody
    explains is a library nobody can remove)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    names = [re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower() for requirement in project["dependencies"]]
    text = (ROOT / "README.md").read_text("utf-8")
    section = text[text.index("## Libraries and why") :].split("\n## ", 1)[0].lower()
    assert names
    missing = [name for name in names if name.removesuffix("-client") not in section and name not in section]
    assert missing == []


def test_history_lives_beside_the_readme() -> None:
    """The changelog and the benchmark passes are files of their own, linked from the README."""
    text = (ROOT / "README.md").read_text("utf-8")
    assert "## Changelog" not in text
    assert "## Sizing" not in text
    for linked in ("CHANGELOG.md", "docs/sizing.md"):
        assert f"]({linked})" in text
        assert (ROOT / linked).is_file()
