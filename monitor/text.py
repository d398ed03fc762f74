"""Durations, times and `host:port` as depmon writes them: each format in one place. No I/O.

Three audiences, three kinds of format:

- config and messages about it: `parse_duration` / `format_duration` (`500ms`, `90s`, `3m`),
  which read back as what they print, each duration within a `DurationLimit`;
- people (status page, postmortem, CLI, pages): `utc` (`2026-11-27 11:48 UTC`), `span`
  (`12 min`, `3 h 5 min`) and `elapsed` (`12m 5s`), all in UTC, all rounded down;
- machines (JSON documents, PagerDuty, vets-api): `iso_utc` (`2026-11-27T11:48:12.345678Z`) and
  `vets_api_time` (`2026-11-27T11:48:12.000Z`);

and `host_port` / `parse_host_port` for addresses (`[::1]:9464`); `duration_argument` and
`checked_text` for what a command is given (`--for 2h`, `--reason TEXT`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import NamedTuple

DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$"  # `500ms`, `10s`, `3m`, `1h`, `90d`
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NOT_A_DURATION = "must be a duration like 500ms, 10s, 3m, 1h or 90d"


class DurationLimit(NamedTuple):
    """The longest duration a setting or an argument may have, and how a message says it."""

    seconds: float
    said: str


COMMAND_DURATION_LIMIT = DurationLimit(90 * 86400.0, "90 days")
"""`silence --for` and `maintenance open --for`: a longer one is a typo, or a page forgotten for good."""
CONFIG_DURATION_LIMIT = DurationLimit(3653 * 86400.0, "10 years")
"""Every duration in the config: far past any real setting, and still a date when added to now."""


def parse_duration(value: object, limit: DurationLimit = CONFIG_DURATION_LIMIT) -> float:
    """`500ms`, `10s`, `3m`, `1h`, `90d` (or a number of seconds) -> seconds as a float, at most `limit`.

    Raises ValueError with a message that does not repeat the value (it may be a substituted secret).
    """
    if isinstance(value, bool):
        raise ValueError(_NOT_A_DURATION)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # a 400-digit int: as a duration, simply too long (or too negative)
            seconds = math.inf if value > 0 else -math.inf
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]  # 400 digits: inf, refused below
    else:
        raise ValueError(_NOT_A_DURATION)
    if math.isnan(seconds):
        raise ValueError(_NOT_A_DURATION)
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    if seconds > limit.seconds:
        raise ValueError(f"must be at most {limit.said}")
    return seconds


def duration_argument(argument: str, value: str, limit: DurationLimit = COMMAND_DURATION_LIMIT) -> float:
    """A command's duration (`--for 2h`) in seconds, at most `limit`; ValueError naming the argument and the value.

    `--for: must be at most 90 days (got 99999999d)`: what was typed is the user's own, so it is shown.
    """
    try:
        return parse_duration(value, limit)
    except ValueError as exc:
        shown = value if value.isprintable() else repr(value)
        raise ValueError(f"{argument}: {exc} (got {shown})") from None


# Characters that make a terminal, a page or a browser show text other than what it says: the controls
# (C0, DEL and C1, Unicode category Cc; ESC starts terminal escape sequences) and the bidirectional
# formatting ones (embeddings, overrides, isolates and marks, which reorder what follows them). And the
# lone surrogates Python makes of bytes that are not UTF-8: no store can encode them.
_BIDI_FORMAT = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def checked_text(argument: str, value: str) -> str:
    """`value` when it has no control, bidirectional-format or non-UTF-8 character; else ValueError naming
    the argument."""
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_FORMAT:
            raise ValueError(
                f"{argument}: control, bidirectional-format and non-UTF-8 characters are not allowed "
                f"(U+{ord(char):04X} at character {position})"
            )
    return value


def format_duration(seconds: float) -> str:
    """The inverse of `parse_duration`, for messages: 0.5 -> `500ms`, 90 -> `90s`."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def span(seconds: float) -> str:
    """A duration as a person says it, to the minute: `under 1 min`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def elapsed(seconds: float) -> str:
    """`45s`, `12m 5s`, `2h 3m`, `1d 4h`: the two largest units, whole seconds (a postmortem's times)."""
    total = max(0, round(seconds))
    parts: list[str] = []
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count or parts:
            parts.append(f"{count}{suffix}")
    return " ".join([p for p in parts[:2] if not p.startswith("0")] or ["0s"])


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def moment(value: float | datetime | str) -> datetime:
    """A UNIX time, an aware datetime or an ISO 8601 text (`Z` allowed) as an aware UTC datetime.

    A UNIX time past the year 9999 (a row written by hand with `1e300` or `inf`) is the last moment
    of 9999, one before the year 1 the first moment of the year 1: shown as far future or far past,
    never an error on a page that lists it. Raises ValueError for NaN and for text that is not an
    ISO 8601 time.
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        if math.isnan(value):
            raise ValueError("NaN is not a time") from None
        return _LATEST if value > 0 else _EARLIEST


def utc(value: float | datetime | str, *, seconds: bool = False, date: bool = True, zone: bool = True) -> str:
    """A time for people: `2026-11-27 11:48 UTC`; `:12` with `seconds`, no date without `date`,
    no ` UTC` without `zone` (a table whose header says it)."""
    fmt = ("%Y-%m-%d " if date else "") + ("%H:%M:%S" if seconds else "%H:%M") + (" UTC" if zone else "")
    return moment(value).strftime(fmt)


def utc_date(value: float | datetime | str) -> str:
    """The UTC date alone: `2026-11-27`."""
    return moment(value).strftime("%Y-%m-%d")


def iso_utc(value: float | datetime) -> str:
    """ISO 8601 in UTC with `Z`, to the microsecond as Python gives it: JSON documents and timelines."""
    return moment(value).isoformat().replace("+00:00", "Z")


def vets_api_time(value: float | datetime) -> str:
    """vets-api's time format: UTC with milliseconds always `.000`, `2021-05-25T23:33:39.000Z`."""
    return moment(value).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def host_port(host: str, port: int | None) -> str:
    """`host:port`, with brackets around an IPv6 address; the host alone without a port."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` too) -> (host, port); raises ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, like 127.0.0.1:9464")
    return host.strip("[]"), int(port)
