"""The daemon's `process_*` metrics (SPEC 11.5) describe the daemon, though a forked child renders /metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import healthy_upstream_daemon, metric_value, wait_for

pytestmark = pytest.mark.e2e

MONITOR = """
  defaults: {interval: 1s, timeout: 500ms}
"""


def _stat(pid: int) -> dict[str, float]:
    """Process `pid`'s start time (UNIX seconds), CPU seconds so far and resident bytes, from /proc."""
    parts = Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    system = Path("/proc/stat").read_text().splitlines()
    (boot,) = (float(line.split()[1]) for line in system if line.startswith("btime "))
    return {
        "start_time": float(parts[19]) / ticks + boot,
        "cpu": (float(parts[11]) + float(parts[12])) / ticks,
        "rss": float(parts[21]) * os.sysconf("SC_PAGE_SIZE"),
    }


def test_process_metrics_are_the_daemons_own(tmp_path: Path) -> None:
    """Start time, CPU seconds and resident memory in /metrics are the daemon process's, not its renderer's."""
    with healthy_upstream_daemon(tmp_path, 1, MONITOR) as (daemon, _, _):
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 15, "readiness")
        assert daemon.proc is not None
        before = _stat(daemon.proc.pid)
        scrape = daemon.get("/metrics").text
        after = _stat(daemon.proc.pid)
    assert metric_value(scrape, "process_start_time_seconds") == before["start_time"]
    cpu = metric_value(scrape, "process_cpu_seconds_total")
    assert cpu is not None
    # Compared in clock ticks: the exporter adds utime/ticks and stime/ticks, which rounds differently
    # from (utime + stime)/ticks (0.85000000001 against 0.85). A child forked for the render starts at 0.
    ticks = os.sysconf("SC_CLK_TCK")
    assert round(before["cpu"] * ticks) <= round(cpu * ticks) <= round(after["cpu"] * ticks)
    rss = metric_value(scrape, "process_resident_memory_bytes")
    assert rss is not None
    assert min(before["rss"], after["rss"]) * 0.9 <= rss <= max(before["rss"], after["rss"]) * 1.1
