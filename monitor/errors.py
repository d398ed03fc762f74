"""The root of depmon's own exceptions: one `except DepmonError` catches every failure depmon reports.

::

    DepmonError
    ├── ConfigError            monitor.config: a config that cannot be used (`FILE: key.path: message`)
    ├── StoreError             monitor.store: state that cannot be used
    │   ├── StateLocked        another depmon holds the SQLite file
    │   └── NotLeader          a decision from a replica that no longer leads (fenced)
    ├── PagerDutyError         monitor.pagerduty.clients: a REST call PagerDuty refused or did not answer
    └── TokenUnavailable       probes.tokens: a bearer token could not be obtained
"""

from __future__ import annotations

__all__ = ["DepmonError"]


class DepmonError(Exception):
    """A failure depmon explains to its user (never a bug: those are other exceptions)."""
