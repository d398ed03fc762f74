"""MaintenancePoller -> MaintenanceClient -> the real `pagerduty` package -> the fake PagerDuty REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from monitor.errors import MaintenanceUnavailable
from monitor.maintenance.poller import MaintenancePoller
from monitor.maintenance.records import MaintenanceWindow
from monitor.metrics import Metrics
from monitor.pagerduty.clients import MaintenanceClient
from monitor.sim.fake_pagerduty import FakePagerDuty
from tests.clocks import FakeClock
from tests.helpers import StartPagerDuty

pytestmark = pytest.mark.integration

EVSS, MHV, SSOE = "PZKWB6Y", "PP2ZZ2V", "P0J60YD"
SERVICES = {EVSS: "evss", MHV: "mhv", SSOE: "ssoe-oauth"}
BAD = "PDELETED"  # configured, but PagerDuty no longer knows it


@pytest.fixture
def fake(start_pagerduty: StartPagerDuty) -> FakePagerDuty:
    """A fake PagerDuty that knows the dependencies' services and one other."""
    return start_pagerduty(services=[*SERVICES, "POTHER1"])


def hours(n: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=n)


class Recorder:
    """The poller's `on_windows`: remembers every list it is handed."""

    def __init__(self) -> None:
        self.calls: list[list[MaintenanceWindow]] = []

    async def __call__(self, windows: list[MaintenanceWindow]) -> None:
        self.calls.append(windows)


@asynccontextmanager
async def client_for(
    fake: FakePagerDuty, token: str | None = None, page_size: int = 100
) -> AsyncIterator[MaintenanceClient]:
    async with MaintenanceClient(
        fake.api_url, SecretStr(token or fake.api_token), timeout=0.5, page_size=page_size
    ) as client:
        yield client


def gauge(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


class TestMaintenanceClient:
    """Reading windows through the official REST client."""

    @pytest.mark.anyio
    async def test_reads_open_windows_with_pagerduty_query(self, fake: FakePagerDuty) -> None:
        """Open and upcoming windows come back with aware times, asked with service_ids[], filter=open and the token."""
        ongoing = fake.add_window([EVSS], hours(-1), hours(1), "EVSS upgrade")
        upcoming = fake.add_window([MHV], hours(2), hours(3), "USER_MESSAGE:MHV|maintenance")
        fake.add_window([EVSS], hours(-3), hours(-2), "over")
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                result = await client.open_windows(list(SERVICES))
        assert [window.id for window in result.windows] == [ongoing, upcoming]
        assert result.windows[0].service_ids == (EVSS,)
        assert result.windows[0].start.tzinfo is not None
        assert result.windows[1].description == "USER_MESSAGE:MHV|maintenance"
        assert result.bad_service_ids == []
        [request] = fake.rest_requests
        assert request.query["service_ids[]"] == list(SERVICES)
        assert request.first("filter") == "open"
        assert request.header("authorization") == f"Token token={fake.api_token}"

    @pytest.mark.anyio
    async def test_follows_pagination(self, fake: FakePagerDuty) -> None:
        """More than 100 windows are read in full, following more/offset/limit page by page."""
        created = [fake.add_window([EVSS], hours(-1), hours(1 + i / 100), f"w{i}") for i in range(230)]
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                result = await client.open_windows([EVSS])
        assert sorted(window.id for window in result.windows) == sorted(created)
        assert [request.first("offset") for request in fake.rest_requests] == ["0", "100", "200"]

    @pytest.mark.anyio
    async def test_small_pages(self, fake: FakePagerDuty) -> None:
        """A small page size (limit) gives more pages and the same windows."""
        for i in range(12):
            fake.add_window([SSOE], hours(-1), hours(1), f"w{i}")
        async with client_for(fake, page_size=5) as client:
            with anyio.fail_after(10):
                result = await client.open_windows([SSOE])
        assert len(result.windows) == 12
        assert [(request.first("limit"), request.first("offset")) for request in fake.rest_requests] == [
            ("5", "0"),
            ("5", "5"),
            ("5", "10"),
        ]

    @pytest.mark.anyio
    async def test_window_over_several_services_keeps_the_asked_ones(self, fake: FakePagerDuty) -> None:
        """A window over several services keeps the configured ones only, once, even when ids are queried one by one."""
        shared = fake.add_window([EVSS, MHV, "POTHER1"], hours(-1), hours(1), "shared")
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                together = await client.open_windows([EVSS, MHV])
                one_by_one = await client.open_windows([EVSS, MHV, BAD])
        assert [(window.id, window.service_ids) for window in together.windows] == [(shared, (EVSS, MHV))]
        assert [(window.id, window.service_ids) for window in one_by_one.windows] == [(shared, (EVSS, MHV))]

    @pytest.mark.anyio
    async def test_one_bad_id_is_isolated(self, fake: FakePagerDuty) -> None:
        """One unknown id fails the whole query with 400; the client isolates it and keeps the others' windows."""
        evss = fake.add_window([EVSS], hours(-1), hours(1), "EVSS")
        mhv = fake.add_window([MHV], hours(-1), hours(1), "MHV")
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                result = await client.open_windows([EVSS, BAD, MHV])
        assert result.bad_service_ids == [BAD]
        assert {window.id for window in result.windows} == {evss, mhv}
        assert len(fake.rest_requests) == 4  # the whole query, then one per id

    @pytest.mark.anyio
    async def test_unauthorized_token_is_readable_and_secret_free(self, fake: FakePagerDuty) -> None:
        """A refused token raises MaintenanceUnavailable naming HTTP 401 and the setting, never the token."""
        token = "u+WRONG-token-9f8e7d6c"
        async with client_for(fake, token=token) as client:
            with anyio.fail_after(10), pytest.raises(MaintenanceUnavailable) as caught:
                await client.open_windows([EVSS])
        reason = caught.value.reason
        assert "HTTP 401" in reason
        assert "pagerduty.api_token" in reason
        assert token not in str(caught.value)
        assert token[-4:] not in str(caught.value)

    @pytest.mark.anyio
    async def test_unreachable_and_server_errors_raise(self, fake: FakePagerDuty) -> None:
        """A 500 and a closed port each raise MaintenanceUnavailable with the cause, without retry loops."""
        async with client_for(fake) as client:
            fake.rest_fail_with(500, times=1)
            with anyio.fail_after(10), pytest.raises(MaintenanceUnavailable, match="HTTP 500"):
                await client.open_windows([EVSS])
            fake.rest_go_down()
            with anyio.fail_after(10), pytest.raises(MaintenanceUnavailable, match=r"unreachable.*ConnectError"):
                await client.open_windows([EVSS])
        assert len(fake.rest_requests) == 1


class TestMaintenancePoller:
    """The polling loop, its metrics and its behaviour when PagerDuty fails."""

    @pytest.mark.anyio
    async def test_poll_applies_windows_and_metrics(self, fake: FakePagerDuty) -> None:
        """A successful poll hands the windows on and publishes windows per dependency and the success time."""
        fake.add_window([EVSS], hours(-1), hours(1), "EVSS")
        fake.add_window([MHV], hours(1), hours(2), "MHV, later")
        metrics, recorder, clock = Metrics(), Recorder(), FakeClock(datetime.now(UTC))
        async with client_for(fake) as client:
            poller = MaintenancePoller(client, SERVICES, 60.0, metrics, clock, recorder)
            with anyio.fail_after(10):
                windows = await poller.poll_once()
        assert recorder.calls == [windows]
        assert len(windows) == 2
        assert poller.last_success_at == clock.now
        assert gauge(metrics, "depmon_maintenance_last_success_timestamp_seconds") == clock.now
        open_by_dependency = {
            dependency: gauge(metrics, "depmon_maintenance_windows_open", {"dependency": dependency})
            for dependency in SERVICES.values()
        }
        assert open_by_dependency == {"evss": 1, "mhv": 0, "ssoe-oauth": 0}  # MHV's window has not started

    @pytest.mark.anyio
    async def test_bad_id_logged_once_per_poll_and_others_apply(self, fake: FakePagerDuty) -> None:
        """With a deleted service id configured, the other services' windows still apply (the vets-api bug we avoid)."""
        evss = fake.add_window([EVSS], hours(-1), hours(1), "EVSS")
        metrics, recorder = Metrics(), Recorder()
        async with client_for(fake) as client:
            poller = MaintenancePoller(
                client, {**SERVICES, BAD: "caseflow"}, 60.0, metrics, FakeClock(datetime.now(UTC)), recorder
            )
            with capture_logs() as logs, anyio.fail_after(10):
                await poller.poll_once()
        assert [window.id for window in poller.last_windows] == [evss]
        assert poller.bad_service_ids == [BAD]
        [entry] = [entry for entry in logs if entry["event"] == "maintenance_bad_service_id"]
        assert (entry["service_ids"], entry["covers"]) == ([BAD], ["caseflow"])
        assert gauge(metrics, "depmon_maintenance_windows_open", {"dependency": "evss"}) == 1
        # SPEC 10.4: the bad id is visible to the dashboards and in /status, not only in a log line.
        assert gauge(metrics, "depmon_maintenance_service_ok", {"service": BAD}) == 0
        assert gauge(metrics, "depmon_maintenance_service_ok", {"service": EVSS}) == 1
        services = poller.status()["services"]
        assert services[BAD] == {"covers": "caseflow", "ok": False}  # type: ignore[index]
        assert services[EVSS] == {"covers": "evss", "ok": True}  # type: ignore[index]

    @pytest.mark.anyio
    async def test_rest_down_keeps_last_windows_and_age_grows(self, fake: FakePagerDuty) -> None:
        """When PagerDuty cannot be read the last windows stay, none are wiped, and the success age grows."""
        window = fake.add_window([EVSS], hours(-1), hours(1), "EVSS")
        metrics, recorder, clock = Metrics(), Recorder(), FakeClock(datetime.now(UTC))
        async with client_for(fake) as client:
            poller = MaintenancePoller(client, SERVICES, 0.02, metrics, clock, recorder)
            with capture_logs() as logs, anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    await tg.start(poller.run)
                    while poller.last_success_at is None:
                        await anyio.sleep(0.005)
                    first_success = poller.last_success_at
                    fake.rest_go_down()
                    clock.now += 600
                    while sum(entry["event"] == "maintenance_poll_failed" for entry in logs) < 3:
                        await anyio.sleep(0.005)
                    tg.cancel_scope.cancel()
        assert [w.id for w in poller.last_windows] == [window]
        assert all(call for call in recorder.calls)  # never handed an empty list
        assert poller.last_success_at == first_success
        assert clock.now - gauge(metrics, "depmon_maintenance_last_success_timestamp_seconds") >= 600  # type: ignore[operator]
        assert gauge(metrics, "depmon_maintenance_windows_open", {"dependency": "evss"}) == 1
        assert poller.last_error is not None
        assert "unreachable" in poller.last_error
        assert gauge(metrics, "depmon_loop_errors_total", {"loop": "maintenance"}) is None
        assert gauge(metrics, "depmon_maintenance_service_ok", {"service": EVSS}) == 0  # unreadable
        assert poller.status()["last_error"] == poller.last_error

    @pytest.mark.anyio
    async def test_loop_contains_unexpected_failures(self, fake: FakePagerDuty) -> None:
        """An exception in on_windows is logged and counted and the next poll still runs."""
        metrics, polls = Metrics(), []

        async def broken(windows: list[MaintenanceWindow]) -> None:
            polls.append(windows)
            raise RuntimeError("consumer bug")

        async with client_for(fake) as client:
            poller = MaintenancePoller(client, SERVICES, 0.01, metrics, FakeClock(datetime.now(UTC)), broken)
            with capture_logs() as logs, anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    await tg.start(poller.run)
                    while len(polls) < 2:
                        await anyio.sleep(0.005)
                    tg.cancel_scope.cancel()
        assert gauge(metrics, "depmon_loop_errors_total", {"loop": "maintenance"}) >= 2  # type: ignore[operator]
        assert "maintenance_loop_failed" in [entry["event"] for entry in logs]
