"""Pure health logic: probe results -> probe health -> dependency states. No I/O, no clock.

A probe's health moves through thresholds (SPEC section 4)::

    unknown --first success--> up/degraded
    unknown/up/degraded --failure_threshold consecutive failures--> down
    down --success_threshold consecutive successes--> up/degraded

A failure seen while a parent in `depends_on` is failing or down is attributed to the parent:
it resets the child's failure count instead of adding to it, so only failures that persist
after the parent is healthy again count toward the child's own threshold. That is what keeps
an SSOe OAuth outage from paging once more for every dependency that needs its token.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from monitor.config import Timing
from monitor.results import ProbeResult
from monitor.state.graph import propagate


class ProbeStatus(enum.StrEnum):
    """A probe's health after thresholds."""

    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class DependencyState(enum.StrEnum):
    """A dependency's state as /status, metrics and incidents see it."""

    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class ProbeHealth:
    """The threshold state of one probe and the evidence behind it."""

    status: ProbeStatus = ProbeStatus.UNKNOWN
    failures: int = 0  # consecutive failures that count toward failure_threshold
    successes: int = 0  # consecutive successes (toward success_threshold when down)
    last: ProbeResult | None = None
    last_failure: ProbeResult | None = None
    # The latest run that said nothing about the upstream (`ProbeResult.inconclusive`), until a
    # run counts again: /status shows its reason.
    unanswered: ProbeResult | None = None

    @property
    def failing(self) -> bool:
        """Down, or on the way there: the last counted run failed."""
        return self.status is ProbeStatus.DOWN or self.failures > 0

    @property
    def confirming(self) -> bool:
        """A state change is pending confirmation: re-probe at `confirm_interval`.

        Failures while not down are on the way to down; successes while down are on the way
        back up. A probe that is down and still failing has nothing to confirm: it keeps its
        ordinary interval instead of hammering an upstream that is already known to be down.
        """
        if self.status is ProbeStatus.DOWN:
            return self.successes > 0
        return self.failures > 0


def observe(health: ProbeHealth, result: ProbeResult, timing: Timing, parent_failing: bool) -> ProbeHealth:
    """The probe's health after one more result.

    A traffic signal's result that read the same point as the last one (a confirmation run
    before the backend has a newer point) is kept as the latest but counts for nothing: the
    same data must not confirm itself (SPEC 11.3).
    """
    if result.point_at is not None and health.last is not None and health.last.point_at == result.point_at:
        return replace(health, last=result, last_failure=health.last_failure if result.ok else result, unanswered=None)
    if result.ok:
        good = ProbeStatus.DEGRADED if result.degraded else ProbeStatus.UP
        successes = health.successes + 1
        status = health.status
        if status is not ProbeStatus.DOWN or successes >= timing.success_threshold:
            status = good
        return replace(health, status=status, failures=0, successes=successes, last=result, unanswered=None)
    if parent_failing:
        # Attributed to the parent: counts for nothing, and the count starts over afterwards.
        return replace(health, failures=0, successes=0, last=result, last_failure=result, unanswered=None)
    failures = health.failures + 1
    status = ProbeStatus.DOWN if failures >= timing.failure_threshold else health.status
    return replace(
        health, status=status, failures=failures, successes=0, last=result, last_failure=result, unanswered=None
    )


@dataclass(frozen=True, slots=True)
class DependencyHealth:
    """A dependency's state; `health` is what its probes say, `state` adds maintenance."""

    state: DependencyState
    health: DependencyState
    cause: str | None = None  # the parent its failure is attributed to
    failing: bool = False  # some critical probe is failing or down (children hold their counts)

    @property
    def down(self) -> bool:
        """Down by its own probes or its parent's, maintenance or not."""
        return self.health is DependencyState.DOWN


def own_health(probes: Sequence[tuple[ProbeHealth, bool]]) -> DependencyState:
    """Aggregate (probe health, critical) pairs: a critical probe down makes the dependency down."""
    statuses = [(h.status, critical) for h, critical in probes]
    if any(s is ProbeStatus.DOWN and critical for s, critical in statuses):
        return DependencyState.DOWN
    if any(s is ProbeStatus.UNKNOWN for s, _ in statuses):
        return DependencyState.UNKNOWN
    if any(s in (ProbeStatus.DOWN, ProbeStatus.DEGRADED) for s, _ in statuses):
        return DependencyState.DEGRADED
    return DependencyState.UP


def evaluate_dependency(
    probes: Sequence[tuple[ProbeHealth, bool]], down_parent: str | None, in_maintenance: bool
) -> DependencyHealth:
    """One dependency's state from its (probe health, critical) pairs and its first parent that is down."""
    own = own_health(probes)
    failing = any(h.failing for h, critical in probes if critical)
    health, cause = (DependencyState.DOWN, down_parent) if down_parent else (own, None)
    state = DependencyState.MAINTENANCE if in_maintenance else health
    return DependencyHealth(state=state, health=health, cause=cause, failing=failing or bool(down_parent))


def evaluate_dependencies(
    order: Sequence[str],
    probes: Mapping[str, Sequence[tuple[ProbeHealth, bool]]],
    depends_on: Mapping[str, Sequence[str]],
    in_maintenance: Mapping[str, bool],
) -> dict[str, DependencyHealth]:
    """Every dependency's state, parents first (`order` is a topological order of `depends_on`)."""
    result: dict[str, DependencyHealth] = {}
    for dep in order:
        down_parent = next((p for p in depends_on.get(dep, ()) if result[p].down), None)
        result[dep] = evaluate_dependency(probes[dep], down_parent, bool(in_maintenance.get(dep)))
    return result


def reevaluate_dependencies(
    seeds: Iterable[str],
    rank: Mapping[str, int],
    children: Mapping[str, Sequence[str]],
    probes: Callable[[str], Sequence[tuple[ProbeHealth, bool]]],
    depends_on: Mapping[str, Sequence[str]],
    in_maintenance: Container[str],
    states: Mapping[str, DependencyHealth],
) -> dict[str, DependencyHealth]:
    """The states that differ from `states` once the inputs of the `seeds` have changed.

    The incremental twin of `evaluate_dependencies`: it evaluates the seeds, then, in topological
    order (`rank`), only the children of a dependency that went down or came back (the one thing
    of a parent a child's state depends on). A missing state counts as changed. The result is in
    topological order; `states` is not modified.
    """
    changed: dict[str, DependencyHealth] = {}

    def visit(dep: str) -> Sequence[str]:
        parents = depends_on.get(dep, ())
        down_parent = next((p for p in parents if (changed.get(p) or states[p]).down), None)
        new = evaluate_dependency(probes(dep), down_parent, dep in in_maintenance)
        old = states.get(dep)
        if new == old:
            return ()
        changed[dep] = new
        return children.get(dep, ()) if old is None or old.down != new.down else ()

    propagate(seeds, rank, visit)
    return changed


def parent_failing(dep: str, depends_on: Mapping[str, Sequence[str]], states: Mapping[str, DependencyHealth]) -> bool:
    """True when a parent of `dep` is failing or down, so `dep`'s own failures are held."""
    return any(p in states and states[p].failing for p in depends_on.get(dep, ()))


def root_cause(dep: str, states: Mapping[str, DependencyHealth]) -> str:
    """The dependency a failure of `dep` is attributed to: itself, or its down ancestor."""
    seen = {dep}
    while (cause := states[dep].cause) is not None and cause not in seen:
        seen.add(cause)
        dep = cause
    return dep
