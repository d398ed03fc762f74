"""`depmon bench` end to end: a short run against the loopback target, from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

FIGURES = (
    "scheduled",
    "run",
    "run_ratio",
    "failed",
    "cpu_ms_per_probe",
    "lag_p99_ms",
    "peak_rss_mb",
    "metrics_seconds",
    "pages",
    "self_pages",
    "overloaded",
    "down_at_end",
)


class TestBenchCommand:
    def test_a_short_run_prints_depmons_figures_as_json_and_exits_0(self) -> None:
        """50 targets every second for 3 s: every figure is present, probes ran, nothing failed or paged."""
        env = {key: value for key, value in os.environ.items() if key != "DEPMON_CONFIG"}
        command = ["bench", "--targets", "50", "--interval", "1", "--seconds", "3", "--no-blackbox", "--json"]
        result = subprocess.run(
            [sys.executable, "-m", "monitor.commands.cli", *command],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["targets"] == 50
        assert report["interval_seconds"] == 1.0
        assert report["blackbox"] is None
        assert report["blackbox_skipped"] == "skipped (--no-blackbox)"
        depmon = report["depmon"]
        for name in FIGURES:
            assert name in depmon, name
        assert depmon["run"] > 0
        assert depmon["cpu_ms_per_probe"] > 0
        assert depmon["peak_rss_mb"] > 0
        assert depmon["failed"] == 0
        assert depmon["pages"] == 0
        assert depmon["down_at_end"] == 0
        assert "bench: depmon" in result.stderr  # progress goes to stderr, the report to stdout
        assert "Traceback" not in result.stderr
