"""MaintenanceClient's writes and service reads -> the real `pagerduty` package -> the fake PagerDuty REST API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from monitor.errors import WindowWriteFailed
from monitor.maintenance.poller import MaintenancePoller
from monitor.metrics import Metrics
from monitor.pagerduty.clients import MaintenanceClient, window_request_body
from monitor.sim.fake_pagerduty import FakePagerDuty, window_errors
from tests.helpers import StartPagerDuty, published_validator

pytestmark = pytest.mark.integration

EVSS, VAOS = "PZKWB6Y", "PFDNA11"
FROM = "oncall@example.gov"
POST_POINTER = "#/paths/~1maintenance_windows/post/requestBody/content/application~1json/schema"


@pytest.fixture
def fake(start_pagerduty: StartPagerDuty) -> FakePagerDuty:
    """A fake PagerDuty that knows EVSS's and VAOS's services."""
    return start_pagerduty(services=[EVSS, VAOS])


def hours(n: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=n)


@asynccontextmanager
async def client_for(fake: FakePagerDuty, token: str | None = None) -> AsyncIterator[MaintenanceClient]:
    async with MaintenanceClient(fake.api_url, SecretStr(token or fake.api_token), timeout=0.5, deadline=2.0) as client:
        yield client


def sent_bodies(fake: FakePagerDuty) -> list[Any]:
    """Every request body depmon sent to the REST API."""
    return [json.loads(request.body) for request in fake.rest_requests if request.body]


class TestCreateWindow:
    @pytest.mark.anyio
    async def test_creates_a_window_the_listing_then_returns(self, fake: FakePagerDuty) -> None:
        """A created window carries the description and the service, is sent with From, and is listed as open."""
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                window = await client.create_window(EVSS, hours(0), hours(2), "USER_MESSAGE:Claims down|EVSS", FROM)
                listed = await client.open_windows([EVSS])
        assert window.service_ids == (EVSS,)
        assert window.description == "USER_MESSAGE:Claims down|EVSS"
        assert [w.id for w in listed.windows] == [window.id]
        [post] = [r for r in fake.rest_requests if r.method == "POST"]
        assert post.header("From") == FROM
        assert post.header("Authorization") == f"Token token={fake.api_token}"

    @pytest.mark.anyio
    async def test_refusal_is_a_secret_free_reason(self, fake: FakePagerDuty) -> None:
        """An unknown service is refused with PagerDuty's words and HTTP status, never the token."""
        async with client_for(fake) as client:
            with anyio.fail_after(10), pytest.raises(WindowWriteFailed) as refused:
                await client.create_window("PNOSUCH", hours(0), hours(1), "x", FROM)
        assert refused.value.http_status == 400
        assert "Service PNOSUCH not found" in refused.value.reason
        assert fake.api_token not in refused.value.reason

    @pytest.mark.anyio
    async def test_wrong_token_says_check_the_token(self, fake: FakePagerDuty) -> None:
        """A 401 names the setting to check, without the token."""
        async with client_for(fake, token="wrong-token-value") as client:
            with anyio.fail_after(10), pytest.raises(WindowWriteFailed) as refused:
                await client.create_window(EVSS, hours(0), hours(1), "x", FROM)
        assert "HTTP 401" in refused.value.reason
        assert "pagerduty.api_token" in refused.value.reason
        assert "wrong-token-value" not in refused.value.reason

    @pytest.mark.anyio
    async def test_no_answer_is_one_bounded_attempt(self, fake: FakePagerDuty) -> None:
        """A PagerDuty that never answers fails the write within the deadline, after exactly one request."""
        fake.rest_hang()
        async with client_for(fake) as client:
            with anyio.fail_after(10), pytest.raises(WindowWriteFailed):
                await client.create_window(EVSS, hours(0), hours(1), "x", FROM)
        assert fake.rest_request_count == 1
        fake.rest_clear_faults()

    @pytest.mark.anyio
    async def test_empty_from_is_refused_before_sending(self, fake: FakePagerDuty) -> None:
        """Without a From address nothing is sent and the reason names pagerduty.from_email."""
        async with client_for(fake) as client:
            with pytest.raises(WindowWriteFailed, match=r"pagerduty\.from_email"):
                await client.create_window(EVSS, hours(0), hours(1), "x", "")
        assert fake.rest_request_count == 0


class TestEndWindow:
    @pytest.mark.anyio
    async def test_ending_an_ongoing_window_closes_it_now(self, fake: FakePagerDuty) -> None:
        """An ongoing window ended through DELETE is no longer open."""
        window_id = fake.add_window([EVSS], hours(-1), hours(1), "EVSS")
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                await client.end_window(window_id, FROM)
                listed = await client.open_windows([EVSS])
        assert listed.windows == []
        [ended] = fake.windows
        assert ended.end <= datetime.now(UTC)

    @pytest.mark.anyio
    async def test_ending_a_future_window_deletes_it(self, fake: FakePagerDuty) -> None:
        """A window that has not started is deleted."""
        window_id = fake.add_window([EVSS], hours(1), hours(2), "later")
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                await client.end_window(window_id, FROM)
        assert fake.windows == []

    @pytest.mark.anyio
    async def test_ended_and_unknown_windows_are_refused(self, fake: FakePagerDuty) -> None:
        """A window already over is a 405 and an unknown one a 404, both with a reason."""
        over = fake.add_window([EVSS], hours(-3), hours(-2), "over")
        async with client_for(fake) as client:
            with anyio.fail_after(10), pytest.raises(WindowWriteFailed, match="already ended") as ended:
                await client.end_window(over, FROM)
            with anyio.fail_after(10), pytest.raises(WindowWriteFailed) as unknown:
                await client.end_window("PNOSUCH", FROM)
        assert (ended.value.http_status, unknown.value.http_status) == (405, 404)

    @pytest.mark.anyio
    async def test_a_non_id_is_refused_before_sending(self, fake: FakePagerDuty) -> None:
        """A window id that is not letters and digits never reaches a URL path."""
        async with client_for(fake) as client:
            with pytest.raises(WindowWriteFailed, match="not a PagerDuty id"):
                await client.end_window("../services/PZKWB6Y", FROM)
        assert fake.rest_request_count == 0


class TestServiceStatus:
    @pytest.mark.anyio
    async def test_reads_each_status_and_last_incident(self, fake: FakePagerDuty) -> None:
        """Each service's status comes back, with the last incident time; an unknown id maps to a reason."""
        at = datetime(2026, 11, 30, 10, 32, tzinfo=UTC)
        fake.set_service_status(VAOS, "critical", at)
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                read = await client.service_statuses([EVSS, VAOS, "PNOSUCH"])
        assert read[EVSS].status == "active"  # type: ignore[union-attr]
        assert read[VAOS].status == "critical"  # type: ignore[union-attr]
        assert read[VAOS].last_incident_at == at.timestamp()  # type: ignore[union-attr]
        assert isinstance(read["PNOSUCH"], str)
        assert "404" in read["PNOSUCH"]

    @pytest.mark.anyio
    async def test_poller_keeps_the_last_known_status_and_when_it_changed(self, fake: FakePagerDuty) -> None:
        """The poller dates a status change by the poll that saw it and keeps the status when a read fails."""
        now = [1_000.0]
        async with client_for(fake) as client:
            poller = MaintenancePoller(client, {EVSS: "evss", VAOS: "vaos"}, 60.0, Metrics(), lambda: now[0])
            with anyio.fail_after(10):
                await poller.poll_once()
                assert poller.service_status(VAOS).status == "active"  # type: ignore[union-attr]
                fake.set_service_status(VAOS, "maintenance")
                now[0] = 2_000.0
                await poller.poll_once()
                fake.rest_fail_with(500)
                now[0] = 3_000.0
                await poller.poll_statuses()
        kept = poller.service_status(VAOS)
        assert kept is not None
        assert (kept.status, kept.since, kept.observed, kept.read_at) == ("maintenance", 2_000.0, True, 2_000.0)
        assert poller.service_status("PNOTCONFIGURED") is None
        fake.rest_clear_faults()

    @pytest.mark.anyio
    async def test_poller_does_not_ask_the_status_of_a_refused_id(self, fake: FakePagerDuty) -> None:
        """A service id the windows poll found bad is not read again for its status; the good ones are."""
        async with client_for(fake) as client:
            poller = MaintenancePoller(client, {EVSS: "evss", "PDELETED": "caseflow"}, 60.0, Metrics())
            with anyio.fail_after(10):
                await poller.poll_once()
        assert poller.bad_service_ids == ["PDELETED"]
        assert [r.path for r in fake.rest_requests if r.path.startswith("/services/")] == [f"/services/{EVSS}"]
        assert poller.service_status("PDELETED") is None


class TestRequestSchemas:
    BODIES = {
        "window": window_request_body(EVSS, hours(0), hours(2), "USER_MESSAGE:Claims|EVSS is down"),
        "no description": window_request_body(VAOS, hours(1), hours(3), ""),
    }

    @pytest.mark.anyio
    async def test_every_body_sent_is_valid_for_our_schema(self, fake: FakePagerDuty) -> None:
        """Each request body the client sends passes depmon's own write schema."""
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                await client.create_window(EVSS, hours(0), hours(1), "USER_MESSAGE:A|B", FROM)
        bodies = sent_bodies(fake)
        assert bodies
        for body in [*bodies, *self.BODIES.values()]:
            assert window_errors(body) == []

    @pytest.mark.anyio
    async def test_every_body_sent_is_valid_for_the_published_schema(self, fake: FakePagerDuty) -> None:
        """Each body the client sends passes our schema, and PagerDuty's published POST schema when it is at hand."""
        async with client_for(fake) as client:
            with anyio.fail_after(10):
                await client.create_window(EVSS, hours(0), hours(1), "USER_MESSAGE:A|B", FROM)
        validator = published_validator("rest-maintenance-windows.openapi.json", POST_POINTER)
        bodies = [*sent_bodies(fake), *self.BODIES.values()]
        assert len(bodies) > len(self.BODIES)  # the client sent one
        for body in bodies:
            assert window_errors(body) == []  # the repository's own schema (monitor/schemas)
            if validator is not None:  # the shared folder is beside the repository
                assert list(validator.iter_errors(body)) == []

    def test_our_schema_refuses_read_only_fields(self) -> None:
        """Our schema is stricter than the published one: read-only fields and a missing service id are refused."""
        body = window_request_body(EVSS, hours(0), hours(1), "x")
        body["maintenance_window"]["id"] = "PW98YIO"
        assert window_errors(body)
        del body["maintenance_window"]["id"]
        del body["maintenance_window"]["services"][0]["id"]
        assert window_errors(body)
