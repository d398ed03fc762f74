"""`depmon run` follows its environment's HTTP_PROXY: the page and the Slack posts go through the proxy (SPEC 11.5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.environment import SimulatedEnvironment
from tests.harness import READY_WAIT, DaemonProcess, all_up, wait_for
from tests.probes.http_loopback import ForwardProxy, threaded_forward_proxy

pytestmark = pytest.mark.e2e

ALERTS = "#va-mobile-app-alerts"


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with threaded_forward_proxy() as running:
        yield running


def test_the_daemon_pages_through_the_proxy_its_environment_names(tmp_path: Path, proxy: ForwardProxy) -> None:
    """EVSS down: the event and the Slack post reach the fakes, each forwarded by the proxy of HTTP_PROXY."""
    with SimulatedEnvironment(tmp_path, environment="e2e") as sim:
        daemon = DaemonProcess(sim.config_dir, sim.state_path, env={"HTTP_PROXY": proxy.proxy_url})
        try:
            daemon.start()
            wait_for(lambda: all_up(daemon), READY_WAIT, "the daemon ready")
            sim.upstream("evss").fail_with(503)
            wait_for(lambda: sim.pagerduty.events, 20, "the EVSS page at PagerDuty")
            wait_for(lambda: sim.slack.posts_to(ALERTS), 20, "the EVSS page in Slack")
        finally:
            daemon.close()
        targets = [request.target for request in proxy.requests]
        assert f"{sim.pagerduty.events_url}/v2/enqueue" in targets
        assert sim.slack.webhook_url(ALERTS) in targets
