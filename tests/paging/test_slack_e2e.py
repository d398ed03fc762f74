"""The bundled config on the simulator posts the EVSS page to Slack, in order, through a Slack outage (issue 13);
an upstream's words never reach a post (SPEC 11.4)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.environment import SimulatedEnvironment
from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.sim.fake_slack import FakeSlack
from monitor.sim.loopback import LoopbackServer, Request, Response, json_response
from tests.harness import DaemonProcess, running, wait_for

pytestmark = pytest.mark.e2e

ALERTS = "#va-mobile-app-alerts"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedEnvironment]:
    with SimulatedEnvironment(tmp_path, environment="e2e") as environment:
        yield environment


def test_the_evss_page_and_its_resolve_reach_the_team_and_owner_channels(sim: SimulatedEnvironment) -> None:
    """EVSS down: a post to the alerts channel and #evss-prod; a Slack outage delays the resolve, never loses it."""
    with running(sim):
        sim.upstream("evss").fail_with(503)
        # Each channel is its own outbox queue: the two posts arrive in either order.
        wait_for(lambda: len(sim.slack.posts_to("#evss-prod")) >= 1, 20, "the EVSS page in #evss-prod")
        wait_for(lambda: len(sim.slack.posts_to(ALERTS)) >= 1, 20, "the EVSS page in the alerts channel")
        [down] = sim.slack.posts_to(ALERTS)
        assert down.message["blocks"][0]["text"]["text"] == "Down: EVSS"
        assert "Claims" in str(down.message)
        sim.slack.fail_with(503)
        sim.upstream("evss").clear_faults()
        wait_for(lambda: any(e.action == "resolve" for e in sim.pagerduty.events), 20, "the resolve at PagerDuty")
        assert [p.message["text"].split(":")[0] for p in sim.slack.posts_to(ALERTS)] == ["EVSS down"]
        sim.slack.clear_faults()
        wait_for(lambda: len(sim.slack.posts_to(ALERTS)) == 2, 20, "the resolve in Slack once it is back")
        texts = [p.text for p in sim.slack.posts_to(ALERTS)]
        assert texts[1] == "Resolved: EVSS is up again; its PagerDuty incident is resolved"


HOSTILE = "<!channel> <https://evil.example|re-login here> & <@U0EVIL>"
HOSTILE_CONFIG = """
monitor:
  environment: e2e
  defaults: {{interval: 300ms, timeout: 200ms, failure_threshold: 2, success_threshold: 1, confirm_interval: 100ms}}
  canaries:
    - {{name: egress, kind: http, url: "{canary}/health", expect: {{health_json: true}}}}
pagerduty:
  routing_key: {routing_key}
  events_url: {events_url}
escalation:
  channels: ["{channel}"]
slack:
  webhooks: {{"{channel}": "{webhook}"}}
dependencies:
  d0: {{name: D0, probes: [{{name: health, kind: http, url: "{upstream}/health", expect: {{health_json: true}}}}]}}
features:
  claims: {{name: Claims, requires: [d0], userbase_share: 0.3}}
"""


class HealthEndpoint:
    """An IETF health-check endpoint that passes, or fails with `output` as its reason."""

    def __init__(self, server: LoopbackServer) -> None:
        self.output: str | None = None
        server.route("GET", "/health", self._answer)

    def _answer(self, request: Request) -> Response:
        if self.output is None:
            return json_response(200, {"status": "pass"})
        return json_response(503, {"status": "fail", "output": self.output})


def test_an_upstreams_health_output_reaches_no_field_of_a_post(tmp_path: Path, pagerduty: FakePagerDuty) -> None:
    """A dependency's and a canary's health `output` holding a mention and a link: in PagerDuty, in no Slack field."""
    with LoopbackServer() as upstream, LoopbackServer() as canary, FakeSlack() as slack:
        dependency, egress = HealthEndpoint(upstream), HealthEndpoint(canary)
        config = tmp_path / "depmon.yaml"
        config.write_text(
            HOSTILE_CONFIG.format(
                canary=canary.url,
                upstream=upstream.url,
                routing_key="S" * 32,
                events_url=pagerduty.events_url,
                channel=ALERTS,
                webhook=slack.webhook_url(ALERTS),
            )
        )
        daemon = DaemonProcess(config, tmp_path / "state.sqlite3")
        try:
            daemon.start()
            wait_for(lambda: daemon.get("/readyz").status_code == 200, 15, "readiness")
            dependency.output = HOSTILE
            wait_for(lambda: slack.posts_to(ALERTS), 20, "D0's page in Slack")
            egress.output = HOSTILE
            wait_for(lambda: len(slack.posts_to(ALERTS)) >= 2, 20, "depmon's own page in Slack")
        finally:
            daemon.close()
    # The hostile text did reach depmon: PagerDuty's events carry it as evidence.
    assert any(HOSTILE in json.dumps(event.body) for event in pagerduty.events)
    texts = [post.text for post in slack.posts]
    assert texts[:2] == [
        "D0 down: 1 app feature impacted (Claims) [e2e]",
        "Down: depmon cannot see out: its canaries or its own network fail, not the dependencies [e2e]",
    ]
    for post in slack.posts:
        assert not re.search(r"evil\.example|<!|<@|re-login", json.dumps(post.message)), post.message
