"""The incident writer: engine snapshots -> `decisions.decide` -> store writes, all of a decision or none.

It is the only writer of incidents. It wakes on every state change of the engine and at each of
the daemon's ticks (`Pager.tick`: the resolve hold, escalation after `significant_duration` and
the wait for an ancestor's verdict are matters of time, not of state), asks the pure `decide`, and
carries each decision out as one `IncidentWrite`: the outbox row, the incident change and the
timeline entry commit together, so a kill at any moment leaves all of a decision or none of it.
Decisions are committed `COMMIT_BATCH` to a transaction and read nothing from the store first
(what they need of it is kept in memory): in a mass outage each round trip to the store's thread
waits for a turn of a busy event loop.

At start it reloads the incidents left open (a daemon restarted during an outage still
resolves it) and reconciles: a trigger in the outbox without an open incident (a state file
written by an older depmon killed between its two writes) gets one. Once an hour, beside the
decisions, it prunes what `monitor.retention` no longer keeps.

A commit that has not ended within `STALL_SECONDS` is depmon's own trouble, not a dependency's
(SPEC 11.4): `depmon_store_stalled` is 1 and the self page (`store_stalled`) is sent directly,
around the store, since the outbox may be what is stalled; once a commit goes through, the page
is recorded as an incident (its timeline says it went directly) and resolves like any other. The
decisions that could not commit are decided again and committed then, each once. A commit
refused because another replica leads (`NotLeader`) makes this one step down at once
(`on_not_leader`): `depmon_replica_leader` is 1 only for a replica whose decisions commit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from monitor.config import Config
from monitor.maintenance.app_graph import app_banners_of
from monitor.maintenance.records import ServiceStatus
from monitor.metrics import Metrics
from monitor.paging.decisions import SELF, Action, Decision, OpenIncident, Policy, Situation, decide, dedup_key
from monitor.paging.escalation import escalation_writes, slack_mentions, written_keys
from monitor.paging.event_content import EventContext, build_event, build_self_event, incident_facts
from monitor.paging.outbox import Outbox
from monitor.paging.sinks.slack import SLACK
from monitor.paging.slack import slack_channels, slack_message
from monitor.results import ProbeResult
from monitor.state.disagreement import disagreement
from monitor.state.health import DependencyState, ProbeHealth
from monitor.state.live import Engine, Snapshot
from monitor.state.self_watch import SelfCondition, SelfState, SelfWatch
from monitor.store import PAGERDUTY_REST, Incident, IncidentWrite, NotLeader, Silence, Store

log = structlog.get_logger("depmon.pager")

PRUNE_CHECK_SECONDS = 1.0  # how often the pruning task asks whether an hour has passed
COMMIT_BATCH = 250  # decisions written per store transaction
PRUNE_EVERY_SECONDS = 3600.0
SILENCES_EVERY_SECONDS = 0.25  # the silences are read this often, beside the decisions
_CONFIRM_SLACK_SECONDS = 1.0
STALL_SECONDS = 5.0  # a decision's commit that takes longer is depmon's own trouble (SPEC 11.4)
STALL_CHECK_SECONDS = 0.25


def confirm_within(config: Config) -> dict[str, float]:
    """The longest a first failure of each dependency takes to be confirmed as down, or cleared.

    A critical probe needs `failure_threshold` runs, each at most `timeout` long, spaced by
    `confirm_interval`; a second of slack covers the scheduler and the pager's own tick.
    """
    result: dict[str, float] = {}
    for dep_id, spec in config.iter_probes():
        if not spec.critical:
            continue
        t = config.timing(spec)
        seconds = t.failure_threshold * t.timeout + (t.failure_threshold - 1) * t.confirm_interval
        result[dep_id] = max(result.get(dep_id, 0.0), seconds + _CONFIRM_SLACK_SECONDS)
    return result


def longest_intervals(config: Config) -> dict[str, float]:
    """Each dependency's longest probe interval: how long until all of its probes have run again."""
    result: dict[str, float] = {}
    for dep_id, spec in config.iter_probes():
        result[dep_id] = max(result.get(dep_id, 0.0), config.timing(spec).interval)
    return result


class ProbeTimes(Mapping[str, float]):
    """Dependency -> the latest `at` of what `pick` takes from each of its probes, read on access.

    Read from a snapshot: the decisions ask for a handful of dependencies, so nothing is computed
    for the others.
    """

    def __init__(self, snapshot: Snapshot, pick: Callable[[ProbeHealth], ProbeResult | None]) -> None:
        self._probes = snapshot.probes
        self._pick = pick

    def __getitem__(self, dependency: str) -> float:
        times = [r.at for _, h in self._probes[dependency] if (r := self._pick(h)) is not None]
        if not times:
            raise KeyError(dependency)
        return max(times)

    def __iter__(self) -> Iterator[str]:
        return iter(self._probes)

    def __len__(self) -> int:
        return len(self._probes)


def _open_incident(row: Incident) -> OpenIncident:
    return OpenIncident(
        dependency=row.dependency,
        dedup_key=row.dedup_key,
        opened_at=row.opened_at,
        features=tuple(row.features),
        escalated=row.escalated,
        id=row.id,
        up_since=row.up_since,
        flapping=row.flapping,
    )


_COUNTS_EARLIER = (Action.TRIGGER, Action.UPDATE, Action.ESCALATE)  # events that say how often it happened before


def _in_window(states: Snapshot, dependency: str) -> bool:
    state = states.dependencies.get(dependency)
    return state is not None and state.state is DependencyState.MAINTENANCE


def silence_just_ended(silences: list[Silence], dependency: str, now: float) -> dict[str, Any] | None:
    """The silence of `dependency` that ended within the last hour, if any (for a trigger's timeline)."""
    ended = [s for s in silences if s.dependency == dependency and now - 3600.0 <= s.ended_at <= now]
    if not ended:
        return None
    last = ended[-1]
    return {"id": last.id, "until": last.ended_at, "reason": last.reason}


@dataclass(frozen=True, slots=True)
class Replica:
    """What a pager among replicas is told by its replica (SPEC 10.6); one replica needs none of it.

    `fence`: the leadership epoch every write carries (a deposed leader's write is refused);
    `self_verdict`: depmon's own verdict over all replicas; `on_not_leader`: a commit was refused
    because another replica leads (this one steps down).
    """

    fence: Callable[[], int | None]
    self_verdict: Callable[[], SelfState]
    on_not_leader: Callable[[str], None]


class Pager:
    """Turns state changes into PagerDuty events through the outbox.

    Built once per config (the daemon's `Runtime`) from its collaborators, and never rewired: a
    reload builds a new one, which reads the open incidents from the store. It reads the engines
    only through their snapshots. `states` gives the states decided on (among replicas, the
    engine fed the quorum's verdicts); `evidence` this replica's own probes (default: `states`).
    Without a `watch` there is no self page (tests of the dependency rules). `service_status` is
    the owning team's own PagerDuty service as the maintenance poller last read it.
    """

    def __init__(
        self,
        config: Config,
        states: Engine,
        store: Store,
        outbox: Outbox,
        metrics: Metrics,
        *,
        evidence: Engine | None = None,
        watch: SelfWatch | None = None,
        service_status: Callable[[str], ServiceStatus | None] = lambda _service: None,
        replica: Replica | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.states = states
        self.evidence = evidence if evidence is not None else states
        self.store = store
        self.outbox = outbox
        self.metrics = metrics
        self.watch = watch
        self.service_status = service_status
        self.replica = replica
        self.clock = clock
        self.open: dict[str, OpenIncident] = {}
        # Per open incident, the keys of the escalation writes already queued (SPEC 11.2: each once
        # per incident), read back from the outbox at load.
        self._escalation_done: dict[str, frozenset[str]] = {}
        self._errors = metrics.loop_errors.labels("pager")
        self._pruned_at: float | None = None
        self.silences: list[Silence] = []  # active now, as last read from the store (about once a second)
        self._all_silences: list[Silence] = []  # every silence as last read (a trigger names one just ended)
        # Each dependency's incidents in the store, open or resolved (an event says how often it happened
        # before): read at load, counted as decisions open them, read again after a prune.
        # A mass outage's decisions then read nothing from the store: each read is a round trip to
        # the store's thread, which waits for a turn of a busy event loop.
        self._incident_counts: dict[str, int] | None = None
        self._silenced: set[str] = set()  # the dependencies silenced at the last reconciliation
        self._silenced_gauges: set[str] | None = None  # what `depmon_dependency_silenced` was last set from
        # A store that cannot commit (see the module docstring): since when, and the page sent around it.
        self._stalled_since: float | None = None
        self._stall_page: dict[str, Any] | None = None
        self._stall_delivered = False
        self._stall_retry_at = 0.0
        self._failing_since: float | None = None  # the first commit not gone through since the last that did
        self._unrecorded: IncidentWrite | None = None  # the page sent around the store, to record
        self.metrics.store_stalled.set(0)
        self._policy = Policy.from_config(config)
        self._ancestors = config.ancestors()
        self._confirm_within = confirm_within(config)
        self._recheck_within = {
            dep: interval + self._confirm_within.get(dep, 0.0) for dep, interval in longest_intervals(config).items()
        }
        self._app_banners = app_banners_of(config)  # once per config: a page's banners are a look-up

    def tick(self) -> None:
        """A second has passed (the daemon's tick, the one owner of time): decide again, since the resolve
        hold, escalation after `significant_duration` and the wait for an ancestor's verdict are
        matters of time, not of state."""
        self.states.changed.set()

    async def load(self) -> None:
        """Reload the incidents left open by an earlier run (or leader), and open one for each orphaned trigger."""
        self.open = {}
        self._incident_counts = None  # another leader may have opened some since
        for event in await self.store.orphaned_triggers():  # the store reads only this environment's rows
            payload = event.body.get("payload")
            payload = payload if isinstance(payload, dict) else {}
            dependency = str(payload.get("component") or event.dedup_key.rsplit("/", 1)[-1])
            details = payload.get("custom_details")
            features = details.get("impacted_features", []) if isinstance(details, dict) else []
            await self._apply(
                IncidentWrite(
                    dependency=dependency,
                    dedup_key=event.dedup_key,
                    at=event.created_at,
                    kind="reconciled",
                    timeline={
                        "note": "a trigger was in the outbox without its incident (an earlier depmon stopped "
                        "between its two writes): opened so that the recovery resolves it",
                        "outbox_event": event.id,
                    },
                    features=[str(f["id"]) for f in features if isinstance(f, dict) and "id" in f],
                    summary=str(payload.get("summary", "")),
                    severity=str(payload.get("severity", "")),
                )
            )
            log.warning("incident_reconciled", dependency=dependency, dedup_key=event.dedup_key)
        self._escalation_done = {}
        for row in await self.store.open_incidents():
            self.open[row.dependency] = _open_incident(row)
            if row.escalated or row.features:
                self._escalation_done[row.dependency] = await self._escalations_queued(row)
        self.metrics.incidents_open.set(len(self.open))
        if self.open:
            log.info("incidents_reloaded", dependencies=sorted(self.open))

    async def _escalations_queued(self, incident: Incident) -> frozenset[str]:
        """The keys of the escalation writes queued for an open incident: none is queued twice after a restart."""
        rows = [
            event.body
            for event in await self.store.outbox_events(incident.dedup_key)
            if event.destination == PAGERDUTY_REST and event.created_at >= incident.opened_at
        ]
        return written_keys(rows)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile on every change and every tick, until cancelled.

        The silences are read by a task of their own, every `SILENCES_EVERY_SECONDS`: a decision
        never waits for that round trip to the store (40-200 ms each in a mass outage).
        """
        self._failing_since = None  # a new leadership's commits start with a clean slate
        await self.load()
        async with anyio.create_task_group() as tg:
            # Silences and pruning go beside the decisions, in the store's other lane: a table
            # another client has locked holds them, never a page.
            await tg.start(self._follow_silences)
            tg.start_soon(self._prune_every_hour)
            tg.start_soon(self._watch_commits)
            task_status.started()
            while True:
                await self.states.changed.wait()  # a state change, or the daemon's tick (`tick`)
                self.states.consume_change()
                try:
                    await self.reconcile()
                except Exception:  # contain it: the next change or tick tries again
                    self._errors.inc()
                    log.exception("pager_error")

    async def _follow_silences(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Read the silences now (the decisions start with them, unless the store cannot answer), then
        every `SILENCES_EVERY_SECONDS`."""
        started = False
        while True:
            try:
                with anyio.fail_after(STALL_SECONDS):
                    await self._refresh_silences()
            except Exception:  # contain it: the decisions keep the silences last read
                self._errors.inc()
                log.exception("pager_error")
            if not started:
                task_status.started()
                started = True
            await anyio.sleep(SILENCES_EVERY_SECONDS)

    async def _prune_every_hour(self) -> None:
        while True:
            try:
                await self._prune_when_due()
            except Exception:  # contain it: the next hour tries again
                self._errors.inc()
                log.exception("pager_error")
            await anyio.sleep(PRUNE_CHECK_SECONDS)

    async def _apply(self, write: IncidentWrite) -> int:
        return (await self._commit([write]))[0]

    async def _commit(self, writes: list[IncidentWrite]) -> list[int]:
        """Commit decisions (all or none). Since when commits have been failing or hanging is kept for
        `_watch_commits`; a commit refused because another replica leads tells `on_not_leader`."""
        if self._failing_since is None:
            self._failing_since = self.clock()
        try:
            applied = await self.store.apply_batch(writes, None if self.replica is None else self.replica.fence())
        except NotLeader as exc:
            self._failing_since = None  # not the store's trouble: this replica no longer leads
            if self.replica is not None:
                self.replica.on_not_leader(str(exc))
            raise
        self._failing_since = None
        self.outbox.count_cancelled([step for _, step in applied.cancelled])
        return applied.ids

    async def _watch_commits(self) -> None:
        """Every `STALL_CHECK_SECONDS`: a commit waited for (or failing) for `STALL_SECONDS` makes the
        store stalled, and the self page is sent around it until PagerDuty takes it; the first commit
        that goes through ends the stall. One task does all of it, so a commit that ends never
        cancels a page on its way."""
        while True:
            await anyio.sleep(STALL_CHECK_SECONDS)
            failing_since = self._failing_since
            if self._stalled_since is None:
                if failing_since is None or self.clock() - failing_since < STALL_SECONDS:
                    continue
                self._stalled_since = failing_since
                self.metrics.store_stalled.set(1)
                log.error(
                    "store_stalled", seconds=STALL_SECONDS, note="decisions cannot commit: self page sent directly"
                )
            if failing_since is None:
                self._store_answered()
            elif not self._stall_delivered and self.clock() >= self._stall_retry_at:
                await self._send_stall_page()
                self._stall_retry_at = self.clock() + STALL_SECONDS

    async def _send_stall_page(self) -> None:
        """The self page of a stalled store, sent directly (no page when a self incident is already open)."""
        if self.watch is None or SELF in self.open:
            self._stall_delivered = True  # depmon is already paging about itself: one self page
            return
        if self._stall_page is None:
            key = dedup_key(self._policy.environment, SELF)
            decision = Decision(Action.TRIGGER, SELF, key, ())
            reason = (
                f"depmon's store ({self.store.state_path}) has not committed a decision for {STALL_SECONDS:.0f} s: "
                "pages wait until it answers"
            )
            self._stall_page = build_self_event(
                decision, self._policy.environment, str(SelfCondition.STORE_STALLED), reason
            )
        delivery = await self.outbox.send_now(self._stall_page)
        self._stall_delivered = delivery.status != "retry"

    def _store_answered(self) -> None:
        """The first commit after a stall: the gauge goes back to 0, and the page sent around the store,
        if any, is to be recorded (`_record_unrecorded`, before the next decisions)."""
        stalled_for = self.clock() - (self._stalled_since or self.clock())
        page, delivered = self._stall_page, self._stall_delivered
        self._stalled_since, self._stall_page, self._stall_delivered = None, None, False
        self._stall_retry_at = 0.0
        self.metrics.store_stalled.set(0)
        log.warning("store_answered", stalled_seconds=round(stalled_for, 3))
        if page is None:
            return
        self._unrecorded = IncidentWrite(
            dependency=SELF,
            dedup_key=page["dedup_key"],
            at=self.clock(),
            kind="trigger",
            timeline={
                "action": "trigger",
                "sent_directly": True,
                "delivered": delivered,
                "condition": str(SelfCondition.STORE_STALLED),
                "stalled_seconds": round(stalled_for, 3),
                "event": page,
            },
            summary=page["payload"]["summary"],
            severity=page["payload"]["severity"],
        )

    async def _record_unrecorded(self) -> None:
        """Record the page sent around a stalled store as the open self incident; it then resolves
        through the outbox like any other (kept for the next try if this commit fails)."""
        write = self._unrecorded
        if write is None:
            return
        if SELF not in self.open:
            (incident_id,) = await self._commit([write])
            self.open[SELF] = OpenIncident(SELF, write.dedup_key, write.at, (), False, incident_id, None, False)
            self.metrics.incidents_open.set(len(self.open))
            log.warning("incident_triggered", dependency=SELF, dedup_key=write.dedup_key, summary=write.summary)
        self._unrecorded = None

    def _self_state(self) -> SelfState:
        if self.replica is not None:
            return self.replica.self_verdict()
        return self.watch.state if self.watch is not None else SelfState()

    async def _refresh_silences(self) -> None:
        """Read the silences in force (a `depmon silence` is seen within a second, without a reload)."""
        self._all_silences = await self.store.silences()
        now = self.clock()
        self.silences = [s for s in self._all_silences if s.active_at(now)]
        self._publish_silenced({s.dependency for s in self.silences})

    def _publish_silenced(self, silenced: set[str]) -> None:
        """`depmon_dependency_silenced` as the decisions see it: set when the silenced set changes (at a
        read, or when a silence runs out at a reconciliation), not at every read."""
        if silenced != self._silenced_gauges:
            for dep in self.config.dependencies:
                self.metrics.silenced.labels(dep).set(1 if dep in silenced else 0)
            self._silenced_gauges = silenced

    async def _record_silence_changes(self, silenced: set[str], now: float) -> None:
        """Every silence that starts or ends during an open incident goes into its timeline."""
        for dep in sorted((silenced ^ self._silenced) & self.open.keys()):
            incident = self.open[dep]
            started = dep in silenced
            silence = next((s for s in self.silences if s.dependency == dep), None)
            await self._apply(
                IncidentWrite(
                    dependency=dep,
                    dedup_key=incident.dedup_key,
                    at=now,
                    kind="silenced" if started else "silence_ended",
                    timeline={
                        "action": "silenced" if started else "silence_ended",
                        "silence": None
                        if silence is None
                        else {"id": silence.id, "until": silence.ends_at, "reason": silence.reason},
                    },
                    incident_id=incident.id,
                    features=list(incident.features),
                    escalated=incident.escalated,
                    flapping=incident.flapping,
                    up_since=incident.up_since,
                )
            )
        self._silenced = silenced

    async def reconcile(self) -> None:
        """Decide and carry out every action the current states call for."""
        await self._record_unrecorded()
        silenced = {s.dependency for s in self.silences if s.active_at(self.clock())}
        self._publish_silenced(silenced)  # before the page a silence's end lets go
        await self._record_silence_changes(silenced, self.clock())
        # Snapshots: the decisions and their writes see one state, whatever the engines do meanwhile.
        states, probes = self.states.snapshot(), self.evidence.snapshot()
        dependencies: dict[str, Any] = dict(states.dependencies)
        if self.watch is not None:
            dependencies[SELF] = self._self_state().as_dependency()
        situation = Situation(
            dependencies,
            states.features,
            states.dependency_since,
            self._ancestors,
            self._confirm_within,
            last_result=ProbeTimes(probes, lambda health: health.last),
            last_failure=ProbeTimes(probes, lambda health: health.last_failure),
            recheck_within=self._recheck_within,
            silenced=silenced,
        )
        # Escalation's REST writes wait while the dependency is in a window or silenced (SPEC 11.2).
        self.outbox.hold(
            frozenset(
                incident.dedup_key for dep, incident in self.open.items() if dep in silenced or _in_window(states, dep)
            )
        )
        decisions = decide(self._policy, self.open, situation, self.clock())
        # The decisions read nothing from the store (see `_incident_counts`) and are committed in
        # batches (each decision still all or nothing within one): a mass outage's 1,000 pages are
        # 4 round trips to the store's thread, not 3,000 (each waits for a turn of a busy event
        # loop), and the first pages of it are queued after a batch, not after all of them.
        if decisions and self._incident_counts is None:
            self._incident_counts = await self.store.incident_counts()
        for start in range(0, len(decisions), COMMIT_BATCH):
            batch = decisions[start : start + COMMIT_BATCH]
            prepared = [self._prepare(d, states, probes) for d in batch]
            ids = await self._commit([write for _, write, _ in prepared])
            for (decision, write, incident), incident_id in zip(prepared, ids, strict=True):
                self._record(decision, write, incident, incident_id)

    async def _prune_when_due(self) -> None:
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        events, incidents = await self.store.prune(now - self.config.monitor.retention)
        if incidents:
            self._incident_counts = None  # read again before the next decisions
        if events or incidents:
            log.info("state_pruned", events=events, incidents=incidents)

    def _prepare(
        self, decision: Decision, states: Snapshot, probes: Snapshot
    ) -> tuple[Decision, IncidentWrite, OpenIncident | None]:
        """The store write of one decision, with what it takes from the store's contents as last read
        (earlier incidents, a silence just ended)."""
        now = self.clock()
        dep = decision.dependency
        incident = self.open.get(dep)
        earlier = 0
        if decision.action in _COUNTS_EARLIER and dep != SELF:
            earlier = (self._incident_counts or {}).get(dep, 0) - (1 if incident else 0)
        write = self._write(decision, incident, now, states, probes, earlier)
        if decision.action is Action.TRIGGER:
            silence = silence_just_ended(self._all_silences, dep, now)
            if silence is not None:  # the page a silence held back: its timeline says so
                timeline = {**write.timeline, "silence": silence}
                write = dataclasses.replace(write, timeline=timeline)
        return decision, write, incident

    def _record(
        self, decision: Decision, write: IncidentWrite, incident: OpenIncident | None, incident_id: int
    ) -> None:
        """After the commit: the open incidents as the decision left them, the outbox woken, the log."""
        dep = decision.dependency
        if write.event is not None:
            self.outbox.queued()
        if write.incident_id is None and self._incident_counts is not None:  # it opened an incident
            self._incident_counts[dep] = self._incident_counts.get(dep, 0) + 1
        if decision.action is Action.RESOLVE:
            self.open.pop(dep, None)
            self._escalation_done.pop(dep, None)
        else:
            if write.rest_writes:
                done = written_keys(write.rest_writes)
                self._escalation_done[dep] = self._escalation_done.get(dep, frozenset()) | done
            self.open[dep] = OpenIncident(
                dep,
                decision.dedup_key,
                incident.opened_at if incident else write.at,
                decision.features,
                decision.escalated,
                incident_id,
                decision.up_since,
                decision.flapping,
            )
        self.metrics.incidents_open.set(len(self.open))
        self._log(decision, write)

    def _write(
        self,
        decision: Decision,
        incident: OpenIncident | None,
        now: float,
        states: Snapshot,
        probes: Snapshot,
        earlier_incidents: int = 0,
    ) -> IncidentWrite:
        """The store write of one decision, from the snapshots it was made on: its event (if it
        sends one), incident change and timeline. `states` gives the states (the quorum's, among
        replicas), `probes` this replica's probes (the evidence)."""
        engine = states  # config and windows: the same in both snapshots
        dep = decision.dependency
        known = dep in engine.config.dependencies
        evidence = probes.evidence(dep) if known else []
        event: tuple[Any, dict[str, Any]] | None = None
        summary = severity = ""
        if decision.action.sends and dep == SELF:
            verdict = self._self_state()
            body = build_self_event(decision, self._policy.environment, str(verdict.condition), verdict.reason)
            event = (body["event_action"], body)
            if decision.action is Action.TRIGGER:
                summary, severity = body["payload"]["summary"], body["payload"]["severity"]
        elif decision.action.sends:
            started_at = incident.opened_at if incident else now
            if decision.action is Action.RESOLVE:
                context = EventContext(engine.config, {}, [], started_at)
            else:
                context = EventContext(
                    engine.config,
                    states.features,
                    evidence,
                    started_at,
                    self._upcoming_windows(dep, states),
                    now=now,
                    earlier_incidents=earlier_incidents,
                    owning_team_status=self._owning_team_status(dep),
                    disagreement=disagreement(engine.config.dependencies[dep], probes.probes.get(dep, ())),
                    app_banners=self._app_banners.get(dep),
                )
            body = build_event(decision, context)
            event = (body["event_action"], body)
            if decision.action is Action.TRIGGER:
                summary, severity = body["payload"]["summary"], body["payload"]["severity"]
        state = states.dependencies.get(dep)
        timeline: dict[str, Any] = {
            "action": str(decision.action),
            "features": list(decision.features),
            "state": str(state.state) if state else None,
            "evidence": [
                {"probe": probe, "outcome": str(r.outcome), "detail": r.detail, "at": r.at} for probe, r in evidence
            ],
        }
        if known:
            # The facts the postmortem judges from, exactly as the page did (one security fact).
            facts = incident_facts(dep, decision.features, states.features, evidence, decision.escalated)
            timeline["security_relevant"] = facts.security
            timeline["features_down"] = list(facts.features_down)
        if decision.note:
            timeline["note"] = decision.note
        if decision.action is Action.TRIGGER and incident is not None:
            raise AssertionError(f"trigger for {dep}, which already has an open incident")
        if decision.action is not Action.TRIGGER and incident is None:
            raise AssertionError(f"{decision.action} for {dep}, which has no open incident")
        rest_writes: list[dict[str, Any]] = []
        mentions: list[str] = []
        if known and event is not None and decision.action is not Action.RESOLVE:
            # Escalation that reaches people (SPEC 11.2): what this incident needs that was not queued yet.
            facts = incident_facts(dep, decision.features, states.features, evidence, decision.escalated)
            mentions = slack_mentions(engine.config, facts)
            done = frozenset() if decision.action is Action.TRIGGER else self._escalation_done.get(dep, frozenset())
            opened_at = incident.opened_at if incident else now
            rest_writes = [
                {"incident_key": decision.dedup_key, "opened_at": opened_at, **w.row()}
                for w in escalation_writes(engine.config, facts, done)
            ]
            if rest_writes:
                timeline["escalation"] = [{"step": w["step"], "target": w["target"]} for w in rest_writes]
        messages = []
        if event is not None:
            dep_spec = engine.config.dependencies.get(dep)
            name = dep_spec.name if dep_spec is not None else ("depmon" if dep == SELF else dep)
            channels = slack_channels(engine.config, dep)
            if channels:
                message = slack_message(str(decision.action), name, event[1], mentions)
                messages = [(str(SLACK.at(channel)), event[0], message) for channel in channels]
        return IncidentWrite(
            dependency=dep,
            dedup_key=decision.dedup_key,
            at=now,
            kind=str(decision.action),
            timeline=timeline,
            incident_id=incident.id if incident else None,
            event=event,
            messages=messages,
            rest_writes=rest_writes,
            features=list(decision.features),
            summary=summary,
            severity=severity,
            escalated=decision.escalated,
            flapping=decision.flapping,
            up_since=decision.up_since,
            resolved=decision.action is Action.RESOLVE,
        )

    def _log(self, decision: Decision, write: IncidentWrite) -> None:
        fields = {"dependency": decision.dependency, "dedup_key": decision.dedup_key}
        if decision.action is Action.TRIGGER:
            log.warning("incident_triggered", summary=write.summary, **fields)
        elif decision.action is Action.RESOLVE:
            log.info("incident_resolved", note=decision.note, **fields)
        elif decision.action is Action.HOLD:
            log.info("incident_resolve_hold", hold_seconds=self._policy.resolve_hold, **fields)
        elif decision.action is Action.FLAP:
            log.warning("incident_flapping", **fields)
        else:
            event = "incident_escalated" if decision.action is Action.ESCALATE else "incident_updated"
            log.warning(event, features=list(decision.features), **fields)

    def _owning_team_status(self, dependency: str) -> ServiceStatus | None:
        dep = self.config.dependencies.get(dependency)
        return self.service_status(dep.pagerduty_service) if dep is not None and dep.pagerduty_service else None

    def _upcoming_windows(self, dependency: str, states: Snapshot) -> list[Any]:
        dep = states.config.dependencies.get(dependency)
        if dep is None or not dep.pagerduty_service:
            return []
        now = datetime.fromtimestamp(self.clock(), UTC)
        return [w for w in states.windows if dep.pagerduty_service in w.service_ids and w.end > now]
