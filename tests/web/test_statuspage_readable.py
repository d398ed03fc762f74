"""The status page reads as a person does: names rather than ids, "down for 12 min" with the UTC time beside it,
the last 24 hours as a strip."""

from __future__ import annotations

import re
from typing import Any

import pytest

from monitor.text import span
from monitor.web.status_page import history_strip, render_status_page, state_for, utc_time

pytestmark = pytest.mark.unit

NOW = "2026-11-27T12:00:00.000000Z"
SINCE = "2026-11-27T11:48:12.345678Z"  # 11 min 47.6 s before NOW
DAY_AGO = "2026-11-26T12:00:00.000000Z"


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
            "claims": {
                "name": "Claims",
                "state": "down",
                "since": SINCE,
                "impacted_by": ["evss"],
                "history_24h": [
                    {"from": DAY_AGO, "to": "2026-11-27T10:32:00Z", "state": "ok"},
                    {"from": "2026-11-27T10:32:00Z", "to": "2026-11-27T10:47:00Z", "state": "down"},
                    {"from": "2026-11-27T10:47:00Z", "to": SINCE, "state": "ok"},
                    {"from": SINCE, "to": NOW, "state": "down"},
                ],
            },
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
        assert span(seconds) == text


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


class TestHistoryStrip:
    """Each feature's last 24 hours as a strip of colored segments, readable without the colors."""

    @pytest.fixture
    def strip(self) -> str:
        return _row(render_status_page(_doc()), "data-feature='claims'")

    def test_segments_in_time_order_as_wide_as_they_lasted(self, strip: str) -> None:
        """The Claims strip holds ok, down, ok, down in that order, each growing by its seconds."""
        assert re.findall(r'data-state="(\w+)" style="flex-grow:(\d+)"', strip) == [
            ("ok", str(22 * 3600 + 32 * 60)),
            ("down", str(15 * 60)),
            ("ok", "3672"),  # 10:47:00 to 11:48:12.3
            ("down", "708"),
        ]

    def test_each_segment_has_a_tooltip_in_utc(self, strip: str) -> None:
        """A segment's title reads `down 10:32-10:47 UTC`, with the dates when it crosses midnight."""
        titles = re.findall(r'title="([^"]*)"', strip)
        assert titles == [
            "ok Nov 26 12:00-Nov 27 10:32 UTC",
            "down 10:32-10:47 UTC",
            "ok 10:47-11:48 UTC",
            "down 11:48-12:00 UTC",
        ]

    def test_a_segment_inside_one_minute_shows_seconds(self) -> None:
        """A 40-second blip reads with seconds, not as `10:32-10:32`."""
        segment = {"from": "2026-11-27T10:32:05Z", "to": "2026-11-27T10:32:45Z", "state": "down"}
        assert 'title="down 10:32:05-10:32:45 UTC"' in history_strip("Claims", [segment])

    def test_the_strip_has_a_text_alternative(self, strip: str) -> None:
        """The strip is an image named by the feature and every segment's text, for a screen reader."""
        assert (
            'role="img" aria-label="Claims, last 24 hours: ok Nov 26 12:00-Nov 27 10:32 UTC; '
            'down 10:32-10:47 UTC; ok 10:47-11:48 UTC; down 11:48-12:00 UTC"'
        ) in strip

    def test_time_in_each_state_is_written_worst_first(self, strip: str) -> None:
        """Below the strip, the time spent in each state: down first, then ok."""
        assert '<div class="muted strip-total">down 26 min, ok 23 h 33 min</div>' in strip

    def test_the_legend_names_every_color(self) -> None:
        """The legend above the features names each state the strip can show."""
        page = render_status_page(_doc())
        legend = page[page.index('class="muted key"') : page.index("</p>", page.index('class="muted key"'))]
        assert [state for state in ("down", "degraded", "maintenance", "ok", "unknown") if state in legend] == [
            "down",
            "degraded",
            "maintenance",
            "ok",
            "unknown",
        ]

    def test_a_feature_without_history_has_an_empty_cell(self) -> None:
        """A document without `history_24h` (or with unreadable times) renders no strip and no error."""
        assert history_strip("Claims", []) == ""
        assert history_strip("Claims", [{"from": "yesterday", "to": NOW, "state": "ok"}]) == ""
        assert 'class="strip"' not in _row(render_status_page(_doc()), "data-feature='letters_and_documents'")

    def test_dynamic_values_are_escaped(self) -> None:
        """A hostile state or name cannot leave its attribute."""
        hostile = '"><script>alert(1)</script>'
        strip = history_strip(hostile, [{"from": DAY_AGO, "to": NOW, "state": hostile}])
        assert "<script>" not in strip
        assert "&quot;&gt;&lt;script&gt;" in strip


def _row(page: str, marker: str) -> str:
    start = page.index(marker)
    return page[start : page.index("</tr>", start)]


class TestSilencesAndSelf:
    """Issue 13 and SPEC 10.3 on the page: silences in force and depmon's own trouble."""

    def test_silences_are_listed_with_the_command_that_ends_them(self) -> None:
        """A silence shows the dependency's name, its end, its (escaped) reason and `--expire ID`."""
        doc = _doc()
        doc["silences"] = [
            {"id": 7, "dependency": "evss", "since": NOW, "until": "2026-11-30T14:00:00Z", "reason": "<b>deploy</b>"}
        ]
        page = render_status_page(doc)
        silences = page[page.index('id="silences"') :]
        assert "EVSS" in silences
        assert "14:00 UTC" in silences
        assert "&lt;b&gt;deploy&lt;/b&gt;" in silences
        assert "depmon silence --expire 7" in silences

    def test_depmons_own_trouble_is_an_alert_at_the_top(self) -> None:
        """While depmon is overloaded the page says so before anything else; when ok, nothing is shown."""
        doc = _doc()
        doc["self"] = {"condition": "overloaded", "reason": "depmon cannot keep up: 500 probes/s scheduled, 172 run"}
        page = render_status_page(doc)
        assert page.index("depmon cannot keep up") < page.index("App features")
        doc["self"] = {"condition": "ok", "reason": None}
        assert "role=alert" not in render_status_page(doc)


class TestReplicas:
    """SPEC 10.6 on the page: among replicas, who leads and what each one sees down."""

    @staticmethod
    def _replica(name: str, **fields: Any) -> dict[str, Any]:
        return {
            "replica": name,
            "leader": False,
            "live": True,
            "seen_seconds_ago": 0.4,
            "self": "ok",
            "self_reason": "",
            "down": [],
        } | fields

    def test_each_replica_with_its_view_by_name(self) -> None:
        """The leader, a replica that sees EVSS down (named, not by id), and one blind replica's own trouble."""
        doc = _doc()
        doc["replicas"] = [
            self._replica("depmon-a", leader=True),
            self._replica("depmon-b", down=["evss"]),
            self._replica("depmon-c", live=False, seen_seconds_ago=9.6, self="blind", self_reason="<proxy> down"),
        ]
        page = render_status_page(doc)
        rows = re.findall(r"<tr data-replica='([^']+)'>(.*?)</tr>", page[page.index('id="replicas"') :])
        cells = {name: re.findall(r"<td>(.*?)</td>", row) for name, row in rows}
        assert list(cells) == ["depmon-a", "depmon-b", "depmon-c"]
        assert cells["depmon-a"][1] == "leads"
        assert cells["depmon-b"][1] == ""
        assert cells["depmon-b"][4] == "EVSS"
        assert cells["depmon-c"][2] == "not live, seen 10 s ago"
        assert cells["depmon-c"][3] == "&lt;proxy&gt; down"
        assert cells["depmon-a"][3] == ""

    def test_one_depmon_has_no_replicas_section(self) -> None:
        """Without replicas (SQLite) the page has no Replicas heading."""
        doc = _doc()
        assert "Replicas" not in render_status_page(doc)
        doc["replicas"] = []
        assert "Replicas" not in render_status_page(doc)
