"""Pure health logic: probe thresholds, parent attribution and dependency states (SPEC section 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from monitor.config import Timing
from monitor.results import Outcome, ProbeResult
from monitor.state.graph import children_of, ranks, topological_order
from monitor.state.health import (
    DependencyHealth,
    DependencyState,
    ProbeHealth,
    ProbeStatus,
    evaluate_dependencies,
    observe,
    parent_failing,
    reevaluate_dependencies,
    root_cause,
)

pytestmark = pytest.mark.unit

UNKNOWN, UP, DEGRADED, DOWN = ProbeStatus.UNKNOWN, ProbeStatus.UP, ProbeStatus.DEGRADED, ProbeStatus.DOWN
MAINTENANCE = DependencyState.MAINTENANCE

# Sequence words: `ok` a success, `slow` a success over max_latency (degraded), `fail` a failure,
# `held` a failure seen while a parent in depends_on is failing.
RESULTS = {
    "ok": ProbeResult.success("HTTP 200 from /health"),
    "slow": ProbeResult.success("HTTP 200 from /health in 2.5s, over 2s", degraded=True),
    "fail": ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health"),
    "held": ProbeResult.failure(Outcome.AUTH, "HTTP 401 from /health"),
}


def _run(sequence: str, failure_threshold: int = 3, success_threshold: int = 2) -> list[ProbeHealth]:
    """The probe health after each result of a space-separated sequence, starting from unknown."""
    timing = Timing(failure_threshold=failure_threshold, success_threshold=success_threshold)
    health = ProbeHealth()
    trace = []
    for word in sequence.split():
        health = observe(health, RESULTS[word], timing, parent_failing=word == "held")
        trace.append(health)
    return trace


def _statuses(sequence: str, failure_threshold: int = 3, success_threshold: int = 2) -> str:
    return " ".join(h.status.value for h in _run(sequence, failure_threshold, success_threshold))


class TestObserve:
    """`observe`: one probe's threshold state machine."""

    @pytest.mark.parametrize(
        ("sequence", "failure_threshold", "statuses"),
        [
            pytest.param("fail ok fail ok fail ok", 3, "unknown up up up up up", id="flapping-from-unknown"),
            pytest.param("ok fail ok fail ok fail ok", 3, "up up up up up up up", id="flapping-from-up"),
            pytest.param("ok fail fail ok fail fail ok", 3, "up up up up up up up", id="two-failures-then-success"),
            pytest.param("ok fail fail fail", 3, "up up up down", id="exactly-threshold"),
            pytest.param("fail fail fail", 3, "unknown unknown down", id="threshold-from-unknown"),
            pytest.param("ok fail fail", 3, "up up up", id="one-short-of-threshold"),
            pytest.param("ok fail", 1, "up down", id="threshold-1"),
            pytest.param("ok fail fail fail fail fail", 5, "up up up up up down", id="threshold-5"),
            pytest.param("ok fail fail fail fail fail", 3, "up up up down down down", id="stays-down-while-failing"),
        ],
    )
    def test_failure_threshold(self, sequence: str, failure_threshold: int, statuses: str) -> None:
        """A probe goes down only after failure_threshold consecutive failures."""
        assert _statuses(sequence, failure_threshold=failure_threshold) == statuses

    @pytest.mark.parametrize(
        ("sequence", "success_threshold", "statuses"),
        [
            pytest.param("fail fail fail ok ok", 2, "unknown unknown down down up", id="two-successes"),
            pytest.param("fail fail fail ok", 1, "unknown unknown down up", id="success-threshold-1"),
            pytest.param("fail fail fail ok ok ok", 3, "unknown unknown down down down up", id="success-threshold-3"),
            pytest.param(
                "fail fail fail ok fail ok ok",
                2,
                "unknown unknown down down down down up",
                id="recovery-interrupted-starts-over",
            ),
            pytest.param("fail fail fail slow slow", 2, "unknown unknown down down degraded", id="recovers-degraded"),
            pytest.param("fail fail fail slow ok", 2, "unknown unknown down down up", id="slow-counts-as-success"),
        ],
    )
    def test_success_threshold(self, sequence: str, success_threshold: int, statuses: str) -> None:
        """A down probe comes back only after success_threshold consecutive successes."""
        assert _statuses(sequence, success_threshold=success_threshold) == statuses

    @pytest.mark.parametrize(
        ("sequence", "success_threshold", "statuses"),
        [
            pytest.param("ok", 2, "up", id="first-success"),
            pytest.param("ok", 5, "up", id="first-success-high-threshold"),
            pytest.param("slow", 2, "degraded", id="first-success-slow"),
            pytest.param("fail ok", 2, "unknown up", id="first-success-after-a-failure"),
        ],
    )
    def test_first_success_from_unknown(self, sequence: str, success_threshold: int, statuses: str) -> None:
        """The first success of a probe with no state yet makes it up (or degraded) at once."""
        assert _statuses(sequence, success_threshold=success_threshold) == statuses

    @pytest.mark.parametrize(
        ("sequence", "statuses"),
        [
            pytest.param("slow slow slow slow", "degraded degraded degraded degraded", id="never-down"),
            pytest.param("ok slow ok", "up degraded up", id="up-degraded-up"),
            pytest.param("slow fail fail fail", "degraded degraded degraded down", id="degraded-then-failures"),
            pytest.param(
                "slow fail slow fail slow fail",
                "degraded degraded degraded degraded degraded degraded",
                id="flapping-degraded",
            ),
        ],
    )
    def test_degraded_results(self, sequence: str, statuses: str) -> None:
        """A slow success (latency breach) makes the probe degraded, never down."""
        assert _statuses(sequence) == statuses

    @pytest.mark.parametrize(
        ("sequence", "confirming"),
        [
            pytest.param("ok", [False], id="healthy"),
            pytest.param("ok fail", [False, True], id="first-failure"),
            pytest.param("fail", [True], id="first-failure-from-unknown"),
            pytest.param("ok fail fail fail", [False, True, True, False], id="confirmed-down"),
            pytest.param("ok fail fail fail fail fail", [False, True, True, False, False, False], id="down-failing"),
            pytest.param("ok fail ok", [False, True, False], id="failure-not-confirmed"),
            pytest.param("fail fail fail ok ok", [True, True, False, True, False], id="recovery"),
            pytest.param("fail fail fail ok fail", [True, True, False, True, False], id="recovery-interrupted"),
            pytest.param("ok held held", [False, False, False], id="held-by-parent"),
        ],
    )
    def test_confirming(self, sequence: str, confirming: list[bool]) -> None:
        """A pending change (first failures, or successes while down) asks for a confirm re-probe; nothing else."""
        assert [h.confirming for h in _run(sequence)] == confirming

    @pytest.mark.parametrize(
        ("sequence", "statuses"),
        [
            pytest.param("ok held held held held held", "up up up up up up", id="held-never-down"),
            pytest.param("held held held held", "unknown unknown unknown unknown", id="held-from-unknown"),
            pytest.param("ok fail fail held fail fail", "up up up up up up", id="held-resets-the-count"),
            pytest.param(
                "ok held held held fail fail fail", "up up up up up up down", id="fresh-failures-after-parent"
            ),
            pytest.param("ok held fail held fail held fail", "up up up up up up up", id="interleaved-never-down"),
            pytest.param("fail fail fail held ok ok", "unknown unknown down down down up", id="already-down-stays"),
        ],
    )
    def test_parent_attribution(self, sequence: str, statuses: str) -> None:
        """Failures while the parent is failing never count and reset the count: the child needs fresh failures."""
        assert _statuses(sequence) == statuses

    @pytest.mark.parametrize(
        ("sequence", "failures", "successes"),
        [
            pytest.param("ok ok ok", 0, 3, id="successes-accumulate"),
            pytest.param("ok ok fail fail", 2, 0, id="failure-resets-successes"),
            pytest.param("fail fail ok", 0, 1, id="success-resets-failures"),
            pytest.param("fail fail held", 0, 0, id="held-resets-both"),
        ],
    )
    def test_counts(self, sequence: str, failures: int, successes: int) -> None:
        """Consecutive failure and success counts reset on the opposite outcome and on a held failure."""
        last = _run(sequence)[-1]
        assert (last.failures, last.successes) == (failures, successes)

    @pytest.mark.parametrize(
        ("sequence", "last_failure"),
        [
            pytest.param("ok", None, id="never-failed"),
            pytest.param("fail ok", "fail", id="kept-after-success"),
            pytest.param("fail held", "held", id="held-is-evidence"),
        ],
    )
    def test_evidence(self, sequence: str, last_failure: str | None) -> None:
        """`last` is the latest result and `last_failure` the latest failing one, kept through successes."""
        last = _run(sequence)[-1]
        assert last.last is RESULTS[sequence.split()[-1]]
        assert last.last_failure is (RESULTS[last_failure] if last_failure else None)

    @pytest.mark.parametrize(
        ("sequence", "failing"),
        [
            pytest.param("ok", False, id="up"),
            pytest.param("ok fail", True, id="first-failure"),
            pytest.param("fail fail fail", True, id="down"),
            pytest.param("fail fail fail ok", True, id="recovering"),
            pytest.param("fail fail fail ok ok", False, id="recovered"),
            pytest.param("ok held", False, id="held"),
        ],
    )
    def test_failing(self, sequence: str, failing: bool) -> None:
        """A probe is failing while down or while its last counted run failed."""
        assert _run(sequence)[-1].failing is failing


def _probe(status: ProbeStatus, failures: int = 0) -> ProbeHealth:
    return ProbeHealth(status=status, failures=failures)


CRITICAL, NON_CRITICAL = True, False


# (dependency -> its single critical probe's status), depends_on, in maintenance,
# expected (state, health, cause) per dependency.
GRAPH_CASES = (
    pytest.param(
        {"ssoe-oauth": DOWN, "evss": UP},
        {"evss": ["ssoe-oauth"]},
        set(),
        {"ssoe-oauth": ("down", "down", None), "evss": ("down", "down", "ssoe-oauth")},
        id="parent-down-child-down-with-cause",
    ),
    pytest.param(
        {"ssoe-oauth": DOWN, "evss": DOWN},
        {"evss": ["ssoe-oauth"]},
        set(),
        {"ssoe-oauth": ("down", "down", None), "evss": ("down", "down", "ssoe-oauth")},
        id="both-down-attributed-to-parent",
    ),
    pytest.param(
        {"ssoe-oauth": DEGRADED, "evss": UP},
        {"evss": ["ssoe-oauth"]},
        set(),
        {"ssoe-oauth": ("degraded", "degraded", None), "evss": ("up", "up", None)},
        id="parent-degraded-child-own-state",
    ),
    pytest.param(
        {"ssoe-oauth": UP, "evss": DOWN},
        {"evss": ["ssoe-oauth"]},
        set(),
        {"ssoe-oauth": ("up", "up", None), "evss": ("down", "down", None)},
        id="child-down-on-its-own",
    ),
    pytest.param(
        {"mhv": DOWN},
        {},
        {"mhv"},
        {"mhv": ("maintenance", "down", None)},
        id="maintenance-keeps-health-down",
    ),
    pytest.param(
        {"mhv": UP},
        {},
        {"mhv"},
        {"mhv": ("maintenance", "up", None)},
        id="maintenance-keeps-health-up",
    ),
    pytest.param(
        {"ssoe-oauth": DOWN, "evss": UP},
        {"evss": ["ssoe-oauth"]},
        {"ssoe-oauth"},
        {"ssoe-oauth": ("maintenance", "down", None), "evss": ("down", "down", "ssoe-oauth")},
        id="parent-down-in-maintenance",
    ),
    pytest.param(
        {"ssoe-oauth": DOWN, "evss": UP},
        {"evss": ["ssoe-oauth"]},
        {"evss"},
        {"ssoe-oauth": ("down", "down", None), "evss": ("maintenance", "down", "ssoe-oauth")},
        id="child-in-maintenance-parent-down",
    ),
    pytest.param(
        {"ssoe-oauth": DOWN, "va-profile": UP, "vaos": UP},
        {"va-profile": ["ssoe-oauth"], "vaos": ["va-profile"]},
        set(),
        {
            "ssoe-oauth": ("down", "down", None),
            "va-profile": ("down", "down", "ssoe-oauth"),
            "vaos": ("down", "down", "va-profile"),
        },
        id="grandparent-chain",
    ),
    pytest.param(
        {"ssoe-oauth": UP, "idme": DOWN, "evss": UP},
        {"evss": ["ssoe-oauth", "idme"]},
        set(),
        {"ssoe-oauth": ("up", "up", None), "idme": ("down", "down", None), "evss": ("down", "down", "idme")},
        id="second-parent-down",
    ),
)


class TestEvaluateDependencies:
    """`evaluate_dependencies`: probe health and parents -> dependency states."""

    @pytest.mark.parametrize(
        ("probes", "state"),
        [
            pytest.param([(_probe(UP), CRITICAL)], DependencyState.UP, id="up"),
            pytest.param([(_probe(UP), CRITICAL), (_probe(DOWN), CRITICAL)], DependencyState.DOWN, id="critical-down"),
            pytest.param(
                [(_probe(UP), CRITICAL), (_probe(DOWN), NON_CRITICAL)], DependencyState.DEGRADED, id="non-critical-down"
            ),
            pytest.param([(_probe(DEGRADED), CRITICAL)], DependencyState.DEGRADED, id="degraded-probe"),
            pytest.param(
                [(_probe(UP), CRITICAL), (_probe(UNKNOWN), NON_CRITICAL)], DependencyState.UNKNOWN, id="any-unknown"
            ),
            pytest.param(
                [(_probe(DOWN), NON_CRITICAL), (_probe(UNKNOWN), CRITICAL)],
                DependencyState.UNKNOWN,
                id="unknown-over-non-critical-down",
            ),
            pytest.param(
                [(_probe(DOWN), CRITICAL), (_probe(UNKNOWN), CRITICAL)],
                DependencyState.DOWN,
                id="critical-down-over-unknown",
            ),
            pytest.param([(_probe(UP, failures=2), CRITICAL)], DependencyState.UP, id="failing-not-yet-down"),
        ],
    )
    def test_own_probes(self, probes: list[tuple[ProbeHealth, bool]], state: DependencyState) -> None:
        """A critical probe down makes the dependency down, a non-critical one degraded, any unknown unknown."""
        result = evaluate_dependencies(["evss"], {"evss": probes}, {}, {})["evss"]
        assert (result.state, result.health, result.cause) == (state, state, None)

    @pytest.mark.parametrize(
        ("probes", "failing"),
        [
            pytest.param([(_probe(UP), CRITICAL)], False, id="healthy"),
            pytest.param([(_probe(UP, failures=1), CRITICAL)], True, id="critical-first-failure"),
            pytest.param([(_probe(DOWN, failures=3), CRITICAL)], True, id="critical-down"),
            pytest.param([(_probe(UP, failures=1), NON_CRITICAL)], False, id="non-critical-failing"),
            pytest.param([(_probe(DOWN, failures=3), NON_CRITICAL)], False, id="non-critical-down"),
        ],
    )
    def test_failing(self, probes: list[tuple[ProbeHealth, bool]], failing: bool) -> None:
        """A dependency is failing while one of its critical probes is failing or down."""
        assert evaluate_dependencies(["evss"], {"evss": probes}, {}, {})["evss"].failing is failing

    @pytest.mark.parametrize(("statuses", "depends_on", "maintenance", "expected"), GRAPH_CASES)
    def test_parents_and_maintenance(
        self,
        statuses: Mapping[str, ProbeStatus],
        depends_on: Mapping[str, Sequence[str]],
        maintenance: set[str],
        expected: Mapping[str, tuple[str, str, str | None]],
    ) -> None:
        """A down parent makes its child down with the parent as cause; maintenance changes state, not health.

        `reevaluate_dependencies`, from all up and given the dependencies whose probes or windows
        moved, returns the same states, and only those that changed, in topological order.
        """
        graph = {dep: depends_on.get(dep, []) for dep in statuses}
        order = topological_order(graph)
        probes = {dep: [(_probe(status), CRITICAL)] for dep, status in statuses.items()}
        result = evaluate_dependencies(order, probes, depends_on, {dep: True for dep in maintenance})
        assert {dep: (h.state.value, h.health.value, h.cause) for dep, h in result.items()} == expected

        before = evaluate_dependencies(order, {dep: [(_probe(UP), CRITICAL)] for dep in statuses}, depends_on, {})
        seeds = {dep for dep, status in statuses.items() if status is not UP} | maintenance
        changed = reevaluate_dependencies(
            seeds, ranks(order), children_of(graph), probes.__getitem__, depends_on, maintenance, before
        )
        assert {**before, **changed} == result
        assert changed == {dep: state for dep, state in result.items() if before[dep] != state}
        assert list(changed) == [dep for dep in order if dep in changed]

    def test_down_parent_makes_child_failing(self) -> None:
        """A child of a down parent is failing, so its own children hold their counts too."""
        result = evaluate_dependencies(
            ["ssoe-oauth", "evss"],
            {"ssoe-oauth": [(_probe(DOWN, failures=3), CRITICAL)], "evss": [(_probe(UP), CRITICAL)]},
            {"evss": ["ssoe-oauth"]},
            {},
        )
        assert result["evss"].failing is True
        assert result["evss"].down is True


class TestReevaluateDependencies:
    """`reevaluate_dependencies`: only what a change reaches (its agreement: `test_parents_and_maintenance`)."""

    @pytest.mark.parametrize(
        ("status", "visited"),
        [
            pytest.param(DOWN, ["ssoe-oauth", "va-profile", "evss", "vaos"], id="down-reaches-every-descendant"),
            pytest.param(DEGRADED, ["ssoe-oauth"], id="degraded-stops-at-the-parent"),
            pytest.param(UP, ["ssoe-oauth"], id="unchanged-stops-at-the-parent"),
        ],
    )
    def test_children_only_when_down_moves(self, status: ProbeStatus, visited: list[str]) -> None:
        """A child depends on its parents only through `down`: nothing else of theirs makes it re-evaluated."""
        depends_on = {"ssoe-oauth": [], "va-profile": ["ssoe-oauth"], "evss": ["ssoe-oauth"], "vaos": ["va-profile"]}
        order = topological_order(depends_on)
        healthy = {dep: [(_probe(UP), CRITICAL)] for dep in depends_on}
        before = evaluate_dependencies(order, healthy, depends_on, {})
        probes = {**healthy, "ssoe-oauth": [(_probe(status), CRITICAL)]}
        read: list[str] = []

        def probes_of(dep: str) -> list[tuple[ProbeHealth, bool]]:
            read.append(dep)
            return probes[dep]

        reevaluate_dependencies(
            ["ssoe-oauth"], ranks(order), children_of(depends_on), probes_of, depends_on, set(), before
        )
        assert read == visited

    def test_missing_states_are_new(self) -> None:
        """With no previous states, every dependency reached is evaluated and returned: a first evaluation."""
        depends_on = {"evss": ["ssoe-oauth"], "ssoe-oauth": []}
        order = topological_order(depends_on)
        probes = {dep: [(_probe(UP), CRITICAL)] for dep in depends_on}
        changed = reevaluate_dependencies(
            order, ranks(order), children_of(depends_on), probes.__getitem__, depends_on, set(), {}
        )
        assert changed == evaluate_dependencies(order, probes, depends_on, {})


def _dep(health: DependencyState, cause: str | None = None, failing: bool = False) -> DependencyHealth:
    return DependencyHealth(state=health, health=health, cause=cause, failing=failing)


class TestRootCause:
    """`root_cause`: follows causes up to the dependency a failure is attributed to."""

    STATES: Mapping[str, DependencyHealth] = {
        "ssoe-oauth": _dep(DependencyState.DOWN),
        "va-profile": _dep(DependencyState.DOWN, cause="ssoe-oauth"),
        "vaos": _dep(DependencyState.DOWN, cause="va-profile"),
        "evss": _dep(DependencyState.DOWN),
        "mhv": _dep(DependencyState.UP),
    }

    @pytest.mark.parametrize(
        ("dependency", "root"),
        [
            pytest.param("evss", "evss", id="own-failure"),
            pytest.param("mhv", "mhv", id="healthy-is-itself"),
            pytest.param("ssoe-oauth", "ssoe-oauth", id="root-itself"),
            pytest.param("va-profile", "ssoe-oauth", id="parent"),
            pytest.param("vaos", "ssoe-oauth", id="grandparent"),
        ],
    )
    def test_root_cause(self, dependency: str, root: str) -> None:
        """A dependency's root cause is the last dependency on its chain of causes."""
        assert root_cause(dependency, self.STATES) == root

    def test_cause_loop_terminates(self) -> None:
        """A loop of causes (never produced by a valid config) does not hang."""
        states = {"a": _dep(DependencyState.DOWN, cause="b"), "b": _dep(DependencyState.DOWN, cause="a")}
        assert root_cause("a", states) == "b"


class TestParentFailing:
    """`parent_failing`: whether a dependency's own failures are held for a parent."""

    @pytest.mark.parametrize(
        ("states", "failing"),
        [
            pytest.param({"ssoe-oauth": _dep(DependencyState.UP)}, False, id="parent-healthy"),
            pytest.param({"ssoe-oauth": _dep(DependencyState.UP, failing=True)}, True, id="parent-first-failure"),
            pytest.param({"ssoe-oauth": _dep(DependencyState.DOWN, failing=True)}, True, id="parent-down"),
            pytest.param({}, False, id="parent-not-evaluated-yet"),
            pytest.param(
                {"ssoe-oauth": _dep(DependencyState.UP), "idme": _dep(DependencyState.DOWN, failing=True)},
                True,
                id="one-of-two-parents",
            ),
        ],
    )
    def test_parent_failing(self, states: Mapping[str, DependencyHealth], failing: bool) -> None:
        """True when any parent in depends_on is failing or down."""
        assert parent_failing("evss", {"evss": ["ssoe-oauth", "idme"]}, states) is failing

    def test_no_parents(self) -> None:
        """A dependency without parents never has its failures held."""
        assert parent_failing("mhv", {}, {"ssoe-oauth": _dep(DependencyState.DOWN, failing=True)}) is False


class TestParentAttributionScenario:
    """Parent and child observed together over time, as the engine does: parent first, then child."""

    # One row per tick: (parent result, child result, expected parent state, child state, child cause).
    TICKS = (
        ("ok", "ok", "up", "up", None),
        ("fail", "fail", "up", "up", None),  # parent's first failure: the child's is held
        ("fail", "fail", "up", "up", None),
        ("fail", "fail", "down", "down", "ssoe-oauth"),  # parent confirmed down: child down by parent
        ("fail", "fail", "down", "down", "ssoe-oauth"),
        ("ok", "fail", "down", "down", "ssoe-oauth"),  # parent recovering: still held
        ("ok", "fail", "up", "up", None),  # parent up: the child's failure counts (1)
        ("ok", "fail", "up", "up", None),  # (2)
        ("ok", "fail", "up", "down", None),  # (3): the child is down on its own now
    )

    def test_child_needs_fresh_failures_after_parent_recovers(self) -> None:
        """A child failing with its parent is down by the parent, then down on its own only after fresh failures."""
        timing = Timing(failure_threshold=3, success_threshold=2)
        depends_on = {"ssoe-oauth": [], "evss": ["ssoe-oauth"]}
        order = topological_order(depends_on)
        parent, child = ProbeHealth(), ProbeHealth()
        states: dict[str, DependencyHealth] = {}
        observed = []
        for parent_word, child_word, *_ in self.TICKS:
            parent = observe(parent, RESULTS[parent_word], timing, parent_failing("ssoe-oauth", depends_on, states))
            states = evaluate_dependencies(
                order, {"ssoe-oauth": [(parent, CRITICAL)], "evss": [(child, CRITICAL)]}, depends_on, {}
            )
            child = observe(child, RESULTS[child_word], timing, parent_failing("evss", depends_on, states))
            states = evaluate_dependencies(
                order, {"ssoe-oauth": [(parent, CRITICAL)], "evss": [(child, CRITICAL)]}, depends_on, {}
            )
            observed.append(
                (parent_word, child_word, states["ssoe-oauth"].state, states["evss"].state, states["evss"].cause)
            )
        assert observed == list(self.TICKS)
