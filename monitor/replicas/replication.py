"""This replica's part among replicas (SPEC 10.6): heartbeat, leadership and the quorum's verdicts.

    engine (own verdicts) --report loop--> store (observations) --> every replica's views
    views --quorum.verdicts--> the decision engine the leader's pager decides on
    leader lock (PostgreSQL advisory lock) --lead loop--> `leading` + epoch (fences the pager's writes)

Timing, with `interval` = `monitor.defaults.interval`: a replica reports every `interval / 4`
and whenever its own verdicts change; it is live while it has reported within `2 x interval`.
The leader proves its lock every `interval / 4`; with no proof for `interval` it steps down at
once (the pager stops). The server ends a silent leader's lock session after `1.5 x interval`
(`idle_session_timeout`), and another replica takes the lock within `interval / 4` of that:
a dead or cut-off leader is replaced within `2 x interval`, and never overlaps the next one
(each leadership's epoch fences the writes of the ones before).

Without `monitor.state_url` there is one replica: it leads from the start and nothing here
touches the network (`lock` None).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.replicas.quorum import Verdict, self_trouble, verdicts
from monitor.state.health import DependencyState
from monitor.state.live import Engine
from monitor.state.self_watch import SelfCondition, SelfState, SelfWatch
from monitor.store import Store
from monitor.store.records import Observation, ReplicaReport, ReplicaView

if TYPE_CHECKING:
    from monitor.store.postgres import LeaderLock

__all__ = ["Replication"]

log = structlog.get_logger("depmon.replication")


class Replication:
    """Reports this replica, reads the others, and holds or seeks the lead; see the module docstring."""

    def __init__(
        self,
        store: Store,
        config: Config,
        engine: Engine,
        watch: SelfWatch,
        metrics: Metrics,
        lock: LeaderLock | None,
        *,
        decisions: Engine | None = None,
        clock: Callable[[], float] = time.time,
        instance: str | None = None,
    ) -> None:
        self.store = store
        self.lock = lock
        self.metrics = metrics
        self.clock = clock
        self.instance = instance or uuid.uuid4().hex
        self.leading = lock is None
        self.epoch: int | None = None
        self.views: list[ReplicaView] = []
        self.verdicts: dict[str, Verdict] = {}
        self.led = anyio.Event()  # set while leading; replaced when the lead is lost
        self.lost = anyio.Event()  # set when the lead is lost; replaced when it is taken
        self._since: dict[str, tuple[tuple[DependencyState, bool], float]] = {}
        self._sent: dict[str, Observation] = {}
        self._full = True
        self._release = False  # stepped down while holding the lock: let go of it at the next turn
        if self.leading:
            self.led.set()
        self.use(config, engine, watch, decisions)

    def use(self, config: Config, engine: Engine, watch: SelfWatch, decisions: Engine | None) -> None:
        """Follow a (reloaded) config's engines and watch; the next report is a full one."""
        self.config, self.engine, self.watch, self.decisions = config, engine, watch, decisions
        self._moved: set[str] = set()  # dependencies whose own verdict moved since the last report
        engine.on_own_verdict = self._note_moved
        self.replica = config.monitor.replica
        self.quorum = config.monitor.quorum
        self.interval = config.monitor.defaults.interval
        self._full = True
        self.metrics.replica_leader.labels(self.replica).set(1 if self.leading else 0)

    def _note_moved(self, dependency: str) -> None:
        self._moved.add(dependency)

    @property
    def heartbeat(self) -> float:
        return self.interval / 4.0

    # -- reading ----------------------------------------------------------------------------

    def self_state(self) -> SelfState:
        """This replica's self verdict, or the first live replica's that cannot trust its probes."""
        own = self.watch.state
        if not own.ok:
            return SelfState(own.condition, f"replica {self.replica}: {own.reason}")
        trouble = self_trouble(self.views, self.clock())
        for replica, reason in sorted(trouble.items()):
            view = next(v for v in self.views if v.replica == replica)
            condition = SelfCondition(view.self_state) if view.self_state in set(SelfCondition) else SelfCondition.BLIND
            return SelfState(condition, f"replica {replica}: {reason}")
        return own

    def status(self) -> list[dict[str, Any]]:
        """The replicas as /status lists them: who leads, who is live, what each sees down."""
        now = self.clock()
        return [
            {
                "replica": v.replica,
                "leader": v.leader,
                "live": now - v.seen_at <= 2.0 * v.interval,
                "seen_seconds_ago": round(now - v.seen_at, 3),
                "self": v.self_state,
                "self_reason": v.self_reason,
                "down": sorted(d for d, o in v.observations.items() if o.state == DependencyState.DOWN),
            }
            for v in self.views
        ]

    # -- loops ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim this replica's name (StoreError when a live process holds it) and report once."""
        await self.store.register(self.replica, self.instance, self.clock())
        await self._report()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Report and (with a lock) seek or hold the lead, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._report_loop)
            if self.lock is not None:
                tg.start_soon(self._lead_loop)
            task_status.started()

    async def _report_loop(self) -> None:
        while True:
            with anyio.move_on_after(self.heartbeat):  # or at once when this replica's own verdicts move
                await self.engine.changed.wait()
            self.engine.consume_change()
            try:
                with anyio.fail_after(max(self.interval, 1.0)):
                    await self._report()
            except Exception as exc:  # contained: a store outage must not stop probing
                self.metrics.loop_errors.labels("replication").inc()
                log.warning("replica_report_failed", reason=str(exc) or exc.__class__.__name__)

    async def _report(self) -> None:
        now = self.clock()
        observations: dict[str, Observation] = {}
        # A report costs the verdicts that moved, not the config (a full one after start or a reload).
        moved, self._moved = self._moved, set()
        verdicts = self.engine.own_verdicts() if self._full else {d: self.engine.own_verdict(d) for d in moved}
        for dep, verdict in verdicts.items():
            known = self._since.get(dep)
            if known is None or known[0] != verdict:
                self._since[dep] = known = (verdict, now)
            evidence = self.engine.evidence(dep)
            seen = Observation(str(verdict[0]), verdict[1], known[1], evidence[0][1].detail if evidence else "")
            if self._full or self._sent.get(dep) != seen:
                observations[dep] = seen
        state = self.watch.state
        full = self._full
        report = ReplicaReport(
            self.replica,
            self.instance,
            now,
            self.interval,
            str(state.condition),
            state.reason,
            observations,
            dependencies=list(self.engine.config.dependencies) if full else None,
        )
        try:
            await self.store.report(report)
        except BaseException:
            self._moved |= moved  # reported next time
            raise
        self._sent.update(observations)
        self._full = False
        self.views = await self.store.replica_views()
        self._merge(now)

    def _merge(self, now: float) -> None:
        merged = verdicts(self.views, self.config.dependencies, self.quorum, now)
        for dep, verdict in merged.items():
            if self.verdicts.get(dep) != verdict:
                self.metrics.dependency_down_replicas.labels(dep).set(len(verdict.down_replicas))
                if self.decisions is not None:
                    self.decisions.set_verdict(dep, verdict.state, verdict.failing)
        self.verdicts = merged

    def step_down(self, reason: str) -> None:
        """A decision's commit was refused (`NotLeader`: another replica holds this environment's
        leadership of record): stop leading now, so `depmon_replica_leader` is 1 only for a replica
        whose decisions commit. The lead loop lets go of the lock and seeks the lead again; taking it
        writes a new epoch."""
        if self.lock is not None and self.leading:
            self._set_leading(False, reason)
            self._release = True

    async def _lead_loop(self) -> None:
        assert self.lock is not None
        lock = self.lock
        proven = self.clock()
        while True:
            await anyio.sleep(self.heartbeat)
            if self._release:
                self._release = False
                await self._blocking(lock.release, self.heartbeat, fail=False)
            try:
                if not self.leading:
                    # Taking the lead late is harmless: a slow connection gets a whole interval.
                    if await self._blocking(lock.try_acquire, max(self.interval, 1.0)):
                        self.epoch = await self.store.take_leadership(self.replica, self.clock())
                        proven = self.clock()
                        self._set_leading(True)
                    continue
                # Each proof is due within a heartbeat: with none for an interval the leader steps down
                # (at most interval + heartbeat after its last), before the server frees the lock at 1.5 x.
                await self._blocking(lock.check, self.heartbeat)
                proven = self.clock()
            except Exception as exc:
                if self.leading and self.clock() - proven >= self.interval:
                    self._set_leading(False, str(exc) or exc.__class__.__name__)
                    await self._blocking(lock.release, self.heartbeat, fail=False)
                elif not self.leading:
                    log.debug("leader_lock_unavailable", reason=str(exc) or exc.__class__.__name__)

    async def _blocking(self, call: Callable[[], Any], deadline: float, fail: bool = True) -> Any:
        """Run a blocking lock call in a thread for at most `deadline` seconds (then abandon it)."""
        with anyio.move_on_after(deadline):
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        if fail:
            raise TimeoutError(f"no answer from the database within {deadline:.2f} s")
        return None

    def _set_leading(self, leading: bool, reason: str = "") -> None:
        self.leading = leading
        self.metrics.replica_leader.labels(self.replica).set(1 if leading else 0)
        if leading:
            log.warning("leader_elected", replica=self.replica, epoch=self.epoch)
            self.lost = anyio.Event()
            self.led.set()
        else:
            log.error("leadership_lost", replica=self.replica, epoch=self.epoch, reason=reason)
            self.led = anyio.Event()
            self.lost.set()
