"""Pure graph walks: topological order, reverse edges, descendants and the incremental walk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import pytest

from monitor.state.graph import (
    ancestors,
    children_of,
    descendants,
    find_cycle,
    levels,
    propagate,
    ranks,
    topological_order,
)

pytestmark = pytest.mark.unit

# A small depends_on graph of VA.gov's shape: SSOe issues the tokens the others need.
VA = {
    "ssoe-oauth": [],
    "va-profile": ["ssoe-oauth"],
    "evss": ["ssoe-oauth"],
    "vaos": ["va-profile"],
    "caseflow": [],
}


class TestTopologicalOrder:
    """`topological_order`: parents before their children."""

    @pytest.mark.parametrize(
        ("parents", "order"),
        [
            pytest.param({}, [], id="empty"),
            pytest.param({"evss": [], "mhv": []}, ["evss", "mhv"], id="independent-in-given-order"),
            pytest.param({"evss": ["ssoe-oauth"], "ssoe-oauth": []}, ["ssoe-oauth", "evss"], id="parent-after-child"),
            pytest.param(
                {"vaos": ["va-profile"], "va-profile": ["ssoe-oauth"], "ssoe-oauth": []},
                ["ssoe-oauth", "va-profile", "vaos"],
                id="chain",
            ),
            pytest.param(
                {"claims": ["authentication", "evss"], "authentication": ["ssoe-oauth"]},
                ["evss", "ssoe-oauth", "authentication", "claims"],
                id="parents-not-listed-as-keys",
            ),
            pytest.param(
                {"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []},
                ["a", "b", "c", "d"],
                id="diamond-once-each",
            ),
        ],
    )
    def test_order(self, parents: Mapping[str, Sequence[str]], order: list[str]) -> None:
        """Every node comes after all of its parents, each exactly once, ties in the order first named."""
        result = topological_order(parents)
        assert result == order
        for node, node_parents in parents.items():
            assert all(result.index(parent) < result.index(node) for parent in node_parents)

    def test_ranks(self) -> None:
        """A rank is the position in the order: every parent ranks before its children."""
        rank = ranks(topological_order(VA))
        assert all(rank[parent] < rank[node] for node, parents in VA.items() for parent in parents)
        assert sorted(rank.values()) == list(range(len(VA)))


class TestFindCycle:
    """`find_cycle`: a cycle along parent edges, as a closed path."""

    @pytest.mark.parametrize(
        ("parents", "cycle"),
        [
            pytest.param({}, None, id="empty"),
            pytest.param({"a": ["b"], "b": ["c"], "c": []}, None, id="chain"),
            pytest.param({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None, id="diamond"),
            pytest.param({"a": ["outside"]}, None, id="parent-not-listed"),
            pytest.param({"a": ["a"]}, ["a", "a"], id="self-loop"),
            pytest.param({"a": ["b"], "b": ["a"]}, ["a", "b", "a"], id="two-nodes"),
            pytest.param({"x": ["a"], "a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"], id="behind-a-tail"),
            pytest.param({"b": ["c"], "a": ["b"], "c": ["a"]}, ["b", "c", "a", "b"], id="from-the-node-listed-first"),
            pytest.param(VA, None, id="va"),
        ],
    )
    def test_cycle(self, parents: Mapping[str, Sequence[str]], cycle: list[str] | None) -> None:
        """Each node of the path is followed by one of its parents, and the path closes; None when acyclic."""
        found = find_cycle(parents)
        assert found == cycle
        if found:
            assert all(parent in parents[node] for node, parent in pairwise(found))


class TestChildrenOf:
    """`children_of`: the reverse edges of a node -> parents map."""

    @pytest.mark.parametrize(
        ("parents", "children"),
        [
            pytest.param({}, {}, id="empty"),
            pytest.param({"a": []}, {"a": []}, id="a-leaf-has-an-empty-list"),
            pytest.param(
                VA,
                {
                    "ssoe-oauth": ["va-profile", "evss"],
                    "va-profile": ["vaos"],
                    "evss": [],
                    "vaos": [],
                    "caseflow": [],
                },
                id="va",
            ),
            pytest.param(
                {"claims": ["evss", "authentication"]},
                {"claims": [], "evss": ["claims"], "authentication": ["claims"]},
                id="parents-not-listed-as-keys",
            ),
            pytest.param(
                {"d": ["b", "c"], "b": ["a"], "c": ["a"]},
                {"d": [], "b": ["d"], "c": ["d"], "a": ["b", "c"]},
                id="diamond",
            ),
        ],
    )
    def test_children(self, parents: Mapping[str, Sequence[str]], children: dict[str, list[str]]) -> None:
        """Each node lists the nodes naming it as a parent, in the order they are given."""
        assert children_of(parents) == children


class TestDescendants:
    """`descendants`: what a change of some nodes can reach."""

    @pytest.mark.parametrize(
        ("roots", "expected"),
        [
            pytest.param([], set(), id="none"),
            pytest.param(["ssoe-oauth"], {"va-profile", "evss", "vaos"}, id="transitive"),
            pytest.param(["va-profile"], {"vaos"}, id="one-branch"),
            pytest.param(["caseflow"], set(), id="a-leaf"),
            pytest.param(
                ["va-profile", "ssoe-oauth"], {"va-profile", "evss", "vaos"}, id="a-root-reached-from-another"
            ),
            pytest.param(["unknown"], set(), id="unknown-node"),
        ],
    )
    def test_descendants(self, roots: list[str], expected: set[str]) -> None:
        """The nodes reachable along children edges, each once; a root only when another reaches it."""
        assert descendants(children_of(VA), roots) == expected

    def test_diamond_counts_once(self) -> None:
        """A node reached along two paths is found once."""
        children = children_of({"d": ["b", "c"], "b": ["a"], "c": ["a"]})
        assert descendants(children, ["a"]) == {"b", "c", "d"}


class TestAncestors:
    """`ancestors`: what a node needs, along its parent edges."""

    @pytest.mark.parametrize(
        ("nodes", "expected"),
        [
            pytest.param([], set(), id="none"),
            pytest.param(["vaos"], {"va-profile", "ssoe-oauth"}, id="transitive"),
            pytest.param(["ssoe-oauth"], set(), id="a-root"),
            pytest.param(["vaos", "evss"], {"va-profile", "ssoe-oauth"}, id="shared-ancestor-once"),
            pytest.param(["vaos", "va-profile"], {"va-profile", "ssoe-oauth"}, id="a-node-reached-from-another"),
            pytest.param(["unknown"], set(), id="unknown-node"),
        ],
    )
    def test_ancestors(self, nodes: list[str], expected: set[str]) -> None:
        """Every parent, grandparent and so on of the nodes; a node itself only when another needs it."""
        assert ancestors(VA, nodes) == expected


class TestLevels:
    """`levels`: a topological order cut into groups that can run together."""

    @pytest.mark.parametrize(
        ("parents", "expected"),
        [
            pytest.param({}, [], id="empty"),
            pytest.param({"evss": [], "mhv": []}, [["evss", "mhv"]], id="independent-one-level"),
            pytest.param(VA, [["ssoe-oauth", "caseflow"], ["va-profile", "evss"], ["vaos"]], id="va"),
            pytest.param({"b": ["a"]}, [["a"], ["b"]], id="parent-not-listed-is-level-0"),
            pytest.param({"c": ["a", "b"], "b": ["a"], "a": []}, [["a"], ["b"], ["c"]], id="longest-path-decides"),
        ],
    )
    def test_levels(self, parents: Mapping[str, Sequence[str]], expected: list[list[str]]) -> None:
        """Every node once, each after every level holding one of its parents, in topological order."""
        result = levels(parents)
        assert result == expected
        level_of = {node: index for index, level in enumerate(result) for node in level}
        assert all(level_of[p] < level_of[n] for n, node_parents in parents.items() for p in node_parents)


class TestPropagate:
    """`propagate`: visit from the changed nodes, in topological order, only where a visit says to."""

    def _walk(self, seeds: list[str], goes_on: set[str]) -> list[str]:
        """The visit order, when the nodes in `goes_on` pass the change on to their children."""
        children = children_of(VA)
        visited: list[str] = []

        def visit(node: str) -> list[str]:
            visited.append(node)
            return children[node] if node in goes_on else []

        propagate(seeds, ranks(topological_order(VA)), visit)
        return visited

    @pytest.mark.parametrize(
        ("seeds", "goes_on", "visited"),
        [
            pytest.param([], set(VA), [], id="nothing-changed"),
            pytest.param(["caseflow"], set(VA), ["caseflow"], id="a-leaf"),
            pytest.param(["ssoe-oauth"], set(), ["ssoe-oauth"], id="cut-off-at-the-seed"),
            pytest.param(["ssoe-oauth"], {"ssoe-oauth"}, ["ssoe-oauth", "va-profile", "evss"], id="one-level"),
            pytest.param(["ssoe-oauth"], set(VA), ["ssoe-oauth", "va-profile", "evss", "vaos"], id="all-the-way"),
            pytest.param(
                ["vaos", "ssoe-oauth"],
                set(VA),
                ["ssoe-oauth", "va-profile", "evss", "vaos"],
                id="seed-order-irrelevant",
            ),
            pytest.param(["va-profile", "va-profile"], set(VA), ["va-profile", "vaos"], id="a-seed-twice-visited-once"),
        ],
    )
    def test_visits(self, seeds: list[str], goes_on: set[str], visited: list[str]) -> None:
        """Each node reached is visited once, after every parent that was visited."""
        assert self._walk(seeds, goes_on) == visited

    def test_a_child_waits_for_every_changed_parent(self) -> None:
        """In a diamond, the bottom is visited once, after both sides, though the first side named it."""
        parents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["c"]}
        children = children_of(parents)
        visited: list[str] = []

        def visit(node: str) -> list[str]:
            visited.append(node)
            return children[node]

        propagate(["a"], ranks(topological_order(parents)), visit)
        assert visited.index("d") > max(visited.index("b"), visited.index("c"))
        assert sorted(visited) == ["a", "b", "c", "d", "e"]
