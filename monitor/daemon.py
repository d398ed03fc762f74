"""`depmon run`: the long-lived daemon, wiring the parts together in one anyio task group.

    scheduler --results--> engine --changes--> pager --decisions--> store + outbox --> PagerDuty
    poller --windows--> engine;  server reads engine, pager, metrics and the feature history
    engine --feature state changes--> history loop --every second--> store

Lifecycle: the signal receiver is opened first and stays open until the process exits, so no
SIGHUP or second SIGTERM is ever fatal; then the state file's lock is taken (a second daemon on
the same file exits 2 naming the first) and the store opened (a corrupt file is exit 2 too).
The listening socket was bound by the caller before (a port in use is exit 2, not a
half-started daemon).

SIGHUP reloads: a valid config builds a whole new `Runtime` (engine, PagerDuty sender,
maintenance client) which is swapped in at once, with the probe loops and the poller restarted
on it; probe health carries over for probes whose spec did not change; the metric series of
removed dependencies, probes and features disappear, and an open incident of a removed
dependency is resolved with a note (the pager's ordinary decision). A config that fails to
load or to build is refused whole and the old runtime kept. SIGTERM/SIGINT stop it: probe
loops first, then the outbox is drained under a grace deadline, then the server.
"""

from __future__ import annotations

import contextlib
import gc
import random
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from monitor.config import Config, ConfigError, load_config
from monitor.maintenance.app_graph import app_graph_status
from monitor.maintenance.poller import MaintenancePoller
from monitor.maintenance.records import MaintenanceWindow, ServiceStatus
from monitor.metrics import Metrics
from monitor.pagerduty.clients import EventsSender, MaintenanceClient
from monitor.pagerduty.incidents import IncidentsClient
from monitor.paging.decisions import OpenIncident
from monitor.paging.escalation import escalation_off_reasons
from monitor.paging.incident_writer import Pager, Replica
from monitor.paging.outbox import Outbox
from monitor.paging.sinks import Sinks
from monitor.paging.sinks.pagerduty_events import EVENTS, PagerDutyEventsSink
from monitor.paging.sinks.pagerduty_rest import REST, PagerDutyRestSink
from monitor.paging.sinks.slack import SLACK, SlackSink
from monitor.proxies import NO_PROXY_VARIABLES, ProxyEnvironment
from monitor.replicas.replication import Replication
from monitor.schedule.loops import Scheduler
from monitor.state.impact import FeatureState
from monitor.state.live import Engine
from monitor.state.self_watch import LoopLagMonitor, SelfState, SelfWatch
from monitor.store import Silence, StateLock, Store, connect
from monitor.web.server import create_app, server_config
from probes import ProbeContext
from probes.oauth2 import token_fetcher
from probes.tokens import TokenCache

log = structlog.get_logger("depmon.daemon")

TICK_SECONDS = 1.0  # the daemon's tick: the one owner of time (windows opening and ending, the pager's timers)
DRAIN_GRACE_SECONDS = 10.0
HISTORY_FLUSH_SECONDS = 1.0  # feature state changes reach the state file this often
HISTORY_FINAL_FLUSH_SECONDS = 5.0  # the last write at shutdown gives up after this


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket now, so a port in use fails before anything starts (OSError)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def build_probe_context(config: Config, on_secret: Callable[[str], None] | None = None) -> ProbeContext:
    """The probes' shared clients and token cache for one config; `on_secret` learns every token."""
    ctx = ProbeContext(max_connections=config.monitor.max_concurrent_probes)
    ctx.tokens = TokenCache.from_config(config, token_fetcher(ctx), on_secret=on_secret)
    return ctx


@dataclass
class Runtime:
    """Everything built from one config that a reload replaces as a whole.

    `sender` is None in dry run (no routing key); `maintenance` is None when no API token is set.
    `services` maps each PagerDuty service id to the dependency or feature it covers. `watch` is
    depmon's view of itself for this config (its schedule, its canaries).
    """

    config: Config
    engine: Engine
    sender: EventsSender | None
    maintenance: MaintenanceClient | None
    services: dict[str, str]
    watch: SelfWatch
    slack: SlackSink | None = None
    decisions: Engine | None = None  # among replicas: the engine fed the quorum's verdicts (SPEC 10.6)
    app_graph: dict[str, Any] | None = None  # /status's `app_graph`: drift (a) and (d), once per config
    rest: PagerDutyRestSink | None = None  # escalation's REST writes (SPEC 11.2); None: not written

    @classmethod
    def build(
        cls,
        config: Config,
        metrics: Metrics,
        loop_lag: LoopLagMonitor,
        on_feature_change: Callable[[str, str, float], None] | None = None,
        proxies: ProxyEnvironment = NO_PROXY_VARIABLES,
    ) -> Runtime:
        """Build the clients first, the engine last (it publishes metrics): a failure leaves nothing behind.

        `on_feature_change` is the engine's hook for each feature state change (see `Engine`).
        `proxies`: the daemon's proxy variables, which the clients follow unless the config names
        the destination's own proxy (SPEC 11.5).
        """
        pd = config.pagerduty
        events_link, api_link = proxies.link(pd.events_url, pd.proxy), proxies.link(pd.api_url, pd.proxy)
        sender = (
            EventsSender(pd.events_url, pd.routing_key, link=events_link) if pd.routing_key.get_secret_value() else None
        )
        try:
            maintenance = (
                MaintenanceClient(pd.api_url, pd.api_token, link=api_link) if pd.api_token.get_secret_value() else None
            )
            services = {service: owners[0] for service, owners in config.service_owners().items()}
            if config.app_graph is not None:  # vets-api upstreams no dependency names (SPEC 11.1)
                for name, service in config.app_graph.pagerduty_services.items():
                    if service:
                        services.setdefault(service, f"app_graph.{name}")
            watch = SelfWatch(config, metrics, loop_lag)
            webhooks = {channel: url.get_secret_value() for channel, url in config.slack.webhooks.items()}
            slack_proxy = config.slack.proxy
            slack = (
                SlackSink(webhooks, link_for=lambda url: proxies.link(url, slack_proxy))
                if any(webhooks.values())
                else None
            )
            engine = Engine(config, metrics, on_feature_change=on_feature_change)
            # Its own registry: the quorum's states are decided on, each replica exports its own.
            decisions = Engine(config, Metrics()) if config.monitor.replicated else None
            writes_off = "rest" in dict(escalation_off_reasons(config))
            rest = (
                None
                if writes_off
                else PagerDutyRestSink(IncidentsClient(pd.api_url, pd.api_token, link=api_link), pd.from_email)
            )
        except BaseException:
            if sender is not None:
                sender.close()
            raise
        return cls(
            config, engine, sender, maintenance, services, watch, slack, decisions, app_graph_status(config), rest
        )

    @property
    def sinks(self) -> Sinks:
        """The outbox's destinations under this config: each kind's sink, None for a kind in dry run."""
        return {
            EVENTS: None if self.sender is None else PagerDutyEventsSink(self.sender),
            SLACK: self.slack,
            REST: self.rest,
        }

    def close(self) -> None:
        """Close the PagerDuty clients."""
        for client in (self.sender, self.maintenance, self.rest):
            if client is not None:
                client.close()


class FeatureChanges:
    """Feature state changes not yet written to the state file: (feature, state, at), oldest first.

    The engine's hook appends and the daemon's history loop takes, both on the event loop (no lock
    needed). A batch the store could not write goes back in front; at most `limit` changes are
    kept (the oldest dropped first), so a state file that refuses writes cannot grow memory.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._changes: list[tuple[str, str, float]] = []

    def append(self, feature: str, state: str, at: float) -> None:
        """Keep one change (the engine's `on_feature_change`)."""
        self._changes.append((feature, state, at))
        if len(self._changes) > self.limit:
            del self._changes[: len(self._changes) - self.limit]

    def take(self) -> list[tuple[str, str, float]]:
        """Every change kept, which are no longer kept."""
        changes, self._changes = self._changes, []
        return changes

    def give_back(self, changes: list[tuple[str, str, float]]) -> None:
        """Put back a batch that was not written, in front of the changes kept since."""
        self._changes[:0] = changes
        if len(self._changes) > self.limit:
            del self._changes[: len(self._changes) - self.limit]

    def pending(self) -> list[tuple[str, str, float]]:
        """A copy of the changes kept."""
        return list(self._changes)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; returns (old soft, new soft).

    Every probe holds a socket, and an idle-connection flood against the HTTP port must not
    starve them: the default soft limit (often 1,024) is far below what the kernel allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return soft, hard
    return soft, soft


# Young objects collected every 20,000 allocations (CPython's default: 700), older ones every 20
# collections of the generation below (default 10).
COLLECTOR_THRESHOLDS = (20_000, 20, 20)


def tune_collector() -> None:
    """Collect garbage less often than CPython's defaults, which suit short programs.

    A probe's result lives until the next run of the probe (2 s at 500 probes a second), long
    enough to survive the young collections the defaults run ~100 times a second, so the old
    generation grew quickly and was walked in full about once a second: 50-270 ms pauses of the
    event loop each (19-22 collections over 10 ms in 20 s of 1,000 targets failing at once).
    With these thresholds: 7-11, a full one about once a run; young ones take up to 40 ms.
    """
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def _removed(old: Config, new: Config) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """(dependencies, (dependency, probe) pairs, features) of `old` that `new` no longer has."""
    old_probes = {(d, p.name) for d, p in old.iter_probes()}
    new_probes = {(d, p.name) for d, p in new.iter_probes()}
    return (
        set(old.dependencies) - set(new.dependencies),
        old_probes - new_probes,
        set(old.features) - set(new.features),
    )


class Daemon:
    """One running depmon: its config, live state and services.

    `on_secrets`, when given, is called with the secret values of every config the daemon runs
    (the first and each reloaded one), so the log redactor learns rotated secrets.
    """

    def __init__(
        self,
        config_path: Path,
        config: Config,
        state_path: str,
        environ: Mapping[str, str],
        metrics: Metrics | None = None,
        on_secrets: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.state_path = state_path
        self.environ = environ
        self._metrics = metrics or Metrics()
        self._metrics.config_last_reload_successful.set(1)
        self._on_secrets = on_secrets
        self._loop_lag = LoopLagMonitor(self._metrics)
        self._feature_changes = FeatureChanges()
        self._proxies = ProxyEnvironment.from_environ(environ)  # ConfigError: a proxy variable is unusable
        self._runtime = Runtime.build(
            config, self._metrics, self._loop_lag, self._feature_changes.append, self._proxies
        )
        self._metrics.set_app_graph_drift(self._runtime.app_graph)
        self._store: Store | None = None
        self._pager: Pager | None = None
        self._outbox: Outbox | None = None
        self._replication: Replication | None = None
        self._alive = False
        self._windows: list[MaintenanceWindow] = []
        self._monitoring: anyio.CancelScope | None = None
        self._polling: anyio.CancelScope | None = None
        self._paging: anyio.CancelScope | None = None
        self.poller: MaintenancePoller | None = None
        if on_secrets is not None:
            on_secrets(config.secret_values() + self._proxies.secret_values())

    # -- the View the server reads -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._runtime.engine

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def open_incidents(self) -> dict[str, OpenIncident]:
        return dict(self._pager.open) if self._pager else {}

    @property
    def self_state(self) -> SelfState:
        return self._runtime.watch.state

    @property
    def silences(self) -> list[Silence]:
        return list(self._pager.silences) if self._pager else []

    @property
    def replicas(self) -> list[dict[str, Any]]:
        return self._replication.status() if self._replication is not None else []

    @property
    def maintenance_status(self) -> dict[str, Any] | None:
        return self.poller.status() if self.poller is not None else None

    @property
    def app_graph(self) -> dict[str, Any] | None:
        return self._runtime.app_graph

    async def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        """Feature -> (at, state) changes from `since` on (`SQLiteStore.feature_history`), with those
        not written yet; without the stored ones while the store is closed or unreadable (logged)."""
        pending = self._feature_changes.pending()
        history: dict[str, list[tuple[float, str]]] = {}
        if self._store is not None:
            try:
                history = await self._store.feature_history(since)
            except Exception as exc:  # the page is served without the stored history
                log.warning("feature_history_unreadable", reason=str(exc) or exc.__class__.__name__)
        for feature, state, at in pending:
            history.setdefault(feature, []).append((at, state))
        for changes in history.values():
            changes.sort(key=lambda change: change[0])  # stable: a batch written meanwhile repeats, in order
        return history

    def _learn_secret(self, secret: str) -> None:
        """A secret learned at run time (a bearer token): the log redactor must know it from now on."""
        if self._on_secrets is not None:
            self._on_secrets([secret])

    # -- running -----------------------------------------------------------------------------

    async def run(self, listener: socket.socket) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully.

        Raises `StoreError` (`StateLocked` among them) before anything starts when the state
        file is held by another daemon or cannot be used.
        """
        # First of all: from here to the end a signal is an event to handle, never fatal.
        monitor = self.config.monitor
        url = monitor.state_url.get_secret_value() if monitor.state_url is not None else None
        with (
            anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals,
            # One daemon per SQLite file; replicas share PostgreSQL and elect a leader instead.
            StateLock(self.state_path) if url is None else contextlib.nullcontext(),
        ):
            async with Store(connect(url, self.state_path, monitor.environment)) as store:
                await store.pending_count()  # open (and migrate) now: a bad file or database fails here
                if url is not None:
                    from monitor.store.postgres import LeaderLock, leader_key  # psycopg: replicas only

                    lock = LeaderLock(url, leader_key(monitor.environment), 1.5 * monitor.defaults.interval)
                    runtime = self._runtime
                    replication = Replication(
                        store,
                        self.config,
                        runtime.engine,
                        runtime.watch,
                        self._metrics,
                        lock,
                        decisions=runtime.decisions,
                    )
                    await replication.start()  # a replica name a live process holds fails here
                    self._replication = replication
                try:
                    await self._run(listener, store, signals)
                finally:
                    if url is not None:
                        # Hand the lead over now rather than when the server notices; never hang on it.
                        with anyio.move_on_after(2.0, shield=True), contextlib.suppress(Exception):
                            await anyio.to_thread.run_sync(lock.release, abandon_on_cancel=True)
        log.info("daemon_stopped")

    async def _run(self, listener: socket.socket, store: Store, signals: Any) -> None:
        config = self.config
        if self._runtime.sender is None:
            log.warning("pagerduty_dry_run", reason="no routing key: events are recorded and logged, not sent")
        for _what, reason in escalation_off_reasons(config):  # SPEC 11.2: said at start
            log.warning("escalation_off", reason=reason)
        old_limit, open_files = raise_open_file_limit()
        tune_collector()
        replication = self._replication
        outbox = self._outbox = Outbox(
            store,
            self._runtime.sinks,
            self._metrics,
            replica=config.monitor.replica,
            poll=None if replication is None else replication.heartbeat,
        )
        self._pager = self._new_pager(self._runtime, store, outbox)
        stop_server, server_done = anyio.Event(), anyio.Event()
        self._store = store
        self._note_feature_states()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._loop_lag.run)
                await tg.start(self._tick)
                await tg.start(self._record_history, store)
                await tg.start(outbox.run)
                if replication is not None:
                    await tg.start(replication.run)
                self._paging = await tg.start(self._page)
                tg.start_soon(self._serve, listener, stop_server, server_done)
                self._polling = await tg.start(self._poll)
                self._monitoring = await tg.start(self._monitor)
                self._alive = True
                log.info(
                    "daemon_started",
                    environment=config.monitor.environment,
                    dependencies=len(config.dependencies),
                    probes=sum(len(d.probes) for d in config.dependencies.values()),
                    listen="{}:{}".format(*listener.getsockname()[:2]),
                    open_files_limit=open_files,
                    open_files_limit_was=old_limit,
                    collector_thresholds=list(gc.get_threshold()),
                )
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await self._reload(tg)
                        continue
                    log.info("daemon_stopping", signal=signal.Signals(signum).name)
                    break
                # Graceful stop: no new probes, let the pager write what the last states call for,
                # deliver what the outbox holds within the grace period, then close the server.
                self._monitoring.cancel()
                self._polling.cancel()
                self._alive = False
                with anyio.CancelScope(shield=True):
                    if replication is None or replication.leading:
                        with contextlib.suppress(Exception):  # a deposed leader's writes are fenced off
                            await self._pager.reconcile()
                    await outbox.drain(DRAIN_GRACE_SECONDS)
                stop_server.set()
                with anyio.move_on_after(5, shield=True):
                    await server_done.wait()
                tg.cancel_scope.cancel()
        finally:
            self._store = None
            self._runtime.close()
            if self._runtime.slack is not None:
                with anyio.CancelScope(shield=True):
                    await self._runtime.slack.aclose()

    async def _tick(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Owns time: every second the engines re-check what time alone changes (a window opening or
        ending); a change wakes the pager like any other."""
        task_status.started()
        while True:
            await anyio.sleep(TICK_SECONDS)
            runtime = self._runtime
            try:
                runtime.engine.tick()
                if runtime.decisions is not None:
                    runtime.decisions.tick()
                if self._pager is not None:
                    self._pager.tick()
            except Exception:  # contained: the next second tries again
                self._metrics.loop_errors.labels("tick").inc()
                log.exception("tick_failed")

    def _new_pager(self, runtime: Runtime, store: Store, outbox: Outbox) -> Pager:
        """The pager of one runtime, built once from its collaborators (a reload builds another)."""
        replication = self._replication
        replica = (
            None
            if replication is None
            else Replica(lambda: replication.epoch, replication.self_state, replication.step_down)
        )
        return Pager(
            runtime.config,
            runtime.decisions or runtime.engine,
            store,
            outbox,
            self._metrics,
            evidence=runtime.engine,
            watch=runtime.watch,
            service_status=self._service_status,
            replica=replica,
        )

    async def _page(self, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        """The current runtime's pager: always with one replica; among replicas, while this one leads."""
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            assert self._pager is not None
            if self._replication is None:
                await self._pager.run()
            else:
                await self._lead(self._replication, self._pager)

    async def _lead(self, replication: Replication, pager: Pager) -> None:
        """Among replicas: run the pager while this replica leads, and stop it the moment it does not.

        Each leadership starts from the store (the open incidents any leader left), and its
        writes carry its epoch: a deposed leader's late write is refused, never a second page.
        """
        while True:
            await replication.led.wait()
            lost = replication.lost
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(pager.run)
                    await lost.wait()
                    tg.cancel_scope.cancel()
            except Exception as exc:  # the store failed while taking over: try again shortly
                self._metrics.loop_errors.labels("pager").inc()
                log.warning("leader_pager_failed", reason=str(exc) or exc.__class__.__name__)
                await anyio.sleep(replication.heartbeat)
            pager.open = {}

    async def _record_history(self, store: Store, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Write the feature state changes to the store every second, and once more when cancelled.

        At that last write every feature becomes `unknown`: depmon stops watching, and until it
        runs again the history must not show the last state as if it were still observed.
        """
        task_status.started()
        try:
            while True:
                await anyio.sleep(HISTORY_FLUSH_SECONDS)
                await self._flush_history(store)
        finally:
            self._note_feature_states(FeatureState.UNKNOWN)
            with anyio.move_on_after(HISTORY_FINAL_FLUSH_SECONDS, shield=True):
                await self._flush_history(store)

    async def _flush_history(self, store: Store) -> None:
        """One batch to the store; a failure is logged and the batch kept for the next try."""
        changes = self._feature_changes.take()
        if not changes:
            return
        try:
            await store.record_feature_states(changes)
        except Exception as exc:  # contained: the history loop must not stop the daemon
            self._feature_changes.give_back(changes)
            log.warning("feature_history_write_failed", changes=len(changes), reason=str(exc) or exc.__class__.__name__)
        except BaseException:  # cancelled before the write: keep the batch for the final flush
            self._feature_changes.give_back(changes)
            raise

    def _note_feature_states(self, state: str | None = None, removed: Iterable[str] = ()) -> None:
        """Add each feature's current state (or `state`) to the history now, and `unknown` for
        `removed` features: at start and after a reload (the store skips the unchanged ones)."""
        engine = self._runtime.engine
        now = engine.clock()
        for feature, health in engine.features.items():
            self._feature_changes.append(feature, state or str(health.state), now)
        for feature in removed:
            self._feature_changes.append(feature, FeatureState.UNKNOWN, now)

    async def _monitor(self, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        """The probe loops of the current runtime: probe context, scheduler and self watch."""
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            runtime = self._runtime
            ctx = build_probe_context(runtime.config, on_secret=self._learn_secret)
            try:
                scheduler = Scheduler(
                    runtime.config,
                    runtime.engine,
                    ctx,
                    self._metrics,
                    rng=random.Random(),
                    watch=runtime.watch,
                    freeze_heap=True,
                )
                async with anyio.create_task_group() as tg:
                    await tg.start(runtime.watch.run)
                    await tg.start(scheduler.run)
            finally:
                with anyio.CancelScope(shield=True):
                    await ctx.aclose()

    def _service_status(self, service_id: str) -> ServiceStatus | None:
        """The owning team's own PagerDuty service as the current poller last read it (None: not read)."""
        return self.poller.service_status(service_id) if self.poller is not None else None

    async def _poll(self, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        """The maintenance poller of the current runtime (none without an API token)."""
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            runtime = self._runtime
            if runtime.maintenance is None:
                self.poller = None
                log.info("maintenance_polling_off", reason="no PagerDuty API token")
                return
            self.poller = MaintenancePoller(
                runtime.maintenance,
                runtime.services,
                runtime.config.pagerduty.maintenance_poll_interval,
                self._metrics,
                on_windows=self._take_windows,
            )
            await self.poller.run()

    async def _reload(self, tg: anyio.abc.TaskGroup) -> None:
        """Build a whole new runtime from the config file and swap it in, or keep the old one whole."""
        try:
            config = await anyio.to_thread.run_sync(load_config, self.config_path, self.environ)
            runtime = Runtime.build(config, self._metrics, self._loop_lag, self._feature_changes.append, self._proxies)
        except ConfigError as exc:
            self._metrics.config_last_reload_successful.set(0)
            log.error("config_reload_refused", path=str(self.config_path), errors=[str(i) for i in exc.issues])
            return
        except Exception as exc:  # any other failure to load or build: the old runtime stays whole
            self._metrics.config_last_reload_successful.set(0)
            log.error("config_reload_refused", path=str(self.config_path), errors=[exc.__class__.__name__])
            return
        fixed = ("state_url", "replica", "environment")
        moved = [k for k in fixed if getattr(config.monitor, k) != getattr(self.config.monitor, k)]
        if moved:  # where state lives and who this replica is change with a restart only
            runtime.close()
            self._metrics.config_last_reload_successful.set(0)
            log.error(
                "config_reload_refused",
                path=str(self.config_path),
                errors=[f"monitor.{k} changes only with a restart" for k in moved],
            )
            return
        if (
            self._monitoring is None
            or self._polling is None
            or self._paging is None
            or self._outbox is None
            or self._store is None
        ):
            raise AssertionError("reload before the daemon started")
        # The swap: no await between here and the new loops' start, so nothing sees half of it.
        self._monitoring.cancel()
        self._polling.cancel()
        self._paging.cancel()  # its last commit ends first (a store call is not interrupted)
        old = self._runtime
        runtime.engine.adopt(old.engine)
        runtime.engine.set_windows(self._windows)
        if runtime.decisions is not None:
            runtime.decisions.set_windows(self._windows)
        self._metrics.forget(*_removed(old.config, config))
        for canary in {c.name for c in old.config.monitor.canaries} - {c.name for c in config.monitor.canaries}:
            self._metrics.canary_up.remove(canary)
        self._outbox.use_sinks(runtime.sinks)
        if old.slack is not None:
            tg.start_soon(old.slack.aclose)  # after the swap: a post under way on it fails and is retried
        self._pager = self._new_pager(runtime, self._store, self._outbox)  # reads the open incidents at start
        if self._replication is not None:
            self._replication.use(config, runtime.engine, runtime.watch, runtime.decisions)
        self.config, self._runtime = config, runtime
        self._note_feature_states(removed=sorted(set(old.config.features) - set(config.features)))
        # A delivery still under way on the old sender fails and is retried on the new one.
        old.close()
        if self._on_secrets is not None:
            self._on_secrets(config.secret_values())
        self._metrics.config_last_reload_successful.set(1)
        self._metrics.set_app_graph_drift(runtime.app_graph)
        (
            runtime.decisions or runtime.engine
        ).changed.set()  # the new pager decides at once: a removed dependency's incident resolves
        log.info("config_reloaded", path=str(self.config_path), dependencies=len(config.dependencies))
        self._monitoring = await tg.start(self._monitor)
        self._polling = await tg.start(self._poll)
        self._paging = await tg.start(self._page)

    async def _take_windows(self, windows: list[MaintenanceWindow]) -> None:
        self._windows = windows
        self._runtime.engine.set_windows(windows)
        if self._runtime.decisions is not None:
            self._runtime.decisions.set_windows(windows)

    async def _serve(self, listener: socket.socket, stop: anyio.Event, done: anyio.Event) -> None:
        config = server_config()  # short idle and read timeouts: an idle-connection flood cannot hold the port
        app: Any = create_app(self, time.time)  # a Starlette app is an ASGI callable; hypercorn's alias is narrower
        sockets = Sockets(secure_sockets=[], insecure_sockets=[listener], quic_sockets=[])
        try:
            await worker_serve(
                wrap_app(app, config.wsgi_max_body_size, None), config, sockets=sockets, shutdown_trigger=stop.wait
            )
        finally:
            done.set()


def describe(listener: socket.socket) -> dict[str, Any]:
    """The listening address as a small dict, for logs and the demo."""
    host, port = listener.getsockname()[:2]
    return {"host": host, "port": port, "url": f"http://{host}:{port}"}
