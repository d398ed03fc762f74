"""`depmon run` reloaded (SIGHUP) with a YAML bomb: refused at once, the old config kept, the daemon alive."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.commands.test_daemon import daemon, upstream  # noqa: F401 - the running daemon and its upstream, as fixtures
from tests.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e

INVALID = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "invalid"


@pytest.mark.parametrize("fixture", ["yaml_alias_bomb", "yaml_too_deep", "yaml_recursive_alias"])
def test_sighup_with_a_hostile_config_is_refused_and_the_daemon_lives(daemon: DaemonProcess, fixture: str) -> None:  # noqa: F811
    """The reload is refused within a second, naming the file; /healthz answers and SIGTERM still exits 0."""
    wait_for(lambda: daemon.get("/readyz").status_code == 200, 10, "readiness")
    daemon.config.write_text((INVALID / f"{fixture}.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    started = time.monotonic()
    daemon.signal(signal.SIGHUP)
    refused = wait_for(lambda: daemon.find("config_reload_refused"), 5, "reload refused")
    assert time.monotonic() - started < 1.0
    assert str(daemon.config) in str(refused)
    assert daemon.get("/healthz").status_code == 200
    assert "depmon_config_last_reload_successful 0.0" in daemon.get("/metrics").text
    assert daemon.dependency_state("evss") == "up"
    assert daemon.find("uncaught_exception") is None
    assert daemon.stop() == 0
