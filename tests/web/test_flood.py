"""An idle-connection flood against depmon's own port pages nobody (issue 10): its trouble is not a dependency's."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.daemon import COLLECTOR_THRESHOLDS
from monitor.sim.loopback import Response
from tests.harness import healthy_upstream_daemon, wait_for

pytestmark = pytest.mark.e2e

FLOOD = 2000
MONITOR = """
  resolve_hold: 300ms
  defaults: {interval: 500ms, timeout: 400ms, failure_threshold: 2, success_threshold: 1, confirm_interval: 100ms}
"""


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to 127.0.0.1:`port` that send nothing."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_a_flood_of_idle_connections_pages_no_dependency(tmp_path: Path) -> None:
    """2,000 idle sockets on depmon's port: /healthz answers, no page; a real outage still pages, alone."""
    with healthy_upstream_daemon(tmp_path, 5, MONITOR) as (daemon, upstream, pagerduty):
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 15, "readiness")
        # Set up for load before anything else: every file it may open, fewer full collections.
        started = daemon.find("daemon_started")
        assert started is not None
        assert started["collector_thresholds"] == list(COLLECTOR_THRESHOLDS)
        assert started["open_files_limit"] >= started["open_files_limit_was"]
        port = int(daemon.get("/healthz").url.port or 0)
        with idle_connections(port, FLOOD) as flood:
            assert len(flood) > FLOOD // 2
            assert daemon.get("/healthz").status_code == 200
            wait_for(lambda: daemon.status()["dependencies"]["d1"]["probes"]["health"]["ok"], 5, "probes run")
            # The positive event an absence is proved against: a real outage pages, and only it.
            upstream.route("GET", "/health", lambda request: Response(503, b'{"status": "fail"}'))
            events = pagerduty.wait_for(lambda got: len({e.dedup_key for e in got}) >= 5, timeout=15)
    assert {e.dedup_key for e in events if e.action == "trigger"} == {f"depmon/e2e/d{i}" for i in range(5)}
    assert all(e.action == "trigger" for e in events)  # nothing paged (or resolved) before the outage
