"""Pure walks over depmon's graphs, on the standard library's `graphlib`. No I/O.

Both graphs are given as `node -> parents`: `depends_on` (a dependency's parents are the
dependencies it needs) and `requires`/`any_of` (a feature's parents are the dependencies and
features it needs). The config refuses cycles (`find_cycle`) before any other walk runs.
Walking `parents` reaches ancestors (`ancestors`); walking `children_of(parents)` reaches
descendants (`descendants`). `levels` groups an order into what can run together (`depmon check`).

`propagate` is the walk behind incremental evaluation: it visits nodes in topological order,
each once, starting from the ones that changed, and goes on only where a visit says its result
changed, so a change costs what it reaches rather than the size of the graph.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Callable, Iterable, Mapping


def topological_order(parents: Mapping[str, Iterable[str]]) -> list[str]:
    """Every node, parents named but not listed as keys included, after all of its parents.

    Ties keep the order nodes are first named in, so the result is the same on every run.
    """
    return list(_sorter(parents).static_order())


def find_cycle(parents: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a closed path, each node followed by one of its parents (`[a, b, a]`), or None.

    The path starts at the cycle's node listed first in `parents`: the same cycle is reported
    the same way whichever node graphlib happens to find it from.
    """
    try:
        _sorter(parents).prepare()
    except graphlib.CycleError as error:
        # graphlib lists each node before its child; a config error reads from child to parent.
        cycle: list[str] = list(reversed(error.args[1]))[:-1]
    else:
        return None
    position = {node: index for index, node in enumerate(parents)}
    start = min(range(len(cycle)), key=lambda i: position.get(cycle[i], len(position)))
    path = cycle[start:] + cycle[:start]
    return [*path, path[0]]


def _sorter(parents: Mapping[str, Iterable[str]]) -> graphlib.TopologicalSorter[str]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node, node_parents in parents.items():
        sorter.add(node, *node_parents)
    return sorter


def children_of(parents: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The reverse edges: node -> the nodes that name it as a parent, in the order they are given.

    Every node has an entry, a leaf an empty list.
    """
    children: dict[str, list[str]] = {}
    for node, node_parents in parents.items():
        children.setdefault(node, [])
        for parent in node_parents:
            children.setdefault(parent, []).append(node)
    return children


def descendants(children: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """The nodes reachable from `roots` along `children` edges, the roots excluded unless reached."""
    found: set[str] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def ancestors(parents: Mapping[str, Iterable[str]], nodes: Iterable[str]) -> set[str]:
    """Every parent of `nodes`, their parents and so on; a node of `nodes` only if it is also one's ancestor."""
    return descendants(parents, nodes)


def levels(parents: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The topological order cut into levels: a node's level is one more than its highest parent's.

    The members of a level do not need one another, so they can run together once the levels
    before them are done. Each level keeps the topological order; parents not listed are level 0.
    """
    order = topological_order(parents)
    level_of: dict[str, int] = {}
    for node in order:
        level_of[node] = 1 + max((level_of[parent] for parent in parents.get(node, ())), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(level_of.values(), default=-1) + 1)]
    for node in order:
        grouped[level_of[node]].append(node)
    return grouped


def ranks(order: Iterable[str]) -> dict[str, int]:
    """Node -> its position in `order`: a topological order as a sort key."""
    return {node: position for position, node in enumerate(order)}


def propagate(seeds: Iterable[str], rank: Mapping[str, int], visit: Callable[[str], Iterable[str]]) -> None:
    """Visit `seeds` and the nodes their visits name, each once, in the order of `rank`.

    `visit(node)` does the node's work and returns the nodes to visit after it (its children
    when its result changed, nothing when it did not). Those must rank after `node`, as children
    do in a topological order; then every node is visited once, after every named parent.
    """
    queue = [(rank[node], node) for node in set(seeds)]
    heapq.heapify(queue)
    queued = {node for _, node in queue}
    while queue:
        _, node = heapq.heappop(queue)
        for following in visit(node):
            if following not in queued:
                queued.add(following)
                heapq.heappush(queue, (rank[following], following))
