"""The incident scenarios end to end: `depmon run` against the simulated VA environment and PagerDuty.

Every assertion is about what the fake PagerDuty received (and, where it explains that, what the
daemon logged or served). Timing is the simulator's: probes every 1 s, 500 ms timeout, two
failures to go down confirmed 250 ms apart, two successes to come back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.sim.environment import SimulatedEnvironment
from monitor.sim.fake_pagerduty import ReceivedEvent, event_errors
from tests.harness import WAIT, DaemonProcess, actions, all_up, metric_value, running, wait_for, wait_for_event

pytestmark = pytest.mark.e2e

EVSS_FEATURES = ["claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"]
SIGNED_IN_CHILDREN = ("evss", "va-profile", "vaos")  # their probes present the SSOe token
# Dependencies in no scenario: a page of one of them is the later event an absence is proved against.
MARKERS = ("caseflow", "vetext")


# -- helpers ---------------------------------------------------------------------------------------


def dependency(daemon: DaemonProcess, dep_id: str) -> dict[str, Any]:
    """One dependency of /status."""
    found: dict[str, Any] = daemon.status()["dependencies"][dep_id]
    return found


def after_a_later_page(sim: SimulatedEnvironment, daemon: DaemonProcess, marker: str = MARKERS[0]) -> list[Any]:
    """The events PagerDuty accepted, but for `marker`'s, once a later page has come and gone.

    `marker` (in no scenario) is made to fail until its trigger is accepted and the outbox is
    empty: a page decided before it, as any page the scenario's past could still cause was, has
    been delivered by then. `marker` is healed again; the markers' events are left out of the list.
    """
    sim.upstream(marker).fail_with(503)
    wait_for_event(sim, marker, "trigger")
    wait_for(
        lambda: metric_value(daemon.get("/metrics").text, "depmon_pagerduty_outbox_pending") == 0,
        WAIT,
        "the outbox empty",
    )
    sim.upstream(marker).clear_faults()
    markers = {sim.dedup_key(m) for m in MARKERS}
    return [event for event in sim.pagerduty.events if event.dedup_key not in markers]


def token_users_failed_long_enough(sim: SimulatedEnvironment, daemon: DaemonProcess) -> None:
    """Wait until each token user has failed `failure_threshold` times: a page of theirs would be decided."""
    threshold = sim.timing.failure_threshold
    wait_for(
        lambda: all(daemon.count("probe_failed", dependency=dep) >= threshold for dep in SIGNED_IN_CHILDREN),
        WAIT,
        "the token users failing for as long as it takes them to go down",
    )


def keys_and_actions(events: list[ReceivedEvent]) -> list[tuple[str, str]]:
    """(dedup key, action) of each event."""
    return [(event.dedup_key, event.action) for event in events]


def stamp(entry: dict[str, Any]) -> float:
    """The UNIX time of a daemon log line."""
    return datetime.fromisoformat(str(entry["timestamp"])).timestamp()


def detection_target(sim: SimulatedEnvironment) -> float:
    """(failure_threshold - 1) x confirm_interval + 1 s: first failing probe to event at PagerDuty."""
    return (sim.timing.failure_threshold - 1) * sim.timing.confirm_interval + 1.0


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedEnvironment]:
    with SimulatedEnvironment(tmp_path, environment="e2e") as environment:
        yield environment


@pytest.fixture
def daemon(sim: SimulatedEnvironment) -> Iterator[DaemonProcess]:
    with running(sim) as process:
        yield process


# -- scenarios -------------------------------------------------------------------------------------


class TestPaging:
    def test_one_failed_probe_followed_by_success_never_pages(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """A single failed probe below the failure threshold, then successes, sends nothing to PagerDuty."""
        sim.upstream("evss").fail_with(503, times=1)
        wait_for(lambda: daemon.find("probe_failed", dependency="evss"), WAIT, "the one failed EVSS probe")
        wait_for(lambda: dependency(daemon, "evss")["probes"]["base"]["ok"] is True, WAIT, "EVSS answering again")
        assert after_a_later_page(sim, daemon) == []
        assert daemon.count("probe_failed", dependency="evss") == 1
        assert daemon.find("dependency_state_changed", dependency="evss", new="down") is None

    def test_an_outage_pages_once_with_features_and_playbooks_and_resolves_once(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """An EVSS outage triggers one schema-valid page naming its four features and playbook, then one resolve."""
        sim.upstream("evss").fail_with(503)
        trigger = wait_for_event(sim, "evss", "trigger")

        first_failure = daemon.find("probe_failed", dependency="evss")
        assert first_failure is not None
        latency = trigger.received_at - stamp(first_failure)
        print(f"EVSS: first failing probe -> trigger at the fake PagerDuty in {latency:.3f}s")
        assert latency <= detection_target(sim)

        body = trigger.body
        assert event_errors(body) == []
        payload = body["payload"]
        assert payload["summary"] == (
            "EVSS down: 4 app features impacted (Claims, Letters, Direct Deposit Benefits, Disability Rating) [e2e]"
        )
        assert payload["severity"] == "critical"
        assert payload["component"] == "evss"
        assert payload["class"] == "http_status"
        assert [f["id"] for f in payload["custom_details"]["impacted_features"]] == EVSS_FEATURES
        assert payload["custom_details"]["evidence"][0]["detail"] == "HTTP 503 from / (expected 200)"
        playbook = sim.config.playbooks["mobile-incident-response"]
        assert body["links"][0] == {"href": playbook.url, "text": playbook.title}

        sim.upstream("evss").clear_faults()
        wait_for_event(sim, "evss", "resolve")
        assert keys_and_actions(after_a_later_page(sim, daemon)) == [
            (sim.dedup_key("evss"), "trigger"),
            (sim.dedup_key("evss"), "resolve"),
        ]
        assert [alert.dedup_key for alert in sim.pagerduty.open_alerts] == [sim.dedup_key(MARKERS[0])]


class TestRootCause:
    def test_an_ssoe_outage_pages_once_for_every_feature_and_never_for_the_token_users(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """A hung SSOe token endpoint pages once for every feature; EVSS, VA Profile and VAOS fail without paging."""
        sim.upstream("ssoe-oauth").hang()
        trigger = wait_for_event(sim, "ssoe-oauth", "trigger")
        first_failure = daemon.find("probe_failed", dependency="ssoe-oauth")
        assert first_failure is not None
        print(f"SSOe OAuth: first failing probe -> trigger in {trigger.received_at - stamp(first_failure):.3f}s")
        assert trigger.received_at - stamp(first_failure) <= detection_target(sim)
        details = trigger.body["payload"]["custom_details"]
        assert [f["id"] for f in details["impacted_features"]] == list(sim.config.features)
        assert trigger.body["payload"]["class"] == "timeout"

        # Their cached tokens run out: the children's own probes fail, attributed to SSOe.
        wait_for(
            lambda: all(dependency(daemon, dep)["probes"]["base"]["ok"] is False for dep in SIGNED_IN_CHILDREN),
            WAIT,
            "the token users' probes failing",
        )
        for dep in SIGNED_IN_CHILDREN:
            assert dependency(daemon, dep)["cause"] == "ssoe-oauth"
        token_users_failed_long_enough(sim, daemon)
        assert {e.dedup_key for e in after_a_later_page(sim, daemon)} == {sim.dedup_key("ssoe-oauth")}

        sim.upstream("ssoe-oauth").clear_faults()
        wait_for_event(sim, "ssoe-oauth", "resolve")
        wait_for(lambda: all_up(daemon), WAIT, "every dependency up again")
        assert keys_and_actions(after_a_later_page(sim, daemon, MARKERS[1])) == [
            (sim.dedup_key("ssoe-oauth"), "trigger"),
            (sim.dedup_key("ssoe-oauth"), "resolve"),
        ]

    def test_revoked_and_refused_tokens_page_only_for_ssoe(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """When SSOe revokes every token and refuses new ones, the token users notice first and still do not page."""
        ssoe = sim.upstream("ssoe-oauth")
        ssoe.refuse_tokens()
        ssoe.revoke_tokens()
        wait_for_event(sim, "ssoe-oauth", "trigger")
        token_users_failed_long_enough(sim, daemon)
        assert {e.dedup_key for e in after_a_later_page(sim, daemon)} == {sim.dedup_key("ssoe-oauth")}
        for dep in SIGNED_IN_CHILDREN:
            assert dependency(daemon, dep)["cause"] == "ssoe-oauth"


class TestMaintenanceWindows:
    def test_a_failure_inside_a_window_pages_nobody_until_the_window_ends(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """MHV failing in its maintenance window pages nobody; removing the window while it is down pages once."""
        window = sim.open_maintenance("mhv")
        wait_for(lambda: dependency(daemon, "mhv")["state"] == "maintenance", WAIT, "MHV in maintenance")
        sim.upstream("mhv").fail_with(503)
        wait_for(lambda: dependency(daemon, "mhv")["probes"]["base"]["state"] == "down", WAIT, "MHV's probe down")
        assert after_a_later_page(sim, daemon) == []
        assert daemon.status()["features"]["secure_messaging"]["state"] == "maintenance"

        sim.pagerduty.remove_window(window)
        trigger = wait_for_event(sim, "mhv", "trigger")
        assert "Secure Messaging" in trigger.body["payload"]["summary"]
        assert {e.dedup_key for e in after_a_later_page(sim, daemon, MARKERS[1])} == {sim.dedup_key("mhv")}
        assert actions(sim, "mhv") == ["trigger"]

    def test_one_unknown_service_id_leaves_the_other_windows_in_force(self, tmp_path: Path) -> None:
        """With DS Logon's service id unknown to PagerDuty, MHV's window still holds off its page."""
        overrides = {"dslogon": "PNOSUCH"}
        with (
            SimulatedEnvironment(tmp_path, environment="e2e", service_overrides=overrides) as sim,
            running(sim) as daemon,
        ):
            bad = wait_for(lambda: daemon.find("maintenance_bad_service_id"), WAIT, "the bad id reported")
            assert bad["service_ids"] == ["PNOSUCH"]
            sim.open_maintenance("mhv")
            wait_for(lambda: dependency(daemon, "mhv")["state"] == "maintenance", WAIT, "MHV in maintenance")
            sim.upstream("mhv").fail_with(503)
            wait_for(lambda: dependency(daemon, "mhv")["probes"]["base"]["state"] == "down", WAIT, "MHV's probe down")
            assert after_a_later_page(sim, daemon) == []
            assert dependency(daemon, "mhv")["state"] == "maintenance"

    def test_the_last_known_windows_stay_in_force_while_the_rest_api_is_down(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """With PagerDuty's REST API down, MHV stays in its last known window and its failure pages nobody."""
        sim.open_maintenance("mhv")
        wait_for(lambda: dependency(daemon, "mhv")["state"] == "maintenance", WAIT, "MHV in maintenance")
        sim.pagerduty.rest_go_down()
        wait_for(lambda: daemon.count("maintenance_poll_failed") >= 1, WAIT, "a failed maintenance poll")
        sim.upstream("mhv").fail_with(503)
        wait_for(lambda: dependency(daemon, "mhv")["probes"]["base"]["state"] == "down", WAIT, "MHV's probe down")
        wait_for(lambda: daemon.count("maintenance_poll_failed") >= 3, WAIT, "three failed maintenance polls")
        assert dependency(daemon, "mhv")["state"] == "maintenance"
        assert sim.pagerduty.events == []


class TestDelivery:
    def test_a_page_refused_with_500_then_429_arrives_once_after_pagerduty_recovers(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """Events API answers of 500, then 429, are retried with backoff until the one page is accepted."""
        sim.pagerduty.fail_with(500)
        sim.upstream("evss").fail_with(503)
        wait_for(lambda: daemon.count("pagerduty_event_retry", http_status=500) >= 2, WAIT, "two 500 answers")
        sim.pagerduty.fail_with(429, times=1, retry_after=2)
        rate_limited = wait_for(lambda: daemon.find("pagerduty_event_retry", http_status=429), WAIT, "the 429 answer")
        # PagerDuty's Retry-After is honoured: not sooner, and not the 30 s used when it sends none.
        print(f"429 answered: the outbox retries in {rate_limited['retry_in_seconds']}s")
        assert 2 <= rate_limited["retry_in_seconds"] < 30
        wait_for_event(sim, "evss", "trigger", timeout=rate_limited["retry_in_seconds"] + WAIT)
        after_a_later_page(sim, daemon)
        assert actions(sim, "evss") == ["trigger"]
        assert [a.dedup_key for a in sim.pagerduty.alerts] == [sim.dedup_key("evss"), sim.dedup_key(MARKERS[0])]
        assert sim.pagerduty.enqueue_requests >= 4  # two 500s, one 429, the accepted one

    def test_a_pending_page_survives_kill_9_and_is_delivered_once_after_restart(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """A trigger stuck in the outbox when the daemon is killed is delivered once by the restarted daemon."""
        key = sim.dedup_key("evss")
        sim.pagerduty.go_down()
        sim.upstream("evss").fail_with(503)
        wait_for(lambda: daemon.find("pagerduty_event_retry", dedup_key=key), WAIT, "an undeliverable trigger")
        daemon.kill()
        assert sim.pagerduty.events == []
        sim.pagerduty.come_back()

        with running_after_restart(sim) as restarted:
            wait_for_event(sim, "evss", "trigger")
            evss_pages_once_and_resolves_once(sim, restarted)
            assert restarted.find("incidents_reloaded") is not None

    def test_a_restart_during_an_open_incident_still_resolves_it(
        self, sim: SimulatedEnvironment, daemon: DaemonProcess
    ) -> None:
        """A daemon restarted while EVSS is down pages nothing new and sends the resolve when EVSS recovers."""
        sim.upstream("evss").fail_with(503)
        wait_for_event(sim, "evss", "trigger")
        assert daemon.stop() == 0

        with running_after_restart(sim) as restarted:
            reloaded = wait_for(lambda: restarted.find("incidents_reloaded"), WAIT, "the open incident reloaded")
            assert reloaded["dependencies"] == ["evss"]
            wait_for(lambda: dependency(restarted, "evss")["state"] == "down", WAIT, "EVSS down again")
            evss_pages_once_and_resolves_once(sim, restarted)
            assert sim.dedup_key("evss") not in [alert.dedup_key for alert in sim.pagerduty.open_alerts]


def evss_pages_once_and_resolves_once(sim: SimulatedEnvironment, daemon: DaemonProcess) -> None:
    """EVSS (down, paged) gets no second trigger; once it answers again, one resolve follows."""
    after_a_later_page(sim, daemon)
    assert actions(sim, "evss") == ["trigger"]
    sim.upstream("evss").clear_faults()
    wait_for_event(sim, "evss", "resolve")
    after_a_later_page(sim, daemon, MARKERS[1])
    assert actions(sim, "evss") == ["trigger", "resolve"]


@contextlib.contextmanager
def running_after_restart(sim: SimulatedEnvironment) -> Iterator[DaemonProcess]:
    """A second `depmon run` on the same config and state file, started (dependencies may be down)."""
    daemon = DaemonProcess(sim.config_dir, sim.state_path)
    try:
        yield daemon.start()
    finally:
        daemon.close()
