"""The fake PagerDuty, its loopback server and the rewriting transport, over real loopback sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import httpx2
import pagerduty
import pytest

from monitor.pagerduty.transport import LoopbackRewriteTransport
from monitor.sim.fake_pagerduty import MAX_EVENT_BYTES, FakePagerDuty, event_errors, window_errors
from monitor.sim.loopback import LoopbackServer, Request, Response, json_response
from tests.helpers import ROOT as REPO_ROOT
from tests.helpers import StartPagerDuty, published_validator, wait_for

pytestmark = pytest.mark.integration

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
KEY = "depmon/test/evss"


def trigger(summary: str = "EVSS down: 4 app features impacted [test]", **fields: Any) -> dict[str, Any]:
    """A valid trigger event; `fields` replace or add top-level fields."""
    event: dict[str, Any] = {
        "routing_key": "R0UTINGKEY0000000000000000000001",
        "event_action": "trigger",
        "dedup_key": KEY,
        "payload": {"summary": summary, "source": "depmon/test", "severity": "critical"},
    }
    event.update(fields)
    return event


def action(name: str, dedup_key: str = KEY) -> dict[str, Any]:
    """A valid acknowledge or resolve event."""
    return {"routing_key": "R0UTINGKEY0000000000000000000001", "event_action": name, "dedup_key": dedup_key}


def with_payload(**payload: Any) -> dict[str, Any]:
    """A trigger whose payload fields are replaced (None removes one)."""
    event = trigger()
    event["payload"].update(payload)
    event["payload"] = {key: value for key, value in event["payload"].items() if value is not None}
    return event


FULL_TRIGGER = trigger(
    payload={
        "summary": "EVSS down: 4 app features impacted (Claims, Letters) [production]",
        "source": "depmon/production",
        "severity": "critical",
        "timestamp": "2015-07-17T08:42:58.315+0000",
        "component": "evss",
        "group": "va-mobile-app",
        "class": "http_status",
        "custom_details": {"dependency": "evss", "impacted_features": ["claims", "letters"]},
    },
    links=[{"href": "https://example.org/playbook", "text": "Mobile Incident Response Playbook"}],
    images=[{"src": "https://example.org/chart.png", "href": "https://example.org", "alt": "latency"}],
    client="depmon",
    client_url="http://127.0.0.1:8080/status",
)

# Invalid for our schema and for the published one.
INVALID_EVERYWHERE = {
    "missing summary": with_payload(summary=None),
    "bad severity": with_payload(severity="fatal"),
    "bad event_action": trigger(event_action="escalate"),
    "missing routing_key": {key: value for key, value in trigger().items() if key != "routing_key"},
    "link without href": trigger(links=[{"text": "no target"}]),
    "image without src": trigger(images=[{"alt": "no source"}]),
}
# Invalid by PagerDuty's published facts that its OpenAPI document states only in prose.
INVALID_BY_PROSE = {
    "summary of 1025 characters": trigger("x" * 1025),
    "dedup_key of 256 characters": trigger(dedup_key="k" * 256),
    "trigger without payload": {key: value for key, value in trigger().items() if key != "payload"},
    "resolve without dedup_key": {"routing_key": "R0UTINGKEY0000000000000000000001", "event_action": "resolve"},
    "image over http": trigger(images=[{"src": "http://example.org/chart.png"}]),
}


@pytest.fixture
def fake(start_pagerduty: StartPagerDuty) -> FakePagerDuty:
    """The fake under test, its clock stopped at NOW."""
    return start_pagerduty(now=lambda: NOW)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


def enqueue(http: httpx.Client, fake: FakePagerDuty, event: Any) -> httpx.Response:
    return http.post(f"{fake.events_url}/v2/enqueue", json=event)


def list_windows(
    http: httpx.Client, fake: FakePagerDuty, params: Any = None, token: str | None = None
) -> httpx.Response:
    headers = {
        "Authorization": f"Token token={token or fake.api_token}",
        "Accept": "application/vnd.pagerduty+json;version=2",
    }
    return http.get(f"{fake.api_url}/maintenance_windows", params=params, headers=headers)


def add_windows(fake: FakePagerDuty, count: int, service: str = "PEVSS01") -> list[str]:
    """`count` ongoing or future windows on `service`, one hour apart, in start order."""
    fake.add_service(service)
    return [
        fake.add_window([service], NOW + timedelta(hours=i - 1), NOW + timedelta(hours=i + 1), f"window {i}")
        for i in range(count)
    ]


class TestEnqueue:
    def test_valid_trigger_is_accepted(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A valid trigger gets 202 with PagerDuty's success body and is recorded."""
        response = enqueue(http, fake, FULL_TRIGGER)
        assert response.status_code == 202
        assert response.json() == {"status": "success", "message": "Event processed", "dedup_key": KEY}
        [event] = fake.events
        assert event.body == FULL_TRIGGER
        assert event.dedup_key == KEY
        assert abs(event.received_at - time.time()) < 5

    def test_trigger_without_key_gets_one(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A trigger without a dedup key is given a fresh one, returned and recorded."""
        event = trigger()
        del event["dedup_key"]
        first = enqueue(http, fake, event).json()["dedup_key"]
        second = enqueue(http, fake, event).json()["dedup_key"]
        assert first
        assert second != first
        assert [event.dedup_key for event in fake.events] == [first, second]

    @pytest.mark.parametrize(
        "event",
        [*INVALID_EVERYWHERE.values(), *INVALID_BY_PROSE.values()],
        ids=[*INVALID_EVERYWHERE, *INVALID_BY_PROSE],
    )
    def test_invalid_event_is_refused(self, fake: FakePagerDuty, http: httpx.Client, event: Any) -> None:
        """An invalid event gets 400 with the reasons and is kept apart from accepted events."""
        response = enqueue(http, fake, event)
        assert response.status_code == 400
        body = response.json()
        assert body["status"] == "invalid event"
        assert body["message"] == "Event object is invalid"
        assert body["errors"]
        assert fake.events == []
        assert [rejected.errors for rejected in fake.rejected_events] == [tuple(body["errors"])]

    def test_limits_are_inclusive(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A summary of exactly 1024 characters and a dedup key of exactly 255 are accepted."""
        response = enqueue(http, fake, trigger("s" * 1024, dedup_key="k" * 255))
        assert response.status_code == 202

    def test_error_names_the_field(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """The 400 errors name the offending field."""
        errors = enqueue(http, fake, trigger("x" * 1025)).json()["errors"]
        assert errors == ["$.payload.summary: " + repr("x" * 1025) + " is too long"]

    def test_unparsable_body_is_refused(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A body that is not JSON gets PagerDuty's 'Unrecognized object' 400."""
        response = http.post(f"{fake.events_url}/v2/enqueue", content=b"{not json")
        assert response.status_code == 400
        assert response.json()["status"] == "Unrecognized object"
        assert response.json()["errors"] == ["JSON parse error"]

    def test_oversized_event_is_refused(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """An event above 512 KB is refused even when it is otherwise valid."""
        event = with_payload(custom_details={"evidence": "e" * MAX_EVENT_BYTES})
        response = enqueue(http, fake, event)
        assert response.status_code == 400
        assert response.json()["message"] == "Event object is too large"

    def test_acknowledge_and_resolve_are_accepted(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Acknowledge and resolve with a dedup key get 202 and echo the key."""
        for name in ("acknowledge", "resolve"):
            response = enqueue(http, fake, action(name))
            assert response.status_code == 202
            assert response.json()["dedup_key"] == KEY

    def test_event_errors_accepts_the_full_trigger(self) -> None:
        """`event_errors` finds nothing wrong with a trigger that uses every field."""
        assert event_errors(FULL_TRIGGER) == []

    def test_unknown_route_is_404(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Change events are not simulated: their path answers 404."""
        assert http.post(f"{fake.events_url}/v2/change/enqueue", json={}).status_code == 404


class TestAlerts:
    def test_trigger_opens_an_alert(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A first trigger opens a triggered alert titled by its summary."""
        enqueue(http, fake, trigger("EVSS down"))
        alert = fake.alert(KEY)
        assert alert is not None
        assert alert.status == "triggered"
        assert alert.summary == "EVSS down"
        assert fake.open_alerts == [alert]

    def test_second_trigger_updates_the_open_alert(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A trigger with the key of an open alert updates that alert instead of opening another."""
        enqueue(http, fake, trigger("EVSS down: 2 features"))
        enqueue(http, fake, trigger("EVSS down: 4 features"))
        [alert] = fake.alerts
        assert len(alert.events) == 2
        assert alert.summary == "EVSS down: 4 features"

    def test_acknowledge_marks_the_open_alert(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Acknowledge changes the status of the open alert and keeps it open."""
        enqueue(http, fake, trigger())
        enqueue(http, fake, action("acknowledge"))
        alert = fake.alert(KEY)
        assert alert is not None
        assert alert.status == "acknowledged"
        assert alert.is_open

    def test_resolve_closes_the_alert(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Resolve closes the open alert and stamps when."""
        enqueue(http, fake, trigger())
        enqueue(http, fake, action("resolve"))
        alert = fake.alert(KEY)
        assert alert is not None
        assert alert.status == "resolved"
        assert alert.resolved_at is not None
        assert alert.resolved_at >= alert.opened_at
        assert fake.open_alerts == []

    def test_trigger_after_resolve_opens_a_new_alert(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A trigger after a resolve opens a new alert under the same key."""
        for event in (trigger("first"), action("resolve"), trigger("second")):
            enqueue(http, fake, event)
        first, second = fake.alerts
        assert (first.status, first.summary) == ("resolved", "first")
        assert (second.status, second.summary) == ("triggered", "second")
        assert fake.alert(KEY) == second
        assert [event.action for event in fake.events_for(KEY)] == ["trigger", "resolve", "trigger"]

    def test_only_triggers_retitle_the_alert(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A payload sent with an acknowledge does not change the alert's summary."""
        enqueue(http, fake, trigger("EVSS down"))
        acknowledge = {**action("acknowledge"), "payload": trigger("ignored")["payload"]}
        assert enqueue(http, fake, acknowledge).status_code == 202
        alert = fake.alert(KEY)
        assert alert is not None
        assert alert.summary == "EVSS down"

    def test_resolve_without_alert_changes_nothing(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A resolve for a key with no open alert is accepted, recorded, and opens nothing."""
        assert enqueue(http, fake, action("resolve", "depmon/test/unknown")).status_code == 202
        assert fake.alerts == []
        assert len(fake.events_for("depmon/test/unknown")) == 1

    def test_wait_for_returns_when_the_event_arrives(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """`wait_for` blocks until an event sent from another thread satisfies the predicate."""

        def send_later() -> None:
            time.sleep(0.1)
            enqueue(http, fake, trigger())

        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(send_later)
            events = fake.wait_for(lambda events: any(event.dedup_key == KEY for event in events), timeout=5)
            sending.result(timeout=5)
        assert [event.dedup_key for event in events] == [KEY]

    def test_wait_for_times_out(self, fake: FakePagerDuty) -> None:
        """`wait_for` raises TimeoutError when nothing matching arrives in time."""
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no matching PagerDuty events"):
            fake.wait_for(lambda events: bool(events), timeout=0.2)
        assert time.monotonic() - started < 2


class TestEventFaults:
    @pytest.mark.parametrize("status", [429, 500])
    def test_fails_n_times_then_accepts(self, fake: FakePagerDuty, http: httpx.Client, status: int) -> None:
        """`fail_with(status, times=2)` answers status twice, then events are accepted again."""
        fake.fail_with(status, times=2)
        statuses = [enqueue(http, fake, trigger()).status_code for _ in range(3)]
        assert statuses == [status, status, 202]
        assert fake.enqueue_requests == 3
        assert len(fake.events) == 1

    def test_throttle_body(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A programmed 429 carries PagerDuty's throttle body."""
        fake.fail_with(429)
        assert enqueue(http, fake, trigger()).json()["status"] == "throttle event"

    def test_fails_until_cleared(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """`fail_with` without a count keeps failing until `clear_faults()`."""
        fake.fail_with(503)
        assert [enqueue(http, fake, trigger()).status_code for _ in range(4)] == [503] * 4
        fake.clear_faults()
        assert enqueue(http, fake, trigger()).status_code == 202
        assert fake.enqueue_requests == 5

    def test_hang_times_the_client_out(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """While hanging, requests get no answer; after `clear_faults()` new ones are accepted."""
        fake.hang()
        with pytest.raises(httpx.ReadTimeout):
            http.post(f"{fake.events_url}/v2/enqueue", json=trigger(), timeout=0.3)
        fake.clear_faults()
        assert enqueue(http, fake, trigger()).status_code == 202
        assert fake.enqueue_requests == 2

    def test_held_request_is_served_after_clear(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A request held by `hang()` is processed once the fault is cleared."""
        fake.hang()
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(enqueue, http, fake, trigger())
            wait_for(lambda: fake.enqueue_requests == 1, 5.0, "the request to arrive")
            assert not held.done()
            assert fake.events == []
            fake.clear_faults()
            assert held.result(timeout=5).status_code == 202
        assert len(fake.events) == 1

    def test_stop_does_not_wait_for_a_held_request(self, http: httpx.Client) -> None:
        """`stop()` returns promptly while a request is held, and the client sees a cut connection."""
        fake = FakePagerDuty().start()
        try:
            fake.hang()
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(enqueue, http, fake, trigger())
                wait_for(lambda: fake.enqueue_requests == 1, 5.0, "the request to arrive")
                started = time.monotonic()
                fake.stop()
                assert time.monotonic() - started < 2
                with pytest.raises(httpx.TransportError):
                    held.result(timeout=5)
        finally:
            fake.stop()

    def test_down_then_back_on_the_same_port(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """`go_down()` refuses connections; `come_back()` listens again on the same URL."""
        url = fake.events_url
        fake.go_down()
        with pytest.raises(httpx.ConnectError):
            enqueue(http, fake, trigger())
        fake.come_back()
        assert fake.events_url == url
        assert enqueue(http, fake, trigger()).status_code == 202
        assert fake.enqueue_requests == 1

    def test_events_faults_leave_rest_alone(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Events faults do not touch the REST side."""
        fake.fail_with(500)
        fake.go_down()
        assert list_windows(http, fake).status_code == 200


class TestMaintenanceWindows:
    def test_pages_follow_limit_and_offset(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Seven windows with limit 3 come in pages of 3, 3 and 1 with more true, true, false."""
        ids = add_windows(fake, 7)
        pages = [list_windows(http, fake, {"limit": 3, "offset": offset}).json() for offset in (0, 3, 6)]
        assert [len(page["maintenance_windows"]) for page in pages] == [3, 3, 1]
        assert [page["more"] for page in pages] == [True, True, False]
        assert [(page["limit"], page["offset"]) for page in pages] == [(3, 0), (3, 3), (3, 6)]
        assert [window["id"] for page in pages for window in page["maintenance_windows"]] == ids
        assert {page["total"] for page in pages} == {None}

    def test_total_on_request(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """`total=true` fills in the number of matching windows."""
        add_windows(fake, 7)
        assert list_windows(http, fake, {"limit": 3, "total": "true"}).json()["total"] == 7

    def test_default_and_largest_limit(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Without a limit a page holds 25 windows; a limit above 100 is cut to 100."""
        add_windows(fake, 30)
        default = list_windows(http, fake).json()
        assert (default["limit"], len(default["maintenance_windows"]), default["more"]) == (25, 25, True)
        assert list_windows(http, fake, {"limit": 500}).json()["limit"] == 100

    @pytest.mark.parametrize(
        ("params", "error"),
        [
            ({"filter": "current"}, "filter must be one of past, future, ongoing, open, all"),
            ({"limit": "ten"}, "limit must be an integer"),
            ({"offset": -1}, "offset must not be negative"),
            ({"offset": 9950, "limit": 100}, "offset + limit must not exceed 10000"),
        ],
    )
    def test_bad_query_is_invalid_input(
        self, fake: FakePagerDuty, http: httpx.Client, params: dict[str, Any], error: str
    ) -> None:
        """A query PagerDuty cannot serve gets 400 Invalid Input Provided with the reason."""
        response = list_windows(http, fake, params)
        assert response.status_code == 400
        body = response.json()["error"]
        assert (body["message"], body["code"]) == ("Invalid Input Provided", 2001)
        assert body["errors"][0].startswith(error)

    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            ("past", {"past", "ended now"}),
            ("ongoing", {"ongoing", "started now"}),
            ("future", {"future"}),
            ("open", {"ongoing", "started now", "future"}),
            ("all", {"past", "ended now", "ongoing", "started now", "future"}),
            (None, {"past", "ended now", "ongoing", "started now", "future"}),
        ],
    )
    def test_filter(self, fake: FakePagerDuty, http: httpx.Client, state: str | None, expected: set[str]) -> None:
        """`filter` selects by the fake's clock; open means ongoing or future; absent means all."""
        fake.add_service("PEVSS01")
        hour = timedelta(hours=1)
        for description, start, end in [
            ("past", NOW - 3 * hour, NOW - 2 * hour),
            ("ended now", NOW - hour, NOW),
            ("ongoing", NOW - hour, NOW + hour),
            ("started now", NOW, NOW + hour),
            ("future", NOW + hour, NOW + 2 * hour),
        ]:
            fake.add_window(["PEVSS01"], start, end, description)
        params = {} if state is None else {"filter": state}
        windows = list_windows(http, fake, params).json()["maintenance_windows"]
        assert {window["description"] for window in windows} == expected

    def test_service_filter(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """`service_ids[]` keeps the windows that cover any of the given services."""
        for service in ("PEVSS01", "PMHV001", "PVAOS01"):
            fake.add_service(service)
        evss = fake.add_window(["PEVSS01"], NOW, NOW + timedelta(hours=1))
        both = fake.add_window(["PMHV001", "PEVSS01"], NOW, NOW + timedelta(hours=2))
        fake.add_window(["PVAOS01"], NOW, NOW + timedelta(hours=1))
        params = {"service_ids[]": ["PEVSS01", "PMHV001"]}
        windows = list_windows(http, fake, params).json()["maintenance_windows"]
        assert [window["id"] for window in windows] == [evss, both]

    def test_unknown_service_fails_the_whole_request(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """One unknown id in `service_ids[]` makes the request 400, while the known ids alone work."""
        add_windows(fake, 2, "PEVSS01")
        fake.add_service("PMHV001")
        bad = list_windows(http, fake, {"service_ids[]": ["PEVSS01", "PGONE01", "PMHV001"]})
        assert bad.status_code == 400
        assert bad.json() == {
            "error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["Service PGONE01 not found."]}
        }
        good = list_windows(http, fake, {"service_ids[]": ["PEVSS01", "PMHV001"]})
        assert good.status_code == 200
        assert len(good.json()["maintenance_windows"]) == 2

    @pytest.mark.parametrize("token", ["wrong", None])
    def test_token_is_required(self, fake: FakePagerDuty, http: httpx.Client, token: str | None) -> None:
        """A missing or wrong `Authorization: Token token=...` header gets 401."""
        headers = {} if token is None else {"Authorization": f"Token token={token}"}
        response = http.get(f"{fake.api_url}/maintenance_windows", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": {"message": "Unauthorized"}}

    def test_window_shape(self, http: httpx.Client) -> None:
        """A window is rendered with PagerDuty's fields, references and ISO 8601 times."""
        with FakePagerDuty(now=lambda: NOW, web_url="https://va.pagerduty.invalid/") as fake:
            fake.add_service("PEVSS01", "EVSS")
            window_id = fake.add_window(
                ["PEVSS01"], NOW, NOW + timedelta(minutes=90), "USER_MESSAGE:EVSS upgrade|Claims are read-only"
            )
            [window] = list_windows(http, fake).json()["maintenance_windows"]
            api, web = fake.api_url, "https://va.pagerduty.invalid"
        assert window == {
            "id": window_id,
            "type": "maintenance_window",
            "summary": "USER_MESSAGE:EVSS upgrade|Claims are read-only",
            "self": f"{api}/maintenance_windows/{window_id}",
            "html_url": f"{web}/service-directory/maintenance-windows/{window_id}",
            "sequence_number": 1,
            "start_time": "2025-06-02T12:00:00+00:00",
            "end_time": "2025-06-02T13:30:00+00:00",
            "description": "USER_MESSAGE:EVSS upgrade|Claims are read-only",
            "created_by": {
                "id": "PSIMUSR",
                "type": "user_reference",
                "summary": "depmon simulator",
                "self": f"{api}/users/PSIMUSR",
                "html_url": f"{web}/users/PSIMUSR",
            },
            "services": [
                {
                    "id": "PEVSS01",
                    "type": "service_reference",
                    "summary": "EVSS",
                    "self": f"{api}/services/PEVSS01",
                    "html_url": f"{web}/service-directory/PEVSS01",
                }
            ],
            "teams": [],
        }

    def test_removed_window_disappears(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """`remove_window` takes a window out of the answers."""
        first, second = add_windows(fake, 2)
        fake.remove_window(first)
        assert [window["id"] for window in list_windows(http, fake).json()["maintenance_windows"]] == [second]
        with pytest.raises(KeyError):
            fake.remove_window(first)

    @pytest.mark.parametrize(
        ("services", "start", "end", "message"),
        [
            (["PEVSS01"], NOW, NOW, "must end after it starts"),
            (["PEVSS01"], NOW.replace(tzinfo=None), NOW + timedelta(hours=1), "timezone-aware"),
            (["PNOPE01"], NOW, NOW + timedelta(hours=1), "unknown service ids"),
            ([], NOW, NOW + timedelta(hours=1), "at least one service"),
        ],
    )
    def test_add_window_checks_its_arguments(
        self, fake: FakePagerDuty, services: list[str], start: datetime, end: datetime, message: str
    ) -> None:
        """`add_window` refuses windows PagerDuty would not hold."""
        fake.add_service("PEVSS01")
        with pytest.raises(ValueError, match=message):
            fake.add_window(services, start, end)

    def test_rest_faults(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """REST faults fail, refuse and recover the REST side only, and every request is counted."""
        fake.rest_fail_with(503, times=1)
        assert [list_windows(http, fake).status_code for _ in range(2)] == [503, 200]
        url = fake.api_url
        fake.rest_go_down()
        with pytest.raises(httpx.ConnectError):
            list_windows(http, fake)
        assert enqueue(http, fake, trigger()).status_code == 202
        fake.rest_come_back()
        assert fake.api_url == url
        assert list_windows(http, fake).status_code == 200
        assert fake.rest_request_count == 3
        fake.rest_hang()
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"{fake.api_url}/maintenance_windows", timeout=0.3)
        fake.rest_clear_faults()
        assert list_windows(http, fake).status_code == 200

    def test_requests_are_recorded(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Each REST request is kept with its query and headers."""
        list_windows(http, fake, {"filter": "open", "service_ids[]": ["A", "B"]})
        [request] = fake.rest_requests
        assert request.query == {"filter": ["open"], "service_ids[]": ["A", "B"]}
        assert request.header("Accept") == "application/vnd.pagerduty+json;version=2"


def rest(
    http: httpx.Client, fake: FakePagerDuty, method: str, path: str, body: Any = None, sender: str | None = "a@b.gov"
) -> httpx.Response:
    """A REST request with the fake's token (and a From header unless `sender` is None)."""
    headers = {"Authorization": f"Token token={fake.api_token}"}
    if sender is not None:
        headers["From"] = sender
    return http.request(method, f"{fake.api_url}{path}", json=body, headers=headers)


def window_body(service: str = "PEVSS01", start: datetime = NOW, hours_long: float = 2) -> dict[str, Any]:
    """A POST /maintenance_windows body."""
    end = start + timedelta(hours=hours_long)
    return {
        "maintenance_window": {
            "type": "maintenance_window",
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
            "description": "USER_MESSAGE:Claims|EVSS is down",
            "services": [{"id": service, "type": "service_reference"}],
        }
    }


class TestRestWrites:
    def test_created_window_is_listed(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A created window is answered 201 with its id and then listed as open."""
        fake.add_service("PEVSS01")
        created = rest(http, fake, "POST", "/maintenance_windows", window_body())
        assert created.status_code == 201
        window = created.json()["maintenance_window"]
        assert window["description"] == "USER_MESSAGE:Claims|EVSS is down"
        listed = list_windows(http, fake, {"filter": "open"}).json()["maintenance_windows"]
        assert [w["id"] for w in listed] == [window["id"]]

    def test_created_answer_matches_the_published_schema(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """The body that asked for a 201 passes our schema, and with the published one at hand both pass it."""
        pointer = "#/paths/~1maintenance_windows/post/{}/content/application~1json/schema"
        request_schema = published_validator("rest-maintenance-windows.openapi.json", pointer.format("requestBody"))
        answer_schema = published_validator("rest-maintenance-windows.openapi.json", pointer.format("responses/201"))
        fake.add_service("PEVSS01")
        created = rest(http, fake, "POST", "/maintenance_windows", window_body())
        assert created.status_code == 201
        assert window_errors(window_body()) == []  # the repository's own schema (monitor/schemas)
        if request_schema is not None and answer_schema is not None:  # the shared folder is beside the repository
            assert list(request_schema.iter_errors(window_body())) == []
            assert list(answer_schema.iter_errors(created.json())) == []

    def test_from_header_is_required(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Without a From header PagerDuty's 400 comes back and nothing is created."""
        fake.add_service("PEVSS01")
        refused = rest(http, fake, "POST", "/maintenance_windows", window_body(), sender=None)
        assert refused.status_code == 400
        assert "From header" in refused.json()["error"]["errors"][0]
        assert fake.windows == []

    @pytest.mark.parametrize(
        ("body", "said"),
        [
            ({"maintenance_window": {"type": "maintenance_window"}}, "'start_time' is a required property"),
            (window_body(service="PNOSUCH"), "Service PNOSUCH not found."),
            (window_body(start=NOW - timedelta(hours=3)), "end_time must be in the future"),
        ],
        ids=["schema", "unknown-service", "ended"],
    )
    def test_invalid_windows_are_refused(self, fake: FakePagerDuty, http: httpx.Client, body: Any, said: str) -> None:
        """A body our schema refuses, an unknown service or an end in the past is a 400 naming the problem."""
        fake.add_service("PEVSS01")
        refused = rest(http, fake, "POST", "/maintenance_windows", body)
        assert refused.status_code == 400
        assert any(said in error for error in refused.json()["error"]["errors"])

    def test_writes_need_the_token(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A write without the token is a 401."""
        fake.add_service("PEVSS01")
        answer = http.post(f"{fake.api_url}/maintenance_windows", json=window_body(), headers={"From": "a@b.gov"})
        assert answer.status_code == 401

    def test_delete_ends_ongoing_deletes_future_refuses_past(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """DELETE ends an ongoing window, deletes a future one, and is 405 for one already over."""
        fake.add_service("PEVSS01")
        ongoing = fake.add_window(["PEVSS01"], NOW - timedelta(hours=1), NOW + timedelta(hours=1))
        future = fake.add_window(["PEVSS01"], NOW + timedelta(hours=1), NOW + timedelta(hours=2))
        over = fake.add_window(["PEVSS01"], NOW - timedelta(hours=2), NOW - timedelta(hours=1))
        statuses = [
            rest(http, fake, "DELETE", f"/maintenance_windows/{w}").status_code for w in (ongoing, future, over)
        ]
        assert statuses == [204, 204, 405]
        assert [(w.id, w.end) for w in fake.windows] == [
            (ongoing, NOW),
            (over, NOW - timedelta(hours=1)),
        ]

    def test_put_changes_the_end(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """PUT with a new end_time moves the window's end."""
        fake.add_service("PEVSS01")
        window = fake.add_window(["PEVSS01"], NOW - timedelta(hours=1), NOW + timedelta(hours=1))
        end = NOW + timedelta(minutes=10)
        answer = rest(
            http, fake, "PUT", f"/maintenance_windows/{window}", {"maintenance_window": {"end_time": end.isoformat()}}
        )
        assert answer.status_code == 200
        assert fake.windows[0].end == end

    def test_service_status_is_programmable(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """GET /services/{id} answers active, then the status and last incident time it is given."""
        fake.add_service("PVAOS01", "VAOS")
        assert rest(http, fake, "GET", "/services/PVAOS01").json()["service"]["status"] == "active"
        fake.set_service_status("PVAOS01", "critical", NOW)
        service = rest(http, fake, "GET", "/services/PVAOS01").json()["service"]
        assert (service["status"], service["last_incident_timestamp"], service["name"]) == (
            "critical",
            "2025-06-02T12:00:00+00:00",
            "VAOS",
        )
        assert rest(http, fake, "GET", "/services/PNOSUCH").status_code == 404


class TestPublishedSchemas:
    """The fake checks events with the repository's schema (monitor/schemas); PagerDuty's published
    OpenAPI documents, when the shared folder is beside the repository, agree with it."""

    EVENTS_POINTER = "#/paths/~1enqueue/post/requestBody/content/application~1json/schema"
    WINDOWS_POINTER = "#/paths/~1maintenance_windows/get/responses/200/content/application~1json/schema"

    def test_accepted_events_are_valid_for_the_published_schema(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Every event the fake accepts passes our schema, and the published one when it is at hand."""
        published_schema = published_validator("events-v2.openapi.json", self.EVENTS_POINTER)
        for sample in (FULL_TRIGGER, trigger(), action("acknowledge"), action("resolve")):
            assert enqueue(http, fake, sample).status_code == 202
        assert len(fake.events) == 4
        for event in fake.events:
            assert event_errors(event.body) == []
            if published_schema is not None:
                assert list(published_schema.iter_errors(event.body)) == []

    def test_structurally_invalid_events_fail_both_schemas(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Events the fake refuses for their structure fail our schema, and the published one when at hand."""
        published_schema = published_validator("events-v2.openapi.json", self.EVENTS_POINTER)
        for event in INVALID_EVERYWHERE.values():
            assert enqueue(http, fake, event).status_code == 400
        rejected = fake.rejected_events
        assert len(rejected) == len(INVALID_EVERYWHERE)
        for name, refused in zip(INVALID_EVERYWHERE, rejected, strict=True):
            assert event_errors(json.loads(refused.body)), name
            if published_schema is not None:
                assert not published_schema.is_valid(json.loads(refused.body)), name

    def test_prose_limits_are_ours_only(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """Our schema enforces the limits PagerDuty states in prose, which the published schema (at hand) lacks."""
        published_schema = published_validator("events-v2.openapi.json", self.EVENTS_POINTER)
        for name, event in INVALID_BY_PROSE.items():
            assert event_errors(event), name
            assert enqueue(http, fake, event).status_code == 400, name
            if published_schema is not None:
                assert published_schema.is_valid(event), name

    def test_window_pages_match_the_published_schema(self, fake: FakePagerDuty, http: httpx.Client) -> None:
        """A page of windows, with and without `total`, passes the published response schema."""
        published_schema = published_validator("rest-maintenance-windows.openapi.json", self.WINDOWS_POINTER)
        if published_schema is None:  # the repository keeps no copy of the response schema
            pytest.skip("shared/pagerduty/rest-maintenance-windows.openapi.json is not beside the repository")
        add_windows(fake, 3)
        for params in ({"limit": 2}, {"limit": 2, "total": "true"}):
            body = list_windows(http, fake, params).json()
            assert list(published_schema.iter_errors(body)) == []


class TestPagerDutyPackage:
    """The official client, kept on its https base URLs, talks to the fake through the transport."""

    @pytest.fixture
    def events_client(self, fake: FakePagerDuty) -> Iterator[pagerduty.EventsApiV2Client]:
        client = pagerduty.EventsApiV2Client(
            "R0UTINGKEY0000000000000000000001",
            base_url="https://events.pagerduty.com",
            transport=LoopbackRewriteTransport(fake.events_url),
        )
        client.timeout = 5
        client.sleep_timer = 0.001  # its retries sleep 1.5 s x 2^n otherwise
        with client:
            yield client

    @pytest.fixture
    def rest_client(self, fake: FakePagerDuty) -> Iterator[pagerduty.RestApiV2Client]:
        client = pagerduty.RestApiV2Client(fake.api_token, transport=LoopbackRewriteTransport(fake.api_url))
        client.timeout = 5
        client.sleep_timer = 0.001
        with client:
            yield client

    def test_http_base_url_is_refused(self, fake: FakePagerDuty) -> None:
        """The package refuses an http base URL, which is why the transport exists."""
        with pytest.raises(pagerduty.UrlError):
            pagerduty.EventsApiV2Client("key", base_url=fake.events_url)

    def test_trigger_and_resolve(self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client) -> None:
        """`trigger()` then `resolve()` open and close an alert in the fake."""
        payload = {"component": "evss", "group": "va-mobile-app", "class": "http_status"}
        links = [{"href": "https://example.org/playbook", "text": "Playbook"}]
        key = events_client.trigger(
            "EVSS down [test]", "depmon/test", dedup_key=KEY, severity="error", payload=payload, links=links
        )
        assert key == KEY
        assert events_client.resolve(KEY) == KEY
        alert = fake.alert(KEY)
        assert alert is not None
        assert alert.status == "resolved"
        sent = fake.events[0].body
        assert sent["routing_key"] == "R0UTINGKEY0000000000000000000001"
        assert sent["payload"] == {
            "summary": "EVSS down [test]",
            "source": "depmon/test",
            "severity": "error",
            **payload,
        }
        assert sent["links"] == links

    def test_send_event_with_client_fields(
        self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client
    ) -> None:
        """`send_event()` carries the fields `trigger()` does not take, such as client and client_url."""
        payload = {"summary": "EVSS down", "source": "depmon/test", "severity": "critical"}
        events_client.send_event(
            "trigger", dedup_key=KEY, payload=payload, client="depmon", client_url="http://127.0.0.1:8080/status"
        )
        assert fake.events[0].body["client"] == "depmon"

    def test_generated_dedup_key_is_returned(
        self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client
    ) -> None:
        """A trigger without a dedup key returns the one the fake made up."""
        key = events_client.trigger("EVSS down", "depmon/test")
        assert key == fake.events[0].dedup_key

    def test_invalid_event_raises_without_retry(
        self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client
    ) -> None:
        """A 400 raises HttpError carrying the response, after a single request."""
        with pytest.raises(pagerduty.HttpError) as raised:
            events_client.trigger("x" * 1025, "depmon/test", dedup_key=KEY)
        assert raised.value.response.status_code == 400
        assert fake.enqueue_requests == 1

    def test_throttling_is_retried(self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client) -> None:
        """Two 429s are retried by the package and the third attempt is accepted."""
        fake.fail_with(429, times=2)
        assert events_client.trigger("EVSS down", "depmon/test", dedup_key=KEY) == KEY
        assert fake.enqueue_requests == 3

    def test_bounded_server_errors_raise(self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client) -> None:
        """A lasting 500 is retried twice by the package, then raises ServerHttpError."""
        fake.fail_with(500)
        with pytest.raises(pagerduty.ServerHttpError):
            events_client.trigger("EVSS down", "depmon/test", dedup_key=KEY)
        assert fake.enqueue_requests == 3

    def test_refused_connection_raises(self, fake: FakePagerDuty, events_client: pagerduty.EventsApiV2Client) -> None:
        """With the events side down, the package gives up with pagerduty.Error after its network retries."""
        fake.go_down()
        with pytest.raises(pagerduty.Error, match="Non-transient network error"):
            events_client.trigger("EVSS down", "depmon/test", dedup_key=KEY)

    def test_iter_all_pages_through_windows(self, fake: FakePagerDuty, rest_client: pagerduty.RestApiV2Client) -> None:
        """`iter_all` follows `more` through every page, sending service_ids[] and filter=open."""
        ids = add_windows(fake, 7, "PEVSS01")
        fake.add_service("PMHV001")
        params = {"service_ids": ["PEVSS01", "PMHV001"], "filter": "open"}
        windows = list(rest_client.iter_all("maintenance_windows", params=params, page_size=3))
        assert [window["id"] for window in windows] == ids
        requests = fake.rest_requests
        assert [request.first("offset") for request in requests] == ["0", "3", "6"]
        for request in requests:
            assert request.query["service_ids[]"] == ["PEVSS01", "PMHV001"]
            assert request.first("filter") == "open"
            assert request.header("Accept") == "application/vnd.pagerduty+json;version=2"
        assert rest_client.api_call_counts == {"GET /maintenance_windows": 3}

    def test_unknown_service_raises(self, fake: FakePagerDuty, rest_client: pagerduty.RestApiV2Client) -> None:
        """A 400 for an unknown service id surfaces as HttpError."""
        with pytest.raises(pagerduty.HttpError) as raised:
            list(rest_client.iter_all("maintenance_windows", params={"service_ids": ["PGONE01"]}))
        assert raised.value.response.status_code == 400

    def test_wrong_token_raises(self, fake: FakePagerDuty) -> None:
        """A rejected token raises HttpError at once."""
        transport = LoopbackRewriteTransport(fake.api_url)
        with pagerduty.RestApiV2Client("wrong", transport=transport) as client, pytest.raises(pagerduty.HttpError):
            list(client.iter_all("maintenance_windows"))
        assert fake.rest_request_count == 1


class TestLoopbackRewriteTransport:
    @pytest.mark.parametrize(
        "target", ["http://10.0.0.5:8080", "http://pagerduty.example:80", "ftp://127.0.0.1:21", "http://127.0.0.1/?a=1"]
    )
    def test_refuses_other_targets(self, target: str) -> None:
        """Only http(s) URLs on a loopback address, without a query, are accepted as targets."""
        with pytest.raises(ValueError, match="target_base_url"):
            LoopbackRewriteTransport(target)

    @pytest.mark.parametrize("target", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
    def test_accepts_loopback_targets(self, target: str) -> None:
        """127.0.0.1, localhost and ::1 are loopback targets."""
        with LoopbackRewriteTransport(target) as transport:
            assert transport.target_base_url.startswith("http://")

    def test_rewrite_keeps_path_and_query(self) -> None:
        """The target replaces scheme, host and port, prefixes its path, and keeps path and query."""
        with LoopbackRewriteTransport("http://127.0.0.1:9/pd/") as transport:
            url = transport.rewrite(httpx2.URL("https://api.pagerduty.com/maintenance_windows?service_ids%5B%5D=A"))
        assert str(url) == "http://127.0.0.1:9/pd/maintenance_windows?service_ids%5B%5D=A"

    def test_caller_keeps_its_url(self, fake: FakePagerDuty) -> None:
        """The response carries the caller's https request, while the server saw its own Host."""
        with httpx2.Client(transport=LoopbackRewriteTransport(fake.api_url)) as client:
            response = client.get("https://api.pagerduty.com/maintenance_windows")
        assert response.status_code == 401
        assert str(response.request.url) == "https://api.pagerduty.com/maintenance_windows"
        assert fake.rest_requests[0].header("Host") == fake.api_url.removeprefix("http://")


class TestLoopbackServer:
    @staticmethod
    def echo(request: Request) -> Response:
        return json_response(200, {"path": request.path, "query": request.query, "body": request.body.decode()})

    def test_dispatch_by_method_and_path(self, http: httpx.Client) -> None:
        """Requests reach the handler of their (method, path); others get 404 or 405."""
        with LoopbackServer() as server:
            server.route("POST", "/echo", self.echo)
            echoed = http.post(f"{server.url}/echo?a=1&a=2", content=b"hi").json()
            assert echoed == {"path": "/echo", "query": {"a": ["1", "2"]}, "body": "hi"}
            assert http.get(f"{server.url}/echo").status_code == 405
            assert http.get(f"{server.url}/other").status_code == 404
            assert server.request_count == 3

    def test_handler_error_is_a_500(self, http: httpx.Client) -> None:
        """A handler that raises is answered 500 and its traceback is kept."""

        def broken(request: Request) -> Response:
            raise RuntimeError("simulated bug")

        with LoopbackServer() as server:
            server.route("GET", "/", broken)
            assert http.get(server.url + "/").status_code == 500
            assert "simulated bug" in server.handler_errors[0]

    def test_none_drops_the_connection(self, http: httpx.Client) -> None:
        """A handler returning None closes the connection without an answer."""
        with LoopbackServer() as server:
            server.route("GET", "/", lambda request: None)
            with pytest.raises(httpx.RemoteProtocolError):
                http.get(server.url + "/")

    def test_restart_keeps_the_port(self, http: httpx.Client) -> None:
        """After `stop()`, `start()` listens on the same port again."""
        server = LoopbackServer()
        server.route("GET", "/", self.echo)
        try:
            url = server.start().url
            server.stop()
            with pytest.raises(httpx.ConnectError):
                http.get(url + "/")
            assert server.start().url == url
            assert http.get(url + "/").status_code == 200
        finally:
            server.stop()

    def test_clear_faults_brings_a_downed_server_back(self, http: httpx.Client) -> None:
        """`clear_faults()` after `go_down()` listens again, and never starts a stopped server."""
        with LoopbackServer() as server:
            server.route("GET", "/", self.echo)
            server.go_down()
            server.clear_faults()
            assert http.get(server.url + "/").status_code == 200
            server.go_down()
            server.stop()
            server.clear_faults()
            assert not server.listening

    def test_port_unknown_before_start(self) -> None:
        """Asking a server that never started for its URL is an error."""
        with pytest.raises(RuntimeError, match="not started"):
            _ = LoopbackServer().url

    def test_fail_with_needs_a_positive_count(self) -> None:
        """`fail_with(times=0)` is refused."""
        with pytest.raises(ValueError, match="at least 1"):
            LoopbackServer().fail_with(500, times=0)

    def test_many_held_requests_are_released_by_stop(self, http: httpx.Client) -> None:
        """`stop()` releases several held requests at once and returns promptly."""
        server = LoopbackServer().start()
        server.route("GET", "/", self.echo)
        server.hang()
        try:
            with ThreadPoolExecutor(4) as pool:
                held = [pool.submit(http.get, server.url + "/") for _ in range(4)]
                wait_for(lambda: server.request_count == 4, 5.0, "four requests")
                started = time.monotonic()
                server.stop()
                assert time.monotonic() - started < 2
                for request in held:
                    with pytest.raises(httpx.TransportError):
                        request.result(timeout=5)
        finally:
            server.stop()


class TestStandalone:
    def test_prints_urls_and_events(self, http: httpx.Client) -> None:
        """`python -m monitor.sim.fake_pagerduty` prints its URLs, then each accepted event, until SIGTERM."""
        command = [sys.executable, "-m", "monitor.sim.fake_pagerduty", "--service", "PEVSS01"]
        with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            try:
                events_line = process.stdout.readline()
                rest_line = process.stdout.readline()
                assert events_line.startswith("events: POST http://127.0.0.1:")
                assert "/maintenance_windows" in rest_line
                url = events_line.split()[-1]
                assert http.post(url, json=trigger()).status_code == 202
                printed = json.loads(process.stdout.readline())
                assert printed["dedup_key"] == KEY
                assert printed["routing_key"] == "...0001"
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=10) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)


def test_threads_do_not_leak() -> None:
    """Starting and stopping a fake leaves no serving threads behind."""
    before = {thread.name for thread in threading.enumerate()}
    with FakePagerDuty():
        pass
    after = {thread.name for thread in threading.enumerate() if thread.name.startswith("loopback-")}
    assert after <= before
