"""Pure quorum rules for replicas (SPEC 10.6): which replicas are live, what they agree on.

Every replica reports its own verdict on each dependency (what its probes say, before the
graph); the leader decides from the merged verdicts. A dependency is down for paging when at
least `quorum` live replicas see it down. A replica is live while it has reported within twice
its interval; a replica whose self watch says it cannot trust its probes (overloaded, cannot
see out) is live but says nothing about dependencies: its own trouble is a self page naming
it, never a dependency's. No I/O, no clock: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from monitor.state.health import DependencyState
from monitor.store.records import Observation, ReplicaView

__all__ = ["Verdict", "is_live", "merge", "self_trouble", "verdicts"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The replicas' merged verdict on one dependency, and who saw it down."""

    state: DependencyState
    failing: bool
    down_replicas: tuple[str, ...] = ()


def is_live(view: ReplicaView, now: float) -> bool:
    """The replica reported within twice its interval."""
    return now - view.seen_at <= 2.0 * view.interval


def merge(seen: Sequence[tuple[str, Observation]], quorum: int) -> Verdict:
    """The verdict of (replica, observation) pairs: down when `quorum` of them see it down.

    Below the quorum a dependency some replica sees down or degraded is degraded (trouble from
    some vantage point: shown, never paged); with no replica knowing, it is unknown.
    """
    down = tuple(sorted(name for name, o in seen if o.state == DependencyState.DOWN))
    failing = sum(1 for _, o in seen if o.failing) >= quorum
    if len(down) >= quorum:
        return Verdict(DependencyState.DOWN, True, down)
    states = {o.state for _, o in seen}
    if not states - {DependencyState.UNKNOWN}:
        return Verdict(DependencyState.UNKNOWN, failing, down)
    if states & {DependencyState.DOWN, DependencyState.DEGRADED}:
        return Verdict(DependencyState.DEGRADED, failing, down)
    return Verdict(DependencyState.UP, failing, down)


def verdicts(views: Iterable[ReplicaView], dependencies: Iterable[str], quorum: int, now: float) -> dict[str, Verdict]:
    """Each dependency's merged verdict from the live replicas that can trust their probes."""
    trusted = [v for v in views if is_live(v, now) and v.self_state == "ok"]
    return {
        dep: merge([(v.replica, v.observations[dep]) for v in trusted if dep in v.observations], quorum)
        for dep in dependencies
    }


def self_trouble(views: Iterable[ReplicaView], now: float) -> Mapping[str, str]:
    """Live replicas whose self watch is down: replica -> its reason."""
    return {v.replica: v.self_reason or v.self_state for v in views if is_live(v, now) and v.self_state != "ok"}
