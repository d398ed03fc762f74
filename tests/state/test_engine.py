"""The engine: results in, states and metrics out, with failures attributed to their root cause."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.state.live import Engine

pytestmark = pytest.mark.unit

OK = ProbeResult.success("HTTP 200 from /health")


def no_token(blamed_on: str | None) -> ProbeResult:
    return ProbeResult.failure(Outcome.AUTH, "no token from ssoe-oauth/token: refused", blamed_on=blamed_on)


@pytest.fixture
def config() -> Config:
    return Config.model_validate(
        {
            "monitor": {
                "environment": "test",
                "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 3, "confirm_interval": "2s"},
            },
            "dependencies": {
                "ssoe-oauth": {
                    "name": "SSOe OAuth",
                    "probes": [
                        {
                            "name": "token",
                            "kind": "oauth2",
                            "token_url": "https://t/token",
                            "client_id": "i",
                            "client_secret": "s",
                        }
                    ],
                },
                "caseflow": {
                    "name": "Caseflow",
                    "probes": [{"name": "health", "kind": "http", "url": "https://c/health"}],
                },
                "evss": {
                    "name": "EVSS",
                    "depends_on": ["ssoe-oauth"],
                    "probes": [
                        {"name": "health", "kind": "http", "url": "https://e/health", "bearer_from": "ssoe-oauth/token"}
                    ],
                },
            },
            "features": {"claims": {"name": "Claims", "requires": ["evss"], "userbase_share": 0.3}},
        }
    )


def started(config: Config) -> Engine:
    engine = Engine(config, Metrics())
    for dep, probe in (("ssoe-oauth", "token"), ("caseflow", "health"), ("evss", "health")):
        engine.record(dep, probe, OK)
    return engine


class TestAttribution:
    def test_failures_blamed_on_a_parent_never_take_the_child_down(self, config: Config) -> None:
        """EVSS failing for want of an SSOe token stays up while SSOe's own probe has not failed yet."""
        engine = started(config)
        for _ in range(5):
            engine.record("evss", "health", no_token("ssoe-oauth"))
        assert engine.dependencies["evss"].state == "up"
        assert engine.root_causes() == []

    def test_the_same_failures_without_blame_take_it_down(self, config: Config) -> None:
        """Without the blame, three failures make EVSS a root cause of its own."""
        engine = started(config)
        for _ in range(3):
            engine.record("evss", "health", no_token(None))
        assert engine.dependencies["evss"].state == "down"
        assert engine.root_causes() == ["evss"]

    def test_blame_on_a_dependency_that_is_not_a_parent_counts(self, config: Config) -> None:
        """Only a parent in depends_on can take the blame."""
        engine = started(config)
        for _ in range(3):
            engine.record("caseflow", "health", no_token("ssoe-oauth"))
        assert engine.dependencies["caseflow"].state == "down"

    def test_parent_down_makes_the_child_down_with_a_cause(self, config: Config) -> None:
        """SSOe down: EVSS is down because of it, and only SSOe is a root cause."""
        engine = started(config)
        failure = ProbeResult.failure(Outcome.TIMEOUT, "no complete answer within 5s")
        for _ in range(3):
            engine.record("ssoe-oauth", "token", failure)
            engine.record("evss", "health", no_token("ssoe-oauth"))
        assert engine.dependencies["evss"].cause == "ssoe-oauth"
        assert engine.root_causes() == ["ssoe-oauth"]
        assert engine.features["claims"].impacted_by == ("ssoe-oauth",)


class TestScheduling:
    def test_a_first_failure_asks_for_a_confirm_reprobe(self, config: Config) -> None:
        """After one failure the next run is confirm_interval away, after recovery the full interval."""
        engine = started(config)
        assert engine.next_delay("caseflow", "health") == 30.0
        engine.record("caseflow", "health", ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health"))
        assert engine.next_delay("caseflow", "health") == 2.0
        engine.record("caseflow", "health", OK)
        assert engine.next_delay("caseflow", "health") == 30.0

    def test_ready_once_every_probe_ran(self, config: Config) -> None:
        """Readiness waits for the last probe's first result."""
        engine = Engine(config, Metrics())
        engine.record("ssoe-oauth", "token", OK)
        engine.record("caseflow", "health", OK)
        assert not engine.ready
        engine.record("evss", "health", OK)
        assert engine.ready


class TestFailureLogs:
    """`probe_failed`: every failure toward a verdict and every new reason; not the same one again while down."""

    def test_the_same_failure_while_down_is_counted_not_logged(self, config: Config) -> None:
        engine = started(config)
        down = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")
        timed_out = ProbeResult.failure(Outcome.TIMEOUT, "no answer within 5 s")
        with capture_logs() as logs:
            for result in [down] * 3 + [down] * 4 + [timed_out] * 2 + [OK] * 3:
                engine.record("caseflow", "health", result)
        failed = [(e["outcome"], e.get("failures_not_logged")) for e in logs if e["event"] == "probe_failed"]
        # three to confirm it down, 4 repeats unlogged, a new reason logged (saying so), then its repeat unlogged
        assert failed == [("http_status", None)] * 3 + [("timeout", 4)]
        [recovered] = [e for e in logs if e["event"] == "probe_state_changed" and e["new"] == "up"]
        assert recovered["failures_not_logged"] == 1
        assert engine.probe_health("caseflow", "health").status == "up"

    def test_a_probe_that_never_went_down_logs_every_failure(self, config: Config) -> None:
        engine = started(config)
        failure = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")
        with capture_logs() as logs:
            for result in [failure, OK, failure, OK, failure, failure]:
                engine.record("caseflow", "health", result)
        assert sum(1 for e in logs if e["event"] == "probe_failed") == 4


class TestSnapshots:
    """A snapshot shows every probe as of its taking, and never changes afterwards."""

    def test_a_result_shows_in_the_next_snapshot_only(self, config: Config) -> None:
        engine = started(config)
        before = engine.snapshot()
        failure = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")
        engine.record("caseflow", "health", failure)
        after = engine.snapshot()
        [(name, health)] = after.probes["caseflow"]
        assert (name, health.last, health.failures) == ("health", failure, 1)
        assert before.probes["caseflow"][0][1].last == OK
        assert after.probes["evss"] == before.probes["evss"]
        assert engine.probes_of("caseflow") == list(after.probes["caseflow"])

    def test_a_reload_carries_the_probes_into_the_new_engines_snapshots(self, config: Config) -> None:
        old = started(config)
        failure = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")
        old.record("caseflow", "health", failure)
        new = Engine(config, Metrics())
        assert new.snapshot().probes["caseflow"][0][1].last is None
        new.adopt(old)
        assert new.snapshot().probes["caseflow"][0][1].last == failure
