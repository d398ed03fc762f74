"""Incremental evaluation: a result re-evaluates only what it can reach, and agrees with a full one.

The counting tests spy on the pure one-node evaluations (`health.evaluate_dependency`,
`impact.evaluate_feature`), so they fail if whole-graph evaluation per result comes back. The
model-based property test replays random results and windows against random DAG configs and
compares the engine, after every step, with a from-scratch evaluation of the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import monitor.state.health
import monitor.state.impact
from monitor.config import Config
from monitor.maintenance.records import MaintenanceWindow, services_in_maintenance, stable_span, windows_by_node
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.state.graph import children_of, descendants, topological_order
from monitor.state.health import DependencyHealth, DependencyState, evaluate_dependencies, own_health
from monitor.state.impact import (
    FeatureHealth,
    FeatureNeeds,
    FeatureState,
    evaluate_features,
    feature_parents,
    needs_from_config,
)
from monitor.state.live import Engine
from tests.clocks import FakeClock

pytestmark = pytest.mark.unit

OK = ProbeResult.success("HTTP 200 from /health")
SLOW = ProbeResult.success("HTTP 200 from /health in 2.5s, over 2s", degraded=True)
FAIL = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def window(id: str, services: tuple[str, ...], start: float, end: float) -> MaintenanceWindow:
    """A window from `start` to `end` minutes after T0."""
    return MaintenanceWindow(id, T0 + timedelta(minutes=start), T0 + timedelta(minutes=end), id, services)


def wide_config(groups: int) -> Config:
    """`groups` stars of 4 (a head and its 3 children), one feature per group, a last feature over all heads.

    Features 1, 5, 9, ... also require the feature before them.
    """
    dependencies: dict[str, Any] = {}
    features: dict[str, Any] = {}
    for g in range(groups):
        head = f"g{g}-head"
        dependencies[head] = {"name": head, "probes": [{"name": "health", "kind": "http", "url": "https://h/"}]}
        members = [head]
        for c in range(3):
            child = f"g{g}-child{c}"
            dependencies[child] = {
                "name": child,
                "depends_on": [head],
                "pagerduty_service": f"P{g}" if c == 0 else None,
                "probes": [{"name": "health", "kind": "http", "url": "https://c/"}],
            }
            members.append(child)
        features[f"f{g}"] = {"name": f"F{g}", "requires": members + ([f"f{g - 1}"] if g % 4 == 1 else [])}
    features["heads"] = {"name": "Heads", "any_of": [f"g{g}-head" for g in range(groups)]}
    return Config.model_validate(
        {
            "monitor": {"environment": "test", "defaults": {"failure_threshold": 1, "success_threshold": 1}},
            "dependencies": dependencies,
            "features": features,
        }
    )


@dataclass
class Spy:
    """The dependencies and features evaluated one by one since the last `clear`."""

    config: Config
    dependencies: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    probes_read: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.dependencies.clear()
        self.features.clear()
        self.probes_read.clear()


def spying(monkeypatch: pytest.MonkeyPatch, config: Config) -> Spy:
    """Count the calls of the pure one-node evaluations, whoever makes them."""
    found = Spy(config)
    evaluate_dependency = monitor.state.health.evaluate_dependency
    evaluate_feature = monitor.state.impact.evaluate_feature
    feature_of = {need: f for f, need in needs_from_config(config.features).items()}

    def dependency(probes: Any, down_parent: str | None, in_maintenance: bool) -> DependencyHealth:
        found.dependencies.append(found.probes_read[-1] if found.probes_read else "?")
        return evaluate_dependency(probes, down_parent, in_maintenance)

    def feature(need: FeatureNeeds, nodes: Any) -> FeatureHealth:
        found.features.append(feature_of[need])
        return evaluate_feature(need, nodes)

    original = Engine._probe_healths

    def probe_healths(self: Engine, dependency: str) -> Any:
        found.probes_read.append(dependency)
        return original(self, dependency)

    monkeypatch.setattr(monitor.state.health, "evaluate_dependency", dependency)
    monkeypatch.setattr(monitor.state.impact, "evaluate_feature", feature)
    monkeypatch.setattr(Engine, "_probe_healths", probe_healths)
    return found


def all_up(config: Config, clock: Callable[[], float] | None = None) -> Engine:
    engine = Engine(config, Metrics(), clock=clock or FakeClock(T0))
    for dep_id, spec in config.iter_probes():
        engine.record(dep_id, spec.name, OK)
    return engine


def above(config: Config, nodes: set[str]) -> set[str]:
    """The features that need any of `nodes`, directly or through other features."""
    needed_by = children_of(feature_parents(needs_from_config(config.features)))
    return {f for f in descendants(needed_by, nodes) if f in config.features}


class TestIncrementality:
    """A result costs the evaluations of what it can reach: never the whole graph."""

    GROUPS = 20  # 80 dependencies, 21 features

    @pytest.fixture
    def config(self) -> Config:
        return wide_config(self.GROUPS)

    def test_a_leaf_going_down_evaluates_itself_and_the_features_above_it(
        self, config: Config, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A child without children: one dependency evaluation, only features above it."""
        engine = all_up(config)
        spy = spying(monkeypatch, config)
        engine.record("g8-child1", "health", FAIL)
        assert engine.dependencies["g8-child1"].state == "down"
        assert spy.dependencies == ["g8-child1"]
        assert spy.features == ["f8", "f9"]  # f9 requires f8
        assert set(spy.features) <= above(config, {"g8-child1"})

    def test_a_head_going_down_evaluates_only_its_descendants(
        self, config: Config, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A head and its 3 children, the features above them: 4 of 80 dependencies."""
        engine = all_up(config)
        spy = spying(monkeypatch, config)
        engine.record("g4-head", "health", FAIL)
        depends_on = {d: v.depends_on for d, v in config.dependencies.items()}
        reach = {"g4-head"} | descendants(children_of(depends_on), {"g4-head"})
        assert engine.dependencies["g4-child2"].cause == "g4-head"
        assert sorted(spy.dependencies) == sorted(reach)
        assert sorted(spy.features) == ["f4", "f5", "heads"]  # f5 requires f4; `heads` any of the heads
        assert set(spy.features) <= above(config, reach)

    def test_no_verdict_change_evaluates_nothing(self, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
        """Results that change no verdict cost no evaluation at all."""
        engine = all_up(config)
        spy = spying(monkeypatch, config)
        for dep_id, spec in config.iter_probes():
            engine.record(dep_id, spec.name, OK)
        assert spy.dependencies == []
        assert spy.features == []

    def test_a_mass_outage_costs_each_dependency_a_bounded_number_of_evaluations(
        self, config: Config, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every dependency failing at once: evaluations grow with the config, not with its square."""
        engine = all_up(config)
        spy = spying(monkeypatch, config)
        for dep_id, spec in config.iter_probes():
            engine.record(dep_id, spec.name, FAIL)
        assert all(state.state == "down" for state in engine.dependencies.values())
        assert len(spy.dependencies) <= 2 * len(config.dependencies)
        assert len(spy.features) <= 3 * len(config.features)

    def test_a_window_evaluates_only_what_it_covers(self, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
        """A window over one service: the dependency it covers, no other; nothing while it stays open."""
        clock = FakeClock(T0)
        engine = all_up(config, clock)
        spy = spying(monkeypatch, config)
        engine.set_windows([window("W1", ("P5",), start=-5, end=30)])
        assert engine.dependencies["g5-child0"].state == "maintenance"
        assert spy.dependencies == ["g5-child0"]
        assert set(spy.features) == {"f5"}
        spy.clear()
        clock.now += 60  # still open
        engine.tick()
        assert spy.dependencies == []
        clock.now += 30 * 60  # closed
        engine.tick()
        assert engine.dependencies["g5-child0"].state == "up"
        assert spy.dependencies == ["g5-child0"]

    def test_metrics_and_logs_touch_only_what_changed(self, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
        """A head going down publishes and logs its 4 dependencies and the features whose state moved, no more."""
        engine = all_up(config)
        published: list[str] = []
        monkeypatch.setattr(engine.listener, "set_dependency_state", lambda dep, *_: published.append(dep))
        monkeypatch.setattr(engine.listener, "set_feature_state", lambda feat, *_: published.append(feat))
        with capture_logs() as logs:
            engine.record("g4-head", "health", FAIL)
        moved = ["f4", "f5", "g4-child0", "g4-child1", "g4-child2", "g4-head", "heads"]
        assert sorted(published) == moved
        events = ("dependency_state_changed", "feature_state_changed")
        assert sorted(e.get("dependency", e.get("feature")) for e in logs if e["event"] in events) == moved


class TestCauseChains:
    """What reaches a feature through a chain of causes, though no state on the chain but the root moves."""

    @pytest.fixture
    def config(self) -> Config:
        probe = [{"name": "health", "kind": "http", "url": "https://x/health"}]
        return Config.model_validate(
            {
                "monitor": {"environment": "test", "defaults": {"failure_threshold": 1, "success_threshold": 1}},
                "dependencies": {
                    "ssoe-oauth": {"name": "SSOe", "pagerduty_service": "PSSOE", "probes": probe},
                    "va-profile": {"name": "VA Profile", "depends_on": ["ssoe-oauth"], "probes": probe},
                    "vaos": {"name": "VAOS", "depends_on": ["va-profile"], "probes": probe},
                },
                "features": {"appointments": {"name": "Appointments", "requires": ["vaos"]}},
            }
        )

    def test_a_grandchild_follows_its_root_cause_into_maintenance(self, config: Config) -> None:
        """The root's window opens: the feature over its grandchild goes from down to maintenance."""
        engine = all_up(config)
        engine.record("ssoe-oauth", "health", FAIL)
        assert engine.features["appointments"] == FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",))
        engine.set_windows([window("W1", ("PSSOE",), -5, 5)])
        assert engine.dependencies["vaos"].state == "down"  # unchanged: its own state is not maintenance
        assert engine.features["appointments"] == FeatureHealth(FeatureState.MAINTENANCE, ("ssoe-oauth",))
        engine.set_windows([])
        assert engine.features["appointments"] == FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",))

    def test_a_window_opening_with_no_window_update(self, config: Config) -> None:
        """A window known in advance takes effect on the tick after its start, and ends on the one after its end."""
        clock = FakeClock(T0)
        engine = all_up(config, clock)
        engine.record("ssoe-oauth", "health", FAIL)
        engine.set_windows([window("W1", ("PSSOE",), 10, 20)])
        assert engine.features["appointments"].state == "down"
        clock.now += 10 * 60
        engine.tick()
        assert engine.features["appointments"].state == "maintenance"
        clock.now += 10 * 60
        engine.tick()
        assert engine.features["appointments"].state == "down"


class TestAdopt:
    """A reload's engine takes over probe health and evaluates it whole, once."""

    def test_adopted_states_equal_a_full_evaluation(self) -> None:
        """The new engine's states are those of its probes' adopted health, as a whole evaluation gives them."""
        clock = FakeClock(T0)
        old = all_up(wide_config(3), clock)
        for dep in ("g0-head", "g1-child2", "g2-child0"):
            old.record(dep, "health", FAIL)
        new = Engine(wide_config(4), Metrics(), clock=clock)  # one more group: its probes start unknown
        new.adopt(old)
        expected = Reference.of(new, clock.now)
        assert new.dependencies == expected.dependencies
        assert new.features == expected.features
        assert new.dependencies["g0-child1"].cause == "g0-head"
        assert new.dependencies["g3-head"].state == "unknown"
        assert not new.ready


class TestLiveViews:
    """`dependencies` and `features` are the same dicts for the engine's life, with fixed keys."""

    def test_updated_in_place(self) -> None:
        """A reader holding the dicts sees every change; their keys never move."""
        config = wide_config(2)
        engine = Engine(config, Metrics())
        dependencies, features = engine.dependencies, engine.features
        keys = (list(dependencies), list(features))
        for dep_id, spec in config.iter_probes():
            engine.record(dep_id, spec.name, OK)
        engine.record("g0-head", "health", FAIL)
        assert engine.dependencies is dependencies
        assert engine.features is features
        assert (list(dependencies), list(features)) == keys
        assert dependencies["g0-child0"].cause == "g0-head"

    def test_orders(self) -> None:
        """Dependencies parents first, features in config order, as the whole-graph evaluation gave them."""
        config = wide_config(3)
        engine = Engine(config, Metrics())
        assert list(engine.dependencies) == topological_order({d: v.depends_on for d, v in config.dependencies.items()})
        assert list(engine.features) == list(config.features)


class TestWindowsByNode:
    """`windows.windows_by_node`: the open window over each dependency or feature, by its service."""

    OWNERS = {"PA": ["evss", "claims"], "PB": ["mhv"]}

    @pytest.mark.parametrize(
        ("windows", "minutes", "covered"),
        [
            pytest.param([], 0, {}, id="no-windows"),
            pytest.param([window("W1", ("PA",), -5, 5)], 0, {"evss": "W1", "claims": "W1"}, id="every-owner"),
            pytest.param([window("W1", ("PA",), 5, 10)], 0, {}, id="not-yet-open"),
            pytest.param([window("W1", ("PA",), 5, 10)], 5, {"evss": "W1", "claims": "W1"}, id="open-at-its-start"),
            pytest.param([window("W1", ("PA",), 5, 10)], 10, {}, id="closed-at-its-end"),
            pytest.param([window("W1", ("PZ",), -5, 5)], 0, {}, id="a-service-nobody-owns"),
            pytest.param(
                [window("W1", ("PA", "PB"), -5, 5), window("W2", ("PB",), -5, 50)],
                0,
                {"evss": "W1", "claims": "W1", "mhv": "W2"},
                id="the-one-ending-last",
            ),
        ],
    )
    def test_covered(self, windows: list[MaintenanceWindow], minutes: float, covered: dict[str, str]) -> None:
        """Each owner of a service under an open window gets that window."""
        found = windows_by_node(windows, T0 + timedelta(minutes=minutes), self.OWNERS)
        assert {node: w.id for node, w in found.items()} == covered


class TestStableSpan:
    """`windows.stable_span`: the span in which the windows in force cannot change."""

    @pytest.mark.parametrize(
        ("windows", "minutes", "span"),
        [
            pytest.param([], 0, (None, None), id="no-windows-forever"),
            pytest.param([window("W1", ("PA",), 10, 20)], 0, (None, 10), id="until-it-opens"),
            pytest.param([window("W1", ("PA",), 10, 20)], 10, (10, 20), id="open-from-its-start"),
            pytest.param([window("W1", ("PA",), 10, 20)], 15, (10, 20), id="while-open"),
            pytest.param([window("W1", ("PA",), 10, 20)], 20, (20, None), id="from-its-end"),
            pytest.param(
                [window("W1", ("PA",), 10, 20), window("W2", ("PB",), 12, 30)], 11, (10, 12), id="nearest-edges"
            ),
        ],
    )
    def test_span(
        self, windows: list[MaintenanceWindow], minutes: float, span: tuple[float | None, float | None]
    ) -> None:
        """From the last edge at or before now to the first one after it, in POSIX seconds."""
        since, until = span
        expected = (
            -math.inf if since is None else (T0 + timedelta(minutes=since)).timestamp(),
            math.inf if until is None else (T0 + timedelta(minutes=until)).timestamp(),
        )
        assert stable_span(windows, T0 + timedelta(minutes=minutes)) == expected


# -- model-based check ----------------------------------------------------------------------------

SERVICES = ("PA", "PB")


@st.composite
def dag_configs(draw: st.DrawFn) -> Config:
    """Up to 6 dependencies in a random DAG (ids not in topological order), up to 5 features over them.

    Small, with low thresholds and few services, so that short runs reach the rare corners: a
    child down because of its parent while the parent's window opens, features over features.
    """
    count = draw(st.integers(1, 5))
    names = [f"d{i}" for i in draw(st.permutations(range(count)))]  # names[k]'s parents come before k
    dependencies: dict[str, Any] = {}
    for k, name in enumerate(names):
        parents = draw(st.lists(st.sampled_from(names[:k]), unique=True, max_size=2)) if k else []
        probes = [
            {
                "name": f"p{p}",
                "kind": "http",
                "url": "https://x/health",
                "critical": draw(st.booleans()),
                "failure_threshold": draw(st.sampled_from((1, 1, 2, 3))),
                "success_threshold": draw(st.integers(1, 2)),
            }
            for p in range(draw(st.integers(1, 2)))
        ]
        service = draw(st.sampled_from((None, *SERVICES)))
        dependencies[name] = {"name": name, "depends_on": parents, "pagerduty_service": service, "probes": probes}
    features: dict[str, Any] = {}
    for f in range(draw(st.integers(0, 5))):
        nodes = sorted(dependencies) + [f"f{g}" for g in range(f)]
        features[f"f{f}"] = {
            "name": f"F{f}",
            "requires": draw(st.lists(st.sampled_from(nodes), unique=True, max_size=3)),
            "any_of": draw(st.lists(st.sampled_from(nodes), unique=True, max_size=3)),
            "pagerduty_service": draw(st.sampled_from((None, *SERVICES))),
        }
    return Config.model_validate(
        {
            "monitor": {"environment": "test"},
            "dependencies": dict(sorted(dependencies.items())),
            "features": features,
        }
    )


# A step: ("result", dependency, probe, kind, blamed), ("windows", [(services, start, length)]) or
# ("advance", minutes, then tick or not). Indexes are taken modulo what the config has.
STEPS = st.one_of(
    st.tuples(
        st.just("result"),
        st.integers(0, 50),
        st.integers(0, 1),
        st.sampled_from(("ok", "slow", "fail", "fail", "blamed")),
        st.integers(0, 50),
    ),
    st.tuples(
        st.just("windows"),
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(SERVICES), min_size=1, unique=True),
                st.integers(-10, 20),
                st.integers(1, 40),
            ),
            max_size=2,
        ),
    ),
    st.tuples(st.just("advance"), st.integers(1, 20), st.booleans()),
)


@dataclass
class Reference:
    """A from-scratch evaluation of the engine's inputs: its probes' health, its windows at a time.

    The time is that of the engine's last evaluation: like the whole-graph engine before it, the
    engine looks at the clock when it evaluates (a verdict change, a window update, a tick), not
    in between.
    """

    dependencies: dict[str, DependencyHealth]
    features: dict[str, FeatureHealth]
    dependency_windows: dict[str, MaintenanceWindow]

    @classmethod
    def of(cls, engine: Engine, at: float) -> Reference:
        config = engine.config
        by_service = services_in_maintenance(engine.windows, datetime.fromtimestamp(at, UTC))
        depends_on = {d: dep.depends_on for d, dep in config.dependencies.items()}
        probes = {
            d: [(engine.probe_health(d, p.name), p.critical) for p in dep.probes]
            for d, dep in config.dependencies.items()
        }
        covered = {
            d: by_service[dep.pagerduty_service]
            for d, dep in config.dependencies.items()
            if dep.pagerduty_service in by_service
        }
        dependencies = evaluate_dependencies(
            topological_order(depends_on), probes, depends_on, dict.fromkeys(covered, True)
        )
        features = evaluate_features(needs_from_config(config.features), dependencies)
        for f, feature in config.features.items():
            if feature.pagerduty_service in by_service and features[f].state is not FeatureState.DOWN:
                features[f] = FeatureHealth(FeatureState.MAINTENANCE, ())
        return cls(dependencies, features, covered)


def _verdict(engine: Engine, dependency: str) -> tuple[DependencyState, bool]:
    probes = [
        (h, spec.critical)
        for (_, h), spec in zip(
            engine.probes_of(dependency), engine.config.dependencies[dependency].probes, strict=True
        )
    ]
    return own_health(probes), any(h.failing for h, critical in probes if critical)


def _take(engine: Engine, clock: FakeClock, step: tuple[Any, ...]) -> bool:
    """Take one step; True if the engine had to evaluate (so look at the clock) for it."""
    config = engine.config
    if step[0] == "result":
        _, d, p, kind, blamed = step
        dep_ids = list(config.dependencies)
        dep_id = dep_ids[d % len(dep_ids)]
        probes = config.dependencies[dep_id].probes
        probe = probes[p % len(probes)].name
        result = {"ok": OK, "slow": SLOW, "fail": FAIL}.get(kind) or ProbeResult.failure(
            Outcome.AUTH, "no token", blamed_on=dep_ids[blamed % len(dep_ids)]
        )
        before = _verdict(engine, dep_id)
        engine.record(dep_id, probe, result)
        return _verdict(engine, dep_id) != before
    if step[0] == "windows":
        at = (clock.now - T0.timestamp()) / 60
        engine.set_windows(
            [
                window(f"W{i}", tuple(services), at + start, at + start + length)
                for i, (services, start, length) in enumerate(step[1])
            ]
        )
        return True
    _, minutes, tick = step
    clock.now += 60 * minutes
    if tick:
        engine.tick()
    return bool(tick)


def _published(engine: Engine) -> dict[tuple[str, str, str], float]:
    """(metric, node, state) -> value of the state series, in one read of the registry."""
    found = {}
    assert isinstance(engine.listener, Metrics)
    for metric in engine.listener.registry.collect():
        for sample in metric.samples:
            if sample.name in STATE_SERIES:
                node = sample.labels.get("dependency") or sample.labels["feature"]
                found[(sample.name, node, sample.labels.get("state", ""))] = sample.value
    return found


STATE_SERIES = ("depmon_dependency_state", "depmon_dependency_in_maintenance", "depmon_feature_state")


class TestAgainstFullEvaluation:
    """The incremental engine always agrees with a whole-graph evaluation from scratch."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(config=dag_configs(), steps=st.lists(STEPS, max_size=50))
    def test_every_step(self, config: Config, steps: list[tuple[Any, ...]]) -> None:
        """After each result, window update or tick: same states, windows, since-times, metrics and change signal."""
        clock = FakeClock(T0)
        engine = Engine(config, Metrics(), clock=clock)
        evaluated_at = clock.now
        previous = Reference.of(engine, evaluated_at)
        since = dict.fromkeys(config.dependencies, clock.now) | dict.fromkeys(config.features, clock.now)
        for step in steps:
            engine.consume_change()
            if _take(engine, clock, step):
                evaluated_at = clock.now
            expected = Reference.of(engine, evaluated_at)
            assert engine.dependencies == expected.dependencies, step
            assert engine.features == expected.features, step
            assert engine.dependency_windows == expected.dependency_windows, step
            assert engine.changed.is_set() == (
                (expected.dependencies, expected.features) != (previous.dependencies, previous.features)
            ), step
            published = _published(engine)
            for d, state in expected.dependencies.items():
                old = previous.dependencies[d]
                if (old.state, old.cause) != (state.state, state.cause):
                    since[d] = clock.now
                assert engine.dependency_since[d] == since[d], (d, step)
                assert published[("depmon_dependency_state", d, state.state)] == 1
                in_window = 1 if d in expected.dependency_windows else 0
                assert published[("depmon_dependency_in_maintenance", d, "")] == in_window
            for f, feature in expected.features.items():
                if previous.features[f].state is not feature.state:
                    since[f] = clock.now
                assert engine.feature_since[f] == since[f], (f, step)
                assert published[("depmon_feature_state", f, feature.state)] == 1
            previous = expected
        assert list(engine.dependencies) == topological_order(
            {d: dep.depends_on for d, dep in config.dependencies.items()}
        )
        assert list(engine.features) == list(config.features)
