"""What the store holds, as immutable records, and the store's errors.

Exceptions::

    StoreError           the state cannot be used (newer schema, not a depmon store, unreachable)
    ├── StateLocked      another depmon holds the SQLite file (`StateLock`)
    └── NotLeader        a decision was written by a replica that is no longer the leader (fenced)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.errors import NotLeader, StateLocked, StoreError

__all__ = [
    "PAGERDUTY",
    "PAGERDUTY_REST",
    "Action",
    "Applied",
    "Incident",
    "IncidentWrite",
    "NotLeader",
    "Observation",
    "OutboxEvent",
    "OutboxStatus",
    "ReplicaReport",
    "ReplicaView",
    "Silence",
    "StateLocked",
    "StoreError",
    "TimelineEntry",
]

Action = Literal["trigger", "resolve"]
PAGERDUTY = "pagerduty"  # the outbox destination of PagerDuty events; Slack posts go to `slack:<channel>`
OutboxStatus = Literal["pending", "accepted", "dropped", "dry_run", "cancelled"]
PAGERDUTY_REST = "pagerduty_rest"  # the outbox destination of escalation's REST writes (SPEC 11.2)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One PagerDuty event in the outbox; `body` is the Events v2 event without the routing key."""

    id: int
    dedup_key: str
    action: Action
    body: dict[str, Any]
    created_at: float
    attempts: int
    next_attempt_at: float
    status: OutboxStatus
    last_error: str | None
    delivered_at: float | None
    destination: str = "pagerduty"  # or `slack:<channel>`, `pagerduty_rest`
    after_id: int | None = None  # a row that must be settled first (a REST write's trigger)


@dataclass(frozen=True, slots=True)
class OutboxHead:
    """The oldest pending event of one ordered queue (destination, dedup key), without its body.

    What the delivery loop scans at every wake-up: a mass outage leaves a thousand heads pending,
    and decoding a thousand bodies per scan cost ten times the scan. The body is read
    (`outbox_event`) when the head is sent.
    """

    id: int
    dedup_key: str
    action: Action
    destination: str
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident (one root cause); `resolved_at` is None while it is open."""

    id: int
    dependency: str
    dedup_key: str
    opened_at: float
    resolved_at: float | None
    escalated: bool
    features: list[str]
    summary: str
    severity: str
    data: dict[str, Any]
    up_since: float | None = None  # up again since then: the resolve hold runs
    flapping: bool = False  # failed again inside the resolve hold

    @property
    def is_open(self) -> bool:
        """True until the incident is resolved."""
        return self.resolved_at is None


@dataclass(frozen=True, slots=True)
class IncidentWrite:
    """Everything one incident decision writes; `apply` commits it in one transaction.

    `incident_id` None opens a new incident (at `at`); otherwise the incident's features,
    escalation, flapping and hold are set to these values, and `resolved` closes it. `event` is
    the outbox row (action, Events v2 body), if the decision sends one; `kind` and `timeline`
    are the timeline entry.
    """

    dependency: str
    dedup_key: str
    at: float
    kind: str
    timeline: dict[str, Any]
    incident_id: int | None = None
    event: tuple[Action, dict[str, Any]] | None = None
    messages: Sequence[tuple[str, Action, dict[str, Any]]] = ()  # (destination, action, body): Slack posts
    # PagerDuty REST writes (`monitor.paging.escalation.RestWrite.row`), delivered after `event` (SPEC 11.2)
    rest_writes: Sequence[dict[str, Any]] = ()
    features: Sequence[str] = ()
    summary: str = ""
    severity: str = ""
    escalated: bool = False
    flapping: bool = False
    up_since: float | None = None
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    """What a batch of decisions committed: each decision's incident id, and the REST writes its
    resolves cancelled, as (dedup key, step)."""

    ids: list[int]
    cancelled: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Silence:
    """No page for `dependency` from `created_at` until `ends_at` (or until expired by hand)."""

    id: int
    dependency: str
    created_at: float
    ends_at: float
    reason: str
    expired_at: float | None = None

    def active_at(self, now: float) -> bool:
        """True while the silence holds at UNIX time `now`."""
        return self.created_at <= now < self.ends_at and (self.expired_at is None or now < self.expired_at)

    @property
    def ended_at(self) -> float:
        """When it stops (or stopped) holding: its end, or the moment it was expired by hand if earlier."""
        return self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of an incident's timeline: a state change, evidence, an event sent."""

    incident_id: int
    at: float
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one replica's own probes say of one dependency (its own verdict, before the graph)."""

    state: str  # a DependencyState value: up, degraded, down, unknown
    failing: bool  # a critical probe is failing (on its way down, or down)
    since: float  # the replica has seen this state since then
    detail: str = ""  # the last failure, for /status and the page


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """One replica's heartbeat: who it is, and the observations that changed since its last one.

    `dependencies` set (a full report): observations of any other dependency are forgotten (a
    reload removed them).
    """

    replica: str
    instance: str  # unique per process: two processes must not share a replica name
    at: float
    interval: float  # the replica reports at least this often
    self_state: str = "ok"  # its self watch (SelfCondition): ok, overloaded, cannot_see_out
    self_reason: str = ""
    observations: Mapping[str, Observation] = field(default_factory=dict)
    dependencies: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A replica as the store last heard from it."""

    replica: str
    instance: str
    started_at: float
    seen_at: float
    interval: float
    leader: bool
    self_state: str
    self_reason: str
    observations: Mapping[str, Observation]
