"""When traffic and the active probes disagree about a dependency (SPEC 11.3), pure.

A traffic signal (kinds `prometheus`, `datadog`) says what Veterans' calls see; the active probes
say what depmon's own requests to a health path see. When one side fails while the other
passes, that is the on-call engineer's most useful fact: the page (`custom_details.disagreement`)
and `/status` say which probes pass, which fail, and what that suggests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitor.config import SIGNAL_KINDS, Dependency
from monitor.state.health import ProbeHealth, ProbeStatus

TRAFFIC_FAILING = (
    "Veterans' calls are failing while depmon's own probes pass: the health path does not exercise what "
    "real traffic uses (a backend behind it, credentials, a route), or vets-api's circuit breaker is open "
    "(status:skipped). Trust the traffic."
)
PROBES_FAILING = (
    "depmon's own probes fail while Veterans' calls succeed: the check itself (its URL, its credentials, "
    "depmon's route to the upstream) may be what is broken, or the failure has not reached real traffic yet."
)


def _verdict(health: ProbeHealth) -> bool | None:
    """True passing, False failing (down or on the way), None not known yet."""
    if health.failing:
        return False
    if health.status in (ProbeStatus.UP, ProbeStatus.DEGRADED):
        return True
    return None


def disagreement(dependency: Dependency, probes: Sequence[tuple[str, ProbeHealth]]) -> dict[str, Any] | None:
    """`{traffic, probes, passing, failing, suggests}` when the traffic signals and the active probes
    of a dependency disagree, else None (`probes`: its enabled probes' (name, health)).

    They disagree when some traffic signal fails while every active probe with a verdict passes,
    or the reverse. A side with no verdict yet (unknown, or only inconclusive runs) has no say.
    """
    signal = {p.name for p in dependency.probes if p.kind in SIGNAL_KINDS}
    sides: dict[bool, dict[bool, list[str]]] = {True: {True: [], False: []}, False: {True: [], False: []}}
    for name, health in probes:
        verdict = _verdict(health)
        if verdict is not None:
            sides[name in signal][verdict].append(name)
    traffic, active = sides[True], sides[False]
    if traffic[False] and active[True] and not active[False]:
        failing, passing, suggests, side = traffic[False], active[True], TRAFFIC_FAILING, "failing"
    elif active[False] and traffic[True] and not traffic[False]:
        failing, passing, suggests, side = active[False], traffic[True], PROBES_FAILING, "passing"
    else:
        return None
    return {
        "traffic": side,  # what real traffic says: failing, or passing
        "passing": sorted(passing),
        "failing": sorted(failing),
        "suggests": suggests,
    }
