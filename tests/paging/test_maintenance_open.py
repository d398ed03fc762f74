"""`depmon maintenance open/close` against the running daemon (issue 13, SPEC 10.2): honoured, then ended."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from monitor.sim.environment import SimulatedEnvironment
from tests.harness import running, wait_for
from tests.paging.test_paging_faults import FAST, POLL, WAIT, events_of, stamp, state, wait_for_event, write_source

pytestmark = pytest.mark.e2e

FROM = "oncall@example.gov"
MESSAGE = "A app unavailable|A is down; the A app may not work until it is back"


@contextlib.contextmanager
def simulated_with_from(workdir: Path) -> Iterator[SimulatedEnvironment]:
    """The one-dependency simulator of the paging tests, with `pagerduty.from_email` set."""
    source = write_source(workdir / "source", {"a": ()}, "30m", "90d")
    document = yaml.safe_load(source.read_text("utf-8"))
    document["pagerduty"] = {"from_email": FROM}
    source.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    (workdir / "sim").mkdir(parents=True, exist_ok=True)
    with SimulatedEnvironment(
        workdir / "sim", environment="e2e", timing=FAST, maintenance_poll_interval=POLL, resolve_hold=1.0, source=source
    ) as sim:
        yield sim


def maintenance(sim: SimulatedEnvironment, *args: str) -> subprocess.CompletedProcess[str]:
    """`depmon maintenance ARGS` on the simulator's config."""
    return subprocess.run(
        [sys.executable, "-m", "monitor.entry", "maintenance", *args, "--config", str(sim.config_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_open_is_honoured_within_a_poll_and_close_lets_the_failure_page(tmp_path: Path) -> None:
    """An opened window holds a failing dependency's page; closing it lets exactly one trigger through."""
    with simulated_with_from(tmp_path) as sim, running(sim) as daemon:
        opened = maintenance(sim, "open", "a", "--for", "1h", "--message", MESSAGE)
        assert opened.returncode == 0, opened.stderr
        match = re.match(r"maintenance window (\w+) opened on PA for 1h", opened.stdout)
        assert match is not None, opened.stdout
        window_id = match.group(1)
        assert "depmon's feature graph puts in maintenance: A app" in opened.stdout
        [window] = sim.pagerduty.windows
        assert (window.id, window.description) == (window_id, f"USER_MESSAGE:{MESSAGE}")
        entered = wait_for(
            lambda: daemon.find("dependency_state_changed", dependency="a", new="maintenance"), WAIT, "A in maintenance"
        )
        [post] = [r for r in sim.pagerduty.rest_requests if r.method == "POST"]
        assert stamp(entered) - post.received_at < POLL + 1.0  # the next poll (the margin: a loaded 2-core machine)

        sim.upstream("a").fail_with(503)
        failing = lambda: daemon.status()["dependencies"]["a"]["probes"]["base"]["state"] == "down"  # noqa: E731
        wait_for(failing, WAIT, "A's probe down inside the window")
        assert state(daemon, "a") == "maintenance"

        closed = maintenance(sim, "close", window_id)
        assert closed.returncode == 0, closed.stderr
        assert closed.stdout == f"maintenance window {window_id} ended\n"
        [delete] = [r for r in sim.pagerduty.rest_requests if r.method == "DELETE"]
        trigger = wait_for_event(sim, "a", "trigger")
        assert trigger.received_at >= delete.received_at  # nothing was sent while the window held
        assert len(events_of(sim, "a", "trigger")) == 1
        details = trigger.body["payload"]["custom_details"]
        assert (
            "has not been read yet" in details["owning_team_status"]
            or "no incident open" in details["owning_team_status"]
        )
        assert details["maintenance_command"].startswith(
            'depmon maintenance open a --for 2h --message "A app unavailable|'
        )


def test_the_page_names_the_owning_team_status(tmp_path: Path) -> None:
    """A's own PagerDuty service is critical: A's page says so, with the time of its last incident."""
    last_incident = datetime.now(UTC) - timedelta(minutes=3)
    with simulated_with_from(tmp_path) as sim:
        sim.pagerduty.set_service_status(sim.service_id("a"), "critical", last_incident)
        with running(sim) as daemon:
            wait_for(lambda: daemon.count("service_status_unreadable") == 0 and state(daemon, "a") == "up", WAIT, "up")
            sim.upstream("a").fail_with(503)
            trigger = wait_for_event(sim, "a", "trigger")
    sentence = trigger.body["payload"]["custom_details"]["owning_team_status"]
    assert sentence.startswith("A's own PagerDuty service is critical (since ")
    assert last_incident.strftime("%H:%M UTC") in sentence
