"""`depmon demo`: the real daemon against a simulated VA environment, narrated (SPEC section 9).

    SimulatedEnvironment (upstreams + fake PagerDuty + written config)
        <-- probes and pages --  `depmon run` (a subprocess, JSON logs on its stdout)
    the timeline sets faults, waits for what the daemon and the fake PagerDuty show, narrates

The timeline, scaled to `duration` (60 s by default): all healthy; EVSS fails (one page naming
Claims, Letters, Direct Deposit Benefits, Disability Rating, with the playbook links); Caseflow
fails (Appeals, a low-frequency feature: a sev-2 page with no postmortem required, where EVSS's
is sev-1 and names the Product Owner); VA Notify's traffic fails while its health path answers 200
(40% of vets-api's simulated calls failing, read from a simulated Datadog: one page carrying the
value and the query, saying traffic and the health check disagree); MHV enters a maintenance
window, opened with the real `depmon maintenance open` (a subprocess on the simulated config), and fails (no page, its
features in maintenance); SSOe OAuth times out (one page listing every signed-in feature, none
for EVSS, VA Profile and VAOS, whose probes need its token); everything recovers (each open
alert resolved) and `depmon maintenance close` ends MHV's window. The EVSS page's Slack message
(the alerts channel and #evss-prod, through the simulated Slack) is narrated with the page, and
so are the escalation's writes to PagerDuty's incident (SPEC 11.2): the simulated Product Owner
has a PagerDuty user and a Slack member id, so the EVSS page (sev-1, criteria met) requests them
as a responder, adds a note naming the criteria, and mentions them in its Slack posts. Each
step waits for its checkpoints (with a timeout derived from the duration) rather than sleeping
blindly, then dwells until its share of the duration is over. The closing summary compares the
pages expected with the pages the fake PagerDuty received, per dedup key, and shows each page's VA
severity and whether it requires a postmortem; the exit status is 0 only when they match the
script and every checkpoint was reached. Ctrl-C (or SIGTERM) stops the daemon and the simulators: exit 130.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO

import httpx

from monitor.maintenance.records import MaintenanceWindow
from monitor.sim.daemon import DaemonProcess, log_time, simulation_environ
from monitor.sim.environment import DEMO_PEOPLE, SimulatedEnvironment
from monitor.sim.fake_pagerduty import FakeIncident, ReceivedEvent
from monitor.sim.fake_slack import SlackPost

__all__ = ["run_demo"]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_START_TIMEOUT = 30.0  # the daemon's start and first probe round, on a loaded machine
_MIN_WAIT = 20.0  # no checkpoint times out sooner than this, however short the demo
_SETTLE_SECONDS = 2.0  # quiet time after the last step, for a stray page to show up
_STOP_TIMEOUT = 20.0  # SIGTERM drains the outbox for up to 10 s
_POLL_SECONDS = 0.1
_SIGNED_IN_CHILDREN = ("evss", "va-profile", "vaos")  # their probes present the SSOe token
_EVSS_FEATURES = ("Claims", "Letters", "Direct Deposit Benefits", "Disability Rating")
_PLAYBOOK = "mobile-incident-response"
# What each page must say at its trigger (issue 12): (custom_details.va_severity, postmortem required).
_PAGE_ESCALATION = {"evss": ("sev-1", True), "caseflow": ("sev-2", False), "ssoe-oauth": ("sev-1", True)}
_TRAFFIC = "vanotify"  # whose traffic signal the demo fails (a simulated Datadog), its health path still passing
_TRAFFIC_FAILING = 0.4  # the share of vets-api's simulated calls to it that fail: over its fail_above 0.25
_PRODUCT_OWNER = "product-owner"  # the contact a required postmortem notifies (config/people.yaml)
_EVSS_SLACK_CHANNELS = ("#va-mobile-app-alerts", "#evss-prod")  # the team's alerts channel, EVSS's owners'
_MHV_MESSAGE = "Secure Messaging unavailable|MHV maintenance"  # what the app shows Veterans during the window
_CLI_TIMEOUT = 30.0  # one `depmon maintenance` command, on a loaded machine


def run_demo(duration: float = 60.0, listen: str = "127.0.0.1:0", out: TextIO | None = None) -> int:
    """Play the scripted timeline against the real daemon; 0 when the pages match the script."""
    narrator = _Narrator(out or sys.stdout)
    if not duration > 0:
        narrator.line("depmon demo: --duration must be a positive number of seconds")
        return EXIT_USAGE
    with _sigterm_as_interrupt():
        try:
            return _Demo(duration, listen, narrator).run()
        except KeyboardInterrupt:
            narrator.line("interrupted: the daemon and the simulators are stopped")
            return EXIT_INTERRUPTED


# -- output ---------------------------------------------------------------------------------------


class _Narrator:
    """Plain-text lines with the elapsed time, from any thread."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def restart_clock(self) -> None:
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self._out, flush=True)

    def say(self, source: str, text: str, *more: str) -> None:
        """`  +12.3s  source     text`, then `more` lines indented under the text."""
        indent = " " * 21
        lines = [f"  +{self.elapsed:5.1f}s  {source:<9} {text}", *(indent + extra for extra in more)]
        with self._lock:
            print("\n".join(lines), file=self._out, flush=True)


# -- the daemon -----------------------------------------------------------------------------------


class _Narration:
    """Turns the daemon's log lines into the demo's readable lines."""

    def __init__(self, env: SimulatedEnvironment, narrator: _Narrator) -> None:
        self._narrator = narrator
        self._names = {dep_id: dep.name for dep_id, dep in env.config.dependencies.items()}
        self._last_failure: dict[str, str] = {}

    def text(self, line: str) -> None:
        """A line the daemon printed that is not a JSON log line."""
        self._narrator.say("daemon", line)

    def log(self, entry: dict[str, Any]) -> None:
        """One JSON log line of the daemon."""
        event = entry.get("event")
        dep = str(entry.get("dependency", ""))
        name = self._names.get(dep, dep)
        if event == "probe_failed":
            self._last_failure[dep] = f"{entry.get('probe')}: {entry.get('detail')}"
            return
        text: str | None = None
        if event == "dependency_state_changed":
            old, new = entry.get("old"), entry.get("new")
            if old in (None, "unknown") and new == "up":
                return  # start-up: step 1 reports the whole picture at once
            cause = self._names.get(entry.get("cause") or "", entry.get("cause"))
            text = f"{name}: {old} -> {new}" if old != new else f"{name}: still {new}"
            if cause:
                text += f" (because {cause} is down)"
            elif old == new:
                text += " (on its own evidence now)"
            elif new == "down" and dep in self._last_failure:
                text += f" ({self._last_failure[dep]})"
        elif event == "incident_triggered":
            text = f"incident opened for {name}: trigger queued in the outbox"
        elif event in ("incident_updated", "incident_escalated"):
            text = f"{event.replace('_', ' ')} for {name}: {', '.join(entry.get('features') or [])}"
        elif event == "incident_resolved":
            text = f"incident closed for {name}: resolve queued in the outbox"
        elif event == "pagerduty_event_retry":
            text = (
                f"PagerDuty delivery of {entry.get('action')} {entry.get('dedup_key')} failed "
                f"({entry.get('reason')}); retry in {entry.get('retry_in_seconds')}s"
            )
        elif event == "pagerduty_event_rejected":
            text = f"PagerDuty rejected {entry.get('action')} {entry.get('dedup_key')}: {entry.get('reason')}"
        elif event == "maintenance_poll_failed":
            text = f"maintenance windows unreadable ({entry.get('reason')}); the last ones known stay in force"
        elif event == "maintenance_bad_service_id":
            text = f"PagerDuty does not know service ids {entry.get('service_ids')}"
        elif entry.get("level") in ("error", "critical"):
            text = f"{event}: {entry.get('reason') or entry.get('errors') or entry.get('exception') or ''}".rstrip(": ")
        if text is not None:
            self._narrator.say("daemon", text)


def _start_daemon(env: SimulatedEnvironment, listen: str, narrator: _Narrator) -> DaemonProcess | int:
    """The daemon, started and listening; or the exit status it ended with when it could not start."""
    narration = _Narration(env, narrator)
    daemon = DaemonProcess(env.config_dir, env.state_path, listen=listen, on_log=narration.log, on_text=narration.text)
    try:
        return daemon.start(_START_TIMEOUT)
    except RuntimeError:
        daemon.close()
        narrator.line(
            "depmon demo: the daemon did not start"
            + (f" (exit status {daemon.exit_status})" if daemon.exit_status is not None else "")
        )
        return EXIT_USAGE if daemon.exit_status == EXIT_USAGE else EXIT_MISMATCH


def _stop_daemon(daemon: DaemonProcess, narrator: _Narrator) -> int | None:
    """SIGTERM and wait for the graceful stop (killed after a deadline); the exit status."""
    try:
        return daemon.stop(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        narrator.say("demo", f"the daemon did not stop within {_STOP_TIMEOUT:.0f}s: killed")
        return None
    finally:
        daemon.close()


# -- the simulated PagerDuty, narrated ----------------------------------------------------------


class _PageWatcher:
    """Prints every event the fake PagerDuty accepts: action, dedup key, severity, summary and links."""

    def __init__(self, env: SimulatedEnvironment, narrator: _Narrator) -> None:
        self._fake = env.pagerduty
        self._narrator = narrator
        self._seen = 0
        self._written: dict[str, tuple[int, int]] = {}  # incident id -> responder requests, notes shown
        self._stopping = threading.Event()
        self._showing = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="pagerduty-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._show_new()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                self._fake.wait_for(lambda events: len(events) > self._seen, timeout=0.2)
            self._show_new()

    def catch_up(self) -> None:
        """Show what arrived since the last look now (before a check says it arrived)."""
        self._show_new()

    def _show_new(self) -> None:
        with self._showing:  # the watch thread and `catch_up` never show a write twice
            self._show_new_locked()

    def _show_new_locked(self) -> None:
        events = self._fake.events
        for event in events[self._seen :]:
            self._show(event)
        self._seen = max(self._seen, len(events))
        for incident in self._fake.incidents:
            self._show_writes(incident)

    def _show_writes(self, incident: FakeIncident) -> None:
        """The responder requests and notes depmon wrote to a PagerDuty incident since the last look."""
        requests, notes = self._written.get(incident.id, (0, 0))
        where = f"{incident.id} ({incident.incident_key})"
        for body in incident.responder_requests[requests:]:
            targets = [item["responder_request_target"] for item in body["responder_request_targets"]]
            who = ", ".join(f"{target['id']} ({target['type']})" for target in targets)
            self._narrator.say(
                "PagerDuty",
                f"RESPONDER REQUEST on {where}: {who}, requested by {body['requester_id']}",
                str(body["message"]),
            )
        for note in incident.notes[notes:]:
            self._narrator.say("PagerDuty", f"NOTE on {where}", note)
        self._written[incident.id] = (len(incident.responder_requests), len(incident.notes))

    def _show(self, event: ReceivedEvent) -> None:
        body = event.body
        if event.action != "trigger":
            self._narrator.say("PagerDuty", f"{event.action.upper()} {event.dedup_key}")
            return
        payload = body.get("payload") or {}
        links = [f"link: {link.get('text', '')} <{link.get('href', '')}>" for link in body.get("links") or []]
        self._narrator.say(
            "PagerDuty",
            f"TRIGGER {event.dedup_key} ({payload.get('severity')}, class {payload.get('class')})",
            f"summary: {payload.get('summary')}",
            *links,
        )


# -- the timeline ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """Something the daemon or the fake PagerDuty must show before a step goes on."""

    description: str
    holds: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class _Phase:
    """A change to the simulated world and the checkpoints that show its effect."""

    narration: str | None
    act: Callable[[], object] | None
    checkpoints: tuple[_Checkpoint, ...]


@dataclass(frozen=True, slots=True)
class _Step:
    title: str
    share: float  # of the duration
    phases: tuple[_Phase, ...]


@dataclass(slots=True)
class _Outcome:
    """What the timeline observed, for the summary."""

    missed: list[str] = field(default_factory=list)
    detection_seconds: float | None = None
    maintenance_exits: dict[str, int | None] = field(default_factory=dict)  # open/close -> exit status
    mhv_window: str | None = None  # the id `depmon maintenance open` printed
    mhv_honoured: bool = False  # the daemon showed MHV in maintenance once the window was open


class _Demo:
    def __init__(self, duration: float, listen: str, narrator: _Narrator) -> None:
        self.duration = duration
        self.listen = listen
        self.say = narrator.say
        self.narrator = narrator

    def run(self) -> int:
        with SimulatedEnvironment(environment="demo", traffic=(_TRAFFIC,), people=DEMO_PEOPLE) as env:
            daemon = _start_daemon(env, self.listen, self.narrator)
            if isinstance(daemon, int):
                return daemon
            watcher = _PageWatcher(env, self.narrator)
            try:
                self._header(env, daemon)
                watcher.start()
                outcome = self._play(env, daemon, watcher)
                self._wait(_SETTLE_SECONDS)
            finally:
                watcher.stop()
                status = _stop_daemon(daemon, self.narrator)
            self.say("demo", f"daemon stopped (exit status {status})")
            return self._summary(env, outcome, status)

    def _header(self, env: SimulatedEnvironment, daemon: DaemonProcess) -> None:
        config = env.config
        line = self.narrator.line
        line("depmon demo: the real daemon against a simulated VA environment and a simulated PagerDuty")
        line(
            f"  simulated: {len(env.upstreams)} upstreams on 127.0.0.1 (health, OAuth2 token and TLS endpoints), "
            f"PagerDuty events {env.pagerduty.events_url}, REST {env.pagerduty.api_url}"
        )
        line(f"  daemon:    {len(config.dependencies)} dependencies, {len(config.features)} app features")
        owner = config.contacts[_PRODUCT_OWNER]
        line(
            f"  people:    the {owner.role} is PagerDuty user {owner.pagerduty_user} and Slack member "
            f"{owner.slack_user}; responder requests are made as {config.pagerduty.requester_id}"
        )
        line(f"  status:    {daemon.url}/status")
        line(f"  metrics:   {daemon.url}/metrics")
        line(f"  page:      {daemon.url}/")
        line(f"  timeline:  {len(_STEP_TITLES)} steps over {self.duration:g}s; Ctrl-C stops")
        line()

    # -- playing ---------------------------------------------------------------------------------

    def _play(self, env: SimulatedEnvironment, daemon: DaemonProcess, watcher: _PageWatcher) -> _Outcome:
        outcome = _Outcome()
        steps = _timeline(env, daemon, self.duration, outcome, self.say)
        self.narrator.restart_clock()
        planned_end = 0.0
        for number, step in enumerate(steps, start=1):
            planned_end += step.share * self.duration
            self.narrator.line(f"[step {number}/{len(steps)}, {self.narrator.elapsed:.1f}s elapsed] {step.title}")
            wait = max(_MIN_WAIT, 2 * step.share * self.duration)
            for phase in step.phases:
                if phase.narration:
                    self.say("demo", phase.narration)
                if phase.act is not None:
                    phase.act()
                for checkpoint in phase.checkpoints:
                    if self._wait_for(checkpoint.holds, wait):
                        watcher.catch_up()  # what the check saw is narrated before it
                        self.say("check", f"ok: {checkpoint.description}")
                    else:
                        self.say("check", f"MISSED after {wait:.0f}s: {checkpoint.description}")
                        outcome.missed.append(f"step {number}: {checkpoint.description}")
            self._show_features(daemon)
            self._wait(planned_end - self.narrator.elapsed)
        return outcome

    def _wait_for(self, holds: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if holds():
                    return True
            except (httpx.HTTPError, KeyError, ValueError, TypeError):
                pass  # the daemon is busy or restarting its view: ask again
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)

    @staticmethod
    def _wait(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _show_features(self, daemon: DaemonProcess) -> None:
        try:
            features = daemon.status()["features"]
        except (httpx.HTTPError, KeyError, ValueError):
            return
        by_state: dict[str, list[str]] = {}
        for feature in features.values():
            by_state.setdefault(str(feature["state"]), []).append(str(feature["name"]))
        parts = []
        for state in ("down", "maintenance", "degraded", "unknown", "ok"):
            names = by_state.get(state)
            if names:
                parts.append(f"{len(names)} {state}" + ("" if state == "ok" else f" ({', '.join(names)})"))
        self.say("status", "app features: " + "; ".join(parts))

    # -- the summary -----------------------------------------------------------------------------

    def _escalation(self, env: SimulatedEnvironment, events: list[ReceivedEvent]) -> list[tuple[str, bool]]:
        """Print each scripted page's VA severity, postmortem and whom it notifies; one check per page."""
        config = env.config
        owner = config.contacts[_PRODUCT_OWNER]
        pages = {dep: _first_trigger(env, events, dep) for dep in _PAGE_ESCALATION}
        width = max(len(env.dedup_key(dep)) for dep in pages)
        line = self.narrator.line
        line("Pages at their trigger: custom_details.va_severity and escalation")
        line(f"  {'dedup key':<{width}}  severity  postmortem    notify")
        checks: list[tuple[str, bool]] = []
        for dep, body in pages.items():
            details = (body.get("payload") or {}).get("custom_details") or {}
            escalation = details.get("escalation") or {}
            severity, postmortem = details.get("va_severity"), escalation.get("postmortem_required")
            notify = [str(who) for who in escalation.get("notify") or []]
            owner_named = any(who.startswith(f"{owner.role} ({owner.name}") for who in notify)
            line(
                f"  {env.dedup_key(dep):<{width}}  {severity or '-':<8}  "
                f"{'required' if postmortem else 'not required' if postmortem is False else '-':<12}  "
                f"{', '.join(notify) or '-'}"
            )
            want_severity, want_postmortem = _PAGE_ESCALATION[dep]
            name = config.dependencies[dep].name
            if want_postmortem:
                text = f"{name} page: {want_severity}, postmortem required, the {owner.role} named"
                ok = severity == want_severity and postmortem is True and owner_named
            else:
                text = f"{name} page: {want_severity}, no postmortem required"
                ok = severity == want_severity and postmortem is False
            checks.append((text, ok))
        return checks

    def _summary(self, env: SimulatedEnvironment, outcome: _Outcome, exit_status: int | None) -> int:
        line = self.narrator.line
        # EVSS pages for its own failure (step 2), then counts under SSOe's page (step 6); Caseflow
        # (step 3) is no child of SSOe: its page stays open until everything recovers.
        expected = {env.dedup_key(dep): (1, 1) for dep in _PAGE_ESCALATION}
        expected[env.dedup_key("mhv")] = (0, 0)
        expected[env.dedup_key(_TRAFFIC)] = (1, 1)  # its traffic fails while its health path passes
        expected.update({env.dedup_key(dep): (0, 0) for dep in _SIGNED_IN_CHILDREN if dep != "evss"})
        events = env.pagerduty.events
        received: dict[str, tuple[int, int]] = {}
        for event in events:
            triggers, resolves = received.get(event.dedup_key, (0, 0))
            received[event.dedup_key] = (
                triggers + (event.action == "trigger"),
                resolves + (event.action == "resolve"),
            )
        keys = [*expected, *sorted(set(received) - set(expected))]
        width = max(len(key) for key in keys)
        line()
        line("Summary: pages expected vs received by the simulated PagerDuty (triggers / resolves)")
        line(f"  {'dedup key':<{width}}  expected  received")
        pages_match = True
        for key in keys:
            want, got = expected.get(key, (0, 0)), received.get(key, (0, 0))
            verdict = "ok" if want == got else "MISMATCH"
            pages_match = pages_match and want == got
            line(f"  {key:<{width}}  {want[0]} / {want[1]}     {got[0]} / {got[1]}     {verdict}")
        escalation_checks = self._escalation(env, events)

        checks = [
            ("the pages match the script", pages_match),
            *_content_checks(env, events),
            *escalation_checks,
            _slack_check(env),
            _evss_people_check(env),
            _maintenance_check(env, outcome),
            ("no event rejected by PagerDuty (all schema-valid)", not env.pagerduty.rejected_events),
            ("every timeline checkpoint reached", not outcome.missed),
            ("the daemon stopped cleanly (exit status 0)", exit_status == 0),
        ]
        line("Checks")
        for text, ok in checks:
            line(f"  {'ok  ' if ok else 'FAIL'}  {text}")
        for missed in outcome.missed:
            line(f"        missed: {missed}")
        target = (env.timing.failure_threshold - 1) * env.timing.confirm_interval + 1.0
        if outcome.detection_seconds is not None:
            line(
                f"Timing: EVSS first failing probe -> page at PagerDuty in {outcome.detection_seconds:.2f}s "
                f"(target <= {target:.2f}s)"
            )
        passed = all(ok for _, ok in checks)
        line(f"Result: {'PASS' if passed else 'FAIL'} after {self.narrator.elapsed:.1f}s")
        return EXIT_OK if passed else EXIT_MISMATCH


_STEP_TITLES = (
    "All healthy",
    "EVSS fails",
    "Caseflow fails (Appeals, a low-frequency feature)",
    "VA Notify's traffic fails while its health check passes (a traffic signal)",
    "MHV enters a maintenance window (`depmon maintenance open`)",
    "MHV fails inside its maintenance window",
    "SSOe OAuth times out",
    "Everything recovers",
)


def _timeline(
    env: SimulatedEnvironment,
    daemon: DaemonProcess,
    duration: float,
    outcome: _Outcome,
    say: Callable[..., None],
) -> list[_Step]:
    """The scripted steps of SPEC section 9, with the checkpoints each must reach."""
    config = env.config
    evss, mhv, ssoe = env.upstream("evss"), env.upstream("mhv"), env.upstream("ssoe-oauth")
    caseflow = env.upstream("caseflow")
    evss_failed_at: list[float] = []
    slack_shown: list[bool] = []

    def dependencies() -> dict[str, Any]:
        found: dict[str, Any] = daemon.status()["dependencies"]
        return found

    def features() -> dict[str, Any]:
        found: dict[str, Any] = daemon.status()["features"]
        return found

    def all_up() -> bool:
        return all(dep["state"] == "up" for dep in dependencies().values())

    def all_ok() -> bool:
        return all(feature["state"] == "ok" for feature in features().values())

    def paged(dependency: str, action: str) -> Callable[[], bool]:
        key = env.dedup_key(dependency)
        return lambda: any(event.action == action for event in env.pagerduty.events_for(key))

    def evss_page_timed() -> bool:
        events = [e for e in env.pagerduty.events_for(env.dedup_key("evss")) if e.action == "trigger"]
        if not events:
            return False
        failures = daemon.matching("probe_failed", since=evss_failed_at[0], dependency="evss")
        if failures:
            outcome.detection_seconds = events[0].received_at - log_time(failures[0])
        return True

    def fail_evss() -> None:
        evss_failed_at.append(time.time())
        evss.fail_with(503)

    def features_down(names: tuple[str, ...]) -> Callable[[], bool]:
        return lambda: all(feature["state"] == "down" for feature in features().values() if feature["name"] in names)

    def evss_on_slack() -> bool:
        posts = {channel: _evss_down_post(env, channel) for channel in _EVSS_SLACK_CHANNELS}
        found = [post for post in posts.values() if post is not None]
        if len(found) < len(posts):
            return False
        if not slack_shown:
            slack_shown.append(True)
            wanted = ("Features impacted:", "If it will", "Attention:")
            facts = [line for line in _slack_lines(found[0]) if line.startswith(wanted)]
            say("Slack", f"posted to {' and '.join(posts)}: {_slack_header(found[0])}", *facts)
        return True

    def open_window() -> None:
        # Long enough to outlast the demo: the close at the end ends it, as an engineer would.
        hours = math.ceil((2 * duration + 600) / 3600)
        status, printed = _maintenance_cli(env, say, "open", "mhv", "--for", f"{hours}h", "--message", _MHV_MESSAGE)
        outcome.maintenance_exits["open"] = status
        match = re.match(r"maintenance window (\w+) opened", printed)
        if status == 0 and match:
            outcome.mhv_window = match.group(1)

    def end_window() -> None:
        if outcome.mhv_window is not None:
            status, _ = _maintenance_cli(env, say, "close", outcome.mhv_window)
            outcome.maintenance_exits["close"] = status

    def mhv_in_maintenance() -> bool:
        outcome.mhv_honoured = dependencies()["mhv"]["state"] == "maintenance"
        return outcome.mhv_honoured

    def mhv_window_holds_message() -> bool:
        window = _mhv_window(env, outcome)
        return window is not None and window.description == f"USER_MESSAGE:{_MHV_MESSAGE}"

    def mhv_window_ended() -> bool:
        window = _mhv_window(env, outcome)
        return window is not None and window.end <= datetime.now(UTC)

    def recover() -> None:
        for upstream in (ssoe, evss, caseflow, mhv):
            upstream.clear_faults()
        env.set_traffic_failures(_TRAFFIC, 0.0)

    def traffic_page_says_so() -> bool:
        body = _first_trigger(env, env.pagerduty.events, _TRAFFIC)
        details = (body.get("payload") or {}).get("custom_details") or {}
        traffic = next((e for e in details.get("evidence", []) if e.get("query")), None)
        disagreement = details.get("disagreement") or {}
        if traffic is None or disagreement.get("traffic") != "failing":
            return False
        say(
            "PagerDuty",
            f"{config.dependencies[_TRAFFIC].name} page evidence: {traffic['detail']}",
            f"query: {traffic['query']}",
            f"disagreement: traffic failing ({', '.join(disagreement['failing'])}), "
            f"probes passing ({', '.join(disagreement['passing'])}): {disagreement['suggests']}",
        )
        return True

    bearer_probes = [
        (dep_id, probe.name)
        for dep_id, probe in config.iter_probes()
        if dep_id in _SIGNED_IN_CHILDREN and getattr(probe, "bearer_from", None)
    ]
    every_feature = tuple(feature.name for feature in config.features.values())
    children = ", ".join(config.dependencies[dep].name for dep in _SIGNED_IN_CHILDREN)
    shares = (0.09, 0.14, 0.09, 0.1, 0.08, 0.12, 0.2, 0.18)
    phases: tuple[tuple[_Phase, ...], ...] = (
        (
            _Phase(
                None,
                None,
                (
                    _Checkpoint(f"all {len(config.dependencies)} dependencies up", all_up),
                    _Checkpoint(f"all {len(config.features)} app features ok", all_ok),
                ),
            ),
        ),
        (
            _Phase(
                "EVSS's endpoint answers HTTP 503",
                fail_evss,
                (
                    _Checkpoint("PagerDuty received one page for EVSS", evss_page_timed),
                    _Checkpoint(f"EVSS page posted to Slack ({', '.join(_EVSS_SLACK_CHANNELS)})", evss_on_slack),
                    _Checkpoint(
                        f"the {config.contacts[_PRODUCT_OWNER].role} requested as a responder on EVSS's PagerDuty "
                        "incident, with a note naming the criteria met",
                        lambda: _evss_people_check(env)[1],
                    ),
                    _Checkpoint(f"{', '.join(_EVSS_FEATURES)} down", features_down(_EVSS_FEATURES)),
                ),
            ),
        ),
        (
            _Phase(
                "Caseflow's endpoint answers HTTP 503",
                lambda: caseflow.fail_with(503),
                (
                    _Checkpoint("PagerDuty received one page for Caseflow", paged("caseflow", "trigger")),
                    _Checkpoint("Appeals down", features_down(("Appeals",))),
                ),
            ),
        ),
        (
            _Phase(
                f"{_TRAFFIC_FAILING:.0%} of vets-api's calls to {config.dependencies[_TRAFFIC].name} fail "
                "(simulated Datadog); its health path still answers 200",
                lambda: env.set_traffic_failures(_TRAFFIC, _TRAFFIC_FAILING),
                (
                    _Checkpoint(
                        f"PagerDuty received one page for {config.dependencies[_TRAFFIC].name}",
                        paged(_TRAFFIC, "trigger"),
                    ),
                    _Checkpoint(
                        "the page carries the traffic's value and query, and says traffic and health check disagree",
                        traffic_page_says_so,
                    ),
                    _Checkpoint(
                        "/status says they disagree too",
                        lambda: (dependencies()[_TRAFFIC]["disagreement"] or {}).get("traffic") == "failing",
                    ),
                ),
            ),
        ),
        (
            _Phase(
                "the on-call engineer opens a maintenance window on MHV's PagerDuty service",
                open_window,
                (
                    _Checkpoint(
                        f"PagerDuty holds the window with the app's message USER_MESSAGE:{_MHV_MESSAGE}",
                        mhv_window_holds_message,
                    ),
                    _Checkpoint("the daemon honours it: MHV in maintenance", mhv_in_maintenance),
                ),
            ),
        ),
        (
            _Phase(
                "MHV's endpoint answers HTTP 503",
                lambda: mhv.fail_with(503),
                (
                    _Checkpoint(
                        "MHV's probe down, MHV still in maintenance",
                        lambda: (
                            dependencies()["mhv"]["probes"]["base"]["state"] == "down"
                            and dependencies()["mhv"]["state"] == "maintenance"
                        ),
                    ),
                    _Checkpoint(
                        "Secure Messaging in maintenance",
                        lambda: features()["secure_messaging"]["state"] == "maintenance",
                    ),
                    _Checkpoint("no page for MHV", lambda: not env.pagerduty.events_for(env.dedup_key("mhv"))),
                ),
            ),
        ),
        (
            _Phase(
                "the SSOe token endpoint stops answering",
                ssoe.hang,
                (
                    _Checkpoint("PagerDuty received one page for SSOe OAuth", paged("ssoe-oauth", "trigger")),
                    _Checkpoint(f"all {len(every_feature)} app features down", features_down(every_feature)),
                    _Checkpoint(
                        f"{children} down because of SSOe OAuth, their probes failing without a token",
                        lambda: all(
                            dependencies()[dep]["cause"] == "ssoe-oauth"
                            and dependencies()[dep]["probes"][probe]["ok"] is False
                            for dep, probe in bearer_probes
                        ),
                    ),
                ),
            ),
        ),
        (
            _Phase(
                "SSOe, EVSS, Caseflow and MHV answer again",
                recover,
                (_Checkpoint("MHV healthy again, inside its window", lambda: dependencies()["mhv"]["health"] == "up"),),
            ),
            _Phase(
                "the on-call engineer ends MHV's maintenance window",
                end_window,
                (
                    _Checkpoint("MHV's window ended at PagerDuty", mhv_window_ended),
                    _Checkpoint(f"all {len(config.dependencies)} dependencies up", all_up),
                    _Checkpoint(f"all {len(config.features)} app features ok", all_ok),
                    _Checkpoint("PagerDuty received the resolve for EVSS", paged("evss", "resolve")),
                    _Checkpoint("PagerDuty received the resolve for Caseflow", paged("caseflow", "resolve")),
                    _Checkpoint("PagerDuty received the resolve for SSOe OAuth", paged("ssoe-oauth", "resolve")),
                    _Checkpoint(
                        f"PagerDuty received the resolve for {config.dependencies[_TRAFFIC].name}",
                        paged(_TRAFFIC, "resolve"),
                    ),
                ),
            ),
        ),
    )
    return [_Step(title, share, phase) for title, share, phase in zip(_STEP_TITLES, shares, phases, strict=True)]


def _maintenance_cli(env: SimulatedEnvironment, say: Callable[..., None], *args: str) -> tuple[int | None, str]:
    """Run the real `depmon maintenance ARGS` on the simulated config, narrated; (exit status, stdout)."""
    shown = " ".join(f'"{arg}"' if " " in arg or "|" in arg else arg for arg in args)
    say("shell", f"$ depmon maintenance {shown}")
    command = [sys.executable, "-m", "monitor.entry", "maintenance", *args, "--config", str(env.config_dir)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_CLI_TIMEOUT, check=False, env=simulation_environ()
        )
    except subprocess.TimeoutExpired:
        say("depmon", f"no answer within {_CLI_TIMEOUT:.0f}s")
        return None, ""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if lines:
        say("depmon", lines[0], *lines[1:])
    if done.returncode != 0:
        say("depmon", f"exit status {done.returncode}")
    return done.returncode, done.stdout


def _mhv_window(env: SimulatedEnvironment, outcome: _Outcome) -> MaintenanceWindow | None:
    """The fake PagerDuty's record of the window `depmon maintenance open` created, or None."""
    return next((w for w in env.pagerduty.windows if w.id == outcome.mhv_window), None)


def _slack_header(post: SlackPost) -> str:
    blocks = post.message.get("blocks") or [{}]
    return str((blocks[0].get("text") or {}).get("text", ""))


def _slack_lines(post: SlackPost) -> list[str]:
    """The lines under the message's header (features, severity, links, maintenance hint) as plain text."""
    lines: list[str] = []
    for block in (post.message.get("blocks") or [])[1:]:
        texts = [str((block.get("text") or {}).get("text", ""))]
        texts += [str(element.get("text", "")) for element in block.get("elements") or []]
        for text in texts:
            lines += [_plain(line) for line in text.splitlines() if line.strip()]
    return lines


def _plain(mrkdwn: str) -> str:
    """Slack mrkdwn as the terminal shows it: no bold markers, links as their text, escapes undone."""
    text = re.sub(r"<[^|>]+\|([^>]+)>", r"\1", mrkdwn).replace("*", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _evss_down_post(env: SimulatedEnvironment, channel: str) -> SlackPost | None:
    """The first post to a channel saying EVSS is down, or None."""
    name = env.config.dependencies["evss"].name
    return next((post for post in env.slack.posts_to(channel) if _slack_header(post) == f"Down: {name}"), None)


def _slack_check(env: SimulatedEnvironment) -> tuple[str, bool]:
    """The EVSS page reached both channels, naming its four features."""
    posts = [_evss_down_post(env, channel) for channel in _EVSS_SLACK_CHANNELS]
    features = [
        next((line for line in _slack_lines(post) if line.startswith("Features impacted:")), "") if post else ""
        for post in posts
    ]
    ok = all(all(name in line for name in _EVSS_FEATURES) for line in features)
    return f"EVSS page posted to Slack ({', '.join(_EVSS_SLACK_CHANNELS)}), naming its features", ok


def _evss_people_check(env: SimulatedEnvironment) -> tuple[str, bool]:
    """The EVSS page reached the Product Owner: exactly one responder request for their PagerDuty
    user on EVSS's incident, made as the requester, one note, and their mention in both Slack posts."""
    config = env.config
    owner = config.contacts[_PRODUCT_OWNER]
    incidents = env.pagerduty.incidents_of(env.dedup_key("evss"))
    requests = [body for incident in incidents for body in incident.responder_requests]
    targets = [item["responder_request_target"] for body in requests for item in body["responder_request_targets"]]
    notes = [note for incident in incidents for note in incident.notes]
    posts = [_evss_down_post(env, channel) for channel in _EVSS_SLACK_CHANNELS]
    mention = f"Attention: <@{owner.slack_user}>"
    ok = (
        targets == [{"id": owner.pagerduty_user, "type": "user_reference"}]
        and all(body["requester_id"] == config.pagerduty.requester_id for body in requests)
        and len(notes) == 1
        and all(post is not None and mention in _slack_lines(post) for post in posts)
    )
    text = (
        f"EVSS page reached the {owner.role}: one responder request ({owner.pagerduty_user}), one note, "
        f"the Slack mention <@{owner.slack_user}>"
    )
    return text, ok


def _maintenance_check(env: SimulatedEnvironment, outcome: _Outcome) -> tuple[str, bool]:
    """`depmon maintenance open` made MHV's window with the app's message, the daemon honoured it
    (MHV in maintenance, never paged), `close` ended it."""
    window = _mhv_window(env, outcome)
    ok = (
        outcome.maintenance_exits == {"open": 0, "close": 0}
        and outcome.mhv_honoured
        and not env.pagerduty.events_for(env.dedup_key("mhv"))
        and window is not None
        and window.description == f"USER_MESSAGE:{_MHV_MESSAGE}"
        and window.end <= datetime.now(UTC)
    )
    return "MHV window opened with `depmon maintenance open`, honoured, ended with `close`", ok


def _first_trigger(env: SimulatedEnvironment, events: list[ReceivedEvent], dependency: str) -> dict[str, Any]:
    """The body of a dependency's first trigger, or {} when it never paged."""
    key = env.dedup_key(dependency)
    return next((e.body for e in events if e.dedup_key == key and e.action == "trigger"), {})


def _content_checks(env: SimulatedEnvironment, events: list[ReceivedEvent]) -> list[tuple[str, bool]]:
    """What the two pages must say: the features they name and the playbook they link first."""
    config = env.config
    evss, ssoe = _first_trigger(env, events, "evss"), _first_trigger(env, events, "ssoe-oauth")
    summary = str((evss.get("payload") or {}).get("summary", ""))
    playbook = config.playbooks[_PLAYBOOK].url
    ssoe_features = [
        item.get("id")
        for item in ((ssoe.get("payload") or {}).get("custom_details") or {}).get("impacted_features", [])
    ]
    return [
        (f"EVSS page names {', '.join(_EVSS_FEATURES)}", all(name in summary for name in _EVSS_FEATURES)),
        (
            f"EVSS page links the {config.playbooks[_PLAYBOOK].title} first",
            bool(evss.get("links")) and evss["links"][0].get("href") == playbook,
        ),
        (f"SSOe OAuth page lists all {len(config.features)} app features", ssoe_features == list(config.features)),
    ]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the demo runs, so the daemon and the servers are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
