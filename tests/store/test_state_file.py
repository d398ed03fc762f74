"""The state file: private permissions, and a clear error (exit 2 from `depmon run`) when it cannot be used.

A full disk is a real 1 MiB tmpfs mounted for the test (the tests run as root in CI's
container); where mounting is refused the full-disk tests are skipped, saying so.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.store import SQLiteStore, StoreError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MINIMAL_CONFIG = ROOT / "tests" / "fixtures" / "config" / "valid" / "minimal.yaml"
BODY = {"payload": {"summary": "EVSS down"}}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022], ids=["umask-000", "umask-022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a given umask, restored afterwards."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards; skips when this process may not mount."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}): full disk not tested")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk with one file until the kernel says ENOSPC; returns the filler."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle, pytest.raises(OSError, match="No space left") as caught:  # noqa: PT012
        while True:
            handle.write(b"\0" * 4096)
    assert caught.value.errno == errno.ENOSPC
    return filler


def _depmon_run(state: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAGERDUTY_", "SSOE_", "DEPMON_"))}
    command = "import sys; from monitor.commands.cli import main; sys.exit(main())"
    arguments = ["run", "--config", str(MINIMAL_CONFIG), "--listen", "127.0.0.1:0", "--state", str(state)]
    return subprocess.run(
        [sys.executable, "-c", command, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
        check=False,
    )


class TestPermissions:
    """Who may read the state file."""

    def test_new_directories_0700_and_files_0600_whatever_the_umask(self, tmp_path: Path, umask: int) -> None:
        """Directories depmon creates are 0700; the file and its -wal and -shm are 0600."""
        state = tmp_path / "var" / "depmon" / "state.sqlite3"
        with SQLiteStore(state, environment="test") as store:
            store.enqueue("depmon/test/evss", "trigger", BODY, at=1.0)
            assert _mode(tmp_path / "var") == 0o700
            assert _mode(tmp_path / "var" / "depmon") == 0o700
            for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
                assert _mode(state.parent / name) == 0o600, name

    def test_an_existing_world_readable_file_is_made_private(self, tmp_path: Path) -> None:
        """A state file an older depmon left 0644 is 0600 once opened."""
        state = tmp_path / "state.sqlite3"
        with SQLiteStore(state, environment="test") as store:
            store.pending_count()
        state.chmod(0o644)
        with SQLiteStore(state, environment="test") as store:
            store.pending_count()
        assert _mode(state) == 0o600

    def test_an_existing_directory_is_left_alone(self, tmp_path: Path) -> None:
        """The operator's directory (a mount point, a StateDirectory) keeps its mode."""
        tmp_path.chmod(0o755)
        with SQLiteStore(tmp_path / "state.sqlite3", environment="test") as store:
            store.pending_count()
        assert _mode(tmp_path) == 0o755


class TestUnusableStateFile:
    """A state file that cannot be used is a StoreError saying why."""

    def test_corrupt_file(self, tmp_path: Path) -> None:
        """A file that is not SQLite is refused as not a usable state file."""
        state = tmp_path / "state.sqlite3"
        state.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
        with pytest.raises(StoreError) as caught, SQLiteStore(state, environment="test") as store:
            store.pending_count()
        assert str(caught.value) == f"{state}: not a usable depmon state file (file is not a database)"

    def test_path_under_a_regular_file(self, tmp_path: Path) -> None:
        """A state path whose directory is a regular file cannot be opened, and says so."""
        (tmp_path / "file").write_text("x", encoding="utf-8")
        state = tmp_path / "file" / "state.sqlite3"
        with pytest.raises(StoreError) as caught, SQLiteStore(state, environment="test") as store:
            store.pending_count()
        assert str(caught.value).startswith(f"{state}: cannot open the state file (")

    def test_full_disk_at_start(self, tiny_disk: Path) -> None:
        """A new state file on a full disk is refused with SQLite's own reason."""
        _fill(tiny_disk)
        state = tiny_disk / "state.sqlite3"
        with pytest.raises(StoreError) as caught, SQLiteStore(state, environment="test") as store:
            store.pending_count()
        assert str(caught.value) == f"{state}: cannot use the state file (database or disk is full)"

    def test_full_disk_at_run_time_loses_nothing_accepted(self, tiny_disk: Path) -> None:
        """An event accepted before the disk filled is still pending after the failed write and a reopen."""
        state = tiny_disk / "state.sqlite3"
        with SQLiteStore(state, environment="test") as store:
            first = store.enqueue("depmon/test/evss", "trigger", BODY, at=1.0)
            filler = _fill(tiny_disk)
            with pytest.raises((StoreError, sqlite3.Error)):  # noqa: PT012 - free pages take a few rows first
                for attempt in range(200):
                    store.enqueue("depmon/test/evss", "trigger", {"payload": {"summary": "x" * 2000}}, at=2.0 + attempt)
        filler.unlink()
        with SQLiteStore(state, environment="test") as store:
            events = store.outbox_events()
        assert events[0].id == first
        assert events[0].body == BODY
        assert all(event.status == "pending" for event in events)


class TestDepmonRun:
    """`depmon run` on a state file it cannot use: exit 2, the reason, no traceback."""

    def test_corrupt_state_file(self, tmp_path: Path) -> None:
        """A corrupt state file is exit 2 with the path and the reason on stderr."""
        state = tmp_path / "state.sqlite3"
        state.write_bytes(b"garbage" * 1000)
        result = _depmon_run(state)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{state}: not a usable depmon state file (file is not a database)" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr

    def test_full_disk(self, tiny_disk: Path) -> None:
        """A state file on a full disk is exit 2 saying the disk is full."""
        _fill(tiny_disk)
        result = _depmon_run(tiny_disk / "state.sqlite3")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "cannot write the lock file (No space left on device)" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
