"""The paging path under faults (issue 9), end to end: `depmon run` as a subprocess on the simulator.

One test, or a small class, per numbered item of the issue. Each runs a small dedicated config
(`write_source`: a few dependencies with one http probe, one PagerDuty service and one feature
each) so that the daemon starts fast and every page can be told apart, with fast timing: probes
every 0.5 s, two failures 0.2 s apart to go down, two successes to come back, maintenance
windows polled every 0.5 s. Absences are proved against a later positive event at the fake
PagerDuty (or in the daemon's log), never by sleeping alone.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.config import Timing
from monitor.sim.environment import ROUTING_KEY, SimulatedEnvironment
from monitor.sim.fake_pagerduty import ReceivedEvent
from monitor.sim.loopback import Request
from monitor.store import SQLiteStore
from tests.harness import (
    WAIT,
    DaemonProcess,
    SignalAfterSpawn,
    actions,
    all_up,
    metric_value,
    running,
    wait_for,
    wait_for_event,
)

pytestmark = pytest.mark.e2e

FAST = Timing(interval=0.5, timeout=0.4, failure_threshold=2, success_threshold=2, confirm_interval=0.2)
POLL = 0.5  # seconds between maintenance-window polls
ROTATED_KEY = "depmonrotatedroutingkey000000002"


# -- the simulated world ------------------------------------------------------------------------------


def feature_of(dependency: str) -> str:
    """The one app feature that requires `dependency` in a `write_source` config."""
    return f"{dependency}_feature"


def service_of(dependency: str) -> str:
    """The PagerDuty service id of `dependency` in a `write_source` config."""
    return "P" + dependency.upper().replace("-", "")


def write_source(
    directory: Path, dependencies: Mapping[str, Sequence[str]], significant_duration: str, retention: str
) -> Path:
    """A config with one http probe, one PagerDuty service and one feature per dependency (id -> depends_on)."""
    document = {
        "monitor": {"environment": "e2e", "significant_duration": significant_duration, "retention": retention},
        "dependencies": {
            dep: {
                "name": dep.upper(),
                "pagerduty_service": service_of(dep),
                "depends_on": list(parents),
                "probes": [{"name": "base", "kind": "http", "url": f"https://{dep}.example.test/health"}],
            }
            for dep, parents in dependencies.items()
        },
        "features": {
            feature_of(dep): {"name": f"{dep.upper()} app", "requires": [dep], "userbase_share": 0.2}
            for dep in dependencies
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "depmon.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def simulated(
    workdir: Path,
    dependencies: Mapping[str, Sequence[str]],
    *,
    significant_duration: str = "30m",
    resolve_hold: float = 1.0,
    retention: str = "90d",
) -> Iterator[SimulatedEnvironment]:
    """A simulator for a `write_source` config, with fast timing."""
    source = write_source(workdir / "source", dependencies, significant_duration, retention)
    (workdir / "sim").mkdir(parents=True, exist_ok=True)
    with SimulatedEnvironment(
        workdir / "sim",
        environment="e2e",
        timing=FAST,
        maintenance_poll_interval=POLL,
        resolve_hold=resolve_hold,
        source=source,
    ) as sim:
        yield sim


def state(daemon: DaemonProcess, dep_id: str) -> str:
    """The state /status gives a dependency."""
    return daemon.dependency_state(dep_id)


def probe_state(daemon: DaemonProcess, dep_id: str) -> str:
    """The state of a dependency's one probe in /status."""
    return str(daemon.status()["dependencies"][dep_id]["probes"]["base"]["state"])


def events_of(sim: SimulatedEnvironment, dep_id: str, action: str | None = None) -> list[ReceivedEvent]:
    """The events the fake PagerDuty accepted for a dependency (of one action), oldest first."""
    events = sim.pagerduty.events_for(sim.dedup_key(dep_id))
    return [e for e in events if action is None or e.action == action]


def stamp(entry: Mapping[str, Any]) -> float:
    """The UNIX time of a daemon log line."""
    return datetime.fromisoformat(str(entry["timestamp"])).timestamp()


def edit_config(sim: SimulatedEnvironment, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the daemon's config file through `edit`, which changes the parsed document in place."""
    document = yaml.safe_load(sim.config_file.read_text(encoding="utf-8"))
    edit(document)
    sim.config_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def without(dep_id: str) -> Callable[[dict[str, Any]], None]:
    """An `edit_config` edit that removes a dependency and its feature."""

    def edit(document: dict[str, Any]) -> None:
        del document["dependencies"][dep_id]
        del document["features"][feature_of(dep_id)]

    return edit


def reload(daemon: DaemonProcess) -> dict[str, Any]:
    """SIGHUP the daemon and wait until it logs that the new config is in force."""
    before = daemon.count("config_reloaded")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.count("config_reloaded") > before, WAIT, "the reload")
    return daemon.matching("config_reloaded")[-1]


def logged(daemon: DaemonProcess, event: str, times: int, **fields: Any) -> Callable[[], bool]:
    """A `wait_for` predicate: the daemon has logged `event` (with `fields`) at least `times` times."""
    return lambda: daemon.count(event, **fields) >= times


def metrics(daemon: DaemonProcess) -> str:
    """The /metrics exposition."""
    return daemon.get("/metrics").text


# -- 1. Events API errors: only a 400 is final -------------------------------------------------------


class TestEventsApiErrors:
    def test_proxy_and_url_errors_are_retried_until_each_page_is_delivered_once(self, tmp_path: Path) -> None:
        """Pages answered 403, 404, 401, 407 and 413 are retried and each delivered once, nothing dropped."""
        statuses = (403, 404, 401, 407, 413)
        deps = ("a", "b", "c", "d", "e")
        with simulated(tmp_path, dict.fromkeys(deps, ())) as sim, running(sim) as daemon:
            sim.pagerduty.answer_in_turn(*statuses)
            for dep in deps:
                sim.upstream(dep).fail_with(503)
            # Five failed attempts shared by five keys: at most 1 + 2 + 4 + 8 s of backoff on one key.
            for dep in deps:
                wait_for_event(sim, dep, "trigger", timeout=WAIT + 15)
            retried = sorted(entry["http_status"] for entry in daemon.matching("pagerduty_event_retry"))
            print(f"retried answers: {retried}; enqueue requests: {sim.pagerduty.enqueue_requests}")
            assert retried == sorted(statuses)
            assert sorted(status for status, _ in sim.pagerduty.faulted_events) == sorted(statuses)

            for dep in deps:
                sim.upstream(dep).clear_faults()
            for dep in deps:
                wait_for_event(sim, dep, "resolve")
            for dep in deps:
                assert actions(sim, dep) == ["trigger", "resolve"], dep
            assert len(sim.pagerduty.alerts) == len(deps)
            assert daemon.count("pagerduty_event_dropped") == 0
            exposition = metrics(daemon)
            assert not metric_value(exposition, "depmon_pagerduty_events_total", outcome="dropped")
            assert metric_value(exposition, "depmon_pagerduty_events_total", action="trigger", outcome="retried") == 5

    def test_a_400_is_dropped_at_once_and_counted(self, tmp_path: Path) -> None:
        """A trigger answered 400 is never sent again and is counted as outcome dropped; the resolve still goes out."""
        with simulated(tmp_path, {"a": ()}) as sim, running(sim) as daemon:
            sim.pagerduty.answer_in_turn(400)
            sim.upstream("a").fail_with(503)
            dropped = wait_for(lambda: daemon.find("pagerduty_event_dropped"), WAIT, "the dropped trigger")
            assert dropped["http_status"] == 400
            assert dropped["action"] == "trigger"
            exposition = wait_for(
                lambda: (
                    (text := metrics(daemon))
                    and metric_value(text, "depmon_pagerduty_events_total", action="trigger", outcome="dropped") == 1
                    and text
                ),
                WAIT,
                "the dropped trigger counted",
            )
            assert not metric_value(exposition, "depmon_pagerduty_events_total", action="trigger", outcome="retried")

            # The positive event after it: the recovery's resolve, accepted; the trigger never came again.
            sim.upstream("a").clear_faults()
            wait_for_event(sim, "a", "resolve")
            assert actions(sim, "a") == ["resolve"]
            assert [(status, body and body["event_action"]) for status, body in sim.pagerduty.faulted_events] == [
                (400, "trigger")
            ]
            assert daemon.count("pagerduty_event_retry") == 0


# -- 2. Orphaned triggers ---------------------------------------------------------------------------


def old_trigger(sim: SimulatedEnvironment, dep_id: str) -> dict[str, Any]:
    """A trigger as an older depmon wrote it to the outbox (no routing key: the sender adds it)."""
    name = dep_id.upper()
    return {
        "event_action": "trigger",
        "dedup_key": sim.dedup_key(dep_id),
        "client": "depmon",
        "payload": {
            "summary": f"{name} down: 1 app feature impacted ({name} app) [e2e]",
            "severity": "critical",
            "source": "depmon/e2e",
            "component": dep_id,
            "custom_details": {"impacted_features": [{"id": feature_of(dep_id), "name": f"{name} app"}]},
        },
    }


def test_orphaned_triggers_left_by_an_older_depmon_are_resolved(tmp_path: Path) -> None:
    """Outbox triggers without their incident, one delivered and one pending, are resolved on a healthy start."""
    with simulated(tmp_path, {"a": (), "b": (), "c": ()}) as sim:
        created = time.time() - 60
        with SQLiteStore(sim.state_path, environment="e2e") as store:
            delivered = store.enqueue(sim.dedup_key("a"), "trigger", old_trigger(sim, "a"), created)
            store.enqueue(sim.dedup_key("b"), "trigger", old_trigger(sim, "b"), created)
            # The older depmon delivered a's trigger, then was killed before writing the incident.
            with httpx.Client(trust_env=False) as http:
                answer = http.post(
                    f"{sim.pagerduty.events_url}/v2/enqueue", json={**old_trigger(sim, "a"), "routing_key": ROUTING_KEY}
                )
            assert answer.status_code == 202
            store.mark_accepted(delivered, created + 1)
        assert [alert.dedup_key for alert in sim.pagerduty.open_alerts] == [sim.dedup_key("a")]

        with running(sim) as daemon:
            wait_for_event(sim, "a", "resolve")
            wait_for_event(sim, "b", "resolve")
            reconciled = sorted(entry["dependency"] for entry in daemon.matching("incident_reconciled"))
            assert reconciled == ["a", "b"]
            assert actions(sim, "a") == ["trigger", "resolve"]  # the trigger is the older depmon's
            assert actions(sim, "b") == ["trigger", "resolve"]  # the pending trigger delivered, then resolved
            assert actions(sim, "c") == []
            assert sim.pagerduty.open_alerts == []
            wait_for(lambda: daemon.status()["incidents"] == [], WAIT, "no open incident left")


# -- 3. A maintenance window over an open incident ----------------------------------------------------


def test_a_window_over_an_open_incident_holds_updates_and_escalation_until_it_ends(tmp_path: Path) -> None:
    """While a window holds over an open incident nothing reaches PagerDuty; after it the escalation comes."""
    with (
        simulated(tmp_path, {"a": ()}, significant_duration="2s") as sim,
        running(sim) as daemon,
    ):
        sim.upstream("a").fail_with(503)
        trigger = wait_for_event(sim, "a", "trigger")
        opened_at = stamp(wait_for(lambda: daemon.find("incident_triggered", dependency="a"), WAIT, "the incident"))
        # The window is open as soon as the poller reads it (within 0.5 s), before the escalation
        # falls due (2 s after the incident opened), and ends 3 to 4 s from now while A is still
        # down. Whole seconds: PagerDuty (and the fake) give window times to the second.
        now = datetime.now(UTC).replace(microsecond=0)
        start, end = now - timedelta(seconds=1), now + timedelta(seconds=4)
        sim.pagerduty.add_window([sim.service_id("a")], start, end, "planned work on A")
        entered = wait_for(
            lambda: daemon.find("dependency_state_changed", dependency="a", new="maintenance"),
            WAIT,
            "A in maintenance",
        )
        print(
            f"incident opened {opened_at:.2f}, window {start.timestamp():.2f}-{end.timestamp():.2f}, in force at "
            f"{stamp(entered):.2f}; escalation due {opened_at + 2:.2f}"
        )
        assert stamp(entered) < opened_at + 2 < end.timestamp(), "the escalation did not fall due inside the window"
        assert state(daemon, "a") == "maintenance"

        escalation = wait_for_event(sim, "a", "trigger", count=2, timeout=WAIT + 6)
        print(f"escalation received {escalation.received_at - end.timestamp():+.2f}s after the window ended")
        assert escalation.received_at >= end.timestamp()
        assert actions(sim, "a")[:2] == ["trigger", "trigger"]
        details = escalation.body["payload"]["custom_details"]
        assert details["escalation"]["escalated"] is True
        assert trigger.body["payload"]["custom_details"]["escalation"]["escalated"] is False
        assert details["impacted_features"] == trigger.body["payload"]["custom_details"]["impacted_features"]
        assert escalation.summary == trigger.summary  # never "0 app features impacted"
        for event in ("incident_updated", "incident_escalated"):
            assert all(stamp(entry) >= end.timestamp() for entry in daemon.matching(event)), event
        assert daemon.count("incident_updated") == 0


# -- 4. Reloads build a whole new runtime ----------------------------------------------------------------


class TestReload:
    def test_a_dependency_added_by_a_reload_does_not_page_in_its_window(self, tmp_path: Path) -> None:
        """A dependency added by SIGHUP whose service is in maintenance fails without paging until the window goes."""
        with simulated(tmp_path, {"a": (), "n": ()}) as sim:
            full = sim.config_file.read_text(encoding="utf-8")
            edit_config(sim, without("n"))
            with running(sim) as daemon:
                window = sim.open_maintenance("n")
                sim.upstream("n").fail_with(503)
                sim.config_file.write_text(full, encoding="utf-8")
                reload(daemon)
                wait_for(lambda: probe_state(daemon, "n") == "down", WAIT, "N's probe down")
                assert state(daemon, "n") == "maintenance"

                removed_at = time.time()
                sim.pagerduty.remove_window(window)
                trigger = wait_for_event(sim, "n", "trigger")
                assert trigger.received_at >= removed_at
                triggered = daemon.find("incident_triggered", dependency="n")
                assert triggered is not None
                assert stamp(triggered) >= removed_at - 0.01
                assert actions(sim, "n") == ["trigger"]
                assert actions(sim, "a") == []

    def test_a_dependency_removed_by_a_reload_is_resolved_and_its_series_disappear(self, tmp_path: Path) -> None:
        """A dependency removed by SIGHUP while down has its page resolved and no series left in /metrics."""
        with simulated(tmp_path, {"a": (), "r": ()}) as sim, running(sim) as daemon:
            sim.upstream("r").fail_with(503)
            wait_for_event(sim, "r", "trigger")
            assert metric_value(metrics(daemon), "depmon_dependency_up", dependency="r") == 0

            edit_config(sim, without("r"))
            reload(daemon)
            wait_for_event(sim, "r", "resolve")
            assert actions(sim, "r") == ["trigger", "resolve"]
            assert sim.pagerduty.open_alerts == []
            exposition = metrics(daemon)
            assert 'dependency="r"' not in exposition
            assert f'feature="{feature_of("r")}"' not in exposition
            assert metric_value(exposition, "depmon_dependency_up", dependency="a") == 1
            assert "r" not in daemon.status()["dependencies"]
            assert daemon.status()["incidents"] == []

    def test_a_rotated_routing_key_is_used_after_the_reload(self, tmp_path: Path) -> None:
        """After SIGHUP with a new routing key, the pending incident's resolve goes out with the new key."""
        with simulated(tmp_path, {"a": ()}) as sim, running(sim) as daemon:
            sim.upstream("a").fail_with(503)
            trigger = wait_for_event(sim, "a", "trigger")
            assert trigger.routing_key == ROUTING_KEY

            edit_config(sim, lambda document: document["pagerduty"].update(routing_key=ROTATED_KEY))
            reload(daemon)
            sim.upstream("a").clear_faults()
            resolve = wait_for_event(sim, "a", "resolve")
            assert resolve.routing_key == ROTATED_KEY
            assert [event.routing_key for event in sim.pagerduty.events] == [ROUTING_KEY, ROTATED_KEY]

    def test_a_sighup_right_after_spawn_does_not_kill_the_daemon(self, tmp_path: Path) -> None:
        """SIGHUPs 250, 400 and 600 ms after the spawn leave the daemon running and serving /healthz.

        Before the fix, `import monitor.commands.cli` (~0.9 s) ran before SIGHUP was ignored; now only the
        interpreter's own start (~0.1-0.15 s here, `python -X importtime`) comes first.
        """
        with simulated(tmp_path, {"a": ()}) as sim:
            daemon = DaemonProcess(sim.config_dir, sim.state_path)
            sender = SignalAfterSpawn(daemon, signal.SIGHUP, (0.25, 0.4, 0.6))
            try:
                sender.start()
                try:
                    daemon.start()
                except RuntimeError as exc:
                    sender.join(5)
                    pytest.fail(f"SIGHUPs sent {[round(t, 3) for t in sender.sent_at]} s after the spawn: {exc}")
                sender.join(5)
                print(f"SIGHUPs sent {[round(t, 3) for t in sender.sent_at]} s after the spawn")
                assert len(sender.sent_at) == 3
                assert daemon.get("/healthz").status_code == 200
                assert daemon.proc is not None
                assert daemon.proc.poll() is None
                assert daemon.stop() == 0
            finally:
                daemon.close()


# -- 5. PagerDuty REST answers that never end, and malformed window entries ------------------------------


def test_an_answer_held_for_one_key_does_not_delay_another_keys_page(tmp_path: Path) -> None:
    """While PagerDuty holds A's trigger unanswered, B's trigger is delivered at once; A's follows on release."""
    with simulated(tmp_path, {"a": (), "b": ()}) as sim, running(sim) as daemon:
        sim.pagerduty.hold_events_of(sim.dedup_key("a"))
        sim.upstream("a").fail_with(503)
        wait_for(lambda: sim.pagerduty.held_requests == 1, WAIT, "A's trigger held by PagerDuty")
        sim.upstream("b").fail_with(503)
        failed = wait_for(lambda: daemon.find("probe_failed", dependency="b"), WAIT, "B failing")
        trigger = wait_for_event(sim, "b", "trigger")
        print(f"B's trigger delivered {trigger.received_at - stamp(failed):.2f}s after B's first failure")
        assert events_of(sim, "a") == []
        assert sim.pagerduty.held_requests == 1

        sim.pagerduty.release_events()
        wait_for_event(sim, "a", "trigger")
        assert actions(sim, "a") == ["trigger"]
        assert actions(sim, "b") == ["trigger"]


def offset_of(request: Request) -> int:
    """The `offset` of a maintenance-windows request (0 when absent)."""
    return int(request.first("offset", "0") or 0)


def polls(requests: Sequence[Request]) -> list[list[Request]]:
    """Requests grouped by poll: each poll starts again at offset 0."""
    grouped: list[list[Request]] = []
    for request in requests:
        if offset_of(request) == 0 or not grouped:
            grouped.append([])
        grouped[-1].append(request)
    return grouped


class TestRestAnswers:
    def test_more_forever_costs_a_bounded_number_of_requests_and_sigterm_still_stops(self, tmp_path: Path) -> None:
        """`more: true` forever costs one request a poll when empty, at most 50 otherwise; SIGTERM still stops it."""
        with simulated(tmp_path, {"a": ()}) as sim:
            fake = sim.pagerduty
            fake.rest_answer_with({"maintenance_windows": [], "more": True})
            with running(sim) as daemon:
                wait_for(lambda: len(polls(fake.rest_requests)) >= 3, WAIT, "three polls")
                empty = polls(fake.rest_requests)[:-1]  # the last one may still be under way
                print(f"empty pages, more=true: requests per poll {[len(p) for p in empty]}")
                assert all(len(poll) == 1 for poll in empty)

                # A page that is never empty and says `more` forever: the offset moves, the cap stops it.
                far = datetime.now(UTC) + timedelta(days=1)

                def endless(request: Request) -> dict[str, Any]:
                    window = {
                        "id": f"PMWX{offset_of(request)}",
                        "start_time": far.isoformat(),
                        "end_time": (far + timedelta(hours=1)).isoformat(),
                        "services": [{"id": sim.service_id("a")}],
                    }
                    return {"maintenance_windows": [window], "more": True}

                switched = fake.rest_request_count
                fake.rest_answer_with(endless)
                wait_for(logged(daemon, "maintenance_pages_capped", 1), WAIT, "a capped poll")
                capped = [poll for poll in polls(fake.rest_requests[switched:]) if offset_of(poll[0]) == 0]
                print(f"endless pages: requests per poll {[len(p) for p in capped]}")
                assert all(len(poll) <= 50 for poll in capped)
                assert max(len(poll) for poll in capped) == 50
                assert daemon.get("/healthz").status_code == 200

                started = time.monotonic()
                assert daemon.stop(timeout=10) == 0
                stopped_in = time.monotonic() - started
                print(f"SIGTERM during the endless polls: stopped in {stopped_in:.2f}s")
                assert stopped_in < 5
                assert daemon.find("daemon_stopped") is not None

    def test_malformed_window_entries_leave_the_valid_window_in_force(self, tmp_path: Path) -> None:
        """A number, a string and a null among the windows are skipped and the valid window still holds."""
        with simulated(tmp_path, {"a": (), "b": ()}) as sim:
            sim.open_maintenance("a")
            sim.pagerduty.add_raw_window_entries(42, "not a window", None)
            with running(sim, lambda d: state(d, "a") == "maintenance" and state(d, "b") == "up") as daemon:
                wait_for(lambda: daemon.count("maintenance_window_unreadable") >= 3, WAIT, "the bad entries logged")
                assert daemon.count("maintenance_poll_failed") == 0
                exposition = metrics(daemon)
                assert metric_value(exposition, "depmon_dependency_in_maintenance", dependency="a") == 1
                assert metric_value(exposition, "depmon_dependency_in_maintenance", dependency="b") == 0
                errors = {entry["error"] for entry in daemon.matching("maintenance_window_unreadable")}
                print(f"unreadable entries: {sorted(errors)}")
                assert errors == {f"entry is {kind}, not an object" for kind in ("int", "str", "NoneType")}


# -- 6. One daemon per state file ----------------------------------------------------------------------------


def test_a_second_daemon_on_the_same_state_file_exits_2_naming_the_first(tmp_path: Path) -> None:
    """A second `depmon run` on a state file in use exits 2 naming the first daemon's pid, which keeps running."""
    with simulated(tmp_path, {"a": ()}) as sim, running(sim, ready=lambda daemon: True) as first:
        assert first.proc is not None
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor.commands.cli",
                "run",
                "--config",
                str(sim.config_dir),
                "--state",
                str(sim.state_path),
                "--listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        print(f"second daemon: exit {second.returncode}: {second.stderr.strip()}")
        assert second.returncode == 2
        assert f"pid {first.proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.get("/healthz").status_code == 200
        assert first.proc.poll() is None


# -- 7. Flapping inside the resolve hold --------------------------------------------------------------------


def test_a_flapping_dependency_pages_once_and_resolves_once(tmp_path: Path) -> None:
    """With a 2 s resolve hold, a shorter recovery keeps the one page, resolved once after a stable recovery."""
    with simulated(tmp_path, {"a": ()}, resolve_hold=2.0) as sim, running(sim) as daemon:
        sim.upstream("a").fail_with(503)
        wait_for_event(sim, "a", "trigger")
        sim.upstream("a").clear_faults()
        wait_for(lambda: state(daemon, "a") == "up", WAIT, "A up again")
        sim.upstream("a").fail_with(503)
        flap = wait_for(lambda: daemon.find("incident_flapping", dependency="a"), WAIT, "the flap")
        hold = daemon.find("incident_resolve_hold", dependency="a")
        assert hold is not None
        print(f"up for {stamp(flap) - stamp(hold):.2f}s before failing again (hold 2 s)")
        assert stamp(flap) - stamp(hold) < 2

        sim.upstream("a").clear_faults()
        resolve = wait_for_event(sim, "a", "resolve")
        assert actions(sim, "a") == ["trigger", "resolve"]
        assert len(sim.pagerduty.alerts) == 1
        last_hold = daemon.matching("incident_resolve_hold", dependency="a")[-1]
        assert resolve.received_at - stamp(last_hold) >= 2
        assert daemon.count("incident_triggered", dependency="a") == 1


def test_history_older_than_the_retention_is_pruned_and_nothing_pending_or_open(tmp_path: Path) -> None:
    """With a 1 h retention, 2 h old delivered events and a closed incident are pruned; pending and open ones stay."""
    with simulated(tmp_path, {"a": (), "b": ()}, retention="1h") as sim:
        key_a, key_b = sim.dedup_key("a"), sim.dedup_key("b")
        old = time.time() - 2 * 3600
        with SQLiteStore(sim.state_path, environment="e2e") as store:
            closed = store.open_incident("a", key_a, old - 60)
            store.resolve_incident(closed, old)
            store.mark_accepted(store.enqueue(key_a, "trigger", old_trigger(sim, "a"), old - 60), old - 59)
            store.mark_accepted(store.enqueue(key_a, "resolve", {"event_action": "resolve"}, old), old + 1)
            # b: open for two hours, its trigger still pending (PagerDuty was unreachable).
            store.open_incident("b", key_b, old - 60)
            store.enqueue(key_b, "trigger", old_trigger(sim, "b"), old - 60)
        with running(sim) as daemon:
            pruned = wait_for(lambda: daemon.find("state_pruned"), WAIT, "the prune at start")
            print(f"pruned at start: {pruned['events']} events, {pruned['incidents']} incidents")
            assert (pruned["events"], pruned["incidents"]) == (2, 1)
            # b's old page is delivered and then resolved: it was kept.
            wait_for_event(sim, "b", "resolve")
            assert actions(sim, "b") == ["trigger", "resolve"]
            assert daemon.stop() == 0
        with SQLiteStore(sim.state_path, environment="e2e") as store:
            assert store.outbox_events(key_a) == []
            assert store.incidents_of("a") == []
            assert [event.action for event in store.outbox_events(key_b)] == ["trigger", "resolve"]
            assert len(store.incidents_of("b")) == 1


# -- 8. Parent and child failing at the same moment -----------------------------------------------------------


PAIRS = 10  # parent/child pairs failing together in each trial: each pair is one race
TRIALS = 3  # 30 races in all


@dataclass(frozen=True, slots=True)
class Race:
    """One parent/child pair failing together in one trial: what the fake PagerDuty received for each."""

    trial: int
    parent: str
    child: str
    parent_actions: tuple[str, ...]
    child_actions: tuple[str, ...]

    @property
    def one_page_for_the_parent(self) -> bool:
        """The parent paged once and resolved once; the child sent nothing."""
        return self.parent_actions == ("trigger", "resolve") and self.child_actions == ()


def settled(sim: SimulatedEnvironment, daemon: DaemonProcess) -> bool:
    """Every dependency up, no open incident, nothing open or pending at PagerDuty."""
    return (
        all_up(daemon)
        and daemon.status()["incidents"] == []
        and sim.pagerduty.open_alerts == []
        and metric_value(metrics(daemon), "depmon_pagerduty_outbox_pending") == 0
    )


def every_one_sent(sim: SimulatedEnvironment, since: int, dependencies: Sequence[str], action: str) -> bool:
    """Each of `dependencies` has an `action` event among the fake's events from index `since` on."""
    keys = {e.dedup_key for e in sim.pagerduty.events[since:] if e.action == action}
    return all(sim.dedup_key(dep) in keys for dep in dependencies)


def race_once(sim: SimulatedEnvironment, daemon: DaemonProcess, trial: int) -> list[Race]:
    """Fail every parent and child at once, wait for the parents' pages, recover all, wait until settled."""
    pairs = [(f"p{pair}", f"c{pair}") for pair in range(PAIRS)]
    parents = [parent for parent, _ in pairs]
    first = len(sim.pagerduty.events)
    for parent, child in pairs:  # the same moment: children first in odd trials, parents first in even ones
        for dep in (child, parent) if trial % 2 else (parent, child):
            sim.upstream(dep).fail_with(503)
    wait_for(lambda: every_one_sent(sim, first, parents, "trigger"), WAIT, f"every parent paged, trial {trial}")
    wait_for(
        lambda: all(daemon.status()["dependencies"][child]["cause"] == parent for parent, child in pairs),
        WAIT,
        f"every child attributed to its parent, trial {trial}",
    )
    for parent, child in pairs:
        sim.upstream(parent).clear_faults()
        sim.upstream(child).clear_faults()
    wait_for(lambda: every_one_sent(sim, first, parents, "resolve"), WAIT, f"every parent resolved, trial {trial}")
    wait_for(lambda: settled(sim, daemon), WAIT, f"everything settled after trial {trial}")
    events = sim.pagerduty.events[first:]
    return [
        Race(
            trial,
            parent,
            child,
            tuple(e.action for e in events if e.dedup_key == sim.dedup_key(parent)),
            tuple(e.action for e in events if e.dedup_key == sim.dedup_key(child)),
        )
        for parent, child in pairs
    ]


@pytest.fixture(scope="class")
def races(tmp_path_factory: pytest.TempPathFactory) -> list[Race]:
    """`TRIALS` trials in one daemon, each failing `PAIRS` parents and their children at once, then recovering them."""
    dependencies: dict[str, tuple[str, ...]] = {}
    for pair in range(PAIRS):
        dependencies[f"p{pair}"] = ()
        dependencies[f"c{pair}"] = (f"p{pair}",)
    results: list[Race] = []
    with (
        simulated(tmp_path_factory.mktemp("race"), dependencies, resolve_hold=0.5) as sim,
        running(sim) as daemon,
    ):
        started = time.monotonic()
        for trial in range(TRIALS):
            results += race_once(sim, daemon, trial)
        others = [(r.trial, r.child, r.child_actions) for r in results if not r.one_page_for_the_parent]
        print(
            f"{len(results)} races in {time.monotonic() - started:.1f}s: "
            f"{len(results) - len(others)} paged once, for the parent; the child paged too in {len(others)}: {others}"
        )
    return results


# One worker runs the class, so its class-scoped `races` (one daemon, 30 races) runs once under xdist.
@pytest.mark.xdist_group("paging_races")
class TestSimultaneousFailures:
    def test_every_parent_pages_once_and_no_child_page_is_left_open(self, races: list[Race]) -> None:
        """In 30 races of a parent and child failing together, each parent pages once and each child page resolves."""
        assert len(races) >= 20
        for race in races:
            assert race.parent_actions == ("trigger", "resolve"), race
            assert race.child_actions == ("trigger", "resolve") * (len(race.child_actions) // 2), race

    def test_a_parent_and_child_failing_together_page_once_for_the_parent(self, races: list[Race]) -> None:
        """In 30 races of a parent and its child failing together, the child never pages: one page, the parent's."""
        assert len(races) >= 20
        assert [race for race in races if not race.one_page_for_the_parent] == []
