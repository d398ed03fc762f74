"""Bad input to `depmon silence` and `depmon maintenance open`, run as real commands (issue 21, SPEC 11.4):
exit 2 with one line naming the argument, no traceback, nothing stored or sent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.config import bundled_config_path
from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.store import SQLiteStore

pytestmark = pytest.mark.e2e

EVSS = "PZKWB6Y"
LARGEST_ID = 2**63 - 1
CONTROL_OR_BIDI = "control, bidirectional-format and non-UTF-8 characters are not allowed"


def depmon(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`depmon ARGS` on the bundled config, as a process of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DEPMON_", "PAGERDUTY_"))}
    return subprocess.run(
        [sys.executable, "-m", "monitor.entry", *args, "--config", str(bundled_config_path())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**env, **(environ or {})},
    )


def refused(result: subprocess.CompletedProcess[str], line: str) -> None:
    """Exit 2, and stderr is exactly that one line: no traceback, nothing on stdout."""
    assert result.returncode == 2, result.stderr
    assert result.stderr == line + "\n"
    assert result.stdout == ""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


class TestSilenceInput:
    """`depmon silence` refuses what it cannot store or show back."""

    @pytest.mark.parametrize(
        "duration",
        [
            pytest.param("91d", id="91-days"),
            pytest.param("99999999d", id="99999999-days"),
            pytest.param("1" + "0" * 400 + "d", id="400-digits"),
        ],
    )
    def test_a_silence_longer_than_90_days_is_refused(self, state: Path, duration: str) -> None:
        """`--for` past 90 days (a 400-digit one included) is exit 2 naming the limit, and no silence is stored."""
        result = depmon("silence", "evss", "--for", duration, "--reason", "deploy", "--state", str(state))
        refused(result, f"depmon silence: --for: must be at most 90 days (got {duration})")
        assert depmon("silence", "--list", "--state", str(state)).stdout == "no silence in force\n"

    def test_ninety_days_is_the_longest(self, state: Path) -> None:
        """`--for 90d` is stored and confirmed; one second more is refused."""
        result = depmon("silence", "evss", "--for", "7776001s", "--reason", "deploy", "--state", str(state))
        refused(result, "depmon silence: --for: must be at most 90 days (got 7776001s)")
        result = depmon("silence", "evss", "--for", "90d", "--reason", "deploy", "--state", str(state))
        assert result.returncode == 0, result.stderr
        assert "no page for EVSS for 90d" in result.stdout

    @pytest.mark.parametrize("silence_id", ["99999999999999999999", "-" + "9" * 30])
    def test_an_id_the_store_cannot_hold_is_refused(self, state: Path, silence_id: str) -> None:
        """`--expire` outside 1 to 2**63-1 is exit 2 naming the range, not an SQLite overflow."""
        result = depmon("silence", "--expire", silence_id, "--state", str(state))
        refused(result, f"depmon silence: --expire: must be a silence id, 1 to {LARGEST_ID} (got {silence_id})")

    def test_the_largest_id_is_looked_up_and_one_more_refused(self, state: Path) -> None:
        """`--expire 2**63-1` is looked up in the store (no such silence); `2**63` never reaches it."""
        with SQLiteStore(state, environment="production") as store:
            store.add_silence("evss", time.time(), time.time() + 60, "deploy")
        result = depmon("silence", "--expire", str(LARGEST_ID + 1), "--state", str(state))
        refused(result, f"depmon silence: --expire: must be a silence id, 1 to {LARGEST_ID} (got {LARGEST_ID + 1})")
        result = depmon("silence", "--expire", str(LARGEST_ID), "--state", str(state))
        refused(result, f"depmon silence: no silence with id {LARGEST_ID}")

    @pytest.mark.parametrize(
        ("args", "line"),
        [
            pytest.param(
                ("evss", "--reason", "deploy\x1b]0;owned\x07"),
                f"--reason: {CONTROL_OR_BIDI} (U+001B at character 7)",
                id="escape-in-reason",
            ),
            pytest.param(
                ("evss", "--reason", "\x9b2Jdeploy"), f"--reason: {CONTROL_OR_BIDI} (U+009B at character 1)", id="c1"
            ),
            pytest.param(
                ("evss", "--reason", "deploy \u202eevil"),
                f"--reason: {CONTROL_OR_BIDI} (U+202E at character 8)",
                id="bidi-in-reason",
            ),
            pytest.param(
                ("ev\u2066ss", "--reason", "deploy"),
                f"DEPENDENCY: {CONTROL_OR_BIDI} (U+2066 at character 3)",
                id="bidi-in-dependency",
            ),
        ],
    )
    def test_control_and_bidi_characters_are_refused(self, state: Path, args: tuple[str, ...], line: str) -> None:
        """A reason or dependency with an escape sequence or a bidi override is exit 2 naming it, never echoed."""
        result = depmon("silence", *args, "--for", "1h", "--state", str(state))
        refused(result, f"depmon silence: {line}")
        assert not state.exists()  # refused before anything was opened

    @pytest.mark.parametrize("ends_at", [1e300, float("inf")])
    def test_a_silence_ending_past_the_year_9999_is_listed(self, state: Path, ends_at: float) -> None:
        """A row written by hand with an end no date can hold is listed as ending at the far future."""
        with SQLiteStore(state, environment="production") as store:
            silence_id = store.add_silence("evss", time.time(), ends_at, "written by hand")
        result = depmon("silence", "--list", "--state", str(state))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{silence_id}\tevss\tuntil 9999-12-31 23:59 UTC\twritten by hand\n"


class TestMaintenanceOpenInput:
    """`depmon maintenance open` refuses a window past 90 days before asking PagerDuty."""

    @pytest.fixture
    def pagerduty(self) -> Iterator[FakePagerDuty]:
        with FakePagerDuty(api_token="token") as fake:
            fake.add_service(EVSS, "EVSS")
            yield fake

    def environ(self, fake: FakePagerDuty) -> dict[str, str]:
        return {"PAGERDUTY_API_URL": fake.api_url, "PAGERDUTY_API_TOKEN": "token", "PAGERDUTY_FROM_EMAIL": "a@b.gov"}

    @pytest.mark.parametrize("duration", ["91d", "99999999d", "9" * 400 + "h"])
    def test_a_window_longer_than_90_days_is_refused(self, pagerduty: FakePagerDuty, duration: str) -> None:
        """`--for` past 90 days is exit 2 naming the limit, and PagerDuty is not asked."""
        result = depmon(
            "maintenance", "open", "evss", "--for", duration, "--message", "A|B", environ=self.environ(pagerduty)
        )
        refused(result, f"depmon maintenance open: --for: must be at most 90 days (got {duration})")
        assert pagerduty.rest_request_count == 0

    def test_a_message_with_a_bidi_override_is_refused(self, pagerduty: FakePagerDuty) -> None:
        """A `--message` holding a right-to-left override is exit 2 naming it, and PagerDuty is not asked."""
        result = depmon(
            "maintenance", "open", "evss", "--for", "1h", "--message", "A|\u202eB", environ=self.environ(pagerduty)
        )
        refused(result, f"depmon maintenance open: --message: {CONTROL_OR_BIDI} (U+202E at character 3)")
        assert pagerduty.rest_request_count == 0
