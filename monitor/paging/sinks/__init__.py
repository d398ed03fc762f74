"""Where the outbox delivers: one sink per kind of destination, each in a module of its own.

    Destination.parse(row's destination) -> (kind, target)      `pagerduty`, `slack:#channel`
    SinkKind                                                     a kind's name and its metric and log names
    Sink.can_deliver(destination), Sink.send(destination, body)  one bounded attempt -> Delivery

A row of the outbox names its destination as `kind` or `kind:target` (the store's `destination`
column); `Destination.parse` is the one place that reads it. The outbox takes a mapping
`SinkKind -> Sink | None` from the daemon's runtime: None is a kind in dry run (no routing key, no
Slack webhook), whose rows are marked `dry_run` and logged under the kind's `skipped` event. A
kind's names live on `SinkKind`, not on its sink, because a kind in dry run has no sink and still
logs; they are a contract with dashboards and alerts (`depmon_pagerduty_events_total`,
`pagerduty_event_accepted`, ...). A kind whose rows act on people (escalation's REST writes) waits
while their dependency is in a maintenance window or silenced (`waits_for_people`).

Adding a destination is adding a module here: its `SinkKind`, its sink, and an entry in the
runtime's mapping. The outbox does not change: it orders, retries and counts every kind alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from prometheus_client import Counter

from monitor.metrics import Metrics
from monitor.pagerduty.clients import Delivery

__all__ = ["Delivery", "Destination", "Sink", "SinkKind", "Sinks"]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one outbox row goes: a kind of sink and, for kinds with several, a target (a channel).

    Written in the store as `kind` alone or `kind:target` (`pagerduty`, `slack:#va-mobile-app-alerts`).
    """

    kind: str
    target: str = ""

    @classmethod
    def parse(cls, text: str) -> Destination:
        """The destination a row's `destination` column names."""
        kind, _, target = text.partition(":")
        return cls(kind, target)

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


@dataclass(frozen=True, slots=True)
class SinkKind:
    """A kind of destination and the names it is counted and logged under.

    `name` is the kind in the store (`Destination.kind`); each attempt is logged as
    `{event}_accepted`, `{event}_dropped`, `{event}_retry` or `{event}_sender_crashed` and counted
    in `counter(metrics)` with labels `action` and `outcome` (accepted, dropped, retried); a row it
    cannot deliver (dry run) is logged as `skipped`, with `skip_reason`. Each name is spelled out
    whole, so a search for a log event or a metric finds the kind that owns it.
    """

    name: str
    event: str
    skipped: str
    skip_reason: str
    counter: Callable[[Metrics], Counter]
    # The counter's labels but `outcome`, from a row's action and body (escalation counts a `step`).
    labels: Callable[[str, Mapping[str, Any]], dict[str, str]] = lambda action, _body: {"action": action}
    # True: its rows wait while their incident's dependency is in a window or silenced (SPEC 11.2).
    waits_for_people: bool = False

    def at(self, target: str = "") -> Destination:
        """The destination of this kind at `target`."""
        return Destination(self.name, target)


class Sink(Protocol):
    """Delivers outbox rows of one kind; the outbox owns order, retries, counting and logging."""

    def can_deliver(self, destination: Destination) -> bool:
        """False when this destination is not configured (a channel without a webhook): dry run."""
        ...

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        """Deliver one row once; never raises for a delivery failure (the `Delivery` says it)."""
        ...


Sinks: TypeAlias = Mapping[SinkKind, Sink | None]
"""The outbox's destinations: each kind's sink, None for a kind in dry run."""
