"""The lock files (requirements.lock, requirements-dev.lock) match pyproject.toml and are what installs use.

requirements.lock pins what depmon runs with (the demo, the image); requirements-dev.lock adds the
test and lint tools, resolved under the runtime pins. Both are `uv pip compile` output (`make
lock`): exact pins with hashes, each annotated with what it is required by (`# via`), which is
the graph the reachability test walks.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
RUNTIME = [Requirement(text) for text in PROJECT["dependencies"]]
DEV = [Requirement(text) for text in PROJECT["optional-dependencies"]["dev"]]
THE_PROJECT = "depmon (pyproject.toml)"  # how the lock names a requirement of pyproject itself
CONSTRAINT = re.compile(r"^-c ")  # `-c requirements.lock`: the dev lock's note that a runtime pin held


@dataclass(frozen=True)
class Pin:
    """One locked package: its exact version, environment marker, hashes and what requires it."""

    version: str
    marker: str
    hashes: tuple[str, ...]
    via: tuple[str, ...]


_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+?)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")
_HASH = re.compile(r"^\s+--hash=(?P<hash>sha256:[0-9a-f]{64})\s*\\?$")
_VIA = re.compile(r"^\s+#\s+(?:via\s*)?(?P<via>.*)$")


def parse_lock(text: str) -> dict[str, Pin]:
    """The pins of a `uv pip compile` file, by canonical name; a line it does not know is an error."""
    entries: list[tuple[str, str, str, list[str], list[str]]] = []  # name, version, marker, hashes, via
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or (line.startswith("#") and not entries):
            continue  # the header
        if match := _PIN.match(line):
            entries.append((canonicalize_name(match["name"]), match["version"], match["marker"] or "", [], []))
        elif entries and (match := _HASH.match(line)):
            entries[-1][3].append(match["hash"])
        elif entries and (match := _VIA.match(line)):
            if match["via"] and not CONSTRAINT.match(match["via"]):
                entries[-1][4].append(match["via"])
        else:
            raise ValueError(f"line {number} is not a pin, a hash or a `# via` note: {line!r}")
    return {name: Pin(version, marker, tuple(hashes), tuple(via)) for name, version, marker, hashes, via in entries}


def _lock(name: str) -> dict[str, Pin]:
    return parse_lock((ROOT / name).read_text(encoding="utf-8"))


LOCKS = {"requirements.lock": RUNTIME, "requirements-dev.lock": RUNTIME + DEV}


def top_level(pins: dict[str, Pin]) -> set[str]:
    """The pins the lock says pyproject.toml asks for directly."""
    return {name for name, pin in pins.items() if THE_PROJECT in pin.via}


def unreachable(pins: dict[str, Pin]) -> set[str]:
    """The pins that no chain of `# via` notes leads to from pyproject.toml."""
    reached = top_level(pins)
    while True:
        more = {name for name, pin in pins.items() if {canonicalize_name(v) for v in pin.via} & reached} - reached
        if not more:
            return set(pins) - reached
        reached |= more


@pytest.mark.parametrize(("lock", "requirements"), LOCKS.items())
class TestLockMatchesPyproject:
    """Each lock pins exactly what pyproject.toml asks for, with versions its specifiers admit."""

    def test_every_requirement_is_pinned_within_its_specifier(self, lock: str, requirements: list[Requirement]) -> None:
        """Each dependency of pyproject (and, in the dev lock, of the dev extras) is pinned at a version it admits."""
        pins = _lock(lock)
        for requirement in requirements:
            pin = pins.get(canonicalize_name(requirement.name))
            assert pin is not None, f"{requirement} is not in {lock}: run `make lock`"
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{lock} pins {requirement.name}=={pin.version}, outside {requirement}: run `make lock`"
            )

    def test_top_level_names_are_pyprojects(self, lock: str, requirements: list[Requirement]) -> None:
        """What the lock says pyproject requires is exactly pyproject's list (nothing stale, nothing missing)."""
        assert top_level(_lock(lock)) == {canonicalize_name(r.name) for r in requirements}

    def test_nothing_is_unreachable(self, lock: str, requirements: list[Requirement]) -> None:
        """Every pin is required, through `# via` notes, by something pyproject asks for."""
        assert unreachable(_lock(lock)) == set()

    def test_every_pin_is_exact_and_hashed(self, lock: str, requirements: list[Requirement]) -> None:
        """Every pin has at least one sha256 hash, so pip installs it in hash-checking mode."""
        for name, pin in _lock(lock).items():
            assert pin.hashes, f"{name} has no hash in {lock}"

    def test_only_pypi(self, lock: str, requirements: list[Requirement]) -> None:
        """No index, find-links, local path or direct URL: the lock resolves on PyPI alone, anywhere."""
        text = (ROOT / lock).read_text(encoding="utf-8")
        assert not re.search(r"--(?:extra-)?index-url|--find-links|file:|\s@\s|^-e|/opt/|https?://", text, re.M)


def test_dev_lock_keeps_the_runtime_pins() -> None:
    """`make test` tests the versions `make demo` and the image run: every runtime pin is the dev lock's."""
    runtime, dev = _lock("requirements.lock"), _lock("requirements-dev.lock")
    assert {name: pin.version for name, pin in runtime.items()} == {name: dev[name].version for name in runtime}


class TestChecksCanFail:
    """The checks above find what they look for."""

    def test_a_stray_pin_and_the_top_level_are_found(self) -> None:
        """A pin nothing requires is unreachable; a pin pyproject asks for is top-level."""
        hash_line = "    --hash=sha256:{}\n"
        text = "".join(
            [
                "# header\n",
                "httpx==0.28.1 \\\n" + hash_line.format("a" * 64) + "    # via depmon (pyproject.toml)\n",
                "idna==3.21 \\\n" + hash_line.format("b" * 64),
                "    # via\n    #   -c requirements.lock\n    #   httpx\n",
                "leftover==1.0 \\\n" + hash_line.format("c" * 64) + "    # via gone\n",
            ]
        )
        pins = parse_lock(text)
        assert top_level(pins) == {"httpx"}
        assert unreachable(pins) == {"leftover"}
        assert pins["idna"].via == ("httpx",)

    def test_an_unknown_line_is_an_error(self) -> None:
        """A line the parser does not know (an `-e` install, an index option) is not skipped silently."""
        with pytest.raises(ValueError, match="line 1"):
            parse_lock("-e file:///opt/somewhere\n")


class TestInstallsUseTheLocks:
    """The Makefile installs from the locks: the demo from the runtime one, the tests from the dev one."""

    @staticmethod
    def _recipe(target: str) -> str:
        text = (ROOT / "Makefile").read_text(encoding="utf-8")
        match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
        assert match, f"no rule for {target}"
        return match.group(1)

    @staticmethod
    def _prerequisite(target: str) -> str:
        text = (ROOT / "Makefile").read_text(encoding="utf-8")
        match = re.search(rf"^{target}:\s*(\S+)", text, re.M)
        assert match, f"no rule for {target}"
        return match.group(1)

    @pytest.mark.parametrize(("target", "lock"), [("demo", "requirements.lock"), ("test", "requirements-dev.lock")])
    def test_target_installs_its_lock_with_hashes(self, target: str, lock: str) -> None:
        """`make demo` installs requirements.lock (no test or lint tools), `make test` requirements-dev.lock."""
        recipe = self._recipe(self._prerequisite(target))
        installs = [line for line in recipe.splitlines() if "pip install" in line]
        assert any(f"--require-hashes -r {lock}" in line for line in installs), recipe
        assert all("-r " not in line or lock in line for line in installs), recipe
        assert any("--no-deps -e ." in line for line in installs), "depmon itself must resolve nothing more"
