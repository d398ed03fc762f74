"""The status page reads as a person does: names rather than ids, "down for 12 min" with the UTC time beside it."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.statuspage import duration, render_status_page, state_for, utc_time

NOW = "2026-11-27T12:00:00.000000Z"
SINCE = "2026-11-27T11:48:12.345678Z"  # 11 min 47.6 s before NOW


def _doc() -> dict[str, Any]:
    """A /status document: EVSS down since SINCE, Claims down through it, one open incident."""
    probe = {"state": "down", "ok": False, "outcome": "http_status", "detail": "HTTP 503 from /health"}
    return {
        "environment": "production",
        "generated_at": NOW,
        "ready": True,
        "dependencies": {
            "ssoe-oauth": {
                "name": "SSOe OAuth",
                "state": "up",
                "since": None,
                "cause": None,
                "maintenance": None,
                "probes": {},
            },
            "evss": {
                "name": "EVSS",
                "state": "down",
                "since": SINCE,
                "cause": "ssoe-oauth",
                "maintenance": None,
                "probes": {"health": probe},
            },
        },
        "features": {
            "claims": {"name": "Claims", "state": "down", "since": SINCE, "impacted_by": ["evss"]},
            "letters_and_documents": {"name": "Letters", "state": "ok", "since": None, "impacted_by": []},
        },
        "incidents": [
            {
                "dedup_key": "depmon/production/evss",
                "dependency": "evss",
                "opened_at": SINCE,
                "features": ["claims", "letters_and_documents"],
                "escalated": False,
            }
        ],
    }


class TestDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "under 1 min"),
            (59.9, "under 1 min"),
            (60, "1 min"),
            (707.6, "11 min"),
            (3599, "59 min"),
            (3600, "1 h"),
            (3600 + 5 * 60, "1 h 5 min"),
            (86400, "1 d"),
            (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"),
            (-5, "under 1 min"),
        ],
    )
    def test_duration_as_a_person_says_it(self, seconds: float, text: str) -> None:
        """Durations read in whole minutes, hours and days, never in seconds or microseconds."""
        assert duration(seconds) == text


class TestTimes:
    def test_utc_time_drops_seconds_and_microseconds(self) -> None:
        """A /status timestamp reads as a date and a minute in UTC."""
        assert utc_time(SINCE) == "2026-11-27 11:48 UTC"

    def test_state_for_gives_the_duration_and_the_time_beside_it(self) -> None:
        """A state with a start reads `down for 11 min` followed by the UTC time it started."""
        assert state_for("down", SINCE, NOW) == (
            f'down for 11 min <time class=muted datetime="{SINCE}">(since 2026-11-27 11:48 UTC)</time>'
        )

    def test_no_start_says_nothing(self) -> None:
        """A state without a recorded start (unknown since startup) has no duration."""
        assert state_for("unknown", None, NOW) == ""


class TestPage:
    @pytest.fixture
    def page(self) -> str:
        return render_status_page(_doc())

    def test_no_microsecond_timestamp_is_shown(self, page: str) -> None:
        """The raw /status timestamps appear only as machine-readable attributes, never as text."""
        assert page.count(SINCE) == page.count(f'datetime="{SINCE}"')

    def test_features_say_how_long_they_are_down(self, page: str) -> None:
        """The Claims row reads `down for 11 min` and the UTC time."""
        row = _row(page, "data-feature='claims'")
        assert "down for 11 min" in row
        assert "2026-11-27 11:48 UTC" in row

    def test_impacted_by_names_the_dependency(self, page: str) -> None:
        """The Claims row names EVSS, not its id."""
        row = _row(page, "data-feature='claims'")
        assert "EVSS" in row
        assert ">evss<" not in row

    def test_cause_names_the_parent(self, page: str) -> None:
        """A dependency down because of its parent names the parent: `SSOe OAuth`, not `ssoe-oauth`."""
        row = _row(page, "data-dependency='evss'")
        assert "SSOe OAuth" in row
        assert "ssoe-oauth<" not in row

    def test_incidents_list_names(self, page: str) -> None:
        """The open incident reads EVSS with Claims and Letters, open for 11 min."""
        incidents = page[page.index('id="incidents"') :]
        assert "<td>EVSS</td>" in incidents
        assert "Claims, Letters" in incidents
        assert "claims" not in incidents.replace("data-feature", "")
        assert "open for 11 min" in incidents


def _row(page: str, marker: str) -> str:
    start = page.index(marker)
    return page[start : page.index("</tr>", start)]
