"""What a probe reports: one `ProbeResult` per run, failure as data, never an exception."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(enum.StrEnum):
    """Why a probe run ended the way it did (SPEC section 4); also the PagerDuty event `class`."""

    OK = "ok"
    TIMEOUT = "timeout"
    CONNECT = "connect"
    DNS = "dns"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    CONDITION = "condition"
    AUTH = "auth"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Signal:
    """What a traffic signal probe read (SPEC 11.3): the value, the query, and the point's time.

    `value` is None when the backend answered with no data; `point_at` is the UNIX time of the
    point the value was taken from (None with no point). A confirmation counts only a new point.
    """

    query: str
    value: float | None = None
    point_at: float | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The result of one probe run.

    `ok` says whether the target answered as expected. `degraded` marks an answer that was
    good enough to count as a success but not healthy (slow, IETF `warn`, a certificate close
    to expiry). `security_relevant` marks failures that follow the Security Incident Procedure
    (certificate expired, untrusted or for the wrong host). `at` is a UNIX timestamp.
    """

    ok: bool
    outcome: Outcome
    detail: str
    latency_seconds: float = 0.0
    at: float = 0.0
    degraded: bool = False
    security_relevant: bool = False
    cert_not_after: float | None = None  # the certificate's expiry as a UNIX timestamp, when known
    # The dependency this failure is the fault of, when it is not the probed one: a probe that
    # could not get its bearer token from `ssoe-oauth` blames `ssoe-oauth`.
    blamed_on: str | None = None
    facts: dict[str, str] = field(default_factory=dict)  # small, secret-free extra evidence
    # Set when the run says nothing about the upstream (`depmon_probes_inconclusive_total`'s reason,
    # e.g. `signal_backend`: the metrics backend could not answer): it counts toward no threshold.
    inconclusive: str | None = None
    signal: Signal | None = None  # a traffic signal's reading (SPEC 11.3)

    @classmethod
    def success(cls, detail: str, **kwargs: object) -> ProbeResult:
        """An `ok` result."""
        return cls(ok=True, outcome=Outcome.OK, detail=detail, **kwargs)  # type: ignore[arg-type]

    @property
    def point_at(self) -> float | None:
        """The time of the signal point this result read, when it read one."""
        return self.signal.point_at if self.signal is not None else None

    @classmethod
    def failure(cls, outcome: Outcome, detail: str, **kwargs: object) -> ProbeResult:
        """A failed result with its outcome and a one-line human detail."""
        return cls(ok=False, outcome=outcome, detail=detail, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def unanswered(cls, reason: str, outcome: Outcome, detail: str, **kwargs: object) -> ProbeResult:
        """A run that says nothing about the upstream (`reason`, e.g. `signal_backend`): counted nowhere."""
        return cls(ok=False, outcome=outcome, detail=detail, inconclusive=reason, **kwargs)  # type: ignore[arg-type]
