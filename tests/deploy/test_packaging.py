"""The wheel (what the Docker image installs) carries every package of depmon."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_for_the_wheel() -> None:
    """Each folder of monitor/ and probes/ with an __init__.py is a package the wheel lists."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("monitor", "probes")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"not in the wheel: {sorted(found - listed)}"
