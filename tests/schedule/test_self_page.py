"""depmon's own trouble pages once, as itself, never as its dependencies (issue 10, SPEC 10.3)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.sim.loopback import LoopbackServer, Response
from tests.harness import DaemonProcess, http_dependencies_config, metric_value, wait_for

pytestmark = pytest.mark.e2e

ROUTING_KEY = "S" * 32
DEPENDENCIES = 6
MONITOR = """
  resolve_hold: 300ms
  defaults: {{interval: 1s, timeout: 500ms, failure_threshold: 3, success_threshold: 1, confirm_interval: 200ms}}
  canaries:
    - {{name: egress, kind: tcp, host: 127.0.0.1, port: {canary_port}, interval: 100ms, timeout: 50ms,
       failure_threshold: 2, confirm_interval: 50ms}}
"""


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        server.route("GET", "/health", lambda request: Response(200, b'{"status": "pass"}'))
        yield server


@pytest.fixture
def canary_target() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def daemon(
    tmp_path: Path, upstream: LoopbackServer, canary_target: LoopbackServer, pagerduty: FakePagerDuty
) -> Iterator[DaemonProcess]:
    config = http_dependencies_config(
        tmp_path / "depmon.yaml",
        DEPENDENCIES,
        f"{upstream.url}/health",
        pagerduty.events_url,
        ROUTING_KEY,
        MONITOR.format(canary_port=canary_target.url.rsplit(":", 1)[1]),
    )
    process = DaemonProcess(config, tmp_path / "state.sqlite3")
    try:
        yield process.start()
    finally:
        process.close()


def inconclusive(daemon: DaemonProcess, dependency: str) -> float:
    """depmon_probes_inconclusive_total of a dependency, summed over its reasons."""
    exposition = daemon.get("/metrics").text
    return sum(
        metric_value(exposition, "depmon_probes_inconclusive_total", dependency=dependency, reason=reason) or 0.0
        for reason in ("cannot_see_out", "canary_failing", "overloaded", "loop_stalled", "started_late")
    )


class TestCannotSeeOut:
    def test_canary_down_and_every_upstream_failing_is_one_page_the_self_page(
        self,
        daemon: DaemonProcess,
        upstream: LoopbackServer,
        canary_target: LoopbackServer,
        pagerduty: FakePagerDuty,
    ) -> None:
        """Canary and upstreams fail together: exactly one trigger, under depmon/e2e/self; recovery resolves it."""
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 15, "readiness")
        canary_target.go_down()
        upstream.fail_with(503)
        events = pagerduty.wait_for(lambda got: any(e.dedup_key == "depmon/e2e/self" for e in got), timeout=15)
        [self_page] = [e for e in events if e.dedup_key == "depmon/e2e/self"]
        assert self_page.summary is not None
        assert self_page.summary.startswith("depmon cannot see out: canary egress is down")
        # Every dependency keeps failing for several of its own thresholds; none of them pages.
        wait_for(
            lambda: all(inconclusive(daemon, f"d{i}") >= 3 for i in range(DEPENDENCIES)),
            15,
            "three inconclusive failures of every dependency",
        )
        assert metric_value(daemon.get("/metrics").text, "depmon_canary_up", canary="egress") == 0
        canary_target.come_back()
        upstream.clear_faults()
        pagerduty.wait_for(
            lambda got: any(e.dedup_key == "depmon/e2e/self" and e.action == "resolve" for e in got), timeout=15
        )
        assert [e.dedup_key for e in pagerduty.events if e.action == "trigger"] == ["depmon/e2e/self"]

    def test_upstreams_failing_alone_page_as_themselves(
        self, daemon: DaemonProcess, upstream: LoopbackServer, pagerduty: FakePagerDuty
    ) -> None:
        """With the canary up, the same outage is the dependencies' own: one page each, no self page."""
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 15, "readiness")
        upstream.fail_with(503)
        events = pagerduty.wait_for(
            lambda got: len({e.dedup_key for e in got if e.action == "trigger"}) >= DEPENDENCIES, timeout=15
        )
        keys = {e.dedup_key for e in events if e.action == "trigger"}
        assert keys == {f"depmon/e2e/d{i}" for i in range(DEPENDENCIES)}


OVERLOAD_MONITOR = """
  max_concurrent_probes: 2
  defaults: {interval: 1s, timeout: 900ms, failure_threshold: 2, success_threshold: 1, confirm_interval: 200ms}
"""


class TestOverloaded:
    def test_a_schedule_it_cannot_keep_pages_depmon_not_the_dependencies(
        self, tmp_path: Path, pagerduty: FakePagerDuty
    ) -> None:
        """40 probes a second through 2 slots of 200 ms answers: one self page saying so, no dependency page."""

        def slow(request: object) -> Response:
            time.sleep(0.2)
            return Response(200, b'{"status": "pass"}')

        with LoopbackServer() as upstream:
            upstream.route("GET", "/health", slow)
            config = http_dependencies_config(
                tmp_path / "depmon.yaml",
                40,
                f"{upstream.url}/health",
                pagerduty.events_url,
                ROUTING_KEY,
                OVERLOAD_MONITOR,
            )
            daemon = DaemonProcess(config, tmp_path / "state.sqlite3")
            try:
                daemon.start()
                events = pagerduty.wait_for(lambda got: any(e.dedup_key == "depmon/e2e/self" for e in got), timeout=40)
                [page] = [e for e in events if e.dedup_key == "depmon/e2e/self"]
                assert page.summary is not None
                assert page.summary.startswith("depmon cannot keep up: 40 probes/s scheduled")
                assert metric_value(daemon.get("/metrics").text, "depmon_overloaded") == 1
                verdict = daemon.status()["self"]
                assert verdict["condition"] == "overloaded"
                assert verdict["reason"].startswith("depmon cannot keep up")
                assert daemon.get("/healthz").status_code == 200
            finally:
                daemon.close()
        assert [e.dedup_key for e in pagerduty.events if e.action == "trigger"] == ["depmon/e2e/self"]
