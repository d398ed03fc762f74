"""The replicas' quorum rules (SPEC 10.6), as tables."""

from __future__ import annotations

import pytest

from monitor.replicas.quorum import Verdict, is_live, merge, self_trouble, verdicts
from monitor.state.health import DependencyState as S
from monitor.store.records import Observation, ReplicaView

pytestmark = pytest.mark.unit

DOWN, UP, DEGRADED, UNKNOWN = (Observation(str(s), s is S.DOWN, 0.0) for s in (S.DOWN, S.UP, S.DEGRADED, S.UNKNOWN))


def view(name: str, seen_at: float = 100.0, self_state: str = "ok", **seen: Observation) -> ReplicaView:
    return ReplicaView(name, f"{name}-1", 0.0, seen_at, 1.0, False, self_state, "", seen)


class TestMerge:
    @pytest.mark.parametrize(
        ("seen", "quorum", "expected"),
        [
            ((DOWN, DOWN, UP), 2, S.DOWN),
            ((DOWN, UP, UP), 2, S.DEGRADED),  # one vantage point: shown, never paged
            ((DOWN, UP, UP), 1, S.DOWN),
            ((UP, UP, UP), 2, S.UP),
            ((UNKNOWN, UNKNOWN), 1, S.UNKNOWN),
            ((UNKNOWN, UP), 2, S.UP),
            ((DEGRADED, UP), 2, S.DEGRADED),
            ((), 1, S.UNKNOWN),
        ],
    )
    def test_down_at_the_quorum_only(self, seen: tuple[Observation, ...], quorum: int, expected: S) -> None:
        verdict = merge([(f"r{i}", o) for i, o in enumerate(seen)], quorum)
        assert verdict.state is expected
        assert len(verdict.down_replicas) == sum(1 for o in seen if o.state == "down")

    def test_the_replicas_seeing_it_down_are_named(self) -> None:
        assert merge([("b", DOWN), ("a", DOWN), ("c", UP)], 2) == Verdict(S.DOWN, True, ("a", "b"))


class TestLiveness:
    @pytest.mark.parametrize(("seen_at", "live"), [(100.0, True), (98.0, True), (97.9, False)])
    def test_live_within_twice_the_interval(self, seen_at: float, live: bool) -> None:
        assert is_live(view("a", seen_at), now=100.0) is live

    def test_silent_and_blind_replicas_say_nothing_about_dependencies(self) -> None:
        views = [
            view("a", evss=DOWN),
            view("b", seen_at=90.0, evss=DOWN),  # not live
            view("c", self_state="cannot_see_out", evss=DOWN),  # cannot trust its probes
            view("d", evss=UP),
        ]
        assert verdicts(views, ["evss"], quorum=2, now=100.0)["evss"].state is S.DEGRADED
        assert verdicts([views[0], view("e", evss=DOWN)], ["evss"], quorum=2, now=100.0)["evss"].state is S.DOWN

    def test_self_trouble_names_live_replicas_only(self) -> None:
        views = [view("a"), view("b", self_state="overloaded"), view("c", seen_at=50.0, self_state="cannot_see_out")]
        assert self_trouble(views, now=100.0) == {"b": "overloaded"}
