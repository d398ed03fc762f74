"""End-to-end test helpers: the daemon runner the demo uses (and a context that runs it on a
simulator), the wait for a PagerDuty event, a reader of /metrics samples and a signal sender timed
from the daemon's spawn; the polling `wait_for` (tests/helpers.py) is re-exported for these tests."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from monitor.sim.daemon import DaemonProcess
from monitor.sim.environment import SimulatedEnvironment
from monitor.sim.fake_pagerduty import FakePagerDuty, ReceivedEvent
from monitor.sim.loopback import LoopbackServer, Response
from tests.helpers import wait_for

__all__ = [
    "WAIT",
    "DaemonProcess",
    "SignalAfterSpawn",
    "actions",
    "all_up",
    "healthy_upstream_daemon",
    "http_dependencies_config",
    "metric_value",
    "replica_config",
    "running",
    "wait_for",
    "wait_for_event",
]

WAIT = 15.0  # the longest an ordinary step (ready, a page) may take on a loaded 2-core machine
READY_WAIT = WAIT

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def all_up(daemon: DaemonProcess) -> bool:
    """Every dependency in /status is up."""
    return all(dep["state"] == "up" for dep in daemon.status()["dependencies"].values())


def actions(sim: SimulatedEnvironment, dep_id: str) -> list[str]:
    """The actions of the events the fake PagerDuty accepted for a dependency, in order."""
    return [event.action for event in sim.pagerduty.events_for(sim.dedup_key(dep_id))]


def wait_for_event(
    sim: SimulatedEnvironment, dep_id: str, action: str, count: int = 1, timeout: float = WAIT
) -> ReceivedEvent:
    """The `count`-th `action` event the fake PagerDuty accepted for a dependency, waiting for it."""
    key = sim.dedup_key(dep_id)
    sim.pagerduty.wait_for(
        lambda events: sum(1 for e in events if e.dedup_key == key and e.action == action) >= count, timeout
    )
    return [e for e in sim.pagerduty.events_for(key) if e.action == action][count - 1]


@contextlib.contextmanager
def running(sim: SimulatedEnvironment, ready: Callable[[DaemonProcess], bool] = all_up) -> Iterator[DaemonProcess]:
    """`depmon run` against `sim`, started and `ready` (every dependency up, by default); killed at the end."""
    daemon = DaemonProcess(sim.config_dir, sim.state_path)
    try:
        daemon.start()
        wait_for(lambda: ready(daemon), READY_WAIT, "the daemon ready")
        yield daemon
    finally:
        daemon.close()


_HTTP_DEPENDENCIES = """
monitor:
  environment: e2e
{monitor}
pagerduty:
  routing_key: {routing_key}
  events_url: {events_url}
dependencies:
{dependencies}
features:
  claims: {{name: Claims, requires: [d0], userbase_share: 0.3}}
"""


_REPLICA = """
monitor:
  environment: {environment}
  {state}
  replica: {replica}
  quorum: {quorum}
  resolve_hold: 100ms
  defaults: {{interval: 1s, timeout: 500ms, failure_threshold: 2, success_threshold: 1, confirm_interval: 200ms}}
pagerduty:
  routing_key: {routing_key}
  events_url: {events_url}
dependencies:
{dependencies}
features:
  claims: {{name: Claims, requires: [evss], userbase_share: 0.3}}
"""


def replica_config(
    *,
    environment: str,
    state: str,
    replica: str,
    quorum: int,
    events_url: str,
    health_urls: dict[str, str],
    proxy: str | None = None,
) -> str:
    """A config of one replica with fast timing: one http probe per dependency (`health_urls`, through
    `proxy` when given), the feature `claims` on evss, paging `events_url`; `state` is the `state_url:`
    or `state_path:` line."""
    via = f", proxy: {proxy}" if proxy else ""
    dependencies = "\n".join(
        f'  {dep}: {{name: {dep.upper()}, probes: [{{name: health, kind: http, url: "{url}"{via}}}]}}'
        for dep, url in health_urls.items()
    )
    return _REPLICA.format(
        environment=environment,
        state=state,
        replica=replica,
        quorum=quorum,
        routing_key="R" * 32,
        events_url=events_url,
        dependencies=dependencies,
    )


def http_dependencies_config(
    path: Path, count: int, health_url: str, events_url: str, routing_key: str, monitor: str
) -> Path:
    """Write a config of `count` dependencies `d0`... (names `D0`...), each one http probe of
    `health_url`, paging `events_url`, with a feature `claims` on d0; `monitor` is the rest of the
    `monitor:` section (YAML lines indented by two). Returns `path`."""
    dependencies = "\n".join(
        f'  d{i}: {{name: D{i}, probes: [{{name: health, kind: http, url: "{health_url}"}}]}}' for i in range(count)
    )
    path.write_text(
        _HTTP_DEPENDENCIES.format(
            monitor=monitor.strip("\n"), routing_key=routing_key, events_url=events_url, dependencies=dependencies
        )
    )
    return path


@contextlib.contextmanager
def healthy_upstream_daemon(
    tmp_path: Path, count: int, monitor: str
) -> Iterator[tuple[DaemonProcess, LoopbackServer, FakePagerDuty]]:
    """A started daemon (`http_dependencies_config`: `count` dependencies, `monitor`) whose probes
    reach a loopback upstream answering healthy, paging a fake PagerDuty; closed at the end."""
    with LoopbackServer() as upstream, FakePagerDuty() as pagerduty:
        upstream.route("GET", "/health", lambda request: Response(200, b'{"status": "pass"}'))
        config = http_dependencies_config(
            tmp_path / "depmon.yaml", count, f"{upstream.url}/health", pagerduty.events_url, "F" * 32, monitor
        )
        daemon = DaemonProcess(config, tmp_path / "state.sqlite3")
        try:
            daemon.start()
            yield daemon, upstream, pagerduty
        finally:
            daemon.close()


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` with (at least) `labels` in a Prometheus text exposition; None when absent."""
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        found = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match["value"])
    return None


class SignalAfterSpawn(threading.Thread):
    """Sends `signum` to `daemon` at each of `delays` seconds after its process is spawned.

    Start it just before `daemon.start()`: it waits for the process to exist, then sends the
    signals, and keeps in `sent_at` when it actually sent each one (seconds after the spawn).
    Join it after `start()` returns or fails.
    """

    def __init__(self, daemon: DaemonProcess, signum: int, delays: Sequence[float]) -> None:
        super().__init__(name="signal-after-spawn", daemon=True)
        self._daemon, self._signum, self._delays = daemon, signum, tuple(delays)
        self.sent_at: list[float] = []

    def run(self) -> None:
        deadline = time.monotonic() + 30.0
        while self._daemon.proc is None and time.monotonic() < deadline:
            time.sleep(0.001)
        proc = self._daemon.proc
        if proc is None:
            return
        spawned = time.monotonic()
        for delay in self._delays:
            time.sleep(max(0.0, spawned + delay - time.monotonic()))
            if proc.poll() is not None:
                return
            proc.send_signal(self._signum)
            self.sent_at.append(time.monotonic() - spawned)
