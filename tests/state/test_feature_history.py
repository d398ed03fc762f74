"""Feature history for the status page: the engine's hook, the daemon's buffer and flush loop, and the 24 h segments."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from monitor.config import Config
from monitor.daemon import Daemon, FeatureChanges
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.state.live import Engine
from monitor.store import Store
from monitor.web.server import HISTORY_SECONDS, history_segments

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
SINCE = NOW - HISTORY_SECONDS
OK = ProbeResult.success("HTTP 200 from /health")
DOWN = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _segments(*spans: tuple[float, float, str]) -> list[dict[str, str]]:
    return [{"from": _iso(begin), "to": _iso(end), "state": state} for begin, end, state in spans]


@pytest.fixture
def config() -> Config:
    return Config.model_validate(
        {
            "monitor": {
                "environment": "test",
                "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 2, "success_threshold": 1},
            },
            "dependencies": {
                "evss": {"name": "EVSS", "probes": [{"name": "health", "kind": "http", "url": "https://e/health"}]},
                "caseflow": {
                    "name": "Caseflow",
                    "probes": [{"name": "health", "kind": "http", "url": "https://c/health"}],
                },
            },
            "features": {
                "claims": {"name": "Claims", "requires": ["evss"], "userbase_share": 0.3},
                "appeals": {"name": "Appeals", "requires": ["caseflow"], "userbase_share": 0.08},
            },
        }
    )


class TestHistorySegments:
    @pytest.mark.parametrize(
        ("changes", "current", "expected"),
        [
            ([], None, _segments((SINCE, NOW, "unknown"))),
            ([(SINCE - 3600, "ok")], None, _segments((SINCE, NOW, "ok"))),
            (
                [(SINCE - 3600, "ok"), (NOW - 900, "down"), (NOW - 300, "ok")],
                None,
                _segments((SINCE, NOW - 900, "ok"), (NOW - 900, NOW - 300, "down"), (NOW - 300, NOW, "ok")),
            ),
            ([(NOW - 600, "ok")], None, _segments((SINCE, NOW - 600, "unknown"), (NOW - 600, NOW, "ok"))),
            (
                [(NOW - 600, "ok"), (NOW - 300, "ok")],
                None,
                _segments((SINCE, NOW - 600, "unknown"), (NOW - 600, NOW, "ok")),
            ),
            (
                [(NOW - 600, "ok"), (NOW - 300, "down"), (NOW - 300, "ok")],
                None,
                _segments((SINCE, NOW - 600, "unknown"), (NOW - 600, NOW, "ok")),
            ),
            ([(SINCE - 10, "ok")], (NOW - 60, "down"), _segments((SINCE, NOW - 60, "ok"), (NOW - 60, NOW, "down"))),
            (
                [(NOW - 60, "down")],
                (NOW - 60, "down"),
                _segments((SINCE, NOW - 60, "unknown"), (NOW - 60, NOW, "down")),
            ),
            ([(NOW - 60, "down")], (NOW - 120, "ok"), _segments((SINCE, NOW - 60, "unknown"), (NOW - 60, NOW, "ok"))),
        ],
        ids=[
            "nothing-known",
            "state-in-force-before-the-window",
            "an-outage",
            "no-state-before-the-first-change",
            "a-repeat-merges",
            "an-empty-segment-is-dropped",
            "the-current-state-not-yet-recorded",
            "the-current-state-recorded",
            "the-current-state-wins-over-an-older-record",
        ],
    )
    def test_segments_cover_the_last_24_hours(
        self, changes: Sequence[tuple[float, str]], current: tuple[float, str] | None, expected: list[dict[str, str]]
    ) -> None:
        """Segments cover the window end to end, unknown before the first known state, ending in the current state."""
        assert history_segments(changes, current, SINCE, NOW) == expected


class TestEngineHook:
    def test_a_feature_change_is_reported_with_its_time(self, config: Config) -> None:
        """Each feature state change calls the hook with (feature, state, at); the initial evaluation does not."""
        calls: list[tuple[str, str, float]] = []
        engine = Engine(config, Metrics(), clock=lambda: NOW, on_feature_change=lambda *c: calls.append(c))
        assert calls == []
        engine.record("evss", "health", OK)
        engine.record("caseflow", "health", OK)
        engine.record("evss", "health", DOWN)
        engine.record("evss", "health", DOWN)
        assert calls == [("claims", "ok", NOW), ("appeals", "ok", NOW), ("claims", "down", NOW)]

    def test_a_result_that_changes_nothing_is_not_reported(self, config: Config) -> None:
        """A success after a success, or a first failure under the threshold, calls nothing."""
        calls: list[tuple[str, str, float]] = []
        engine = Engine(config, Metrics(), clock=lambda: NOW, on_feature_change=lambda *c: calls.append(c))
        engine.record("evss", "health", OK)
        calls.clear()
        engine.record("evss", "health", OK)
        engine.record("evss", "health", DOWN)
        assert calls == []


class TestFeatureChanges:
    def test_a_batch_given_back_goes_in_front(self) -> None:
        """A batch that was not written comes before the changes kept since."""
        changes = FeatureChanges()
        changes.append("claims", "down", 1.0)
        batch = changes.take()
        changes.append("claims", "ok", 2.0)
        changes.give_back(batch)
        assert changes.pending() == [("claims", "down", 1.0), ("claims", "ok", 2.0)]

    def test_the_oldest_go_past_the_limit(self) -> None:
        """Past its limit the buffer drops its oldest changes, so a refusing store cannot grow memory."""
        changes = FeatureChanges(limit=2)
        for at in (1.0, 2.0, 3.0):
            changes.append("claims", "ok", at)
        changes.give_back([("appeals", "ok", 0.0)])
        assert changes.pending() == [("claims", "ok", 2.0), ("claims", "ok", 3.0)]


class _RefusingStore:
    """A state file that refuses every write."""

    async def record_feature_states(self, changes: Sequence[tuple[str, str, float]]) -> int:
        raise sqlite3.OperationalError("disk I/O error")


def _daemon(config: Config, tmp_path: Path) -> Daemon:
    return Daemon(tmp_path / "depmon.yaml", config, str(tmp_path / "state.sqlite3"), {})


class TestDaemonHistory:
    @pytest.mark.anyio
    async def test_the_loop_writes_changes_every_second(self, config: Config, tmp_path: Path) -> None:
        """A change the engine reports reaches the state file while the history loop runs."""
        daemon = _daemon(config, tmp_path)
        async with Store(":memory:", environment="test") as store, anyio.create_task_group() as tg:
            await tg.start(daemon._record_history, store)
            daemon.engine.record("evss", "health", OK)
            with anyio.fail_after(5):
                while "claims" not in await store.feature_history(0.0):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert daemon._feature_changes.pending() == []

    @pytest.mark.anyio
    async def test_stopping_writes_what_is_left_and_every_feature_unknown(self, config: Config, tmp_path: Path) -> None:
        """Cancelled, the loop writes the changes not yet written, then `unknown` for every feature."""
        daemon = _daemon(config, tmp_path)
        async with Store(":memory:", environment="test") as store:
            async with anyio.create_task_group() as tg:
                await tg.start(daemon._record_history, store)
                daemon._feature_changes.append("claims", "down", 10.0)
                tg.cancel_scope.cancel()
            history = await store.feature_history(0.0)
        assert [state for _, state in history["claims"]] == ["down", "unknown"]
        assert [state for _, state in history["appeals"]] == ["unknown"]

    @pytest.mark.anyio
    async def test_a_refused_write_is_logged_and_kept(self, config: Config, tmp_path: Path) -> None:
        """A write the state file refuses is logged, and the batch stays for the next flush."""
        daemon = _daemon(config, tmp_path)
        daemon._feature_changes.append("claims", "down", 10.0)
        with capture_logs() as logs, anyio.fail_after(5):
            await daemon._flush_history(_RefusingStore())  # type: ignore[arg-type]
        assert daemon._feature_changes.pending() == [("claims", "down", 10.0)]
        [entry] = [log for log in logs if log["event"] == "feature_history_write_failed"]
        assert (entry["changes"], entry["reason"]) == (1, "disk I/O error")

    @pytest.mark.anyio
    async def test_history_includes_changes_not_yet_written(self, config: Config, tmp_path: Path) -> None:
        """The view's history is the stored changes followed by those still waiting for the loop."""
        daemon = _daemon(config, tmp_path)
        async with Store(":memory:", environment="test") as store:
            await store.record_feature_states([("claims", "ok", 5.0)])
            daemon._store = store
            daemon._feature_changes.append("claims", "down", 10.0)
            with anyio.fail_after(5):
                history: dict[str, Any] = await daemon.feature_history(0.0)
        assert history == {"claims": [(5.0, "ok"), (10.0, "down")]}

    @pytest.mark.anyio
    async def test_an_unreadable_store_gives_only_the_pending_changes(self, config: Config, tmp_path: Path) -> None:
        """With the state file closed the history still answers, from the changes not yet written, and says why."""
        daemon = _daemon(config, tmp_path)
        store = Store(":memory:", environment="test")
        await store.close()
        daemon._store = store
        daemon._feature_changes.append("claims", "down", 10.0)
        with capture_logs() as logs, anyio.fail_after(5):
            history = await daemon.feature_history(0.0)
        assert history == {"claims": [(10.0, "down")]}
        assert [log["event"] for log in logs] == ["feature_history_unreadable"]
