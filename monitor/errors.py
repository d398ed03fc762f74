"""depmon's own exceptions, all of them here: one `except DepmonError` catches every failure depmon
reports (the packages re-export theirs: `monitor.config.ConfigError`, `monitor.store.StoreError`).

::

    DepmonError
    ├── ConfigError            a config that cannot be used (`FILE: key.path: message` per ConfigIssue)
    ├── StoreError             state that cannot be used (newer schema, not a depmon store, unreachable)
    │   ├── StateLocked        another depmon holds the SQLite file
    │   └── NotLeader          a decision from a replica that no longer leads (fenced)
    ├── PagerDutyError         a REST call PagerDuty refused or did not answer
    │   ├── MaintenanceUnavailable   the maintenance windows could not be read
    │   └── WindowWriteFailed        a window could not be created or ended
    ├── TokenUnavailable       a bearer token could not be obtained (probes.tokens)
    └── BenchError             a part of `depmon bench` could not be started
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BenchError",
    "ConfigError",
    "ConfigIssue",
    "DepmonError",
    "MaintenanceUnavailable",
    "NotLeader",
    "PagerDutyError",
    "StateLocked",
    "StoreError",
    "TokenUnavailable",
    "WindowWriteFailed",
]


class DepmonError(Exception):
    """A failure depmon explains to its user (never a bug: those are other exceptions)."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One configuration problem, located by file and key path."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class ConfigError(DepmonError):
    """The configuration is invalid; `issues` lists every problem found."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class StoreError(DepmonError):
    """The state cannot be used (newer schema, not a depmon store, unwritable, unreachable)."""


class StateLocked(StoreError):
    """Another depmon holds the state file; `holder` says who (pid and host), when known."""

    def __init__(self, state_path: str, holder: str) -> None:
        super().__init__(f"{state_path} is in use by another depmon ({holder}): one daemon per state file")
        self.holder = holder


class NotLeader(StoreError):
    """A decision carried a leadership epoch that is no longer current: another replica leads now."""


class PagerDutyError(DepmonError):
    """A PagerDuty REST call was refused or not answered (`monitor.pagerduty.clients`)."""


class MaintenanceUnavailable(PagerDutyError):
    """PagerDuty's maintenance windows could not be read; `reason` says why (secret-free)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WindowWriteFailed(PagerDutyError):
    """A maintenance window could not be created or ended; `reason` says why (secret-free).

    `http_status` is PagerDuty's answer (None when none came).
    """

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class TokenUnavailable(DepmonError):
    """No valid token could be had for a ref; the message is a readable, secret-free reason."""


class BenchError(DepmonError):
    """A part of the bench could not be started; the message says which and why."""
