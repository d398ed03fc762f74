"""The daemon's live state: probe results in, dependency and feature states out.

`Engine.record` is synchronous and runs on the event loop: it applies the pure threshold logic
(`health.observe`), and only when a dependency's own verdict moves does it re-evaluate the graph,
incrementally: that dependency, then in topological order only the children of a dependency that
went down or came back (`health.reevaluate_dependencies`), then only the features above a node
that changed (`impact.reevaluate_features`), on adjacency computed once per config. It publishes
to the metrics and logs only what changed, and wakes whoever waits for changes (the pager). So a
result costs what it can reach, not the size of the config, and a mass outage of N dependencies
costs N small evaluations rather than N whole-graph ones. A result that changes nothing costs a
few dictionary updates and three metric updates on label children resolved once at start.

Maintenance windows are re-read only when the clock leaves the span in which none opens or
closes (`windows.stable_span`), and then only the nodes whose coverage moved are re-evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

import anyio
import structlog

from monitor.config import Config, Timing
from monitor.maintenance.records import MaintenanceWindow, stable_span, windows_by_node
from monitor.results import ProbeResult
from monitor.state.graph import children_of, ranks, topological_order
from monitor.state.health import (
    DependencyHealth,
    DependencyState,
    ProbeHealth,
    ProbeStatus,
    observe,
    own_health,
    parent_failing,
    reevaluate_dependencies,
)
from monitor.state.impact import (
    FeatureHealth,
    dependency_nodes,
    feature_order,
    feature_parents,
    needs_from_config,
    reevaluate_features,
    with_own_window,
)

log = structlog.get_logger("depmon.engine")


class StateListener(Protocol):
    """What the engine tells as it goes: each probe configured and each result, each dependency's and
    feature's new state. `monitor.metrics.Metrics` is one: it publishes them as series."""

    def probe_configured(self, dependency: str, probe: str, kind: str) -> None:
        """A probe of the config, before its first result."""
        ...

    def probe_result(self, dependency: str, probe: str, kind: str, result: ProbeResult) -> None:
        """One result of a probe (on the event loop, at every run: it must be cheap)."""
        ...

    def set_dependency_state(self, dependency: str, state: str, in_maintenance: bool) -> None:
        """A dependency's state changed (or its window did)."""
        ...

    def set_feature_state(self, feature: str, state: str) -> None:
        """A feature's state changed."""
        ...


@dataclass(slots=True)
class _ProbeSlot:
    """Everything resolved once per probe: identity, timing and health."""

    dependency: str
    name: str
    kind: str
    critical: bool
    timing: Timing
    health: ProbeHealth
    runs: int = 0
    repeats: int = 0  # failures not logged since the last `probe_failed`: the same failure while down


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's state at one moment, immutable: what the pager, the server and the status page read.

    A reader may hold it across awaits; the engine goes on changing its own state meanwhile.
    `probes` is each dependency's (probe name, health) in config order.
    """

    config: Config
    taken_at: float
    ready: bool
    dependencies: Mapping[str, DependencyHealth]
    features: Mapping[str, FeatureHealth]
    dependency_since: Mapping[str, float]
    feature_since: Mapping[str, float]
    dependency_windows: Mapping[str, MaintenanceWindow]
    windows: tuple[MaintenanceWindow, ...]
    probes: Mapping[str, tuple[tuple[str, ProbeHealth], ...]]

    def evidence(self, dependency: str) -> list[tuple[str, ProbeResult]]:
        """The last failing result of each failing probe of a dependency: what a page shows."""
        return [
            (name, health.last_failure)
            for name, health in self.probes.get(dependency, ())
            if health.failing and health.last_failure is not None
        ]


class Engine:
    """Holds probe health and the derived dependency and feature states of one config.

    `dependencies`, `features`, `dependency_since`, `feature_since` and `dependency_windows` are
    live views: the engine updates these same dict objects in place, one entry per change (see
    `__init__` for why). The keys of `dependencies` and `features` never change; those of
    `dependency_windows` come and go with the windows.
    """

    def __init__(
        self,
        config: Config,
        listener: StateListener,
        clock: Callable[[], float] = time.time,
        one_shot: bool = False,
        on_feature_change: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """`listener` is told of every probe result and state change (the daemon's `Metrics`, which
        publishes them as Prometheus series: the engine itself writes no metric).
        `one_shot`: thresholds of 1, for `depmon check`, where each probe runs once.

        `on_feature_change(feature, state, at)` is called, on the event loop, each time a
        feature's state changes after the initial evaluation (where `feature_state_changed` is
        logged): the daemon keeps the changes for the status page's history. It must not block.
        """
        self.config = config
        self.listener = listener
        self.clock = clock
        self._on_feature_change = on_feature_change
        # Called with a dependency each time its own verdict moves (replicas report just those).
        self.on_own_verdict: Callable[[str], None] | None = None
        self.changed = anyio.Event()  # set on every state change; replaced once consumed
        self._version = 0  # moves with every input (result, windows, verdict): a snapshot is kept until then
        self._snapshot: tuple[int, Snapshot] | None = None
        # Adjacency, once per config: what a change of each node can reach.
        self._depends_on = {d: list(dep.depends_on) for d, dep in config.dependencies.items()}
        self._dependency_rank = ranks(topological_order(self._depends_on))
        self._children = children_of(self._depends_on)
        self._needs = needs_from_config(config.features)
        self._feature_rank = ranks(feature_order(self._needs))
        self._needed_by = children_of(feature_parents(self._needs))
        self._dependency_owners: dict[str, list[str]] = {}
        self._feature_owners: dict[str, list[str]] = {}
        for service, owners in config.service_owners().items():
            for node in owners:
                by_service = self._dependency_owners if node in config.dependencies else self._feature_owners
                by_service.setdefault(service, []).append(node)
        self._slots: dict[tuple[str, str], _ProbeSlot] = {}
        for dep_id, spec in config.iter_probes():
            labels = (dep_id, spec.name, spec.kind)
            self._slots[(dep_id, spec.name)] = _ProbeSlot(
                dependency=dep_id,
                name=spec.name,
                kind=spec.kind,
                critical=spec.critical,
                timing=(
                    config.timing(spec).model_copy(update={"failure_threshold": 1, "success_threshold": 1})
                    if one_shot
                    else config.timing(spec)
                ),
                health=ProbeHealth(),
            )
            listener.probe_configured(*labels)
        self._by_dependency: dict[str, list[_ProbeSlot]] = {d: [] for d in config.dependencies}
        for slot in self._slots.values():
            self._by_dependency[slot.dependency].append(slot)
        # What snapshots show of the probes, kept per dependency as results come in: a snapshot
        # copies this dict instead of walking every probe (a mass outage snapshots many times a second).
        self._probe_view = {d: self._probes_now(d) for d in self._by_dependency}
        self.windows: list[MaintenanceWindow] = []
        # The windows in force hold while the clock stays in this span; with no windows, forever.
        self._window_span = (-math.inf, math.inf)
        self.dependency_windows: dict[str, MaintenanceWindow] = {}
        self._feature_windows: set[str] = set()  # features under a window of their own
        # Live views, updated in place rather than replaced: their keys are fixed here (one per
        # configured node), so iterating them never raises, and every reader (the pager's
        # `decide`, the server, `check`) reads them synchronously between two awaits, while
        # `record` too runs on the event loop between awaits: each read sees one consistent
        # state (the server hands only the metric registry to a worker thread, never these).
        # A fresh dict per change (copy-on-write) would cost O(config) per change, and a mass
        # outage O(N^2) again. A reader holding on across an await copies them first; an
        # immutable snapshot for such readers is ARCHITECTURE item 1, a step of its own.
        self.dependencies: dict[str, DependencyHealth] = {}
        self.features: dict[str, FeatureHealth] = {}
        self.dependency_since: dict[str, float] = {}
        self.feature_since: dict[str, float] = {}
        # The feature graph's nodes: what each dependency contributes, and each feature as the
        # features needing it see it (before a window of its own, as `evaluate_features` does).
        self._nodes: dict[str, FeatureHealth] = {}
        self._unprobed = len(self._slots)
        # Own verdicts given from outside instead of by probes (the replicas' quorum, SPEC 10.6).
        self._given: dict[str, list[tuple[ProbeHealth, bool]]] = {}
        self._own = {d: self._own_verdict(d) for d in self._by_dependency}
        self._evaluate(self._dependency_rank, self._needs, initial=True)
        # Published in a stable order: dependencies parents first, features in config order.
        self.dependencies = {d: self.dependencies[d] for d in self._dependency_rank}
        self.features = {f: self.features[f] for f in self._needs}

    # -- inputs -------------------------------------------------------------------------------

    def record(self, dependency: str, probe: str, result: ProbeResult) -> None:
        """Take one probe result; re-evaluate what it can reach if the dependency's verdict moved."""
        slot = self._slots[(dependency, probe)]
        self._version += 1
        if slot.runs == 0:
            self._unprobed -= 1
        slot.runs += 1
        self.listener.probe_result(dependency, probe, slot.kind, result)
        before = slot.health
        if not result.ok:
            self._log_failure(slot, before, result)

        # A failure is held (attributed to a parent) while a parent is failing, or when the probe
        # itself says a parent caused it: a child can notice a revoked token before the parent's
        # own probe runs, and must not page first.
        attributed = parent_failing(dependency, self._depends_on, self.dependencies) or (
            result.blamed_on is not None and result.blamed_on in self._depends_on[dependency]
        )
        slot.health = observe(before, result, slot.timing, attributed)
        self._probe_view[dependency] = self._probes_now(dependency)
        if slot.health.status is not before.status or slot.health.failing != before.failing:
            if slot.health.status is not before.status:
                log.info(
                    "probe_state_changed",
                    dependency=dependency,
                    probe=probe,
                    old=before.status,
                    new=slot.health.status,
                    detail=result.detail,
                    **({"failures_not_logged": slot.repeats} if slot.repeats else {}),
                )
                slot.repeats = 0
            # The graph only needs a new evaluation when the dependency's own verdict moved: while
            # 10 probes of one dependency report in one by one, it stays `unknown` until the last.
            verdict = self._own_verdict(dependency)
            if verdict != self._own[dependency]:
                self._own[dependency] = verdict
                if self.on_own_verdict is not None:
                    self.on_own_verdict(dependency)
                dependencies, features = self._windows_moved()
                self._evaluate([dependency, *dependencies], features)

    def record_unanswered(self, dependency: str, probe: str, result: ProbeResult) -> None:
        """Take a run that said nothing about the upstream (`result.inconclusive`): shown, counted nowhere.

        It changes no threshold and no state; snapshots show it (`ProbeHealth.unanswered`) until a
        run counts again. It is a run for readiness: a metrics backend that is down must not keep
        depmon from ever being ready.
        """
        slot = self._slots[(dependency, probe)]
        self._version += 1
        if slot.runs == 0:
            self._unprobed -= 1
        slot.runs += 1
        slot.health = replace(slot.health, unanswered=result)
        self._probe_view[dependency] = self._probes_now(dependency)

    @staticmethod
    def _log_failure(slot: _ProbeSlot, before: ProbeHealth, result: ProbeResult) -> None:
        """`probe_failed`, except for the same failure again while the probe is down.

        Every failure that counts toward a verdict is logged, and every new reason; a probe down
        for an hour does not log its failure twice a second (1,000 dependencies down at once
        would be 500 lines a second, 8% of the event loop). `probe_state_changed` on recovery
        says how many went unlogged.
        """
        last = before.last_failure
        if (
            before.status is ProbeStatus.DOWN
            and last is not None
            and (last.outcome, last.detail) == (result.outcome, result.detail)
        ):
            slot.repeats += 1
            return
        log.info(
            "probe_failed",
            dependency=slot.dependency,
            probe=slot.name,
            outcome=result.outcome,
            detail=result.detail,
            **({"failures_not_logged": slot.repeats} if slot.repeats else {}),
        )
        slot.repeats = 0

    def set_verdict(self, dependency: str, state: DependencyState, failing: bool) -> None:
        """Take a dependency's own verdict as given (the replicas' merged one) instead of from its probes.

        The leader of replicas decides on an engine fed this way: the graph, windows and features
        work on the quorum's verdicts exactly as on one replica's probes.
        """
        self._version += 1
        status = ProbeStatus(str(state))
        failures = int(failing and status is not ProbeStatus.DOWN)
        self._given[dependency] = [(ProbeHealth(status, failures=failures), True)]
        verdict = self._own_verdict(dependency)
        if verdict != self._own[dependency]:
            self._own[dependency] = verdict
            dependencies, features = self._windows_moved()
            self._evaluate([dependency, *dependencies], features)

    def own_verdicts(self) -> dict[str, tuple[DependencyState, bool]]:
        """Each dependency's own verdict (its probes' state, a critical probe failing), before the graph."""
        return dict(self._own)

    def own_verdict(self, dependency: str) -> tuple[DependencyState, bool]:
        """One dependency's own verdict (see `own_verdicts`)."""
        return self._own[dependency]

    def adopt(self, old: Engine) -> None:
        """Carry over probe health from the engine of the previous config, for unchanged probes."""
        old_specs = {(d, p.name): p for d, p in old.config.iter_probes()}
        for dep_id, spec in self.config.iter_probes():
            key = (dep_id, spec.name)
            if key in old._slots and old_specs.get(key) == spec:
                self._slots[key].health = old._slots[key].health
                self._slots[key].runs = old._slots[key].runs
        self._probe_view = {d: self._probes_now(d) for d in self._by_dependency}
        self._unprobed = sum(1 for slot in self._slots.values() if slot.runs == 0)
        self._version += 1
        self._own = {d: self._own_verdict(d) for d in self._by_dependency}
        self._evaluate(self._dependency_rank, initial=True)

    def set_windows(self, windows: list[MaintenanceWindow]) -> None:
        """Take the latest maintenance windows (from the PagerDuty poller)."""
        self._version += 1
        self.windows = list(windows)
        dependencies, features = self._windows_moved(force=True)
        if dependencies or features:
            self._evaluate(dependencies, features)

    def tick(self) -> None:
        """Re-check time-based inputs: a maintenance window that opened or ended since."""
        dependencies, features = self._windows_moved()
        if dependencies or features:
            self._evaluate(dependencies, features)

    # -- reads --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every probe has run at least once."""
        return self._unprobed == 0

    def probe_health(self, dependency: str, probe: str) -> ProbeHealth:
        """The threshold state of one probe."""
        return self._slots[(dependency, probe)].health

    def next_delay(self, dependency: str, probe: str) -> float:
        """Seconds until this probe should run again: `confirm_interval` while a change is pending."""
        slot = self._slots[(dependency, probe)]
        return slot.timing.confirm_interval if slot.health.confirming else slot.timing.interval

    def evidence(self, dependency: str) -> list[tuple[str, ProbeResult]]:
        """The last failing result of each failing probe of a dependency: what a page shows."""
        return [
            (slot.name, slot.health.last_failure)
            for slot in self._by_dependency[dependency]
            if slot.health.failing and slot.health.last_failure is not None
        ]

    def probes_of(self, dependency: str) -> list[tuple[str, ProbeHealth]]:
        """(probe name, health) of each probe of a dependency, in config order."""
        return list(self._probe_view[dependency])

    def _probes_now(self, dependency: str) -> tuple[tuple[str, ProbeHealth], ...]:
        return tuple((slot.name, slot.health) for slot in self._by_dependency[dependency])

    # -- evaluation ---------------------------------------------------------------------------

    def _windows_moved(self, force: bool = False) -> tuple[list[str], set[str]]:
        """The dependencies and features whose maintenance coverage moved since the last look.

        Costs two comparisons while the clock stays in the span where no window opens or closes
        (unless `force`: the windows themselves changed), and then the windows and the nodes
        they cover, never the whole config.
        """
        now = self.clock()
        since, until = self._window_span
        if not force and since <= now < until:
            return [], set()
        at = datetime.fromtimestamp(now, UTC)
        self._window_span = stable_span(self.windows, at)
        covering = windows_by_node(self.windows, at, self._dependency_owners)
        moved = list(self.dependency_windows.keys() ^ covering.keys())
        for dep_id in self.dependency_windows.keys() - covering.keys():
            del self.dependency_windows[dep_id]
        self.dependency_windows.update(covering)
        features = set(windows_by_node(self.windows, at, self._feature_owners))
        moved_features, self._feature_windows = features ^ self._feature_windows, features
        if moved or moved_features:
            self._version += 1
        return moved, moved_features

    def _own_verdict(self, dependency: str) -> tuple[DependencyState, bool]:
        probes = self._probe_healths(dependency)
        return own_health(probes), any(h.failing for h, critical in probes if critical)

    def _probe_healths(self, dependency: str) -> list[tuple[ProbeHealth, bool]]:
        given = self._given.get(dependency)
        if given is not None:
            return given
        return [(s.health, s.critical) for s in self._by_dependency[dependency]]

    def _evaluate(self, dependencies: Iterable[str], features: Iterable[str] = (), initial: bool = False) -> None:
        """Re-evaluate what a change of `dependencies` (own verdict or window) and `features` (window) reaches.

        Publishes (state, since, metrics, a log line unless `initial`) only what changed.
        """
        now = self.clock()
        changed_dependencies = reevaluate_dependencies(
            dependencies,
            self._dependency_rank,
            self._children,
            self._probe_healths,
            self._depends_on,
            self.dependency_windows,
            self.dependencies,
        )
        for dep_id, state in changed_dependencies.items():
            old = self.dependencies.get(dep_id)
            self.dependencies[dep_id] = state
            if old is None or old.state is not state.state or old.cause != state.cause:
                self.dependency_since[dep_id] = now
                self.listener.set_dependency_state(dep_id, state.state, dep_id in self.dependency_windows)
                if not initial:
                    log.info(
                        "dependency_state_changed",
                        dependency=dep_id,
                        old=old.state if old else None,
                        new=state.state,
                        cause=state.cause,
                    )
        nodes = dependency_nodes(changed_dependencies, self._children, self.dependencies)
        moved = [dep_id for dep_id, node in nodes.items() if self._nodes.get(dep_id) != node]
        self._nodes.update(nodes)
        seeds = [*moved, *features]
        raw = reevaluate_features(seeds, self._feature_rank, self._needs, self._needed_by, self._nodes)
        self._nodes.update(raw)
        changed = bool(changed_dependencies)
        for feat_id in [*raw, *(f for f in features if f not in raw)]:
            feature = with_own_window(self._nodes[feat_id], feat_id in self._feature_windows)
            old_feature = self.features.get(feat_id)
            if old_feature == feature:
                continue
            changed = True
            self.features[feat_id] = feature
            if old_feature is None or old_feature.state is not feature.state:
                self.feature_since[feat_id] = now
                self.listener.set_feature_state(feat_id, feature.state)
                if not initial:
                    log.info(
                        "feature_state_changed",
                        feature=feat_id,
                        old=old_feature.state if old_feature else None,
                        new=feature.state,
                        impacted_by=list(feature.impacted_by),
                    )
                    if self._on_feature_change is not None:
                        self._on_feature_change(feat_id, str(feature.state), now)
        if changed:
            self._version += 1
            self.changed.set()

    def snapshot(self) -> Snapshot:
        """The state now, immutable; the same object until the next input (O(config) to build, once)."""
        if self._snapshot is not None and self._snapshot[0] == self._version:
            return self._snapshot[1]
        snapshot = Snapshot(
            config=self.config,
            taken_at=self.clock(),
            ready=self.ready,
            dependencies=MappingProxyType(dict(self.dependencies)),
            features=MappingProxyType(dict(self.features)),
            dependency_since=MappingProxyType(dict(self.dependency_since)),
            feature_since=MappingProxyType(dict(self.feature_since)),
            dependency_windows=MappingProxyType(dict(self.dependency_windows)),
            windows=tuple(self.windows),
            probes=MappingProxyType(dict(self._probe_view)),
        )
        self._snapshot = (self._version, snapshot)
        return snapshot

    def consume_change(self) -> anyio.Event:
        """Hand the current change event to a waiter and arm a fresh one for the next change."""
        event, self.changed = self.changed, anyio.Event()
        return event

    def root_causes(self) -> list[str]:
        """Dependencies down outside maintenance whose parents are not down: one page each."""
        return [d for d, s in self.dependencies.items() if s.state is DependencyState.DOWN and s.cause is None]
