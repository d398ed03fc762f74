"""The daemon's live state: probe results in, dependency and feature states out.

`Engine.record` is synchronous and runs on the event loop: it applies the pure threshold logic
(`health.observe`), and only when a probe's status changes does it re-evaluate the dependency
and feature graph (`health.evaluate_dependencies`, `impact.evaluate_features`), publish the
new states to the metrics, log the transitions and wake whoever waits for changes (the pager).
A result that changes nothing costs a few dictionary updates and three metric updates on
label children resolved once at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from monitor.config import Config, Timing
from monitor.health import (
    DependencyHealth,
    DependencyState,
    ProbeHealth,
    evaluate_dependencies,
    observe,
    own_health,
    parent_failing,
    topological_order,
)
from monitor.impact import FeatureHealth, FeatureState, evaluate_features, needs_from_config
from monitor.metrics import Metrics
from monitor.results import ProbeResult
from monitor.windows import MaintenanceWindow, services_in_maintenance

log = structlog.get_logger("depmon.engine")


@dataclass(slots=True)
class _ProbeSlot:
    """Everything resolved once per probe: identity, timing and its metric children."""

    dependency: str
    name: str
    kind: str
    critical: bool
    timing: Timing
    health: ProbeHealth
    success: Any
    duration: Any
    outcomes: dict[str, Any]
    runs: int = 0


class Engine:
    """Holds probe health and the derived dependency and feature states of one config."""

    def __init__(
        self, config: Config, metrics: Metrics, clock: Callable[[], float] = time.time, one_shot: bool = False
    ) -> None:
        """`one_shot`: thresholds of 1, for `depmon check`, where each probe runs once."""
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.changed = anyio.Event()  # set on every state change; replaced once consumed
        self._depends_on = {d: list(dep.depends_on) for d, dep in config.dependencies.items()}
        self._order = topological_order(self._depends_on)
        self._needs = needs_from_config(config.features)
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
                success=metrics.probe_success.labels(*labels),
                duration=metrics.probe_duration.labels(*labels),
                outcomes={},
            )
        self._by_dependency: dict[str, list[_ProbeSlot]] = {d: [] for d in config.dependencies}
        for slot in self._slots.values():
            self._by_dependency[slot.dependency].append(slot)
        self.windows: list[MaintenanceWindow] = []
        self.dependency_windows: dict[str, MaintenanceWindow] = {}
        self.dependencies: dict[str, DependencyHealth] = {}
        self.features: dict[str, FeatureHealth] = {}
        self.dependency_since: dict[str, float] = {}
        self.feature_since: dict[str, float] = {}
        self._unprobed = len(self._slots)
        self._own: dict[str, tuple[DependencyState, bool]] = {}
        self._evaluate(initial=True)

    # -- inputs -------------------------------------------------------------------------------

    def record(self, dependency: str, probe: str, result: ProbeResult) -> None:
        """Take one probe result; re-evaluate the graph if the probe's status changed."""
        slot = self._slots[(dependency, probe)]
        if slot.runs == 0:
            self._unprobed -= 1
        slot.runs += 1
        slot.success.set(1 if result.ok else 0)
        slot.duration.observe(result.latency_seconds)
        counter = slot.outcomes.get(result.outcome)
        if counter is None:
            counter = slot.outcomes[result.outcome] = self.metrics.probes.labels(
                dependency, probe, slot.kind, result.outcome
            )
        counter.inc()
        if result.cert_not_after is not None:
            self.metrics.tls_expiry.labels(dependency, probe).set(result.cert_not_after)
        if not result.ok:
            log.info("probe_failed", dependency=dependency, probe=probe, outcome=result.outcome, detail=result.detail)

        before = slot.health
        # A failure is held (attributed to a parent) while a parent is failing, or when the probe
        # itself says a parent caused it: a child can notice a revoked token before the parent's
        # own probe runs, and must not page first.
        attributed = parent_failing(dependency, self._depends_on, self.dependencies) or (
            result.blamed_on is not None and result.blamed_on in self._depends_on[dependency]
        )
        slot.health = observe(before, result, slot.timing, attributed)
        if slot.health.status is not before.status or slot.health.failing != before.failing:
            if slot.health.status is not before.status:
                log.info(
                    "probe_state_changed",
                    dependency=dependency,
                    probe=probe,
                    old=before.status,
                    new=slot.health.status,
                    detail=result.detail,
                )
            # The graph only needs a new evaluation when the dependency's own verdict moved: while
            # 10 probes of one dependency report in one by one, it stays `unknown` until the last.
            if self._own_verdict(dependency) != self._own.get(dependency):
                self._evaluate()

    def adopt(self, old: Engine) -> None:
        """Carry over probe health from the engine of the previous config, for unchanged probes."""
        old_specs = {(d, p.name): p for d, p in old.config.iter_probes()}
        for dep_id, spec in self.config.iter_probes():
            key = (dep_id, spec.name)
            if key in old._slots and old_specs.get(key) == spec:
                self._slots[key].health = old._slots[key].health
                self._slots[key].runs = old._slots[key].runs
        self._unprobed = sum(1 for slot in self._slots.values() if slot.runs == 0)
        self._evaluate(initial=True)

    def set_windows(self, windows: list[MaintenanceWindow]) -> None:
        """Take the latest maintenance windows (from the PagerDuty poller)."""
        self.windows = list(windows)
        self._evaluate()

    def tick(self) -> None:
        """Re-check time-based inputs: a maintenance window that opened or ended since."""
        covering = self._covering_windows()
        if covering.keys() != self.dependency_windows.keys():
            self._evaluate()

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
        return [(slot.name, slot.health) for slot in self._by_dependency[dependency]]

    # -- evaluation ---------------------------------------------------------------------------

    def _covering_windows(self) -> dict[str, MaintenanceWindow]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        by_service = services_in_maintenance(self.windows, now)
        return {
            dep_id: by_service[dep.pagerduty_service]
            for dep_id, dep in self.config.dependencies.items()
            if dep.pagerduty_service and dep.pagerduty_service in by_service
        }

    def _own_verdict(self, dependency: str) -> tuple[DependencyState, bool]:
        probes = [(s.health, s.critical) for s in self._by_dependency[dependency]]
        return own_health(probes), any(h.failing for h, critical in probes if critical)

    def _evaluate(self, initial: bool = False) -> None:
        self.dependency_windows = self._covering_windows()
        self._own = {d: self._own_verdict(d) for d in self._by_dependency}
        probes = {d: [(s.health, s.critical) for s in slots] for d, slots in self._by_dependency.items()}
        in_maintenance = {d: True for d in self.dependency_windows}
        dependencies = evaluate_dependencies(self._order, probes, self._depends_on, in_maintenance)
        features = evaluate_features(self._needs, dependencies)
        features = self._apply_feature_windows(features)
        now = self.clock()
        changed = False
        for dep_id, state in dependencies.items():
            old = self.dependencies.get(dep_id)
            if old is None or old.state is not state.state or old.cause != state.cause:
                self.dependency_since[dep_id] = now
                self.metrics.set_dependency_state(dep_id, state.state, dep_id in self.dependency_windows)
                if not initial:
                    log.info(
                        "dependency_state_changed",
                        dependency=dep_id,
                        old=old.state if old else None,
                        new=state.state,
                        cause=state.cause,
                    )
                changed = True
            elif old != state:
                changed = True
        for feat_id, feature in features.items():
            old_feature = self.features.get(feat_id)
            if old_feature is None or old_feature.state is not feature.state:
                self.feature_since[feat_id] = now
                self.metrics.set_feature_state(feat_id, feature.state)
                if not initial:
                    log.info(
                        "feature_state_changed",
                        feature=feat_id,
                        old=old_feature.state if old_feature else None,
                        new=feature.state,
                        impacted_by=list(feature.impacted_by),
                    )
                changed = True
            elif old_feature != feature:
                changed = True
        self.dependencies, self.features = dependencies, features
        if changed:
            self.changed.set()

    def _apply_feature_windows(self, features: dict[str, FeatureHealth]) -> dict[str, FeatureHealth]:
        """A feature with a maintenance window of its own is in maintenance unless it is down."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        by_service = services_in_maintenance(self.windows, now)
        result = dict(features)
        for feat_id, feature in self.config.features.items():
            if feature.pagerduty_service in by_service and result[feat_id].state is not FeatureState.DOWN:
                result[feat_id] = FeatureHealth(FeatureState.MAINTENANCE, ())
        return result

    def consume_change(self) -> anyio.Event:
        """Hand the current change event to a waiter and arm a fresh one for the next change."""
        event, self.changed = self.changed, anyio.Event()
        return event

    def root_causes(self) -> list[str]:
        """Dependencies down outside maintenance whose parents are not down: one page each."""
        return [d for d, s in self.dependencies.items() if s.state is DependencyState.DOWN and s.cause is None]
