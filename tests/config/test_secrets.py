"""No secret leaves the daemon: not in logs, /status, /metrics, the state file or the events sent."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.environment import SimulatedEnvironment
from tests.harness import DaemonProcess, wait_for

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


STATE_PASSWORD = "qu3ry-Passw0rd-of-the-state"
STATE_CONFIG = """
monitor:
  environment: e2e
  state_url: "postgresql://depmon@127.0.0.1:{port}/depmon?password={password}&sslpassword=ssl-{password}"
dependencies:
  evss:
    name: EVSS
    probes:
      - {{name: port, kind: tcp, host: 127.0.0.1, port: {port}}}
"""


@pytest.fixture
def down_database_config(tmp_path: Path) -> Iterator[Path]:
    """A config whose state_url carries `?password=` and points at a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused at once
        path = tmp_path / "depmon.yaml"
        path.write_text(STATE_CONFIG.format(port=sock.getsockname()[1], password=STATE_PASSWORD))
        yield path


class TestStateUrlPassword:
    """A state_url's query-string password stays out of every command's output when the database is down."""

    @pytest.mark.parametrize(
        "command",
        [
            pytest.param(["silence", "evss", "--for", "1h", "--reason", "deploy"], id="silence"),
            pytest.param(["silence", "--list"], id="silence-list"),
            pytest.param(["postmortem", "evss"], id="postmortem"),
            pytest.param(["run", "--listen", "127.0.0.1:0", "--log-format", "json"], id="run"),
        ],
    )
    def test_password_absent_host_present(self, down_database_config: Path, command: list[str]) -> None:
        """The command fails naming the database's host, and no password form is in its stdout or stderr."""
        done = subprocess.run(
            [sys.executable, "-m", "monitor.entry", *command, "--config", str(down_database_config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode != 0, output
        assert "127.0.0.1" in output
        assert STATE_PASSWORD not in output
