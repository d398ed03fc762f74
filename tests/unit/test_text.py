"""Durations, times and `host:port`, each written one way (monitor/text.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from monitor.text import (
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
