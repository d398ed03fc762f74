"""Pure incident decisions (SPEC sections 7, 10.5). No I/O, no clock.

    decide(policy, open incidents, situation, now) -> [Decision]   what to do
    (`monitor.paging.event_content.build_event` says what the page says)

One alert per root cause: a dependency down outside maintenance whose parents are not down.
The rules, in the order `decide` applies them:

- trigger a root cause, unless an ancestor has an unconfirmed failure: then wait (at most the
  ancestor's confirmation time) for the ancestor's verdict, so a parent and a child failing at
  the same moment page once, for the parent;
- an open incident whose dependency is now down because of an ancestor is resolved with a note
  naming the ancestor's incident (the responder keeps one page); one whose dependency was
  removed by a reload is resolved with a note too;
- up (or degraded) again: the `resolve_hold` starts (no event); still up when it has run out:
  resolve. Down again inside the hold: the same incident goes on, marked flapping (no new
  trigger, no new PagerDuty incident);
- in maintenance or silenced: nothing is sent (no trigger, update or escalation) while the
  window or the silence holds; still down when it ends, the ordinary rules apply;
- otherwise the trigger is re-sent with the same dedup key (an alert update) when the impacted
  features change, and once, escalated, when the incident passes `significant_duration`.
A dependency still unknown (just restarted) keeps its incident as it is.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from monitor.config import Config
from monitor.state.health import DependencyHealth, DependencyState, root_cause
from monitor.state.impact import FeatureHealth, features_by_root


class Action(enum.StrEnum):
    """What to do about an incident."""

    TRIGGER = "trigger"  # a new root cause
    UPDATE = "update"  # the impacted features changed: re-send the trigger
    ESCALATE = "escalate"  # open past significant_duration: re-send the trigger, escalated
    RESOLVE = "resolve"
    HOLD = "hold"  # up again: the resolve hold starts (recorded, nothing sent)
    FLAP = "flap"  # down again inside the hold: the same incident goes on (recorded, nothing sent)

    @property
    def sends(self) -> bool:
        """True when the action puts an event in the outbox."""
        return self not in (Action.HOLD, Action.FLAP)


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An incident depmon has paged for and not yet resolved."""

    dependency: str
    dedup_key: str
    opened_at: float
    features: tuple[str, ...]
    escalated: bool = False
    id: int | None = None  # the store's id, once persisted
    up_since: float | None = None  # up again since then: the resolve hold runs
    flapping: bool = False  # failed again inside the resolve hold


@dataclass(frozen=True, slots=True)
class Decision:
    """One incident action with the facts it was decided on."""

    action: Action
    dependency: str
    dedup_key: str
    features: tuple[str, ...] = ()
    escalated: bool = False
    flapping: bool = False
    up_since: float | None = None
    note: str | None = None  # why, when the state alone does not say it (superseded, removed)


@dataclass(frozen=True, slots=True)
class Policy:
    """The config values the decisions depend on."""

    environment: str
    significant_duration: float
    resolve_hold: float = 0.0

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """The policy of a config's `monitor` section."""
        m = config.monitor
        return cls(m.environment, m.significant_duration, m.resolve_hold)


@dataclass(frozen=True, slots=True)
class Situation:
    """What the decisions look at: states now, and the graph and timing facts about them.

    `since`: when each dependency entered its current state. `ancestors`: every dependency a
    dependency depends on, transitively. `confirm_within`: how long a first failure of each
    dependency takes, at most, to be confirmed as down or cleared. `last_result` and
    `last_failure`: when each dependency's latest result and latest failure were taken.
    `recheck_within`: how long until all of a dependency's probes have run again (its interval
    plus its confirmation time). `silenced`: dependencies no page may be sent for.
    """

    dependencies: Mapping[str, DependencyHealth]
    features: Mapping[str, FeatureHealth]
    since: Mapping[str, float] = field(default_factory=dict)
    ancestors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    confirm_within: Mapping[str, float] = field(default_factory=dict)
    last_result: Mapping[str, float] = field(default_factory=dict)
    last_failure: Mapping[str, float] = field(default_factory=dict)
    recheck_within: Mapping[str, float] = field(default_factory=dict)
    silenced: Collection[str] = frozenset()  # dependencies under a `depmon silence`


SELF = "self"  # depmon's own page: `depmon/<environment>/self` (SPEC 10.3); decided like a dependency's


def dedup_key(environment: str, dependency: str) -> str:
    """`depmon/<environment>/<dependency>`: the same across restarts and replicas."""
    return f"depmon/{environment}/{dependency}"


def awaiting_ancestor(dependency: str, situation: Situation, now: float) -> str | None:
    """The ancestor whose verdict a new page of `dependency` waits for, if any.

    A parent and a child failing at the same moment must page once, for the parent; the child
    may notice first. So a child down outside its parent's outage waits while an ancestor
    (1) has an unconfirmed failure, (2) has not been probed since the child's failure began (the
    scheduler probes it at once), or (3) recovered after the child's latest failure, which was
    then the ancestor's ("only failures that persist after the parent is up again count").
    Each wait is bounded, by the ancestor's confirmation time for (1) and (2) and by the
    child's own re-check time for (3): past it, the child pages on its own.
    """
    down_since = situation.since.get(dependency, now)
    waited = now - down_since
    streak_began = down_since - situation.confirm_within.get(dependency, 0.0)
    for ancestor in situation.ancestors.get(dependency, ()):
        state = situation.dependencies.get(ancestor)
        if state is None or state.down:
            continue
        bound = situation.confirm_within.get(ancestor, 0.0)
        if waited < bound and (state.failing or situation.last_result.get(ancestor, math.inf) < streak_began):
            return ancestor
        recovered = situation.since.get(ancestor)
        if (
            recovered is not None
            and situation.last_failure.get(dependency, math.inf) < recovered
            and now - recovered < situation.recheck_within.get(dependency, 0.0)
        ):
            return ancestor
    return None


def decide(
    policy: Policy, open_incidents: Mapping[str, OpenIncident], situation: Situation, now: float
) -> list[Decision]:
    """The actions that bring PagerDuty in line with the current states (rules: module docstring)."""
    env = policy.environment
    dependencies, features = situation.dependencies, situation.features
    decisions: list[Decision] = []
    impacted = features_by_root(features)
    for dep, state in dependencies.items():
        if dep in open_incidents or state.state is not DependencyState.DOWN or state.cause is not None:
            continue
        if dep in situation.silenced:
            continue  # silenced: no page; still down when the silence ends, it pages then
        if awaiting_ancestor(dep, situation, now) is not None:
            continue
        decisions.append(Decision(Action.TRIGGER, dep, dedup_key(env, dep), tuple(impacted.get(dep, ()))))
    for dep, incident in open_incidents.items():
        decision = _follow_up(policy, incident, dependencies.get(dep), situation, now, impacted)
        if decision is not None:
            decisions.append(decision)
    return decisions


def _follow_up(
    policy: Policy,
    incident: OpenIncident,
    state: DependencyHealth | None,
    situation: Situation,
    now: float,
    impacted: Mapping[str, Sequence[str]],
) -> Decision | None:
    """What an open incident needs now, if anything (`impacted`: `features_by_root` of the situation)."""
    same = Decision(
        Action.RESOLVE,
        incident.dependency,
        incident.dedup_key,
        incident.features,
        incident.escalated,
        incident.flapping,
        incident.up_since,
    )
    if state is None:  # removed from the config by a reload: nothing else will ever resolve it
        return replace(same, note="the dependency was removed from the config")
    if state.down and state.cause is not None:
        root = root_cause(incident.dependency, situation.dependencies)
        note = f"superseded: {root} is down and its incident {dedup_key(policy.environment, root)} is the page"
        return replace(same, note=note)
    if state.health in (DependencyState.UP, DependencyState.DEGRADED):
        if incident.up_since is None and policy.resolve_hold > 0:
            return replace(same, action=Action.HOLD, up_since=now)
        if incident.up_since is None or now - incident.up_since >= policy.resolve_hold:
            return same
        return None
    if not state.down:
        return None  # unknown: wait for evidence either way
    if incident.up_since is not None:
        return replace(same, action=Action.FLAP, flapping=True, up_since=None)
    if state.state is DependencyState.MAINTENANCE or incident.dependency in situation.silenced:
        return None  # planned work or a silence: no update, no escalation while it holds
    current = tuple(impacted.get(incident.dependency, ()))
    due = not incident.escalated and now - incident.opened_at >= policy.significant_duration
    if current == incident.features and not due:
        return None
    return replace(
        same, action=Action.ESCALATE if due else Action.UPDATE, features=current, escalated=incident.escalated or due
    )
