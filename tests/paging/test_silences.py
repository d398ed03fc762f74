"""`depmon silence` against the running daemon (issue 13, SPEC 10.2): no page while it holds, a page when it ends."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.sim.environment import SimulatedEnvironment
from monitor.store import SQLiteStore
from tests.harness import DaemonProcess, metric_value, running, wait_for
from tests.paging.test_paging_faults import events_of, simulated, wait_for_event

pytestmark = pytest.mark.e2e


def silence(sim: SimulatedEnvironment, *args: str) -> subprocess.CompletedProcess[str]:
    """`depmon silence ARGS` on the simulator's config and state file."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "monitor.entry", "silence", *args),
            *("--config", str(sim.config_dir), "--state", str(sim.state_path)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def silenced(daemon: DaemonProcess, dep_id: str) -> bool:
    """The daemon reports the dependency silenced, on /status and in depmon_silenced."""
    listed = any(s["dependency"] == dep_id for s in daemon.status()["silences"])
    return listed and metric_value(daemon.get("/metrics").text, "depmon_silenced", dependency=dep_id) == 1


class TestSilence:
    def test_no_page_while_silenced_and_a_page_when_the_silence_ends(self, tmp_path: Path) -> None:
        """Silence, then an outage: no trigger until the silence ends, then exactly one."""
        with simulated(tmp_path, {"a": ()}) as sim, running(sim) as daemon:
            added = silence(sim, "a", "--for", "4s", "--reason", "vendor deploy")
            assert added.returncode == 0, added.stderr
            ends_at = time.time() + 4.0
            assert re.match(r"silence \d+: no page for A for 4s", added.stdout)
            wait_for(lambda: silenced(daemon, "a"), 5, "the daemon sees the silence within a second or so")
            sim.upstream("a").fail_with(503)
            wait_for(lambda: daemon.dependency_state("a") == "down", 5, "a down while silenced")
            trigger = wait_for_event(sim, "a", "trigger", timeout=15)
            assert trigger.received_at >= ends_at - 0.5  # the page came only once the silence ended
            assert len(events_of(sim, "a", "trigger")) == 1
            assert metric_value(daemon.get("/metrics").text, "depmon_silenced", dependency="a") == 0
            # The silence that held the page back is in the incident's timeline (and so its postmortem).
            with SQLiteStore(sim.state_path, environment="e2e") as store:
                incident = store.incidents_of("a")[-1]
                [trigger_entry] = [e for e in store.timeline(incident.id) if e.kind == "trigger"]
            assert trigger_entry.data["silence"]["reason"] == "vendor deploy"

    def test_a_silence_during_an_incident_is_in_its_timeline(self, tmp_path: Path) -> None:
        """An incident open, then silenced and expired by hand: both moments are in its timeline."""
        with simulated(tmp_path, {"a": ()}) as sim, running(sim) as daemon:
            sim.upstream("a").fail_with(503)
            wait_for_event(sim, "a", "trigger", timeout=15)
            added = silence(sim, "a", "--for", "1h", "--reason", "known outage")
            silence_id = added.stdout.split()[1].rstrip(":")
            wait_for(lambda: silenced(daemon, "a"), 5, "silenced")
            listed = silence(sim, "--list")
            assert f"{silence_id}\ta\tuntil" in listed.stdout
            assert silence(sim, "--expire", silence_id).returncode == 0
            wait_for(lambda: not silenced(daemon, "a") and "silence_ended" in timeline_kinds(sim), 5, "ended")
            # In this order, each once; the escalation the silence held may follow at once (SPEC 11.2).
            moments = [kind for kind in timeline_kinds(sim) if kind in ("silenced", "silence_ended")]
            assert moments == ["silenced", "silence_ended"]

    def test_unknown_dependency_is_exit_2(self, tmp_path: Path) -> None:
        """A dependency the config does not have is refused with the known ids, exit 2."""
        with simulated(tmp_path, {"a": ()}) as sim:
            refused = silence(sim, "nope", "--for", "1m", "--reason", "x")
        assert refused.returncode == 2
        assert "unknown dependency 'nope' (known: a)" in refused.stderr


def timeline_kinds(sim: SimulatedEnvironment) -> list[str]:
    """The timeline kinds of the dependency's latest incident, read from the state file."""
    with SQLiteStore(sim.state_path, environment="e2e") as store:
        incident = store.incidents_of("a")[-1]
        return [entry.kind for entry in store.timeline(incident.id)]
