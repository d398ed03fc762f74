"""Durations, times and `host:port`, each written one way (monitor/text.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from monitor.text import (
    COMMAND_DURATION_LIMIT,
    checked_text,
    duration_argument,
    elapsed,
    format_duration,
    host_port,
    iso_utc,
    moment,
    parse_duration,
    parse_host_port,
    utc,
    utc_date,
    vets_api_time,
)

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 27, 11, 48, 12, 345678, tzinfo=UTC)


class TestDurations:
    """Config durations read back as what they print; people's durations rounded down."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("500ms", 0.5), ("10s", 10.0), ("3m", 180.0), ("1h", 3600.0), ("90d", 90 * 86400.0), (2, 2.0)],
    )
    def test_parse_and_format_are_inverse(self, text: str | int, seconds: float) -> None:
        """`parse_duration` reads each unit; `format_duration` prints it back in the largest whole unit."""
        assert parse_duration(text) == seconds
        assert parse_duration(format_duration(seconds)) == seconds

    @pytest.mark.parametrize("value", ["10", "5 minutes", True, 0, "-1s"])
    def test_parse_refuses_what_is_not_a_positive_duration(self, value: object) -> None:
        """A bare number in text, an unknown unit, a boolean or a non-positive value is refused."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(value)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0, "0s"), (45, "45s"), (725, "12m 5s"), (7380, "2h 3m"), (100800, "1d 4h"), (3600, "1h")],
    )
    def test_elapsed(self, seconds: float, text: str) -> None:
        """The two largest units, a zero one left out."""
        assert elapsed(seconds) == text


class TestDurationLimits:
    """A duration is bounded: 10 years in the config, 90 days on the command line; never infinite."""

    TEN_YEARS_OR_SO = 3653 * 86400.0

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("4018d", id="eleven-years"),
            pytest.param("1" + "0" * 400 + "s", id="400-digits-text"),
            pytest.param(10**400, id="400-digits-int"),
            pytest.param(float("inf"), id="inf"),
            pytest.param(1e300, id="1e300"),
        ],
    )
    def test_config_durations_stop_at_ten_years(self, value: object) -> None:
        """Past 10 years (400 digits and infinity too) a config duration is refused, naming the limit."""
        with pytest.raises(ValueError, match=r"^must be at most 10 years$"):
            parse_duration(value)

    def test_ten_years_is_the_longest(self) -> None:
        """Ten years itself is a duration the config may have; one second more is not."""
        assert parse_duration("3653d") == self.TEN_YEARS_OR_SO
        with pytest.raises(ValueError, match=r"^must be at most 10 years$"):
            parse_duration(self.TEN_YEARS_OR_SO + 1)

    @pytest.mark.parametrize("value", [float("nan"), -(10**400)])
    def test_nan_and_a_huge_negative_number_are_not_durations(self, value: float) -> None:
        """NaN is not a duration, and a 400-digit negative number not a positive one."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(value)

    def test_ninety_days_is_a_commands_longest(self) -> None:
        """`--for 90d` is accepted; one millisecond more is refused with the argument, the limit and the value."""
        assert duration_argument("--for", "90d") == COMMAND_DURATION_LIMIT.seconds == 90 * 86400.0
        with pytest.raises(ValueError, match=r"^--for: must be at most 90 days \(got 7776000001ms\)$"):
            duration_argument("--for", "7776000001ms")

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            pytest.param("99999999d", "--for: must be at most 90 days (got 99999999d)", id="huge"),
            pytest.param("9" * 400 + "d", f"--for: must be at most 90 days (got {'9' * 400}d)", id="400-digits"),
            pytest.param("inf", "--for: must be a duration like 500ms, 10s, 3m, 1h or 90d (got inf)", id="inf"),
            pytest.param("nan", "--for: must be a duration like 500ms, 10s, 3m, 1h or 90d (got nan)", id="nan"),
            pytest.param(
                "1h\x1b[2J", "--for: must be a duration like 500ms, 10s, 3m, 1h or 90d (got '1h\\x1b[2J')", id="escape"
            ),
        ],
    )
    def test_command_durations_out_of_bounds_are_refused(self, value: str, message: str) -> None:
        """A command's duration past 90 days, infinite, NaN or with an escape is refused in one line, escaped."""
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            duration_argument("--for", value)


class TestCheckedText:
    """Text arguments are refused with control, bidirectional-format or non-UTF-8 characters."""

    @pytest.mark.parametrize("text", ["EVSS release", "Réparation, café ☕", "الصيانة", "tab-free, one line"])
    def test_plain_text_in_any_script_is_accepted(self, text: str) -> None:
        """Letters, punctuation and symbols of any script pass unchanged."""
        assert checked_text("--reason", text) == text

    @pytest.mark.parametrize(
        ("text", "code"),
        [
            pytest.param("a\x1b[2Jb", "U+001B at character 2", id="escape"),
            pytest.param("a\nb", "U+000A at character 2", id="newline"),
            pytest.param("\x00", "U+0000 at character 1", id="nul"),
            pytest.param("ab\x7f", "U+007F at character 3", id="del"),
            pytest.param("\x9b2J", "U+009B at character 1", id="c1-csi"),
            pytest.param("\x85", "U+0085 at character 1", id="c1-nel"),
            pytest.param("evil\u202egnp.exe", "U+202E at character 5", id="right-to-left-override"),
            pytest.param("\u202a", "U+202A at character 1", id="left-to-right-embedding"),
            pytest.param("\u2066x\u2069", "U+2066 at character 1", id="isolate"),
            pytest.param("x\u2069", "U+2069 at character 2", id="pop-isolate"),
            pytest.param("\u200f", "U+200F at character 1", id="right-to-left-mark"),
            pytest.param("\u200e", "U+200E at character 1", id="left-to-right-mark"),
            pytest.param("\u061c", "U+061C at character 1", id="arabic-letter-mark"),
            pytest.param("\udcff", "U+DCFF at character 1", id="not-utf-8"),
        ],
    )
    def test_control_and_bidi_characters_are_refused(self, text: str, code: str) -> None:
        """Each control (C0, DEL, C1), bidi-format or undecodable character is refused, argument and character named."""
        message = f"--reason: control, bidirectional-format and non-UTF-8 characters are not allowed ({code})"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            checked_text("--reason", text)


class TestTimes:
    """Times for people in UTC; for machines ISO 8601 with `Z`."""

    def test_utc(self) -> None:
        """To the minute by default; seconds, no date and no zone on request."""
        assert utc(AT) == "2026-11-27 11:48 UTC"
        assert utc(AT, seconds=True) == "2026-11-27 11:48:12 UTC"
        assert utc(AT, date=False) == "11:48 UTC"
        assert utc(AT, seconds=True, zone=False) == "2026-11-27 11:48:12"
        assert utc_date(AT) == "2026-11-27"

    def test_every_form_of_a_moment_is_the_same_time(self) -> None:
        """A UNIX time, an aware datetime in another zone and an ISO text with `Z` are one moment."""
        eastern = AT.astimezone(timezone(timedelta(hours=-5)))
        assert moment(AT.timestamp()) == moment(eastern) == moment("2026-11-27T11:48:12.345678Z") == AT
        assert utc(eastern) == utc(AT.timestamp()) == "2026-11-27 11:48 UTC"

    def test_machine_formats(self) -> None:
        """ISO 8601 with `Z` to the microsecond; vets-api's with `.000` milliseconds."""
        assert iso_utc(AT) == "2026-11-27T11:48:12.345678Z"
        assert iso_utc(AT.timestamp()) == "2026-11-27T11:48:12.345678Z"
        assert vets_api_time(AT) == "2026-11-27T11:48:12.000Z"

    @pytest.mark.parametrize("far", [1e300, float("inf"), 10.0**18])
    def test_a_time_past_the_year_9999_is_the_far_future(self, far: float) -> None:
        """A UNIX time no date can hold is shown as the last moment of 9999, not an error."""
        assert iso_utc(far) == "9999-12-31T23:59:59.999999Z"
        assert utc(far) == "9999-12-31 23:59 UTC"

    def test_a_time_before_the_year_1_is_the_far_past(self) -> None:
        """A UNIX time before the year 1 is shown as its first moment."""
        assert iso_utc(-float("inf")) == "0001-01-01T00:00:00Z"


class TestHostPort:
    """Addresses as `host:port`, IPv6 in brackets."""

    @pytest.mark.parametrize(
        ("host", "port", "text"),
        [("127.0.0.1", 9464, "127.0.0.1:9464"), ("::1", 443, "[::1]:443"), ("example.gov", None, "example.gov")],
    )
    def test_host_port_reads_back(self, host: str, port: int | None, text: str) -> None:
        """`host_port` writes what `parse_host_port` reads."""
        assert host_port(host, port) == text
        if port is not None:
            assert parse_host_port(text) == (host, port)

    @pytest.mark.parametrize("value", ["127.0.0.1", ":9464", "host:http", "host:70000"])
    def test_parse_refuses_what_is_not_host_port(self, value: str) -> None:
        """No port, no host, a port that is not a number from 0 to 65535: refused with the expected form."""
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_host_port(value)
