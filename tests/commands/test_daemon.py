"""`depmon run` end to end: a subprocess against a loopback upstream, read through its endpoints."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.loopback import LoopbackServer, Response
from tests.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
monitor:
  environment: e2e
  resolve_hold: 300ms
  defaults: {{interval: 1s, timeout: 500ms, failure_threshold: 2, success_threshold: 2, confirm_interval: 200ms}}
dependencies:
  evss:
    name: EVSS
    probes:
      - {{name: health, kind: http, url: "{url}/health", expect: {{health_json: true}}}}
features:
  claims: {{name: Claims, requires: [evss], userbase_share: 0.3}}
  letters_and_documents: {{name: Letters, requires: [evss], userbase_share: 0.2}}
"""


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.route("GET", "/health", lambda request: Response(200, b'{"status": "pass"}'))
    with server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, upstream: LoopbackServer) -> Iterator[DaemonProcess]:
    config = tmp_path / "depmon.yaml"
    config.write_text(CONFIG.format(url=upstream.url))
    process = DaemonProcess(config, tmp_path / "state.sqlite3")
    try:
        yield process.start()
    finally:
        process.close()


class TestDaemonLifecycle:
    def test_outage_and_recovery_flip_states_and_sigterm_stops_cleanly(
        self, daemon: DaemonProcess, upstream: LoopbackServer
    ) -> None:
        """An upstream outage takes the dependency and its features down, recovery brings them back, SIGTERM exits 0."""
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 10, "readiness")
        assert daemon.get("/healthz").status_code == 200
        assert daemon.dependency_state("evss") == "up"
        metrics = daemon.get("/metrics").text
        assert 'depmon_dependency_up{dependency="evss"} 1.0' in metrics
        assert 'depmon_feature_state{feature="claims",state="ok"} 1.0' in metrics

        upstream.fail_with(503)
        wait_for(lambda: daemon.dependency_state("evss") == "down", 10, "evss down")
        status = daemon.status()
        assert status["features"]["claims"]["state"] == "down"
        assert status["features"]["claims"]["impacted_by"] == ["evss"]
        assert status["dependencies"]["evss"]["probes"]["health"]["detail"].startswith("HTTP 503 from /health")
        # The pager decides right after the state change: wait for it rather than race it.
        wait_for(lambda: [i["dependency"] for i in daemon.status()["incidents"]] == ["evss"], 5, "the incident open")
        metrics = daemon.get("/metrics").text
        assert 'depmon_dependency_up{dependency="evss"} 0.0' in metrics
        assert 'depmon_feature_impacted{feature="letters_and_documents"} 1.0' in metrics
        assert daemon.find("dependency_state_changed", dependency="evss", new="down") is not None

        upstream.clear_faults()
        wait_for(lambda: daemon.dependency_state("evss") == "up", 10, "evss up again")
        assert daemon.status()["features"]["claims"]["state"] == "ok"
        # The incident is resolved once evss has stayed up for resolve_hold (300 ms).
        wait_for(lambda: daemon.status()["incidents"] == [], 5, "incident resolved after the hold")
        assert daemon.find("incident_resolve_hold", dependency="evss") is not None

        started = time.monotonic()
        assert daemon.stop(timeout=5) == 0
        assert time.monotonic() - started < 5
        assert daemon.find("daemon_stopped") is not None

    def test_sighup_with_an_invalid_config_keeps_the_old_one(self, daemon: DaemonProcess) -> None:
        """A reload with an invalid file is refused, reported in the metric, and probing goes on."""
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 10, "readiness")
        good = daemon.config.read_text()
        daemon.config.write_text(good.replace("environment: e2e", "environment: [broken"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.find("config_reload_refused"), 5, "reload refused")
        assert "depmon_config_last_reload_successful 0.0" in daemon.get("/metrics").text
        assert daemon.dependency_state("evss") == "up"

        daemon.config.write_text(good.replace("name: Claims", "name: Claims (renamed)"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.find("config_reloaded"), 5, "reload accepted")
        assert "depmon_config_last_reload_successful 1.0" in daemon.get("/metrics").text
        assert daemon.status()["features"]["claims"]["name"] == "Claims (renamed)"
        assert daemon.status()["dependencies"]["evss"]["state"] == "up"  # health carried over, not unknown
        assert daemon.stop() == 0


class TestDaemonStartup:
    def test_a_port_in_use_exits_2_with_a_message(self, tmp_path: Path, upstream: LoopbackServer) -> None:
        """Binding a busy port fails before anything starts, with exit status 2."""
        import subprocess
        import sys

        config = tmp_path / "depmon.yaml"
        config.write_text(CONFIG.format(url=upstream.url))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor.commands.cli",
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{upstream.port}",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2
        assert f"cannot listen on 127.0.0.1:{upstream.port}" in result.stderr
        assert "Traceback" not in result.stderr
