"""The status page in headless Chromium, and a real Prometheus server scraping a running daemon."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.sim.loopback import LoopbackServer, Response
from tests.e2e.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
monitor:
  environment: e2e
  resolve_hold: 300ms
  defaults: {{interval: 1s, timeout: 500ms, failure_threshold: 1, success_threshold: 1, confirm_interval: 200ms}}
dependencies:
  evss:
    name: EVSS
    probes: [{{name: health, kind: http, url: "{url}/health"}}]
  caseflow:
    name: Caseflow
    probes: [{{name: health, kind: http, url: "{url}/health"}}]
features:
  claims: {{name: Claims, requires: [evss], userbase_share: 0.3}}
  appeals: {{name: Appeals, requires: [caseflow], userbase_share: 0.05}}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, LoopbackServer]]:
    upstream = LoopbackServer()
    upstream.route("GET", "/health", lambda request: Response(200, b"ok"))
    with upstream:
        config = tmp_path / "depmon.yaml"
        config.write_text(CONFIG.format(url=upstream.url))
        process = DaemonProcess(config, tmp_path / "state.sqlite3")
        try:
            process.start()
            wait_for(lambda: process.get("/readyz").status_code == 200, 10, "readiness")
            yield process, upstream
        finally:
            process.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.needs_tool
class TestStatusPage:
    def test_chromium_renders_a_down_feature_as_down(
        self, daemon: tuple[DaemonProcess, LoopbackServer], tmp_path: Path
    ) -> None:
        """Headless Chromium renders the page, with the feature whose dependency is down shown as down."""
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("chromium is not installed (Debian package chromium)")
        process, upstream = daemon
        upstream.fail_with(503)
        wait_for(lambda: process.dependency_state("evss") == "down", 10, "evss down")
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--dump-dom",
                process.url + "/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        dom = result.stdout
        assert "<h2>App features</h2>" in dom
        claims_row = dom.split('data-feature="claims"', 1)[1].split("</tr>", 1)[0]
        assert 'class="state down"' in claims_row
        assert dom.index("App features") < dom.index("Dependencies")  # features first


@pytest.mark.needs_tool
class TestPrometheusScrape:
    def test_prometheus_scrapes_dependency_and_feature_series(
        self, daemon: tuple[DaemonProcess, LoopbackServer], tmp_path: Path
    ) -> None:
        """A real Prometheus server scrapes the daemon and serves its series with the expected labels."""
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            pytest.skip("prometheus is not installed (Debian package prometheus)")
        process, _ = daemon
        target = process.url.removeprefix("http://")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: depmon\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = _free_port()
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v1/query"

            def series(query: str) -> list[dict[str, object]]:
                answer = httpx.get(api, params={"query": query}, timeout=5).json()
                return list(answer["data"]["result"]) if answer.get("status") == "success" else []

            up = wait_for(lambda: series("depmon_dependency_up"), 30, "depmon_dependency_up in Prometheus", 0.5)
            assert {s["metric"]["dependency"] for s in up} == {"evss", "caseflow"}  # type: ignore[index]
            assert all(s["metric"]["job"] == "depmon" for s in up)  # type: ignore[index]
            states = series('depmon_feature_state{state="ok"} == 1')
            assert {s["metric"]["feature"] for s in states} == {"claims", "appeals"}  # type: ignore[index]
        finally:
            server.terminate()
            server.wait(10)

    def test_promtool_finds_no_problem_in_the_metrics_output(
        self, daemon: tuple[DaemonProcess, LoopbackServer]
    ) -> None:
        """`promtool check metrics` reports nothing on depmon's /metrics text."""
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not installed (Debian package prometheus)")
        process, _ = daemon
        text = process.get("/metrics").text
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == ""
        assert result.stderr.strip() == ""

    def test_openmetrics_when_asked(self, daemon: tuple[DaemonProcess, LoopbackServer]) -> None:
        """An OpenMetrics Accept header gets the OpenMetrics format, ending in # EOF."""
        process, _ = daemon
        response = process.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.rstrip().endswith("# EOF")


class TestMaintenanceEndpoint:
    def test_no_windows_gives_empty_data(self, daemon: tuple[DaemonProcess, LoopbackServer]) -> None:
        """With nothing open the endpoint answers the vets-api shape with empty data."""
        process, _ = daemon
        assert process.get("/maintenance_windows").json() == {"data": []}
        assert json.loads(process.get("/status").text)["environment"] == "e2e"
