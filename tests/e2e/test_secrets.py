"""No secret leaves the daemon: not in logs, /status, /metrics, the state file or the events sent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from monitor.sim.environment import SimulatedEnvironment
from tests.e2e.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def running() -> Iterator[tuple[SimulatedEnvironment, DaemonProcess]]:
    with SimulatedEnvironment(environment="secrets") as env:
        daemon = DaemonProcess(env.config_dir, env.state_path)
        try:
            daemon.start()
            yield env, daemon
        finally:
            daemon.close()


class TestSecrets:
    def test_secrets_appear_nowhere_in_a_run_with_pages(
        self, running: tuple[SimulatedEnvironment, DaemonProcess]
    ) -> None:
        """After a run with an outage and a page, no secret value is in any output of the daemon."""
        env, daemon = running
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 30, "readiness")
        env.upstream("evss").http.fail_with(503)
        wait_for(lambda: env.pagerduty.events_for(env.dedup_key("evss")), 30, "the EVSS page")
        env.upstream("evss").http.clear_faults()
        wait_for(lambda: daemon.dependency_state("evss") == "up", 30, "EVSS back up")

        secrets = set(env.config.secret_values())
        # The bearer tokens the simulated SSOe issued, as EVSS received them.
        for request in env.upstream("evss").http.requests:
            authorization = request.header("Authorization") or ""
            if authorization.startswith("Bearer "):
                secrets.add(authorization.removeprefix("Bearer "))
        assert len(secrets) >= 4  # routing key, API token, SSOe client id and secret, at least one token

        outputs = {
            "logs": "".join(daemon.raw),
            "/status": daemon.get("/status").text,
            "/metrics": daemon.get("/metrics").text,
            "/": daemon.get("/").text,
            "/maintenance_windows": daemon.get("/maintenance_windows").text,
        }
        with sqlite3.connect(env.state_path) as db:
            outputs["state file"] = "\n".join(
                str(row)
                for table in ("outbox", "incidents", "timeline")
                for row in db.execute(f"SELECT * FROM {table}")
            )
        events = env.pagerduty.events
        assert events, "the run produced no event to check"
        for event in events:
            # The routing key travels in its own field, as the Events API requires, and nowhere else.
            body = {k: v for k, v in event.body.items() if k != "routing_key"}
            outputs[f"event {event.dedup_key}"] = repr(body)
        assert daemon.stop() == 0
        outputs["logs"] = "".join(daemon.raw)

        leaks = [(where, secret[:4] + "...") for where, text in outputs.items() for secret in secrets if secret in text]
        assert leaks == []
