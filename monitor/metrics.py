"""The Prometheus metrics of SPEC section 6, on a registry owned by one daemon instance.

Labels are config ids only (dependency, probe, feature ids, kinds, outcomes, states), never
URLs, hosts or secrets, so their number is bounded by the config.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.lowlevel
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from monitor import __version__

if TYPE_CHECKING:
    from monitor.results import ProbeResult

# No `<name>_created` series (the start time of each counter and histogram child): they doubled
# the counters' series and added one per histogram child, at 1,000 probes 2,000 of the ~29,000
# lines /metrics rendered, and nothing depmon ships reads them (Prometheus ingests them only
# behind a feature flag). prometheus_client's switch is process-wide; depmon is the process.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

DEPENDENCY_STATES = ("unknown", "up", "degraded", "down", "maintenance")
FEATURE_STATES = ("unknown", "ok", "degraded", "down", "maintenance")

# Probe latencies run from ~1 ms (loopback) to the 10 s default timeout. Each bucket is a series
# per probe, and rendering a histogram's buckets is most of what /metrics costs: 8 buckets (11
# series per probe with +Inf, _count, _sum) instead of 13 halved the render at 1,000 probes.
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Scheduler lag should stay in the milliseconds; the tail buckets show an overloaded loop.
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(frozen=True, slots=True)
class _ProbeChildren:
    """One probe's metric children, resolved once: `labels()` costs a lock and a dict lookup per call."""

    success: Any
    duration: Any
    outcomes: dict[str, Any]


class Metrics:
    """Every depmon metric, registered on `registry` (a fresh one per instance by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._probe_children: dict[tuple[str, str], _ProbeChildren] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The standard process_* metrics (SPEC 11.5) of this process, read from /proc/<its pid>:
        # a forked child renders /metrics (`render_forked`), and /proc/self there is the child.
        daemon_pid = os.getpid()
        ProcessCollector(pid=lambda: daemon_pid, registry=r)
        probe_labels = ("dependency", "probe", "kind")
        self.probe_success = Gauge(
            "depmon_probe_success", "1 if the last run of the probe succeeded, else 0", probe_labels, registry=r
        )
        self.probe_duration = Histogram(
            "depmon_probe_duration_seconds",
            "Duration of probe runs",
            probe_labels,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.probes = Counter("depmon_probes", "Probe runs by outcome", (*probe_labels, "outcome"), registry=r)
        self.dependency_up = Gauge(
            "depmon_dependency_up", "1 if the dependency is up or degraded, else 0", ("dependency",), registry=r
        )
        self.dependency_state = Gauge(
            "depmon_dependency_state", "1 for the current state of the dependency", ("dependency", "state"), registry=r
        )
        self.dependency_in_maintenance = Gauge(
            "depmon_dependency_in_maintenance",
            "1 while an open PagerDuty maintenance window covers the dependency",
            ("dependency",),
            registry=r,
        )
        self.feature_state = Gauge(
            "depmon_feature_state", "1 for the current state of the app feature", ("feature", "state"), registry=r
        )
        self.feature_impacted = Gauge(
            "depmon_feature_impacted", "1 when the app feature is degraded or down", ("feature",), registry=r
        )
        self.tls_expiry = Gauge(
            "depmon_tls_certificate_expiry_timestamp_seconds",
            "Expiry of the certificate the probe last saw, as a UNIX timestamp",
            ("dependency", "probe"),
            registry=r,
        )
        self.incidents_open = Gauge("depmon_incidents_open", "Open incidents (one per root cause)", registry=r)
        self.pagerduty_events = Counter(
            "depmon_pagerduty_events",
            "PagerDuty events by action and delivery outcome (accepted, dropped, retried)",
            ("action", "outcome"),
            registry=r,
        )
        self.slack_messages = Counter(
            "depmon_slack_messages",
            "Slack messages by action and delivery outcome (accepted, dropped, retried)",
            ("action", "outcome"),
            registry=r,
        )
        # SPEC 11.2: each REST write to an incident (responders, note, urgency) by how it ended.
        self.escalations = Counter(
            "depmon_escalations",
            "Escalation's PagerDuty REST writes by step and outcome (accepted, retried, dropped, cancelled, not_found)",
            ("step", "outcome"),
            registry=r,
        )
        self.outbox_pending = Gauge(
            "depmon_pagerduty_outbox_pending",
            "PagerDuty events written to the outbox and not yet delivered",
            registry=r,
        )
        self.outbox_pending_by_destination = Gauge(
            "depmon_outbox_pending",
            "Outbox rows not yet delivered, by destination kind (pagerduty, pagerduty_rest, slack)",
            ("destination",),
            registry=r,
        )
        self.maintenance_windows_open = Gauge(
            "depmon_maintenance_windows_open",
            "Open PagerDuty maintenance windows covering the dependency",
            ("dependency",),
            registry=r,
        )
        self.maintenance_last_success = Gauge(
            "depmon_maintenance_last_success_timestamp_seconds",
            "When maintenance windows were last read from PagerDuty (0: never)",
            registry=r,
        )
        self.silenced = Gauge(
            "depmon_silenced",
            "1 while a `depmon silence` keeps the dependency from paging",
            ("dependency",),
            registry=r,
        )
        self.maintenance_service_ok = Gauge(
            "depmon_maintenance_service_ok",
            "1 when PagerDuty answered for the service id in the last poll, 0 when the id is unknown or unreadable",
            ("service",),
            registry=r,
        )
        self.scheduler_lag = Histogram(
            "depmon_scheduler_lag_seconds",
            "How late probe runs start against their schedule",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.config_last_reload_successful = Gauge(
            "depmon_config_last_reload_successful", "1 if the last config (re)load succeeded", registry=r
        )
        self.app_graph_drift = Gauge(
            "depmon_app_graph_drift",
            "Differences between depmon's feature graph and vets-api's app_graph (SPEC 11.1 drift a and d)",
            registry=r,
        )
        self.overloaded = Gauge(
            "depmon_overloaded", "1 while depmon cannot run its scheduled probes on time", registry=r
        )
        self.event_loop_lag = Histogram(
            "depmon_event_loop_lag_seconds",
            "How late the event loop wakes a 100 ms sleeper",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.probes_inconclusive = Counter(
            "depmon_probes_inconclusive",
            "Probe runs that counted toward no threshold: depmon's trouble or a signal backend's, not the upstream's",
            ("dependency", "probe", "reason"),
            registry=r,
        )
        self.signal_value = Gauge(
            "depmon_signal_value",
            "The last value a traffic signal probe read from its metrics backend (SPEC 11.3)",
            ("dependency", "probe"),
            registry=r,
        )
        self.canary_up = Gauge(
            "depmon_canary_up",
            "1 while the canary (a probe of depmon's own reach) is not down",
            ("canary",),
            registry=r,
        )
        self.build_info = Gauge("depmon_build_info", "depmon build information", ("version",), registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.loop_errors = Counter("depmon_loop_errors", "Exceptions contained by a daemon loop", ("loop",), registry=r)
        # Replicas (SPEC 10.6): each replica exports its own leadership and the quorum view it read.
        self.replica_leader = Gauge(
            "depmon_replica_leader", "1 while this replica leads (decides and pages), else 0", ("replica",), registry=r
        )
        self.store_stalled = Gauge(
            "depmon_store_stalled",
            "1 while the decisions' writes cannot commit within 5 s (depmon's own trouble: the self page), else 0",
            registry=r,
        )
        self.dependency_down_replicas = Gauge(
            "depmon_dependency_down_replicas",
            "How many live replicas see the dependency down (it pages at the quorum)",
            ("dependency",),
            registry=r,
        )

    # -- the engine's listener (monitor.state.live.StateListener): its states as series ----------

    def probe_configured(self, dependency: str, probe: str, kind: str) -> None:
        """Create a probe's series (0 until its first result) and keep its children for `probe_result`."""
        self._probe_children[(dependency, probe)] = _ProbeChildren(
            self.probe_success.labels(dependency, probe, kind), self.probe_duration.labels(dependency, probe, kind), {}
        )

    def probe_result(self, dependency: str, probe: str, kind: str, result: ProbeResult) -> None:
        """Publish one probe result; the children are resolved once per probe (this runs 500 times a second)."""
        children = self._probe_children.get((dependency, probe))
        if children is None:
            self.probe_configured(dependency, probe, kind)
            children = self._probe_children[(dependency, probe)]
        children.success.set(1 if result.ok else 0)
        children.duration.observe(result.latency_seconds)
        counter = children.outcomes.get(result.outcome)
        if counter is None:
            counter = children.outcomes[result.outcome] = self.probes.labels(dependency, probe, kind, result.outcome)
        counter.inc()
        if result.cert_not_after is not None:
            self.tls_expiry.labels(dependency, probe).set(result.cert_not_after)
        if result.signal is not None and result.signal.value is not None:
            self.signal_value.labels(dependency, probe).set(result.signal.value)

    def set_dependency_state(self, dependency: str, state: str, in_maintenance: bool) -> None:
        """Publish a dependency's state: the one-hot series, `up` and the maintenance flag."""
        for candidate in DEPENDENCY_STATES:
            self.dependency_state.labels(dependency, candidate).set(1 if candidate == state else 0)
        self.dependency_up.labels(dependency).set(1 if state in ("up", "degraded") else 0)
        self.dependency_in_maintenance.labels(dependency).set(1 if in_maintenance else 0)

    def forget(self, dependencies: set[str], probes: set[tuple[str, str]], features: set[str]) -> None:
        """Remove every series of these dependencies, (dependency, probe) pairs and features.

        A reload that removes them must not leave their last values behind: a removed
        dependency stuck at `depmon_dependency_up 0` would keep `DepmonDependencyDown` firing.
        """
        by_dependency = (
            self.probe_success,
            self.probe_duration,
            self.probes,
            self.dependency_up,
            self.dependency_state,
            self.dependency_in_maintenance,
            self.tls_expiry,
            self.signal_value,
            self.maintenance_windows_open,
            self.silenced,
            self.dependency_down_replicas,
        )
        for dependency, probe in list(self._probe_children):
            if dependency in dependencies or (dependency, probe) in probes:
                del self._probe_children[(dependency, probe)]  # their children are removed below
        for dependency in dependencies:
            for metric in by_dependency:
                metric.remove_by_labels({"dependency": dependency})
        for dependency, probe in probes:
            for metric in (self.probe_success, self.probe_duration, self.probes, self.tls_expiry, self.signal_value):
                metric.remove_by_labels({"dependency": dependency, "probe": probe})
        for feature in features:
            self.feature_state.remove_by_labels({"feature": feature})
            self.feature_impacted.remove_by_labels({"feature": feature})
            # Feature-level maintenance windows are published under the feature's id as `dependency`.
            self.maintenance_windows_open.remove_by_labels({"dependency": feature})

    def set_app_graph_drift(self, status: Mapping[str, Any] | None) -> None:
        """`depmon_app_graph_drift`: the differences /status's `app_graph` lists (0 without app_graph)."""
        self.app_graph_drift.set(len(status["drift"]) if status is not None else 0)

    def set_feature_state(self, feature: str, state: str) -> None:
        """Publish a feature's state: the one-hot series and the impacted flag."""
        for candidate in FEATURE_STATES:
            self.feature_state.labels(feature, candidate).set(1 if candidate == state else 0)
        self.feature_impacted.labels(feature).set(1 if state in ("degraded", "down") else 0)


class _Families:
    """A collector of already-collected metric families: lets prometheus_client render a few at a time."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


EOF_LINE = b"# EOF\n"
# A forked renderer that writes nothing more for this long cannot finish: it waits for a lock that
# a thread of the daemon held at the fork (that thread does not exist in the child). One piece of
# the child's render is one family's collect or 1,000 samples: ~30 ms at 1,000 probes, alone on
# a core; 0.5 s leaves room for a loaded machine, and the scrape is still answered within ~1 s.
CHILD_STALL_SECONDS = 0.5
_CHILD_CHUNK = 1000  # samples per piece in the child: bigger pieces, less re-rendering of headers


def _pieces(registry: CollectorRegistry, openmetrics: bool, chunk: int) -> Iterator[bytes]:
    """The registry's exposition in pieces of at most `chunk` samples; joined, exactly prometheus_client's bytes."""
    generate = generate_openmetrics if openmetrics else generate_latest

    def rendered(family: Metric) -> bytes:
        text = generate(_Families((family,)))
        return text.removesuffix(EOF_LINE) if openmetrics else text

    for family in registry.collect():
        header = rendered(Metric(family.name, family.documentation, family.type, family.unit))
        yield header  # HELP, TYPE (and UNIT) once, however many pieces the samples take
        samples = family.samples
        for start in range(0, len(samples), chunk):
            piece = Metric(family.name, family.documentation, family.type, family.unit)
            piece.samples = samples[start : start + chunk]
            yield rendered(piece)[len(header) :]
    if openmetrics:
        yield EOF_LINE


async def render(
    registry: CollectorRegistry, openmetrics: bool = False, chunk: int = 200, slice_seconds: float = 0.01
) -> bytes:
    """The registry in the Prometheus text format (or OpenMetrics), rendered on the event loop in slices.

    prometheus_client renders it; this only cuts the work in pieces of at most `chunk` samples
    and yields to the event loop whenever `slice_seconds` of rendering have passed, so a scrape
    delays a probe by one slice, not by the whole render (and the render, one slice per turn
    of a busy loop, still ends in well under a second at 1,000 probes; on an overloaded loop the
    slices grow to a third of the wait for a turn). A worker thread was worse: it holds the GIL,
    and the event loop, which gives it up at every socket call, waits up to the interpreter's
    switch interval (5 ms) to get it back each time, so the probes stood still for the
    whole render (2.2 s at 1,000 probes). Collecting one family is not cut: it is done at once
    (the largest, the duration histogram, is a few tens of milliseconds at 1,000 probes).
    """
    parts: list[bytes] = []
    slice_ends = time.perf_counter() + slice_seconds
    for piece in _pieces(registry, openmetrics, chunk):
        parts.append(piece)
        if (yielded := time.perf_counter()) >= slice_ends:
            await anyio.lowlevel.checkpoint()
            # On an overloaded loop a turn takes long: the next slice is a third of that wait,
            # so the render keeps a quarter of the loop and still ends (9.8 s -> ~1.5 s at a
            # 60% share of a core), while a loop that keeps up gets it back every 10 ms.
            waited = time.perf_counter() - yielded
            slice_ends = time.perf_counter() + max(slice_seconds, waited / 3)
    return b"".join(parts)


async def render_forked(
    registry: CollectorRegistry,
    openmetrics: bool = False,
    stall: float = CHILD_STALL_SECONDS,
    deadline: float = 10.0,
) -> bytes | None:
    """The registry rendered by a forked child, off this process's event loop and GIL; None when it cannot be.

    The child is a copy-on-write snapshot of the daemon taken between two steps of the event loop
    (no metric is being written then: they are written on the loop only), so it renders one
    consistent state on the other core while the probes go on. It writes the text, piece by piece,
    into an anonymous in-memory file and exits; the daemon pays the fork (a few milliseconds for
    ~100 MB), a look at the file's size ten times per `stall` seconds, one wake-up when the child
    exits (its pidfd turns readable) and one read.

    A child of a threaded process can inherit a lock that a thread held at the fork, held for
    good. The child takes none it can do without (no logging, `os._exit`), but a metric's lock is
    one it needs; whether a thread holds one at the fork cannot be known. So a child that writes
    nothing for `stall` seconds (or is not done within `deadline`) is killed and reaped at once
    (a child stuck from the start holds the scrape `stall` seconds; one stuck later, that long
    after its last piece; a slow child that makes progress on a loaded machine is let finish),
    and the caller renders in slices on the loop instead (the lock is free again there: the thread
    that held it runs on). Rendering afresh rather than serving an older text: a killed child is
    rare, and /metrics must show the state now (an alert on `depmon_dependency_up` reads it).
    None too when this is not Linux or the fork fails.
    """
    try:
        text = os.memfd_create("depmon-metrics", os.MFD_CLOEXEC)
    except (OSError, AttributeError):  # not Linux
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(text)
        return None
    if pid == 0:  # pragma: no cover - the child; its output is what the parent's tests check
        _render_in_child(registry, openmetrics, text)
    try:
        return await _child_output(pid, text, stall, deadline)
    finally:
        os.close(text)


def _render_in_child(registry: CollectorRegistry, openmetrics: bool, text: int) -> NoReturn:
    """In the forked child: write the exposition into `text` piece by piece, then exit (0 when all is written)."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)  # a signal to the process group must not reach the daemon's wake-up pipe
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        gc.disable()
        for piece in _pieces(registry, openmetrics, _CHILD_CHUNK):
            view = memoryview(piece)
            while view:
                view = view[os.write(text, view) :]
        status = 0
    finally:
        os._exit(status)  # no atexit, no flush of inherited buffers, no lock taken


async def _child_output(pid: int, text: int, stall: float, deadline: float) -> bytes | None:
    """What child `pid` wrote into `text` once it has exited well; None when it failed or was killed.

    Whatever happens here, cancellation included, the child is dead and reaped on return.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # Linux before 5.3: nothing to wait on; the caller renders
        await _kill(pid, None)
        return None
    exit_code: int | None = None
    try:
        written = 0
        started = last_written = time.monotonic()
        while True:
            with anyio.move_on_after(stall / 10):  # a look at the file's size ten times per `stall`
                await anyio.wait_readable(pidfd)  # readable once the child has exited
                break
            now = time.monotonic()
            if (size := os.fstat(text).st_size) != written:
                written, last_written = size, now
            if now - last_written >= stall or now - started >= deadline:
                break  # stuck (or too slow): killed below
        exit_code = _exit_code(pid)
        if exit_code == 0:
            return os.pread(text, os.fstat(text).st_size, 0)
        return None
    finally:
        if exit_code is None:
            await _kill(pid, pidfd)
        os.close(pidfd)


def _exit_code(pid: int) -> int | None:
    """Child `pid`'s exit code once it has exited (it is then reaped); None while it runs."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


async def _kill(pid: int, pidfd: int | None) -> None:
    """Kill child `pid` and reap it, even when the caller is being cancelled (no zombie is left)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        while _exit_code(pid) is None:
            if pidfd is None:
                await anyio.sleep(0.001)
            else:
                await anyio.wait_readable(pidfd)  # readable once it is dead
