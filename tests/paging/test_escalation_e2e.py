"""Escalation that reaches people (SPEC 11.2), end to end: `depmon run` as a subprocess, the fake
PagerDuty's incidents (opened 0.5 s after a trigger) and the fake Slack.

One small config serves every test (`write_people_source`): a Product Owner with a PagerDuty user
and a Slack member id, a Product Lead who is notified too but has neither (never requested, never
mentioned), an Engineering Lead who has both but is never notified; dependencies with an owning
team's channel and escalation policy, whose feature is either used by 30% of users (a criterion
at the trigger) or by 5% (no criterion until the incident persists). `significant_duration` is
4 s. Absences are proved against a later positive event (a later write, the resolve's arrival,
a control dependency's writes), never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.sim.environment import SimulatedEnvironment
from monitor.sim.fake_pagerduty import FakeIncident
from tests.harness import WAIT, DaemonProcess, metric_value, running, wait_for, wait_for_event
from tests.paging.test_paging_faults import FAST, POLL, metrics
from tests.paging.test_silences import silence, silenced

pytestmark = pytest.mark.e2e

SIGNIFICANT = 4.0  # seconds: monitor.significant_duration
FROM_EMAIL = "oncall@example.gov"
REQUESTER = "PREQ001"
OWNER_USER, OWNER_SLACK = "PPO0001", "U0PO0001"
NEVER_NOTIFIED_USER, NEVER_NOTIFIED_SLACK = "PENG001", "U0ENG001"
HIGH_FREQUENCY = "Occurs for a significant portion of the userbase"
PERSISTS = "Persists for a significant period of time"
OUT_OF_TEAM = "Requires out-of-team coordination to fix"


def policy_of(dependency: str) -> str:
    """The owning team's escalation policy of a dependency in `write_people_source`."""
    return f"P0{dependency.upper()}POL"


def channel_of(dependency: str) -> str:
    """The owning team's Slack channel of a dependency in `write_people_source`."""
    return f"#{dependency}-team"


def write_people_source(directory: Path, shares: dict[str, float]) -> Path:
    """A config whose dependencies (id -> the userbase share of their one feature) escalate to people."""
    document = {
        "monitor": {"environment": "e2e", "significant_duration": f"{SIGNIFICANT:g}s"},
        "pagerduty": {"requester_id": REQUESTER, "from_email": FROM_EMAIL},
        "contacts": {
            "product-owner": {
                **{"role": "Product Owner", "name": "P. Owner", "via": "DSVA Slack"},
                **{"pagerduty_user": OWNER_USER, "slack_user": OWNER_SLACK},
            },
            "product-lead": {"role": "Product Lead", "name": "P. Lead", "via": "DSVA Slack"},
            "engineering-lead": {
                **{"role": "Engineering Lead", "name": "E. Lead", "via": "DSVA Slack"},
                **{"pagerduty_user": NEVER_NOTIFIED_USER, "slack_user": NEVER_NOTIFIED_SLACK},
            },
        },
        "escalation": {"notify": ["product-owner", "product-lead"]},
        "dependencies": {
            dep: {
                "name": dep.upper(),
                "channel": channel_of(dep),
                "pagerduty_service": f"P{dep.upper()}SVC",
                "pagerduty_escalation_policy": policy_of(dep),
                "probes": [{"name": "base", "kind": "http", "url": f"https://{dep}.example.test/health"}],
            }
            for dep in shares
        },
        "features": {
            f"{dep}_feature": {"name": f"{dep.upper()} app", "requires": [dep], "userbase_share": share}
            for dep, share in shares.items()
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "depmon.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def people_world(workdir: Path, shares: dict[str, float]) -> Iterator[SimulatedEnvironment]:
    """A simulator for a `write_people_source` config, with fast timing."""
    source = write_people_source(workdir / "source", shares)
    (workdir / "sim").mkdir(parents=True, exist_ok=True)
    with SimulatedEnvironment(
        workdir / "sim", environment="e2e", timing=FAST, maintenance_poll_interval=POLL, source=source
    ) as sim:
        yield sim


def incident(sim: SimulatedEnvironment, dep_id: str) -> FakeIncident | None:
    """The fake PagerDuty's latest incident of a dependency, or None."""
    found = sim.pagerduty.incidents_of(sim.dedup_key(dep_id))
    return found[-1] if found else None


def wait_for_incident(
    sim: SimulatedEnvironment, dep_id: str, what: str, timeout: float = WAIT, **at_least: int
) -> FakeIncident:
    """The dependency's incident once it holds at least `at_least` responder_requests / notes / urgency_writes."""

    def reached() -> FakeIncident | None:
        found = incident(sim, dep_id)
        if found is None:
            return None
        counts = {
            "responder_requests": len(found.responder_requests),
            "notes": len(found.notes),
            "urgency_writes": urgency_writes(found),
        }
        return found if all(counts[key] >= n for key, n in at_least.items()) else None

    return wait_for(reached, timeout, f"{dep_id}'s incident: {what}")


def requested(found: FakeIncident) -> list[tuple[str, str]]:
    """(target id, type) of every responder request the incident received, in order."""
    return [
        (item["responder_request_target"]["id"], item["responder_request_target"]["type"])
        for body in found.responder_requests
        for item in body["responder_request_targets"]
    ]


def urgency_writes(found: FakeIncident) -> int:
    """How many `PUT /incidents/{id}` the incident received."""
    return sum(1 for method, _, _ in found.writes if method == "PUT")


def escalations(daemon: DaemonProcess, outcome: str) -> dict[str, float]:
    """depmon_escalations_total of one outcome, per step (0 when absent)."""
    text = metrics(daemon)
    return {step: metric_value(text, "depmon_escalations_total", step=step, outcome=outcome) or 0.0 for step in STEPS}


STEPS = ("responders", "note", "urgency")


def slack_text(sim: SimulatedEnvironment, dep_id: str) -> list[str]:
    """Every message posted to the dependency's owning team channel, as JSON text."""
    return [json.dumps(post.message) for post in sim.slack.posts_to(channel_of(dep_id))]


def rest_requests_of(sim: SimulatedEnvironment, dep_id: str, ids: tuple[str, ...] = ()) -> list[Any]:
    """The REST requests that look up the dependency's incident or write to one of `ids`."""
    key = sim.dedup_key(dep_id)
    return [
        r
        for r in sim.pagerduty.rest_requests
        if r.first("incident_key") == key or any(r.path.startswith(f"/incidents/{i}") for i in ids)
    ]


def retried(daemon: DaemonProcess, dedup_key: str) -> Callable[[], bool]:
    """A `wait_for` predicate: the daemon has retried a REST write of this dedup key."""
    return lambda: daemon.count("escalation_write_retry", dedup_key=dedup_key) >= 1


class TestEscalationReachesPeople:
    def test_a_criterion_at_the_trigger_then_persistence_each_write_once(self, tmp_path: Path) -> None:
        """At the trigger: one responder request (the one notified contact with a pagerduty_user), one note and
        the Slack mention; at significant_duration: the owning policy requested, a note and urgency high."""
        with people_world(tmp_path, {"a": 0.3}) as sim, running(sim) as daemon:
            sim.upstream("a").fail_with(503)
            trigger = wait_for_event(sim, "a", "trigger")
            first = wait_for_incident(sim, "a", "the trigger's request and note", responder_requests=1, notes=1)
            assert requested(first) == [(OWNER_USER, "user_reference")]
            assert first.responder_requests[0]["requester_id"] == REQUESTER
            assert "A down" in first.responder_requests[0]["message"]
            assert HIGH_FREQUENCY in first.notes[0]
            assert {sender for _, _, sender in first.writes} == {FROM_EMAIL}
            assert first.urgency == "low"
            posts = wait_for(lambda: slack_text(sim, "a"), WAIT, "the Slack post")
            assert f"<@{OWNER_SLACK}>" in posts[0]
            assert NEVER_NOTIFIED_SLACK not in posts[0]

            later = wait_for_incident(sim, "a", "urgency high", WAIT + SIGNIFICANT, urgency_writes=1)
            assert later.urgency == "high"
            assert requested(later) == [(OWNER_USER, "user_reference"), (policy_of("a"), "escalation_policy_reference")]
            assert len(later.notes) == 2
            assert PERSISTS in later.notes[1]
            assert OUT_OF_TEAM in later.notes[1]
            escalated = wait_for_event(sim, "a", "trigger", count=2)
            print(f"urgency high {escalated.received_at - trigger.received_at:.2f}s after the trigger")

            # The positive event after which nothing may come again: the resolve's arrival.
            sim.upstream("a").clear_faults()
            wait_for_event(sim, "a", "resolve")
            final = incident(sim, "a")
            assert final is not None
            assert final.status == "resolved"
            assert (len(final.responder_requests), len(final.notes), urgency_writes(final)) == (2, 2, 1)
            assert NEVER_NOTIFIED_USER not in json.dumps(final.responder_requests)
            accepted = wait_for(
                lambda: (counts := escalations(daemon, "accepted"))["urgency"] == 1 and counts, WAIT, "the counts"
            )
            assert accepted == {"responders": 2, "note": 2, "urgency": 1}

    def test_a_restart_sends_nothing_twice(self, tmp_path: Path) -> None:
        """Killed after the trigger's writes, started again on the same state file: the escalation adds the
        policy, a note and the urgency, and neither the trigger nor the contact's request is sent again."""
        with people_world(tmp_path, {"a": 0.3}) as sim:
            with running(sim) as first:
                sim.upstream("a").fail_with(503)
                wait_for_event(sim, "a", "trigger")
                wait_for_incident(sim, "a", "the trigger's request and note", responder_requests=1, notes=1)
                # Both committed as accepted (the log comes after the commit): a kill now repeats nothing.
                wait_for(lambda: first.count("escalation_write_accepted") >= 2, WAIT, "both writes committed")
                first.kill()
                # The killed daemon never escalated: the escalation is the restarted one's to make.
                assert first.count("incident_escalated") == 0
            assert incident(sim, "a") is not None
            with running(sim, ready=lambda daemon: daemon.status() is not None) as second:
                later = wait_for_incident(sim, "a", "urgency high", WAIT + SIGNIFICANT, urgency_writes=1)
                assert requested(later) == [
                    (OWNER_USER, "user_reference"),
                    (policy_of("a"), "escalation_policy_reference"),
                ]
                assert len(later.notes) == 2
                assert [e.action for e in sim.pagerduty.events_for(sim.dedup_key("a"))] == ["trigger", "trigger"]
                assert second.count("incident_escalated", dependency="a") == 1
                assert second.count("incident_triggered") == 0

    def test_a_rest_outage_delays_the_writes_and_a_resolve_cancels_the_ones_still_queued(self, tmp_path: Path) -> None:
        """While PagerDuty's REST API answers 500, A's writes wait and arrive once each after it; B, resolved
        during the outage, has its writes cancelled and never written."""
        with people_world(tmp_path, {"a": 0.3, "b": 0.3}) as sim, running(sim) as daemon:
            sim.pagerduty.rest_fail_with(500)
            sim.upstream("a").fail_with(503)
            sim.upstream("b").fail_with(503)
            for dep in ("a", "b"):
                wait_for_event(sim, dep, "trigger")
                wait_for(retried(daemon, sim.dedup_key(dep)), WAIT, f"{dep}'s writes retried")

            sim.upstream("b").clear_faults()
            resolve = wait_for_event(sim, "b", "resolve")
            cancelled = wait_for(
                lambda: (counts := escalations(daemon, "cancelled"))["note"] >= 1 and counts, WAIT, "B's cancelled"
            )
            # Its trigger's writes at least; more if a loaded machine let it pass `significant_duration` first.
            assert cancelled["responders"] >= 1

            sim.pagerduty.rest_clear_faults()
            delivered = wait_for_incident(sim, "a", "the delayed writes", WAIT + 10, responder_requests=1, notes=1)
            # The owner first; on a loaded machine the outage may outlast `significant_duration`, and the
            # owning policy's request (and a second note) then follow in order, each once.
            assert requested(delivered)[0] == (OWNER_USER, "user_reference")
            assert escalations(daemon, "retried")["responders"] >= 1
            # Nothing left to send; nothing asked about B's incident since its resolve; its incident untouched.
            wait_for(
                lambda: metric_value(metrics(daemon), "depmon_outbox_pending", destination="pagerduty_rest") == 0,
                WAIT,
                "no REST write pending",
            )
            b_incident = incident(sim, "b")
            assert b_incident is not None
            assert b_incident.writes == ()
            after = [r for r in rest_requests_of(sim, "b", (b_incident.id,)) if r.received_at > resolve.received_at]
            assert after == []
            a_incident = incident(sim, "a")
            assert a_incident is not None
            targets = requested(a_incident)
            assert targets.count((OWNER_USER, "user_reference")) == 1
            assert len(targets) == len(set(targets))  # no target requested twice, however long the outage
            assert len(a_incident.notes) == len(set(a_incident.notes)) >= 1  # no note written twice

    def test_a_silence_holds_the_escalation_and_its_end_lets_it_through(self, tmp_path: Path) -> None:
        """A silenced during its incident: no write when its escalation falls due (B, failing later and not
        silenced, escalates first); once the silence is expired, A's writes arrive."""
        with people_world(tmp_path, {"a": 0.05, "b": 0.05}) as sim, running(sim) as daemon:
            sim.upstream("a").fail_with(503)
            wait_for_event(sim, "a", "trigger")
            added = silence(sim, "a", "--for", "1h", "--reason", "vendor deploy")
            assert added.returncode == 0, added.stderr
            silence_id = added.stdout.split()[1].rstrip(":")
            wait_for(lambda: silenced(daemon, "a"), WAIT, "the daemon sees the silence")
            a_opened = wait_for(lambda: incident(sim, "a"), WAIT, "A's incident at PagerDuty")
            sim.upstream("b").fail_with(503)

            # B opened after A, so A's escalation fell due before B's: B's urgency is the later positive event.
            wait_for_incident(sim, "b", "B's escalation", WAIT + SIGNIFICANT, urgency_writes=1, notes=1)
            held = incident(sim, "a")
            assert held is not None
            assert held.writes == ()
            assert rest_requests_of(sim, "a", (a_opened.id,)) == []
            assert [e.action for e in sim.pagerduty.events_for(sim.dedup_key("a"))] == ["trigger"]

            assert silence(sim, "--expire", silence_id).returncode == 0
            released = wait_for_incident(sim, "a", "A's escalation", WAIT, urgency_writes=1, notes=1)
            assert requested(released) == [
                (OWNER_USER, "user_reference"),
                (policy_of("a"), "escalation_policy_reference"),
            ]
