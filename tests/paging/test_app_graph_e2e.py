"""The app's own map end to end (SPEC 11.1): a PagerDuty window on a dependency reaches, through
vets-api's graph, exactly the app services below its `vets_api` name; /status and the drift gauge
follow a reload."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.sim.environment import SimulatedEnvironment
from tests.harness import metric_value, running, wait_for
from tests.paging.test_paging_faults import FAST, POLL, WAIT, service_of, write_source

pytestmark = pytest.mark.e2e

# a's vets-api name reaches two app services through two Lighthouse-like nodes; other's reaches a third.
EDGES = [
    ["upstream_a", "api_one"],
    ["upstream_a", "api_two"],
    ["api_one", "claims"],
    ["api_two", "appeals"],
    ["upstream_b", "letters_and_documents"],
]


def app_graph_source(workdir: Path) -> Path:
    """`write_source`'s config for dependencies a and b, with an app_graph and their vets_api names."""
    source = write_source(workdir / "source", {"a": (), "b": ()}, "30m", "90d")
    document = yaml.safe_load(source.read_text("utf-8"))
    document["dependencies"]["a"]["vets_api"] = ["upstream_a"]
    document["dependencies"]["b"]["vets_api"] = ["upstream_b"]
    document["app_graph"] = {"source": "e2e graph", "edges": EDGES}
    source.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return source


def served(daemon: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = daemon.get("/maintenance_windows").json()["data"]
    return records


def test_a_window_on_a_dependency_gives_exactly_the_two_app_services_below_it(tmp_path: Path) -> None:
    """A window on a, whose vets_api name reaches claims and appeals, serves exactly those two records."""
    source = app_graph_source(tmp_path)
    (tmp_path / "sim").mkdir()
    with (
        SimulatedEnvironment(
            tmp_path / "sim", environment="e2e", timing=FAST, maintenance_poll_interval=POLL, source=source
        ) as sim,
        running(sim) as daemon,
    ):
        status = daemon.status()["app_graph"]
        assert status["source"] == "e2e graph"
        # (a) a's and b's outages impact a_feature and b_feature in depmon's graph, which the app does not know,
        # and their windows put up banners depmon's graph does not impact: two differences.
        assert [d["subject"] for d in status["drift"]] == ["a", "b"]
        assert metric_value(daemon.get("/metrics").text, "depmon_app_graph_drift") == 2

        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        sim.pagerduty.add_window([service_of("a")], start, start + timedelta(hours=1), "USER_MESSAGE:A|a is down")
        records = wait_for(lambda: served(daemon), WAIT, "the window on /maintenance_windows")
        assert sorted(r["attributes"]["service"] for r in records) == ["appeals", "claims"]
        assert {r["attributes"]["start_time"] for r in records} == {start.strftime("%Y-%m-%dT%H:%M:%S.000Z")}

        # A reload recomputes /status's app_graph and the gauge: a renamed vets-api node is drift (d).
        document = yaml.safe_load(sim.config_file.read_text("utf-8"))
        document["dependencies"]["b"]["vets_api"] = ["upstream_b", "upstream_b_v2"]
        sim.config_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: len(daemon.status()["app_graph"]["drift"]) == 3, WAIT, "drift recomputed on reload")
        assert metric_value(daemon.get("/metrics").text, "depmon_app_graph_drift") == 3
        assert sorted(r["attributes"]["service"] for r in served(daemon)) == ["appeals", "claims"]
