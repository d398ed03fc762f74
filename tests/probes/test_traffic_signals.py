"""Traffic signals end to end (issue 24, SPEC 11.3): the daemon, a real Prometheus (Debian's
`prometheus`) on loopback scraping a loopback exporter of vets-api's `api_external_http_request_total`
whose counters the test controls, and the fake PagerDuty.

The exporter adds `calls` calls per scrape to each service, `failure_ratio` of them `failed`, so
`rate()` over a few scrapes is the failure ratio the test set.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.sim.loopback import LoopbackServer, Response
from tests.harness import DaemonProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.needs_tool]

ROUTING_KEY = "T" * 32
DEDUP_KEY = "depmon/e2e/caseflow"


def _ratio(service: str) -> str:
    """The failure ratio of vets-api's calls to `service` over the last few 1 s scrapes."""
    calls = f'api_external_http_request_total{{service="{service}"'
    return f'sum(rate({calls},status!="success"}}[4s])) / sum(rate({calls}}}[4s]))'


class TrafficExporter:
    """vets-api's upstream call counters (as statsd_exporter shows them) on a loopback /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traffic: dict[str, tuple[int, float]] = {}
        self._counts: dict[tuple[str, str], float] = {}
        self.server = LoopbackServer()
        self.server.route("GET", "/metrics", self._scrape)

    def set(self, service: str, calls: int, failure_ratio: float) -> None:
        """From the next scrape on, `calls` more calls to `service` per scrape, this share failing."""
        with self._lock:
            self._traffic[service] = (calls, failure_ratio)

    def _scrape(self, request: Any) -> Response:
        with self._lock:
            for service, (calls, ratio) in self._traffic.items():
                failed = round(calls * ratio)
                for status, added in (("success", calls - failed), ("failed", failed)):
                    self._counts[(service, status)] = self._counts.get((service, status), 0.0) + added
            lines = ["# TYPE api_external_http_request_total counter"]
            lines += [
                f'api_external_http_request_total{{service="{service}",status="{status}"}} {count}'
                for (service, status), count in sorted(self._counts.items())
            ]
        return Response(200, ("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    """A real Prometheus on loopback scraping the exporter every second."""

    url: str
    process: subprocess.Popen[bytes]

    def query(self, expression: str) -> list[Any]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5).json()
        return list(answer["data"]["result"]) if answer.get("status") == "success" else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def exporter() -> Iterator[TrafficExporter]:
    fake = TrafficExporter()
    with fake.server:
        yield fake


@pytest.fixture
def prometheus(tmp_path: Path, exporter: TrafficExporter) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package prometheus; scripts/install-test-tools)")
    target = exporter.server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: vets-api\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        server.route("GET", "/health", lambda request: Response(200, b'{"status": "pass"}'))
        yield server


_CONFIG = """
monitor:
  environment: e2e
  resolve_hold: 300ms
  defaults: {{interval: 1s, timeout: 800ms, failure_threshold: 2, success_threshold: 1, confirm_interval: 500ms}}
pagerduty:
  routing_key: {routing_key}
  events_url: {events_url}
dependencies:
  caseflow:
    name: Caseflow
    probes:
      - {{name: health, kind: http, url: "{health_url}"}}
      - name: traffic
        kind: prometheus
        url: {prometheus_url}
        query: '{query}'
        fail_above: 0.25
        no_data: {no_data}
features:
  appeals: {{name: Appeals, requires: [caseflow], userbase_share: 0.1}}
"""


@dataclass
class Rig:
    """Everything a test drives: Prometheus, its exporter, the health path, the fake PagerDuty."""

    tmp_path: Path
    prometheus: Prometheus
    exporter: TrafficExporter
    upstream: LoopbackServer
    pagerduty: FakePagerDuty

    @contextlib.contextmanager
    def daemon(self, service: str = "caseflow", no_data: str = "inconclusive") -> Iterator[DaemonProcess]:
        """The daemon watching `service`'s traffic (none failing); once Prometheus sees it, caseflow up."""
        self.exporter.set("caseflow", calls=100, failure_ratio=0.0)
        wait_for(lambda: _ratio_seen(self.prometheus, 0.0, 0.0), 30, "Prometheus to see the traffic", 0.5)
        config = self.tmp_path / "depmon.yaml"
        config.write_text(
            _CONFIG.format(
                routing_key=ROUTING_KEY,
                events_url=self.pagerduty.events_url,
                health_url=f"{self.upstream.url}/health",
                prometheus_url=self.prometheus.url,
                query=_ratio(service),
                no_data=no_data,
            )
        )
        daemon = DaemonProcess(config, self.tmp_path / "state.sqlite3")
        try:
            daemon.start()
            if service == "caseflow":
                wait_for(lambda: daemon.dependency_state("caseflow") == "up", 20, "caseflow up")
            yield daemon
        finally:
            daemon.close()


@pytest.fixture
def rig(
    tmp_path: Path,
    prometheus: Prometheus,
    exporter: TrafficExporter,
    upstream: LoopbackServer,
    pagerduty: FakePagerDuty,
) -> Rig:
    return Rig(tmp_path, prometheus, exporter, upstream, pagerduty)


def _traffic(daemon: DaemonProcess) -> dict[str, Any]:
    return dict(daemon.status()["dependencies"]["caseflow"]["probes"]["traffic"])


def _ratio_seen(prometheus: Prometheus, low: float, high: float) -> bool:
    result = prometheus.query(_ratio("caseflow"))
    return bool(result) and low <= float(result[0]["value"][1]) <= high


class TestTrafficPages:
    def test_failing_traffic_pages_with_its_evidence_and_the_disagreement_then_resolves(self, rig: Rig) -> None:
        """40% of calls failing (over 0.25) while /health answers 200: a page with value, query and the
        disagreement; back to 0% it resolves."""
        with rig.daemon() as daemon:
            rig.exporter.set("caseflow", calls=100, failure_ratio=0.4)
            (trigger,) = rig.pagerduty.wait_for(lambda events: bool(events), timeout=30)
            details = trigger.body["payload"]["custom_details"]
            (evidence,) = details["evidence"]
            assert evidence["probe"] == "traffic"
            assert 0.25 < evidence["value"] <= 0.4
            assert evidence["query"] == _ratio("caseflow")
            assert evidence["point_at"].endswith("Z")
            disagreement = details["disagreement"]
            assert (disagreement["traffic"], disagreement["failing"], disagreement["passing"]) == (
                "failing",
                ["traffic"],
                ["health"],
            )
            assert daemon.status()["dependencies"]["caseflow"]["disagreement"]["traffic"] == "failing"
            exposition = daemon.get("/metrics").text
            assert (metric_value(exposition, "depmon_signal_value", dependency="caseflow", probe="traffic") or 0) > 0.25

            rig.exporter.set("caseflow", calls=100, failure_ratio=0.0)
            events = rig.pagerduty.wait_for(lambda events: any(e.action == "resolve" for e in events), timeout=30)
            assert [e.action for e in events] == ["trigger", "resolve"]
            assert all(e.body["dedup_key"] == DEDUP_KEY for e in events)

    def test_probes_failing_while_traffic_passes_says_so(self, rig: Rig) -> None:
        """The health path fails while every real call succeeds: the page says the traffic passes."""
        with rig.daemon():
            rig.upstream.fail_with(503)
            (trigger,) = rig.pagerduty.wait_for(lambda events: bool(events), timeout=30)
            disagreement = trigger.body["payload"]["custom_details"]["disagreement"]
            assert (disagreement["traffic"], disagreement["failing"], disagreement["passing"]) == (
                "passing",
                ["health"],
                ["traffic"],
            )


class TestNoDataAndOutages:
    def test_no_data_fail_pages(self, rig: Rig) -> None:
        """`no_data: fail` on a query with no series (an empty vector) is the dependency's failure."""
        with rig.daemon(service="nothing-calls-this", no_data="fail"):
            (trigger,) = rig.pagerduty.wait_for(lambda events: bool(events), timeout=30)
            (evidence,) = trigger.body["payload"]["custom_details"]["evidence"]
            assert evidence["detail"].startswith("no data from Prometheus")
            assert evidence["value"] is None

    def test_no_data_inconclusive_pages_nobody(self, rig: Rig) -> None:
        """`no_data: inconclusive` (the default): runs pile up as inconclusive `no_data`, no page, ready."""
        with rig.daemon(service="nothing-calls-this") as daemon:
            wait_for(lambda: _inconclusive(daemon, "no_data") >= 6, 30, "six inconclusive no_data runs")
            assert rig.pagerduty.events == []
            assert daemon.get("/readyz").status_code == 200
            assert _traffic(daemon)["inconclusive"]["reason"] == "no_data"

    def test_a_prometheus_outage_pages_nobody(self, rig: Rig) -> None:
        """Prometheus stopped: every run is inconclusive `signal_backend`, readable in /status; no page."""
        with rig.daemon() as daemon:
            rig.prometheus.stop()
            wait_for(lambda: _inconclusive(daemon, "signal_backend") >= 6, 30, "six inconclusive signal_backend runs")
            assert rig.pagerduty.events == []
            assert daemon.dependency_state("caseflow") == "up"
            reason = _traffic(daemon)["inconclusive"]
            assert reason["reason"] == "signal_backend"
            assert "connection refused" in reason["detail"]


def _inconclusive(daemon: DaemonProcess, reason: str) -> float:
    exposition = daemon.get("/metrics").text
    return metric_value(exposition, "depmon_probes_inconclusive_total", probe="traffic", reason=reason) or 0.0
