"""`depmon run`: the long-lived daemon, wiring the parts together in one anyio task group.

    scheduler --results--> engine --changes--> pager --events--> outbox --> PagerDuty
    poller --windows--> engine;  server reads engine, pager and metrics

Lifecycle: the listening socket is bound before anything starts (a port in use is exit 2, not
a half-started daemon). SIGHUP reloads the config: a valid one replaces the engine and the
probe loops (probe health is carried over for probes whose spec did not change); an invalid
one is refused and the old one kept. SIGTERM/SIGINT stop it: probe loops first, then the
outbox is drained under a grace deadline, then the server.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from monitor.config import Config, ConfigError, load_config
from monitor.engine import Engine
from monitor.incidents import OpenIncident
from monitor.metrics import Metrics
from monitor.outbox import Outbox
from monitor.pager import Pager
from monitor.pagerduty import EventsSender, MaintenanceClient
from monitor.scheduler import Scheduler
from monitor.server import create_app
from monitor.store import Store
from monitor.windows import MaintenanceWindow

if TYPE_CHECKING:
    from monitor.maintenance import MaintenancePoller
from probes import ProbeContext
from probes.oauth2 import token_fetcher
from probes.tokens import TokenCache

log = structlog.get_logger("depmon.daemon")

DRAIN_GRACE_SECONDS = 10.0


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


def build_probe_context(config: Config) -> ProbeContext:
    """The probes' shared clients and token cache for one config."""
    ctx = ProbeContext(max_connections=config.monitor.max_concurrent_probes)
    ctx.tokens = TokenCache.from_config(config, token_fetcher(ctx))
    return ctx


class Daemon:
    """One running depmon: its config, live state and services."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        state_path: str,
        environ: Mapping[str, str],
        metrics: Metrics | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.state_path = state_path
        self.environ = environ
        self._metrics = metrics or Metrics()
        self._metrics.config_last_reload_successful.set(1)
        self._engine = Engine(config, self._metrics)
        self._pager: Pager | None = None
        self._alive = False
        self._windows: list[MaintenanceWindow] = []
        self._closers: list[Callable[[], None]] = []  # synchronous clients to close at the end

    # -- the View the server reads -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def open_incidents(self) -> dict[str, OpenIncident]:
        return dict(self._pager.open) if self._pager else {}

    # -- running -----------------------------------------------------------------------------

    async def run(self, listener: socket.socket) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        config = self.config
        pd = config.pagerduty
        sender = EventsSender(pd.events_url, pd.routing_key) if pd.routing_key.get_secret_value() else None
        if sender is None:
            log.warning("pagerduty_dry_run", reason="no routing key: events are recorded and logged, not sent")
        async with Store(self.state_path) as store:
            outbox = Outbox(store, sender, self._metrics)
            self._pager = Pager(self._engine, store, outbox, self._metrics)
            stop_server, server_done = anyio.Event(), anyio.Event()
            async with anyio.create_task_group() as tg:
                await tg.start(outbox.run)
                await tg.start(self._pager.run)
                tg.start_soon(self._serve, listener, stop_server, server_done)
                poller = self._maintenance_poller()
                if poller is not None:
                    tg.start_soon(poller.run)
                monitoring = await tg.start(self._monitor)
                self._alive = True
                log.info(
                    "daemon_started",
                    environment=config.monitor.environment,
                    dependencies=len(config.dependencies),
                    probes=sum(len(d.probes) for d in config.dependencies.values()),
                    listen="{}:{}".format(*listener.getsockname()[:2]),
                )
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            monitoring = await self._reload(tg, monitoring)
                            continue
                        log.info("daemon_stopping", signal=signal.Signals(signum).name)
                        break
                # Graceful stop: no new probes, let the pager write what the last states call for,
                # deliver what the outbox holds within the grace period, then close the server.
                monitoring.cancel()
                self._alive = False
                with anyio.CancelScope(shield=True):
                    await self._pager.reconcile()
                    await outbox.drain(DRAIN_GRACE_SECONDS)
                stop_server.set()
                with anyio.move_on_after(5, shield=True):
                    await server_done.wait()
                tg.cancel_scope.cancel()
            if sender is not None:
                sender.close()
            for close in self._closers:
                close()
        log.info("daemon_stopped")

    async def _monitor(self, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        """The reloadable part: probe context, scheduler and engine of the current config."""
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            ctx = build_probe_context(self.config)
            try:
                scheduler = Scheduler(self.config, self._engine, ctx, self._metrics, rng=random.Random())
                await scheduler.run()
            finally:
                with anyio.CancelScope(shield=True):
                    await ctx.aclose()

    async def _reload(self, tg: anyio.abc.TaskGroup, monitoring: anyio.CancelScope) -> anyio.CancelScope:
        try:
            config = await anyio.to_thread.run_sync(load_config, self.config_path, self.environ)
        except ConfigError as exc:
            self._metrics.config_last_reload_successful.set(0)
            log.error("config_reload_refused", path=str(self.config_path), errors=[str(i) for i in exc.issues])
            return monitoring
        monitoring.cancel()
        engine = Engine(config, self._metrics)
        engine.adopt(self._engine)
        engine.set_windows(self._windows)
        self.config, self._engine = config, engine
        if self._pager is not None:
            self._pager.engine = engine
        self._metrics.config_last_reload_successful.set(1)
        log.info("config_reloaded", path=str(self.config_path), dependencies=len(config.dependencies))
        started: anyio.CancelScope = await tg.start(self._monitor)
        return started

    def _maintenance_poller(self) -> MaintenancePoller | None:
        from monitor.maintenance import MaintenancePoller

        pd = self.config.pagerduty
        if not pd.api_token.get_secret_value():
            log.info("maintenance_polling_off", reason="no PagerDuty API token")
            return None
        services = {service: owners[0] for service, owners in self.config.service_owners().items()}
        client = MaintenanceClient(pd.api_url, pd.api_token)
        self._closers.append(client.close)
        return MaintenancePoller(
            client, services, pd.maintenance_poll_interval, self._metrics, on_windows=self._take_windows
        )

    async def _take_windows(self, windows: list[MaintenanceWindow]) -> None:
        self._windows = windows
        self._engine.set_windows(windows)

    async def _serve(self, listener: socket.socket, stop: anyio.Event, done: anyio.Event) -> None:
        config = HypercornConfig()
        config.accesslog = None
        config.errorlog = None  # our own logs say what matters; hypercorn's would not be JSON
        config.graceful_timeout = 2.0
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
