"""Pure impact graph: dependency states -> feature states and root causes (SPEC section 4)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import Feature
from monitor.state.graph import children_of, ranks
from monitor.state.health import DependencyHealth, DependencyState
from monitor.state.impact import (
    FeatureHealth,
    FeatureNeeds,
    FeatureState,
    dependency_node,
    dependency_nodes,
    evaluate_features,
    feature_order,
    feature_parents,
    features_by_root,
    impacted_features,
    needs_from_config,
    reevaluate_features,
    with_own_window,
)

pytestmark = pytest.mark.unit


def up() -> DependencyHealth:
    return DependencyHealth(state=DependencyState.UP, health=DependencyState.UP)


def degraded() -> DependencyHealth:
    return DependencyHealth(state=DependencyState.DEGRADED, health=DependencyState.DEGRADED)


def unknown() -> DependencyHealth:
    return DependencyHealth(state=DependencyState.UNKNOWN, health=DependencyState.UNKNOWN)


def down(cause: str | None = None) -> DependencyHealth:
    """Down on its own, or (with `cause`) because that parent is down."""
    return DependencyHealth(state=DependencyState.DOWN, health=DependencyState.DOWN, cause=cause, failing=True)


def maintenance(health: DependencyState = DependencyState.UP, cause: str | None = None) -> DependencyHealth:
    """Inside a maintenance window, with the health its probes (or its parent) give."""
    return DependencyHealth(state=DependencyState.MAINTENANCE, health=health, cause=cause)


# Every dependency of the small VA graph below, healthy; cases override some of them.
HEALTHY: dict[str, DependencyHealth] = {
    dep: up() for dep in ("ssoe-oauth", "idme", "mhv", "dslogon", "evss", "va-profile", "vaos")
}

# The feature under test in the single-feature cases.
CLAIMS = FeatureNeeds(requires=("evss",))
SIGN_IN = FeatureNeeds(any_of=("idme", "mhv", "dslogon"))
PROFILE = FeatureNeeds(requires=("va-profile",))
APPOINTMENTS = FeatureNeeds(requires=("vaos",))
CLAIMS_WITH_SIGN_IN = FeatureNeeds(requires=("evss",), any_of=("idme", "mhv", "dslogon"))
CLAIMS_AND_PROFILE = FeatureNeeds(requires=("evss", "va-profile"))

# The bundled config's shape: authentication first, every signed-in feature requires it.
VA_FEATURES: dict[str, FeatureNeeds] = {
    "authentication": FeatureNeeds(requires=("ssoe-oauth",)),
    "authentication-credentials": FeatureNeeds(requires=("authentication",), any_of=("idme", "mhv", "dslogon")),
    "claims": FeatureNeeds(requires=("authentication", "evss")),
    "profile": FeatureNeeds(requires=("authentication", "va-profile")),
    "appointments": FeatureNeeds(requires=("authentication", "vaos")),
    "prescriptions": FeatureNeeds(requires=("authentication", "mhv")),
}
# As the bundled config has it: these dependencies need the SSOe token (depends_on: [ssoe-oauth]).
SSOE_CHILDREN = ("evss", "va-profile", "vaos")


def _single(need: FeatureNeeds, overrides: Mapping[str, DependencyHealth]) -> FeatureHealth:
    return evaluate_features({"feature": need}, {**HEALTHY, **overrides})["feature"]


class TestEvaluateFeatures:
    """`evaluate_features`: one feature's state and root causes from its inputs."""

    @pytest.mark.parametrize(
        ("need", "overrides", "expected"),
        [
            pytest.param(CLAIMS, {}, FeatureHealth(FeatureState.OK), id="all-up-ok"),
            pytest.param(CLAIMS, {"evss": down()}, FeatureHealth(FeatureState.DOWN, ("evss",)), id="required-down"),
            pytest.param(
                CLAIMS,
                {"ssoe-oauth": down(), "evss": down(cause="ssoe-oauth")},
                FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",)),
                id="required-down-because-of-parent",
            ),
            pytest.param(
                APPOINTMENTS,
                {"ssoe-oauth": down(), "va-profile": down(cause="ssoe-oauth"), "vaos": down(cause="va-profile")},
                FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",)),
                id="required-down-because-of-grandparent",
            ),
            pytest.param(
                CLAIMS, {"evss": degraded()}, FeatureHealth(FeatureState.DEGRADED, ("evss",)), id="required-degraded"
            ),
            pytest.param(
                CLAIMS, {"evss": unknown()}, FeatureHealth(FeatureState.UNKNOWN, ("evss",)), id="required-unknown"
            ),
            pytest.param(
                CLAIMS,
                {"evss": maintenance()},
                FeatureHealth(FeatureState.MAINTENANCE, ("evss",)),
                id="required-in-maintenance",
            ),
            pytest.param(
                CLAIMS,
                {"evss": maintenance(DependencyState.DOWN)},
                FeatureHealth(FeatureState.MAINTENANCE, ("evss",)),
                id="required-down-in-maintenance",
            ),
            pytest.param(
                CLAIMS,
                {"ssoe-oauth": maintenance(DependencyState.DOWN), "evss": down(cause="ssoe-oauth")},
                FeatureHealth(FeatureState.MAINTENANCE, ("ssoe-oauth",)),
                id="required-down-because-of-parent-in-maintenance",
            ),
            pytest.param(
                CLAIMS_AND_PROFILE,
                {"evss": down(), "va-profile": maintenance()},
                FeatureHealth(FeatureState.DOWN, ("evss",)),
                id="down-beats-maintenance",
            ),
            pytest.param(
                CLAIMS_AND_PROFILE,
                {"evss": maintenance(), "va-profile": degraded()},
                FeatureHealth(FeatureState.MAINTENANCE, ("evss",)),
                id="maintenance-beats-degraded",
            ),
            pytest.param(
                CLAIMS_AND_PROFILE,
                {"evss": degraded(), "va-profile": unknown()},
                FeatureHealth(FeatureState.DEGRADED, ("evss",)),
                id="degraded-beats-unknown",
            ),
            pytest.param(
                CLAIMS_AND_PROFILE,
                {"evss": down(), "va-profile": down()},
                FeatureHealth(FeatureState.DOWN, ("evss", "va-profile")),
                id="two-required-down",
            ),
        ],
    )
    def test_requires(
        self, need: FeatureNeeds, overrides: Mapping[str, DependencyHealth], expected: FeatureHealth
    ) -> None:
        """Any required node down makes the feature down; the worst input state wins and names its root causes."""
        assert _single(need, overrides) == expected

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            pytest.param({}, FeatureHealth(FeatureState.OK), id="all-up"),
            pytest.param({"idme": down()}, FeatureHealth(FeatureState.DEGRADED, ("idme",)), id="one-of-three-down"),
            pytest.param(
                {"idme": down(), "mhv": down()},
                FeatureHealth(FeatureState.DEGRADED, ("idme", "mhv")),
                id="two-of-three-down",
            ),
            pytest.param(
                {"idme": down(), "mhv": down(), "dslogon": down()},
                FeatureHealth(FeatureState.DOWN, ("dslogon", "idme", "mhv")),
                id="all-down",
            ),
            pytest.param(
                {"idme": maintenance(), "mhv": maintenance(), "dslogon": maintenance()},
                FeatureHealth(FeatureState.MAINTENANCE, ("dslogon", "idme", "mhv")),
                id="all-in-maintenance",
            ),
            pytest.param(
                {"idme": maintenance(), "mhv": down(), "dslogon": maintenance()},
                FeatureHealth(FeatureState.DOWN, ("dslogon", "idme", "mhv")),
                id="maintenance-and-down-all-unavailable",
            ),
            pytest.param(
                {"mhv": maintenance()},
                FeatureHealth(FeatureState.DEGRADED, ("mhv",)),
                id="one-in-maintenance",
            ),
            pytest.param({"idme": degraded()}, FeatureHealth(FeatureState.DEGRADED, ("idme",)), id="one-degraded"),
            pytest.param({"idme": unknown()}, FeatureHealth(FeatureState.OK), id="one-unknown-others-up"),
            pytest.param(
                {"idme": unknown(), "mhv": unknown(), "dslogon": unknown()},
                FeatureHealth(FeatureState.UNKNOWN, ("dslogon", "idme", "mhv")),
                id="all-unknown",
            ),
            pytest.param(
                {"idme": unknown(), "mhv": down(), "dslogon": down()},
                FeatureHealth(FeatureState.DEGRADED, ("dslogon", "mhv")),
                id="unknown-and-down",
            ),
        ],
    )
    def test_any_of(self, overrides: Mapping[str, DependencyHealth], expected: FeatureHealth) -> None:
        """Some alternatives unavailable degrade the feature; all unavailable take it down (or into maintenance)."""
        assert _single(SIGN_IN, overrides) == expected

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            pytest.param(
                {"evss": down(), "idme": down()},
                FeatureHealth(FeatureState.DOWN, ("evss",)),
                id="required-down-over-some-alternatives-down",
            ),
            pytest.param(
                {"idme": down(), "mhv": down(), "dslogon": down()},
                FeatureHealth(FeatureState.DOWN, ("dslogon", "idme", "mhv")),
                id="required-up-alternatives-all-down",
            ),
            pytest.param(
                {"evss": degraded(), "idme": down()},
                FeatureHealth(FeatureState.DEGRADED, ("evss", "idme")),
                id="degraded-from-both",
            ),
        ],
    )
    def test_requires_and_any_of(self, overrides: Mapping[str, DependencyHealth], expected: FeatureHealth) -> None:
        """Required nodes and alternatives combine: the worst contribution wins."""
        assert _single(CLAIMS_WITH_SIGN_IN, overrides) == expected

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            pytest.param(
                {},
                dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.OK)),
                id="all-healthy",
            ),
            pytest.param(
                {"ssoe-oauth": down(), **{child: down(cause="ssoe-oauth") for child in SSOE_CHILDREN}},
                dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",))),
                id="ssoe-oauth-down-takes-every-feature",
            ),
            pytest.param(
                {"evss": down()},
                {
                    **dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.OK)),
                    "claims": FeatureHealth(FeatureState.DOWN, ("evss",)),
                },
                id="evss-down-takes-claims",
            ),
            pytest.param(
                {"mhv": down()},
                {
                    **dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.OK)),
                    "authentication-credentials": FeatureHealth(FeatureState.DEGRADED, ("mhv",)),
                    "prescriptions": FeatureHealth(FeatureState.DOWN, ("mhv",)),
                },
                id="mhv-down-degrades-sign-in",
            ),
            pytest.param(
                {"ssoe-oauth": maintenance(DependencyState.DOWN), "evss": down(cause="ssoe-oauth")},
                dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.MAINTENANCE, ("ssoe-oauth",))),
                id="ssoe-oauth-maintenance",
            ),
            pytest.param(
                {"ssoe-oauth": degraded(), "vaos": down()},
                {
                    **dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.DEGRADED, ("ssoe-oauth",))),
                    "appointments": FeatureHealth(FeatureState.DOWN, ("vaos",)),
                },
                id="degraded-authentication-and-own-down",
            ),
            pytest.param(
                {"ssoe-oauth": unknown()},
                dict.fromkeys(VA_FEATURES, FeatureHealth(FeatureState.UNKNOWN, ("ssoe-oauth",))),
                id="unknown-authentication",
            ),
        ],
    )
    def test_features_requiring_features(
        self, overrides: Mapping[str, DependencyHealth], expected: Mapping[str, FeatureHealth]
    ) -> None:
        """A feature requiring another feature inherits its state and its root causes."""
        assert evaluate_features(VA_FEATURES, {**HEALTHY, **overrides}) == expected

    def test_authentication_chain(self) -> None:
        """SSOe OAuth down takes authentication down, and claims down with ssoe-oauth as its only root cause."""
        dependencies = {**HEALTHY, "ssoe-oauth": down(), "evss": down(cause="ssoe-oauth")}
        features = evaluate_features(VA_FEATURES, dependencies)
        assert features["authentication"] == FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",))
        assert features["claims"] == FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",))

    def test_config_order(self) -> None:
        """The result lists features in config order, even when one requires a feature declared after it."""
        needs = {
            "claims": FeatureNeeds(requires=("authentication", "evss")),
            "appointments": FeatureNeeds(requires=("authentication", "vaos")),
            "authentication": FeatureNeeds(requires=("ssoe-oauth",)),
        }
        features = evaluate_features(needs, {**HEALTHY, "ssoe-oauth": down()})
        assert list(features) == ["claims", "appointments", "authentication"]
        assert features["claims"] == FeatureHealth(FeatureState.DOWN, ("ssoe-oauth",))

    def test_no_features(self) -> None:
        """No configured features give an empty result."""
        assert evaluate_features({}, HEALTHY) == {}


# The small VA graph's depends_on, as the bundled config has it.
VA_DEPENDS_ON = {dep: (["ssoe-oauth"] if dep in SSOE_CHILDREN else []) for dep in HEALTHY}
# Changes of dependency states from all healthy, and the features they move.
CHANGES = (
    pytest.param({"evss": down()}, {"claims"}, id="evss-down"),
    pytest.param({"mhv": down()}, {"authentication-credentials", "prescriptions"}, id="mhv-down"),
    pytest.param(
        {"ssoe-oauth": down(), **{child: down(cause="ssoe-oauth") for child in SSOE_CHILDREN}},
        set(VA_FEATURES),
        id="ssoe-oauth-down",
    ),
    pytest.param({"idme": degraded()}, {"authentication-credentials"}, id="one-sign-in-degraded"),
    pytest.param(
        {"evss": DependencyHealth(DependencyState.UP, DependencyState.UP, failing=True)},
        set(),
        id="failing-but-up-moves-nothing",
    ),
    pytest.param(
        {"ssoe-oauth": maintenance(DependencyState.DOWN), "evss": down(cause="ssoe-oauth")},
        set(VA_FEATURES),
        id="ssoe-oauth-maintenance",
    ),
)


class TestReevaluateFeatures:
    """`reevaluate_features` and `dependency_nodes`: a whole evaluation's features, from what changed."""

    @pytest.mark.parametrize(("overrides", "moved"), CHANGES)
    def test_agrees_with_a_whole_evaluation(self, overrides: Mapping[str, DependencyHealth], moved: set[str]) -> None:
        """Only the features whose state changed come back, and with them the states of a whole evaluation."""
        before = evaluate_features(VA_FEATURES, HEALTHY)
        dependencies = {**HEALTHY, **overrides}
        nodes = {dep: dependency_node(dep, HEALTHY) for dep in HEALTHY} | before
        nodes |= dependency_nodes(overrides, children_of(VA_DEPENDS_ON), dependencies)
        changed = reevaluate_features(
            overrides, ranks(feature_order(VA_FEATURES)), VA_FEATURES, children_of(feature_parents(VA_FEATURES)), nodes
        )
        assert set(changed) == moved
        assert {**before, **changed} == evaluate_features(VA_FEATURES, dependencies)

    def test_a_feature_seed_is_evaluated_even_if_nothing_it_needs_moved(self) -> None:
        """A feature in the seeds is evaluated (a first evaluation); unchanged, it is not returned."""
        before = evaluate_features(VA_FEATURES, HEALTHY)
        nodes = {dep: dependency_node(dep, HEALTHY) for dep in HEALTHY}
        rank = ranks(feature_order(VA_FEATURES))
        needed_by = children_of(feature_parents(VA_FEATURES))
        assert reevaluate_features(VA_FEATURES, rank, VA_FEATURES, needed_by, nodes) == before
        assert reevaluate_features(["claims"], rank, VA_FEATURES, needed_by, nodes | before) == {}

    def test_dependency_nodes_follow_the_chain_of_causes(self) -> None:
        """The root's window opening moves the node of a grandchild down because of it, not its state."""
        depends_on = {"ssoe-oauth": [], "va-profile": ["ssoe-oauth"], "vaos": ["va-profile"], "evss": []}
        dependencies = {
            "ssoe-oauth": maintenance(DependencyState.DOWN),
            "va-profile": down(cause="ssoe-oauth"),
            "vaos": down(cause="va-profile"),
            "evss": down(),
        }
        nodes = dependency_nodes(["ssoe-oauth"], children_of(depends_on), dependencies)
        assert nodes == {
            "ssoe-oauth": FeatureHealth(FeatureState.MAINTENANCE, ("ssoe-oauth",)),
            "va-profile": FeatureHealth(FeatureState.MAINTENANCE, ("ssoe-oauth",)),
            "vaos": FeatureHealth(FeatureState.MAINTENANCE, ("ssoe-oauth",)),
        }


class TestWithOwnWindow:
    """`with_own_window`: a feature under a window of its own is in maintenance, unless it is down."""

    @pytest.mark.parametrize(
        ("feature", "in_window", "expected"),
        [
            pytest.param(FeatureHealth(FeatureState.OK), True, FeatureHealth(FeatureState.MAINTENANCE), id="ok"),
            pytest.param(
                FeatureHealth(FeatureState.DEGRADED, ("mhv",)),
                True,
                FeatureHealth(FeatureState.MAINTENANCE),
                id="degraded",
            ),
            pytest.param(
                FeatureHealth(FeatureState.DOWN, ("evss",)),
                True,
                FeatureHealth(FeatureState.DOWN, ("evss",)),
                id="down-stays-down",
            ),
            pytest.param(
                FeatureHealth(FeatureState.DEGRADED, ("mhv",)),
                False,
                FeatureHealth(FeatureState.DEGRADED, ("mhv",)),
                id="no-window",
            ),
        ],
    )
    def test_window(self, feature: FeatureHealth, in_window: bool, expected: FeatureHealth) -> None:
        """Users are told about maintenance, not a degradation it explains; an outage still shows."""
        assert with_own_window(feature, in_window) == expected


class TestImpactedFeatures:
    """`impacted_features`: the features degraded or down because of one root cause."""

    @pytest.mark.parametrize(
        ("overrides", "root", "impacted"),
        [
            pytest.param({}, "evss", [], id="nothing-down"),
            pytest.param({"evss": down()}, "evss", ["claims"], id="evss"),
            pytest.param({"evss": down()}, "vaos", [], id="other-root"),
            pytest.param(
                {"ssoe-oauth": down(), **{child: down(cause="ssoe-oauth") for child in SSOE_CHILDREN}},
                "ssoe-oauth",
                list(VA_FEATURES),
                id="ssoe-oauth-every-feature-in-config-order",
            ),
            pytest.param(
                {"ssoe-oauth": down(), "evss": down(cause="ssoe-oauth")},
                "evss",
                [],
                id="child-of-down-parent-is-not-a-root",
            ),
            pytest.param(
                {"mhv": down()},
                "mhv",
                ["authentication-credentials", "prescriptions"],
                id="degraded-and-down",
            ),
            pytest.param(
                {"mhv": maintenance(DependencyState.DOWN)},
                "mhv",
                ["authentication-credentials"],
                id="maintenance-impacts-only-as-an-alternative",
            ),
            pytest.param(
                {"evss": down(), "vaos": down()},
                "vaos",
                ["appointments"],
                id="two-roots-separately",
            ),
        ],
    )
    def test_impacted_by_root(self, overrides: Mapping[str, DependencyHealth], root: str, impacted: list[str]) -> None:
        """Exactly the degraded or down features naming `root` among their causes, in config order."""
        features = evaluate_features(VA_FEATURES, {**HEALTHY, **overrides})
        assert impacted_features(root, features) == impacted


class TestFeatureHealth:
    """`FeatureHealth.impacted`: whether users notice."""

    @pytest.mark.parametrize(
        ("state", "impacted"),
        [
            pytest.param(FeatureState.OK, False, id="ok"),
            pytest.param(FeatureState.UNKNOWN, False, id="unknown"),
            pytest.param(FeatureState.MAINTENANCE, False, id="maintenance"),
            pytest.param(FeatureState.DEGRADED, True, id="degraded"),
            pytest.param(FeatureState.DOWN, True, id="down"),
        ],
    )
    def test_impacted(self, state: FeatureState, impacted: bool) -> None:
        """A feature is impacted when it is degraded or down."""
        assert FeatureHealth(state).impacted is impacted


class TestNeedsFromConfig:
    """`needs_from_config`: configured features -> `FeatureNeeds`."""

    def test_needs(self) -> None:
        """Each feature's requires and any_of become tuples, in config order."""
        features = {
            "authentication": Feature(name="Authentication", requires=["ssoe-oauth"]),
            "sign-in": Feature(name="Sign in", requires=["authentication"], any_of=["idme", "mhv"]),
        }
        assert needs_from_config(features) == {
            "authentication": FeatureNeeds(requires=("ssoe-oauth",)),
            "sign-in": FeatureNeeds(requires=("authentication",), any_of=("idme", "mhv")),
        }


_ROOTS = st.sampled_from(["evss", "mhv", "vaos", "idme"])
_FEATURE_HEALTH = st.builds(
    FeatureHealth, st.sampled_from(list(FeatureState)), st.lists(_ROOTS, unique=True, max_size=3).map(tuple)
)


@given(st.dictionaries(st.sampled_from([f"f{i}" for i in range(12)]), _FEATURE_HEALTH))
def test_features_by_root_is_each_roots_impacted_features(features: dict[str, FeatureHealth]) -> None:
    """The one-pass index (what a mass outage's decisions read) says, for every root cause, what the
    rule says one root at a time: the features degraded or down because of it, in config order."""
    index = features_by_root(features)
    for root in ["evss", "mhv", "vaos", "idme"]:
        expected = [
            f
            for f, h in features.items()
            if h.state in (FeatureState.DEGRADED, FeatureState.DOWN) and root in h.impacted_by
        ]
        assert index.get(root, []) == expected == impacted_features(root, features)
    assert all(index.values())  # no root listed without a feature
