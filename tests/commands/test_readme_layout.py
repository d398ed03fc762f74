"""README's "How the code is laid out" names files that exist, so a newcomer's path is true."""

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
