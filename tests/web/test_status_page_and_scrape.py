"""The status page in headless Chromium (a screenshot with the feature history), and Prometheus scraping a daemon."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.sim.loopback import LoopbackServer, Response
from monitor.store import SQLiteStore
from tests.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
monitor:
  environment: e2e
  resolve_hold: 300ms
  defaults: {{interval: 1s, timeout: 500ms, failure_threshold: 1, success_threshold: 1, confirm_interval: 200ms}}
dependencies:
  evss:
    name: EVSS
    probes: [{{name: health, kind: http, url: "{url}/evss"}}]
  caseflow:
    name: Caseflow
    probes: [{{name: health, kind: http, url: "{url}/caseflow"}}]
features:
  claims: {{name: Claims, requires: [evss], userbase_share: 0.3}}
  appeals: {{name: Appeals, requires: [caseflow], userbase_share: 0.05}}
"""
HOUR = 3600.0
# Claims and Appeals before this run, as an earlier daemon left them in the state file: Claims
# had an outage, a maintenance window and a degraded spell over the day.
EARLIER = ("ok", "down", "ok", "maintenance", "ok", "degraded", "ok")
EARLIER_OFFSETS = (23 * HOUR, 9 * HOUR, 8.3 * HOUR, 5 * HOUR, 4.5 * HOUR, 2 * HOUR, 1.7 * HOUR)
# The history strip's colors (monitor/web/status_page.py), as Chromium paints them.
COLORS = {
    "ok": (0x2E, 0x85, 0x40),
    "degraded": (0xF0, 0xA3, 0x0A),
    "down": (0xD8, 0x39, 0x33),
    "maintenance": (0x00, 0x71, 0xBC),
    "unknown": (0xAE, 0xB0, 0xB5),
}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, LoopbackServer]]:
    """The daemon, every probe run once, on a state file holding the earlier day's feature history."""
    upstream = LoopbackServer()
    upstream.route("GET", "/evss", lambda request: Response(200, b"ok"))
    upstream.route("GET", "/caseflow", lambda request: Response(200, b"ok"))
    state = tmp_path / "state.sqlite3"
    now = time.time()
    with SQLiteStore(state, environment="e2e") as store:
        store.record_feature_states(
            [("claims", s, now - ago) for s, ago in zip(EARLIER, EARLIER_OFFSETS, strict=True)]
            + [("appeals", "ok", now - 23 * HOUR)]
        )
    with upstream:
        config = tmp_path / "depmon.yaml"
        config.write_text(CONFIG.format(url=upstream.url))
        process = DaemonProcess(config, state)
        try:
            process.start()
            wait_for(lambda: process.get("/readyz").status_code == 200, 10, "readiness")
            yield process, upstream
        finally:
            process.close()


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    return found


def _chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a profile of its own, run to the end (a minute at most)."""
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=60
    )


def _states(process: DaemonProcess, feature: str) -> list[str]:
    return [segment["state"] for segment in process.status()["features"][feature]["history_24h"]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _png_pixels(data: bytes) -> list[list[tuple[int, int, int]]]:
    """RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes), with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    idat = b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks.setdefault(kind, body)
        position += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color in (2, 6), interlace) == (8, True, 0)
    channels = 4 if color == 6 else 3
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        line_start = y * (stride + 1)
        kind, line = raw[line_start], bytearray(raw[line_start + 1 : line_start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0), (abs(guess - up), 1), (abs(guess - corner), 2))[1]
                line[x] = (line[x] + (left, up, corner)[near]) & 0xFF
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels)])
        previous = line
    return rows


def _near(pixel: tuple[int, int, int], color: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 6 for a, b in zip(pixel, color, strict=True))


@pytest.mark.needs_tool
class TestStatusPage:
    def test_chromium_renders_a_down_feature_as_down(
        self, daemon: tuple[DaemonProcess, LoopbackServer], chromium: str, tmp_path: Path
    ) -> None:
        """Headless Chromium renders the page, with the feature whose dependency is down shown as down."""
        process, upstream = daemon
        upstream.fail_with(503)
        wait_for(lambda: process.dependency_state("evss") == "down", 10, "evss down")
        dom = _chromium(chromium, tmp_path / "chromium", "--dump-dom", process.url + "/").stdout
        assert "<h2>App features</h2>" in dom
        claims_row = dom.split('data-feature="claims"', 1)[1].split("</tr>", 1)[0]
        assert 'class="state down"' in claims_row
        assert dom.index("App features") < dom.index("Dependencies")  # features first

    def test_a_failure_and_its_recovery_show_in_the_screenshot(
        self, daemon: tuple[DaemonProcess, LoopbackServer], chromium: str, tmp_path: Path
    ) -> None:
        """After a failure and recovery, Chromium shows each feature's day from the state file, then down and ok."""
        process, upstream = daemon
        upstream.fail_with(503)
        for feature in ("claims", "appeals"):
            wait_for(lambda f=feature: _states(process, f)[-1] == "down", 10, f"{feature} down in its history")
        upstream.clear_faults()
        for feature in ("claims", "appeals"):
            wait_for(lambda f=feature: _states(process, f)[-2:] == ["down", "ok"], 10, f"{feature} ok again")

        screenshot = tmp_path / "status-page.png"
        shot = _chromium(
            chromium,
            tmp_path / "chromium-shot",
            f"--screenshot={screenshot}",
            "--window-size=1280,720",
            process.url + "/",
        )
        assert screenshot.exists(), shot.stderr[-2000:]
        dom = _chromium(chromium, tmp_path / "chromium-dom", "--dump-dom", process.url + "/").stdout

        claims = dom.split('data-feature="claims"', 1)[1].split("</tr>", 1)[0]
        states = re.findall(r'<span class="seg [^"]*" data-state="(\w+)"', claims)
        # The earlier day from the state file, unknown while no daemon ran, then this run: its first
        # probes, the failure and the recovery.
        assert states == ["unknown", *EARLIER, "unknown", "ok", "down", "ok"]
        titles = re.findall(r'title="([^"]+)"', claims)
        assert all(re.fullmatch(r"\w+ .+-.+ UTC", title) for title in titles), titles
        assert 'role="img" aria-label="Claims, last 24 hours: unknown ' in claims
        appeals = dom.split('data-feature="appeals"', 1)[1].split("</tr>", 1)[0]
        assert re.findall(r'data-state="(\w+)"', appeals) == ["unknown", "ok", "unknown", "ok", "down", "ok"]

        data = screenshot.read_bytes()
        assert len(data) > 20_000  # a rendered page, not a blank or an error tab
        rows = _png_pixels(data)
        # The strips' rows: wide runs of strip colors (a legend swatch is 14 px wide, a strip 400+).
        strip_rows = [
            row for row in rows if sum(any(_near(pixel, color) for color in COLORS.values()) for pixel in row) > 300
        ]
        assert len(strip_rows) >= 20  # two strips of about 19 px
        painted = {
            state: sum(_near(pixel, color) for row in strip_rows for pixel in row) for state, color in COLORS.items()
        }
        assert all(painted[state] > 0 for state in COLORS), painted
        assert painted["ok"] > painted["down"] > painted["degraded"] > 0, painted


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


class TestFeatureHistory:
    def test_stopping_the_daemon_leaves_every_feature_unknown(
        self, daemon: tuple[DaemonProcess, LoopbackServer], tmp_path: Path
    ) -> None:
        """A graceful stop writes the history left and then `unknown` for every feature, after this run's states."""
        process, _ = daemon
        for feature in ("claims", "appeals"):
            wait_for(lambda f=feature: _states(process, f)[-1] == "ok", 10, f"{feature} ok")
        assert process.stop(20) == 0
        with SQLiteStore(tmp_path / "state.sqlite3", environment="e2e") as store:
            history: dict[str, Any] = store.feature_history(time.time() - 60)
        assert [state for _, state in history["claims"]][-3:] == ["unknown", "ok", "unknown"]
        assert [state for _, state in history["appeals"]][-3:] == ["unknown", "ok", "unknown"]
