"""The bundled config on the simulator posts the EVSS page to Slack, in order, through a Slack outage (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.environment import SimulatedEnvironment
from tests.e2e.harness import running, wait_for

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
