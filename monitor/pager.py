"""The incident loop: engine states -> `incidents.decide` -> events in the outbox, incidents in the store.

It is the only writer of incidents. It wakes on every state change of the engine and once a
second (escalation after `significant_duration` is a matter of time, not of state), asks the
pure `decide` what to do, and carries each decision out: the event is written to the outbox
(durable before it is sent), the incident and its timeline to the store. Open incidents are
loaded from the store at start, so a daemon restarted during an outage still resolves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from monitor.engine import Engine
from monitor.incidents import Action, Decision, EventContext, OpenIncident, build_event, decide
from monitor.metrics import Metrics
from monitor.outbox import Outbox
from monitor.store import Store

log = structlog.get_logger("depmon.pager")

TICK_SECONDS = 1.0


class Pager:
    """Turns state changes into PagerDuty events through the outbox."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        outbox: Outbox,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = store
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock
        self.open: dict[str, OpenIncident] = {}
        self._errors = metrics.loop_errors.labels("pager")

    async def load(self) -> None:
        """Reload the incidents left open by an earlier run of the daemon."""
        env = self.engine.config.monitor.environment
        for row in await self.store.open_incidents():
            if not row.dedup_key.startswith(f"depmon/{env}/"):
                continue  # another environment's incident in a shared state file
            self.open[row.dependency] = OpenIncident(
                dependency=row.dependency,
                dedup_key=row.dedup_key,
                opened_at=row.opened_at,
                features=tuple(row.features),
                escalated=row.escalated,
                id=row.id,
            )
        self.metrics.incidents_open.set(len(self.open))
        if self.open:
            log.info("incidents_reloaded", dependencies=sorted(self.open))

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile on every change and every tick, until cancelled."""
        await self.load()
        task_status.started()
        while True:
            with anyio.move_on_after(TICK_SECONDS):
                await self.engine.changed.wait()
            self.engine.consume_change()
            try:
                self.engine.tick()
                await self.reconcile()
            except Exception:  # contain it: the next change or tick tries again
                self._errors.inc()
                log.exception("pager_error")

    async def reconcile(self) -> None:
        """Decide and carry out every action the current states call for."""
        config = self.engine.config
        decisions = decide(
            config.monitor.environment,
            self.open,
            self.engine.dependencies,
            self.engine.features,
            self.clock(),
            config.monitor.significant_duration,
        )
        for decision in decisions:
            await self._carry_out(decision)

    async def _carry_out(self, decision: Decision) -> None:
        now = self.clock()
        dep = decision.dependency
        incident = self.open.get(dep)
        started_at = incident.opened_at if incident else now
        evidence = self.engine.evidence(dep) if dep in self.engine.config.dependencies else []
        if decision.action is Action.RESOLVE:
            body: dict[str, Any] = build_event(decision, EventContext(self.engine.config, {}, [], started_at))
        else:
            body = build_event(
                decision,
                EventContext(
                    self.engine.config,
                    self.engine.features,
                    evidence,
                    started_at,
                    self._upcoming_windows(dep),
                ),
            )
        timeline = {
            "action": str(decision.action),
            "features": list(decision.features),
            "state": str(self.engine.dependencies[dep].state) if dep in self.engine.dependencies else None,
            "evidence": [
                {"probe": probe, "outcome": str(r.outcome), "detail": r.detail, "at": r.at} for probe, r in evidence
            ],
        }
        # The event goes to the durable outbox before the incident is recorded: a crash in between
        # then re-sends the same decision after a restart (a harmless update of the same dedup
        # key) instead of recording an incident whose page was never queued.
        await self.outbox.put(decision.dedup_key, body["event_action"], body)
        if decision.action is Action.TRIGGER:
            payload = body["payload"]
            incident_id = await self.store.open_incident(
                dep,
                decision.dedup_key,
                now,
                features=list(decision.features),
                summary=payload["summary"],
                severity=payload["severity"],
            )
            self.open[dep] = OpenIncident(dep, decision.dedup_key, now, decision.features, False, incident_id)
            log.warning("incident_triggered", dependency=dep, dedup_key=decision.dedup_key, summary=payload["summary"])
        elif decision.action is Action.RESOLVE:
            assert incident is not None
            assert incident.id is not None
            await self.store.resolve_incident(incident.id, now)
            del self.open[dep]
            log.info("incident_resolved", dependency=dep, dedup_key=decision.dedup_key)
        else:
            assert incident is not None
            assert incident.id is not None
            await self.store.update_incident(
                incident.id, features=list(decision.features), escalated=decision.escalated
            )
            self.open[dep] = OpenIncident(
                dep, decision.dedup_key, incident.opened_at, decision.features, decision.escalated, incident.id
            )
            log.warning(
                "incident_escalated" if decision.action is Action.ESCALATE else "incident_updated",
                dependency=dep,
                dedup_key=decision.dedup_key,
                features=list(decision.features),
            )
        recorded = self.open[dep].id if dep in self.open else (incident.id if incident else None)
        assert recorded is not None
        await self.store.add_timeline(recorded, now, str(decision.action), timeline)
        self.metrics.incidents_open.set(len(self.open))

    def _upcoming_windows(self, dependency: str) -> list[Any]:
        dep = self.engine.config.dependencies.get(dependency)
        if dep is None or not dep.pagerduty_service:
            return []
        now = datetime.fromtimestamp(self.clock(), UTC)
        return [w for w in self.engine.windows if dep.pagerduty_service in w.service_ids and w.end > now]
