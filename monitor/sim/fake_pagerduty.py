"""A fake PagerDuty on loopback: the Events API v2, REST maintenance windows and service status.

Two `LoopbackServer`s, like PagerDuty's two hosts, so that each side fails on its own:

- `events_url`: `POST /v2/enqueue`. Each body is checked against depmon's own schema
  (`monitor/schemas/events-v2.json`, with `jsonschema`) and the 512 KB limit. Invalid events get
  400 `{status: "invalid event", message, errors: [...]}` and land in `rejected_events`; valid ones
  get 202 `{status: "success", message: "Event processed", dedup_key}` (a trigger without a key is
  given one) and land in `events`. `alerts` follows PagerDuty: a trigger opens an alert or updates
  the open one of its dedup key, acknowledge marks it, resolve closes it, and a trigger after a
  resolve opens a new alert. Unknown keys in acknowledge/resolve are accepted and change nothing.
- `api_url`: `GET /maintenance_windows`. Requires `Authorization: Token token=<api_token>` (401
  otherwise); accepts any `Accept` (PagerDuty's is `application/vnd.pagerduty+json;version=2`).
  Query: `service_ids[]` (repeated; one unknown id fails the whole request with 400
  `{error: {message: "Invalid Input Provided", code: 2001, errors: [...]}}`, as PagerDuty does),
  `filter`, `limit` (default 25, at most 100: larger values are cut to 100), `offset` (default 0;
  offset + limit above 10000 is a 400), `total` (`true` fills `total`, else it is null). Windows
  come sorted by start time, then creation order.

REST writes and services, on `api_url` too (same token rule):

- `POST /maintenance_windows`: needs a `From` header (PagerDuty's requester email; 400 without)
  and a body valid for depmon's own write schema (`monitor/schemas/rest-maintenance-windows.json`;
  400 `Invalid Input Provided` with the schema errors otherwise); every service must be known, the
  end after the start and in the future; a start in the past becomes now (as PagerDuty documents).
  Answers 201 `{maintenance_window: ...}`; the window is then listed like `add_window`'s.
- `DELETE /maintenance_windows/{id}`: deletes a future window, ends an ongoing one now (204); 405
  once it has ended, 404 for an unknown id. `PUT /maintenance_windows/{id}`: changes the
  `start_time`, `end_time` or `description` given (200 with the window).
- `GET /services/{id}`: `{service: {id, type, name, status, last_incident_timestamp, ...}}`; the
  status is `active` until `set_service_status(...)` changes it; 404 for an unknown id.

`filter` semantics. The published schema lists past, future, ongoing, open and all without saying
what each means or which is the default, so the fake picks, with `now` from its clock:
past = ended (end <= now); ongoing = started and not ended (start <= now < end); future = not
started (start > now); open = ongoing + future (every window not yet ended: vets-api polls with
`filter=open` and keeps windows with `end_time > now`, upcoming ones included); all (the default
when `filter` is absent) = every window. Any other value is a 400.

Incidents (SPEC 11.2), on `api_url` too: a trigger that opens an alert opens an incident
`incident_delay` seconds later (PagerDuty creates incidents asynchronously, after its 202), with
`incident_key` = the dedup key; a resolve resolves it. `GET /incidents?incident_key=K&statuses[]=...`
lists it once it exists; `GET`/`PUT /incidents/{id}` (urgency), `POST /incidents/{id}/notes` and
`POST /incidents/{id}/responder_requests` need the token and a `From` header, and a body valid
for depmon's own schema (`monitor/schemas/rest-incidents.json`: the responder request's targets in
the wrapped form; 400 `Invalid Input Provided` otherwise). `incidents` records each incident with
its notes, responder requests and urgency changes.

Faults: `fail_with`/`hang`/`go_down`/`come_back`/`clear_faults` act on the events side only,
`rest_fail_with`/`rest_hang`/`rest_go_down`/`rest_come_back`/`rest_clear_faults` on the REST side
only. Every request is recorded, faulted ones included (`enqueue_requests`, `rest_requests`).
`answer_in_turn(403, 404, ...)` answers the next enqueue requests with those statuses, one each,
in order (a proxy's or a load balancer's errors, or a 400 for one event only): the bodies are
recorded in `faulted_events`. `hold_events_of(dedup_key)` holds that key's events unanswered
(a slow answer for one key only) until `release_events()`. On the REST side, `rest_answer_with(document)` answers every
authorized list request with a raw JSON document (`{"maintenance_windows": [], "more": true}`
forever, say), and `add_raw_window_entries(...)` puts malformed entries (a number, a string,
null) in front of the windows of every first page.

`jsonschema` is a runtime dependency of depmon because this module needs it at import time; the
schema itself ships inside the package, so nothing outside the installed package is read.

Run it alone for manual tests: `python -m monitor.sim.fake_pagerduty --port 8081 --service P123`
prints its URLs and then every event it accepts.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import json
import math
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from types import FrameType
from typing import Any, Literal, Self

import jsonschema  # type: ignore[import-untyped,unused-ignore]

from monitor.maintenance.records import MaintenanceWindow
from monitor.sim.lifecycle import Started
from monitor.sim.loopback import LoopbackServer, Request, Response, json_response

__all__ = [
    "MAX_EVENT_BYTES",
    "Alert",
    "FakeIncident",
    "FakePagerDuty",
    "ReceivedEvent",
    "RejectedEvent",
    "event_errors",
    "incident_write_errors",
    "window_errors",
]

MAX_EVENT_BYTES = 512 * 1024
"""PagerDuty refuses events larger than 512 KB."""

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_OFFSET_PLUS_LIMIT = 10_000
WINDOW_FILTERS = ("past", "future", "ongoing", "open", "all")
SIM_API_TOKEN = "sim-api-token"  # noqa: S105 - the fake's default, not a secret

AlertStatus = Literal["triggered", "acknowledged", "resolved"]


# -- depmon's own schemas ------------------------------------------------------------------------


@functools.cache
def _validator(name: str) -> Any:
    """A validator of the schema `monitor/schemas/<name>` (shipped inside the package)."""
    text = importlib.resources.files("monitor").joinpath(f"schemas/{name}").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_errors(name: str, document: object) -> list[str]:
    return sorted(f"{error.json_path}: {error.message}" for error in _validator(name).iter_errors(document))


def event_errors(event: object) -> list[str]:
    """Why `event` is not a valid Events API v2 body, one message per problem; empty when valid."""
    return _schema_errors("events-v2.json", event)


def incident_write_errors(definition: str, body: object) -> list[str]:
    """Why `body` is not a valid incident write (`definition`: ResponderRequest, Note, IncidentUpdate)."""
    text = importlib.resources.files("monitor").joinpath("schemas/rest-incidents.json").read_text("utf-8")
    schema = {**json.loads(text), "$ref": f"#/$defs/{definition}"}
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{error.json_path}: {error.message}" for error in validator.iter_errors(body))


def window_errors(body: object) -> list[str]:
    """Why `body` is not a valid maintenance-window write body, one message per problem; empty when valid."""
    return _schema_errors("rest-maintenance-windows.json", body)


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An accepted event: its body as sent, the dedup key it was filed under, when it came."""

    body: dict[str, Any]
    dedup_key: str
    received_at: float  # UNIX time

    @property
    def action(self) -> str:
        """trigger, acknowledge or resolve."""
        return str(self.body["event_action"])

    @property
    def summary(self) -> str | None:
        """The payload summary of a trigger, else None (PagerDuty ignores other events' payloads)."""
        payload = self.body.get("payload")
        if self.action != "trigger" or not isinstance(payload, dict):
            return None
        return str(payload["summary"])

    @property
    def routing_key(self) -> str:
        """The integration (routing) key the event was sent with."""
        return str(self.body["routing_key"])


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """A request that was answered 400: its raw body and the reasons given."""

    body: bytes
    errors: tuple[str, ...]
    received_at: float


@dataclass(frozen=True, slots=True)
class Alert:
    """One PagerDuty alert: the events filed under it while it was open, and its status."""

    dedup_key: str
    status: AlertStatus
    events: tuple[ReceivedEvent, ...]
    opened_at: float
    resolved_at: float | None = None

    @property
    def is_open(self) -> bool:
        """True until resolved."""
        return self.status != "resolved"

    @property
    def summary(self) -> str | None:
        """The summary of the latest trigger (an update changes the title)."""
        summaries = [event.summary for event in self.events if event.summary is not None]
        return summaries[-1] if summaries else None


@dataclass(frozen=True, slots=True)
class FakeIncident:
    """One PagerDuty incident: opened by a trigger's alert, and what was written to it."""

    id: str
    incident_key: str
    created_at: float  # UNIX time it exists from (a moment after the trigger's 202)
    status: AlertStatus = "triggered"
    urgency: str = "low"
    notes: tuple[str, ...] = ()
    responder_requests: tuple[dict[str, Any], ...] = ()  # the bodies, as received
    writes: tuple[tuple[str, str, str], ...] = ()  # (method, path, From header) of each accepted write


class _InvalidInput(ValueError):
    """A REST query PagerDuty would answer with 400 Invalid Input Provided."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _events_fault(status: int, retry_after: float | None = None) -> Response:
    if status == 429:
        return json_response(
            429,
            {
                "status": "throttle event",
                "message": "Requests for this service are arriving too quickly. Please retry later.",
            },
            headers=[("Retry-After", str(math.ceil(retry_after)))] if retry_after is not None else [],
        )
    return json_response(status, {"status": "error", "message": HTTPStatus(status).phrase})


def _rest_error(status: int, message: str, errors: Iterable[str] = (), code: int | None = None) -> Response:
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    if errors:
        error["errors"] = list(errors)
    return json_response(status, {"error": error})


def _rest_fault(status: int) -> Response:
    return _rest_error(status, HTTPStatus(status).phrase)


def _invalid_event(message: str, errors: list[str]) -> Response:
    return json_response(400, {"status": "invalid event", "message": message, "errors": errors})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class FakePagerDuty(Started):
    """A loopback PagerDuty: Events API v2 on `events_url`, REST maintenance windows on `api_url`.

    `now` is the clock the maintenance-window filters use (aware datetimes). `web_url` is the
    base of the `html_url` links in REST answers.
    """

    def __init__(
        self,
        *,
        api_token: str = SIM_API_TOKEN,
        events_port: int = 0,
        api_port: int = 0,
        web_url: str = "https://sim.pagerduty.invalid",
        now: Callable[[], datetime] = _utcnow,
        incident_delay: float = 0.5,
    ) -> None:
        self._api_token = api_token
        self._web_url = web_url.rstrip("/")
        self._now = now
        self._retry_after: float | None = None  # Retry-After of a programmed 429, when set
        self._events_server = LoopbackServer(
            port=events_port, fault_response=lambda status: _events_fault(status, self._retry_after)
        )
        self._events_server.route("POST", "/v2/enqueue", self._enqueue)
        self._rest_server = LoopbackServer(port=api_port, fault_response=_rest_fault)
        self._rest_server.route("GET", "/maintenance_windows", self._list_windows)
        self._rest_server.route("POST", "/maintenance_windows", self._create_window)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: list[ReceivedEvent] = []
        self._rejected: list[RejectedEvent] = []
        self._alerts: list[Alert] = []
        self._open_alert_index: dict[str, int] = {}
        self._services: dict[str, str] = {}  # id -> name
        self._service_status: dict[str, tuple[str, datetime | None]] = {}  # id -> (status, last incident)
        self._windows: dict[str, MaintenanceWindow] = {}
        self._window_sequence: dict[str, int] = {}
        self._next_sequence = 1
        self._in_turn: list[int] = []  # statuses for the next enqueue requests, one each
        self._faulted: list[tuple[int, dict[str, Any] | None]] = []  # (status, body) answered by answer_in_turn
        self._raw_answer: Any = None  # a raw document for every list request, when set
        self._raw_entries: list[Any] = []  # malformed entries put in front of every first page
        self._held_keys: set[str] = set()  # dedup keys whose events are held unanswered
        self._holding = 0  # enqueue requests held right now
        self._stopping = False
        self._incident_delay = incident_delay
        self._incidents: dict[str, FakeIncident] = {}  # id -> incident, in creation order
        self._rest_server.route("GET", "/incidents", self._list_incidents)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start both servers; returns the fake."""
        self._stopping = False
        self._events_server.start()
        try:
            self._rest_server.start()
        except BaseException:
            self._events_server.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers; held requests are released and never answered."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        try:
            self._events_server.stop()
        finally:
            self._rest_server.stop()

    @property
    def events_url(self) -> str:
        """Base URL of the Events API (`POST {events_url}/v2/enqueue`)."""
        return self._events_server.url

    @property
    def api_url(self) -> str:
        """Base URL of the REST API (`GET {api_url}/maintenance_windows`)."""
        return self._rest_server.url

    @property
    def api_token(self) -> str:
        """The REST API token the fake accepts."""
        return self._api_token

    # -- events: records -------------------------------------------------------------------------

    @property
    def events(self) -> list[ReceivedEvent]:
        """Every accepted event, oldest first."""
        with self._lock:
            return list(self._events)

    @property
    def rejected_events(self) -> list[RejectedEvent]:
        """Every event answered with 400, oldest first."""
        with self._lock:
            return list(self._rejected)

    def events_for(self, dedup_key: str) -> list[ReceivedEvent]:
        """The accepted events filed under `dedup_key`, oldest first."""
        with self._lock:
            return [event for event in self._events if event.dedup_key == dedup_key]

    def wait_for(self, predicate: Callable[[list[ReceivedEvent]], bool], timeout: float = 5.0) -> list[ReceivedEvent]:
        """Block until `predicate(events)` holds and return those events; `TimeoutError` after `timeout`."""
        with self._changed:
            if self._changed.wait_for(lambda: predicate(list(self._events)), timeout):
                return list(self._events)
            seen = [f"{event.action} {event.dedup_key}" for event in self._events]
        raise TimeoutError(f"no matching PagerDuty events within {timeout} s; accepted so far: {seen}")

    @property
    def alerts(self) -> list[Alert]:
        """Every alert, in the order they were opened."""
        with self._lock:
            return list(self._alerts)

    @property
    def open_alerts(self) -> list[Alert]:
        """The alerts not yet resolved."""
        with self._lock:
            return [alert for alert in self._alerts if alert.is_open]

    def alert(self, dedup_key: str) -> Alert | None:
        """The latest alert of `dedup_key`, open or resolved, or None."""
        with self._lock:
            for alert in reversed(self._alerts):
                if alert.dedup_key == dedup_key:
                    return alert
        return None

    @property
    def enqueue_requests(self) -> int:
        """Requests received by the events side, faulted and invalid ones included."""
        return self._events_server.request_count

    # -- events: faults --------------------------------------------------------------------------

    def fail_with(self, status: int, times: int | None = None, retry_after: float | None = None) -> None:
        """Answer enqueue requests with `status` (e.g. 429, 500) `times` times, or until cleared.

        `retry_after` adds a `Retry-After` header (whole seconds) to programmed 429 answers.
        """
        self._retry_after = retry_after
        self._events_server.fail_with(status, times)

    def hang(self) -> None:
        """Hold enqueue requests unanswered until `clear_faults()` or until the fake goes down."""
        self._events_server.hang()

    def go_down(self) -> None:
        """Close the events port: connections are refused."""
        self._events_server.go_down()

    def come_back(self) -> None:
        """Listen on the events port again (the same port)."""
        self._events_server.come_back()

    def clear_faults(self) -> None:
        """Undo every events fault (held requests are then served), `answer_in_turn` included."""
        with self._lock:
            self._in_turn.clear()
        self._events_server.clear_faults()

    def answer_in_turn(self, *statuses: int) -> None:
        """Answer the next enqueue requests with `statuses`, one each and in order, then as usual.

        A 429 gets PagerDuty's throttle body, any other status a plain error body. These answers
        come after the faults of `fail_with`/`hang`/`go_down`, which apply first. The events so
        answered are in `faulted_events`, not in `events` or `rejected_events`.
        """
        with self._lock:
            self._in_turn.extend(statuses)

    def hold_events_of(self, *dedup_keys: str) -> None:
        """Hold the enqueue requests of these dedup keys unanswered until `release_events()` (or `stop()`).

        Requests of other keys are answered as usual: one slow key must not delay the others.
        """
        with self._changed:
            self._held_keys.update(dedup_keys)

    def release_events(self) -> None:
        """Answer the held requests (recording their events, even if the client gave up) and hold no more."""
        with self._changed:
            self._held_keys.clear()
            self._changed.notify_all()

    @property
    def held_requests(self) -> int:
        """How many enqueue requests are held unanswered right now."""
        with self._lock:
            return self._holding

    @property
    def faulted_events(self) -> list[tuple[int, dict[str, Any] | None]]:
        """(status, body) of each event answered by `answer_in_turn`, oldest first (None: not JSON)."""
        with self._lock:
            return list(self._faulted)

    # -- REST: data ------------------------------------------------------------------------------

    def add_service(self, service_id: str, name: str | None = None) -> None:
        """Make `service_id` known, so that `service_ids[]` may name it."""
        with self._lock:
            self._services[service_id] = name or service_id
            self._service_status.setdefault(service_id, ("active", None))
        self._rest_server.route("GET", f"/services/{service_id}", functools.partial(self._get_service, service_id))

    def set_service_status(self, service_id: str, status: str, last_incident_at: datetime | None = None) -> None:
        """Program what `GET /services/{service_id}` answers: its status and `last_incident_timestamp`."""
        with self._lock:
            if service_id not in self._services:
                raise ValueError(f"unknown service id {service_id!r}: call add_service() first")
            self._service_status[service_id] = (status, last_incident_at)

    @property
    def windows(self) -> list[MaintenanceWindow]:
        """Every window the fake holds (created, added, ended), in creation order."""
        with self._lock:
            return sorted(self._windows.values(), key=lambda window: self._window_sequence[window.id])

    def add_window(
        self,
        service_ids: Iterable[str],
        start: datetime,
        end: datetime,
        description: str = "",
    ) -> str:
        """Create a maintenance window over known services; returns its id."""
        services = tuple(service_ids)
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("maintenance window times must be timezone-aware")
        if not start < end:
            raise ValueError(f"a maintenance window must end after it starts ({start} >= {end})")
        if not services:
            raise ValueError("a maintenance window needs at least one service")
        with self._lock:
            unknown = [service for service in services if service not in self._services]
            if unknown:
                raise ValueError(f"unknown service ids {unknown}: call add_service() first")
            sequence = self._next_sequence
            self._next_sequence += 1
            window_id = f"PMW{sequence:04d}"
            self._windows[window_id] = MaintenanceWindow(window_id, start, end, description, services)
            self._window_sequence[window_id] = sequence
        for method, handler in (("DELETE", self._delete_window), ("PUT", self._update_window)):
            self._rest_server.route(method, f"/maintenance_windows/{window_id}", functools.partial(handler, window_id))
        return window_id

    def remove_window(self, window_id: str) -> None:
        """Delete a maintenance window; `KeyError` when there is none with that id."""
        with self._lock:
            del self._windows[window_id]

    # -- REST: faults and records ----------------------------------------------------------------

    def rest_fail_with(self, status: int, times: int | None = None) -> None:
        """Answer REST requests with `status` `times` times, or until cleared."""
        self._rest_server.fail_with(status, times)

    def rest_hang(self) -> None:
        """Hold REST requests unanswered until `rest_clear_faults()` or until the REST side goes down."""
        self._rest_server.hang()

    def rest_go_down(self) -> None:
        """Close the REST port: connections are refused."""
        self._rest_server.go_down()

    def rest_come_back(self) -> None:
        """Listen on the REST port again (the same port)."""
        self._rest_server.come_back()

    def rest_clear_faults(self) -> None:
        """Undo every REST fault, raw answers and raw entries included."""
        with self._lock:
            self._raw_answer = None
            self._raw_entries.clear()
        self._rest_server.clear_faults()

    def rest_answer_with(self, document: Any) -> None:
        """Answer every authorized `GET /maintenance_windows` with 200 and `document` as is (None: the windows again).

        `document` may also be a function of the `Request` returning the document, to answer
        each page differently.
        """
        with self._lock:
            self._raw_answer = document

    def add_raw_window_entries(self, *entries: Any) -> None:
        """Put `entries` (any JSON value: 42, "oops", None) in front of the windows of every first page (offset 0)."""
        with self._lock:
            self._raw_entries.extend(entries)

    @property
    def rest_requests(self) -> list[Request]:
        """Every REST request received, faulted and refused ones included, oldest first."""
        return self._rest_server.requests

    @property
    def rest_request_count(self) -> int:
        """How many REST requests were received."""
        return self._rest_server.request_count

    # -- handlers --------------------------------------------------------------------------------

    def _enqueue(self, request: Request) -> Response | None:
        with self._changed:
            if self._held_keys:
                try:
                    key = request.json().get("dedup_key")
                except (ValueError, AttributeError):
                    key = None
                if key in self._held_keys:
                    self._holding += 1
                    self._changed.notify_all()
                    self._changed.wait_for(lambda: key not in self._held_keys or self._stopping)
                    self._holding -= 1
                    if self._stopping:
                        return None
            status = self._in_turn.pop(0) if self._in_turn else None
            if status is not None:
                try:
                    body = request.json()
                except ValueError:
                    body = None
                self._faulted.append((status, body if isinstance(body, dict) else None))
                self._changed.notify_all()
        if status is not None:
            return _events_fault(status, self._retry_after)
        if len(request.body) > MAX_EVENT_BYTES:
            errors = [f"the event is {len(request.body)} bytes; at most {MAX_EVENT_BYTES} are accepted"]
            return self._reject(request, "Event object is too large", errors)
        try:
            body = request.json()
        except ValueError:
            return self._reject(
                request, "Event object format is unrecognized", ["JSON parse error"], "Unrecognized object"
            )
        errors = event_errors(body)
        if errors:
            return self._reject(request, "Event object is invalid", errors)
        dedup_key = str(body.get("dedup_key") or uuid.uuid4().hex)
        self._record(ReceivedEvent(body, dedup_key, request.received_at))
        return json_response(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})

    def _reject(self, request: Request, message: str, errors: list[str], status: str = "invalid event") -> Response:
        with self._changed:
            self._rejected.append(RejectedEvent(request.body, tuple(errors), request.received_at))
            self._changed.notify_all()
        return json_response(400, {"status": status, "message": message, "errors": errors})

    def _record(self, event: ReceivedEvent) -> None:
        with self._changed:
            self._events.append(event)
            index = self._open_alert_index.get(event.dedup_key)
            if index is None:
                if event.action == "trigger":
                    self._open_alert_index[event.dedup_key] = len(self._alerts)
                    self._alerts.append(Alert(event.dedup_key, "triggered", (event,), event.received_at))
                    self._open_incident(event.dedup_key, event.received_at + self._incident_delay)
                # acknowledge or resolve without an open alert: accepted, and nothing changes
            else:
                current = self._alerts[index]
                events = (*current.events, event)
                if event.action == "trigger":
                    self._alerts[index] = replace(current, events=events)
                elif event.action == "acknowledge":
                    self._alerts[index] = replace(current, status="acknowledged", events=events)
                else:
                    self._alerts[index] = replace(
                        current, status="resolved", events=events, resolved_at=event.received_at
                    )
                    for incident in self._incidents.values():
                        if incident.incident_key == event.dedup_key and incident.status != "resolved":
                            self._incidents[incident.id] = replace(incident, status="resolved")
                    del self._open_alert_index[event.dedup_key]
            self._changed.notify_all()

    # -- incidents ---------------------------------------------------------------------------------

    @property
    def incidents(self) -> list[FakeIncident]:
        """Every incident opened (existing yet or not), oldest first."""
        with self._lock:
            return list(self._incidents.values())

    def incidents_of(self, incident_key: str) -> list[FakeIncident]:
        """The incidents opened under one dedup key, oldest first."""
        return [incident for incident in self.incidents if incident.incident_key == incident_key]

    def wait_for_incidents(
        self, predicate: Callable[[list[FakeIncident]], bool], timeout: float = 5.0
    ) -> list[FakeIncident]:
        """Block until `predicate(incidents)` holds (or raise TimeoutError); returns the incidents."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self._incidents.values())), timeout):
                raise TimeoutError(f"the incidents did not reach the expected state within {timeout} s")
            return list(self._incidents.values())

    def _open_incident(self, incident_key: str, created_at: float) -> None:
        """Called under the lock: an incident that exists from `created_at`, its routes ready."""
        incident_id = f"PINC{len(self._incidents) + 1:04d}"
        self._incidents[incident_id] = FakeIncident(incident_id, incident_key, created_at)
        base = f"/incidents/{incident_id}"
        for method, path, handler in (
            ("GET", base, self._get_incident),
            ("PUT", base, self._update_incident),
            ("POST", f"{base}/notes", self._add_note),
            ("POST", f"{base}/responder_requests", self._request_responders),
        ):
            self._rest_server.route(method, path, functools.partial(handler, incident_id))

    def _visible(self, incident_id: str, at: float) -> FakeIncident | None:
        incident = self._incidents.get(incident_id)
        return incident if incident is not None and incident.created_at <= at else None

    def _render_incident(self, incident: FakeIncident) -> dict[str, Any]:
        return {
            "id": incident.id,
            "type": "incident",
            "summary": incident.incident_key,
            "incident_key": incident.incident_key,
            "status": incident.status,
            "urgency": incident.urgency,
            "html_url": f"{self._web_url}/incidents/{incident.id}",
        }

    def _list_incidents(self, request: Request) -> Response:
        if not self._authorized(request):
            return _rest_error(401, "Unauthorized")
        key = request.first("incident_key")
        statuses = request.query.get("statuses[]") or []
        with self._lock:
            found = [
                self._render_incident(incident)
                for incident in self._incidents.values()
                if incident.created_at <= request.received_at
                and (key is None or incident.incident_key == key)
                and (not statuses or incident.status in statuses)
            ]
        return json_response(200, {"incidents": found, "limit": 25, "offset": 0, "more": False, "total": None})

    def _get_incident(self, incident_id: str, request: Request) -> Response:
        if not self._authorized(request):
            return _rest_error(401, "Unauthorized")
        with self._lock:
            incident = self._visible(incident_id, request.received_at)
            if incident is None:
                return _rest_error(404, "Not Found", code=2100)
            return json_response(200, {"incident": self._render_incident(incident)})

    def _incident_write(
        self, incident_id: str, request: Request, definition: str
    ) -> tuple[FakeIncident, dict[str, Any]] | Response:
        """The incident and the valid body of a write, or PagerDuty's refusal."""
        body = self._write_body(request, functools.partial(incident_write_errors, definition))
        if isinstance(body, Response):
            return body
        with self._lock:
            incident = self._visible(incident_id, request.received_at)
        if incident is None:
            return _rest_error(404, "Not Found", code=2100)
        return incident, body

    def _store_write(self, incident: FakeIncident, request: Request, **changes: Any) -> FakeIncident:
        with self._changed:
            current = self._incidents[incident.id]
            write = (request.method, request.path, request.header("from") or "")
            updated = replace(current, writes=(*current.writes, write), **changes)
            self._incidents[incident.id] = updated
            self._changed.notify_all()
            return updated

    def _update_incident(self, incident_id: str, request: Request) -> Response:
        checked = self._incident_write(incident_id, request, "IncidentUpdate")
        if isinstance(checked, Response):
            return checked
        incident, body = checked
        urgency = body["incident"].get("urgency", incident.urgency)
        updated = self._store_write(incident, request, urgency=urgency)
        return json_response(200, {"incident": self._render_incident(updated)})

    def _add_note(self, incident_id: str, request: Request) -> Response:
        checked = self._incident_write(incident_id, request, "Note")
        if isinstance(checked, Response):
            return checked
        incident, body = checked
        with self._lock:
            notes = (*self._incidents[incident_id].notes, body["note"]["content"])
        self._store_write(incident, request, notes=notes)
        note = {"id": f"PNOTE{len(notes):03d}", "content": body["note"]["content"]}
        return json_response(201, {"note": note})

    def _request_responders(self, incident_id: str, request: Request) -> Response:
        checked = self._incident_write(incident_id, request, "ResponderRequest")
        if isinstance(checked, Response):
            return checked
        incident, body = checked
        with self._lock:
            requests = (*self._incidents[incident_id].responder_requests, body)
        self._store_write(incident, request, responder_requests=requests)
        targets = [item["responder_request_target"] for item in body["responder_request_targets"]]
        answer = {
            "incident": self._render_incident(incident),
            "requester": {"id": body["requester_id"]},
            "message": body["message"],
            "responder_request_targets": targets,
        }
        return json_response(200, {"responder_request": answer})

    def _list_windows(self, request: Request) -> Response:
        if request.header("authorization") != f"Token token={self._api_token}":
            return _rest_error(401, "Unauthorized")
        with self._lock:
            raw = self._raw_answer
        if raw is not None:
            return json_response(200, raw(request) if callable(raw) else raw)
        try:
            service_ids, state, limit, offset = self._parse_list_query(request)
        except _InvalidInput as invalid:
            return _rest_error(400, "Invalid Input Provided", [str(invalid)], code=2001)
        now = self._now()
        with self._lock:
            unknown = [service for service in service_ids if service not in self._services]
            if unknown:
                errors = [f"Service {service} not found." for service in unknown]
                return _rest_error(400, "Invalid Input Provided", errors, code=2001)
            matching = [
                window
                for window in self._windows.values()
                if (not service_ids or set(window.service_ids) & set(service_ids)) and _in_state(window, state, now)
            ]
            matching.sort(key=lambda window: (window.start, self._window_sequence[window.id]))
            windows = [self._render_window(window) for window in matching[offset : offset + limit]]
            page = [*self._raw_entries, *windows] if offset == 0 else windows
        body = {
            "maintenance_windows": page,
            "limit": limit,
            "offset": offset,
            "more": offset + len(windows) < len(matching),
            "total": len(matching) if request.first("total") == "true" else None,
        }
        return json_response(200, body)

    def _authorized(self, request: Request) -> bool:
        return request.header("authorization") == f"Token token={self._api_token}"

    def _write_body(self, request: Request, errors_of: Callable[[object], list[str]]) -> dict[str, Any] | Response:
        """A REST write's body, once the token, the `From` header and the body (`errors_of`) are good;
        else PagerDuty's refusal."""
        if not self._authorized(request):
            return _rest_error(401, "Unauthorized")
        if not (request.header("from") or "").strip():
            return _rest_error(
                400, "Invalid Input Provided", ["A From header with a user's email address is required"], 2001
            )
        try:
            body = request.json()
        except ValueError:
            return _rest_error(400, "Invalid Input Provided", ["the body is not JSON"], 2001)
        errors = errors_of(body)
        if errors:
            return _rest_error(400, "Invalid Input Provided", errors, 2001)
        return dict(body)

    def _create_window(self, request: Request) -> Response:
        body = self._write_body(request, window_errors)
        if isinstance(body, Response):
            return body
        item = body["maintenance_window"]
        now = self._now()
        start = max(datetime.fromisoformat(item["start_time"]), now)
        end = datetime.fromisoformat(item["end_time"])
        if end <= start:
            return _rest_error(
                400, "Invalid Input Provided", ["end_time must be in the future and after start_time"], 2001
            )
        services = [service["id"] for service in item["services"]]
        try:
            window_id = self.add_window(services, start, end, item.get("description", ""))
        except ValueError:
            unknown = [service for service in services if service not in self._services]
            return _rest_error(400, "Invalid Input Provided", [f"Service {s} not found." for s in unknown], 2001)
        with self._lock:
            rendered = self._render_window(self._windows[window_id])
        return json_response(201, {"maintenance_window": rendered})

    def _delete_window(self, window_id: str, request: Request) -> Response:
        if not self._authorized(request):
            return _rest_error(401, "Unauthorized")
        now = self._now()
        with self._lock:
            window = self._windows.get(window_id)
            if window is None:
                return _rest_error(404, "Not Found", code=2100)
            if window.end <= now:
                return _rest_error(405, "Method Not Allowed", ["The maintenance window has already ended"])
            if window.start > now:
                del self._windows[window_id]
            else:
                self._windows[window_id] = replace(window, end=now)
        return Response(204)

    def _update_window(self, window_id: str, request: Request) -> Response:
        if not self._authorized(request):
            return _rest_error(401, "Unauthorized")
        try:
            item = request.json()["maintenance_window"]
            changes: dict[str, Any] = {}
            if "start_time" in item:
                changes["start"] = datetime.fromisoformat(item["start_time"])
            if "end_time" in item:
                changes["end"] = datetime.fromisoformat(item["end_time"])
            if "description" in item:
                changes["description"] = str(item["description"])
        except (ValueError, KeyError, TypeError):
            return _rest_error(400, "Invalid Input Provided", ["a maintenance_window object is required"], 2001)
        with self._lock:
            window = self._windows.get(window_id)
            if window is None:
                return _rest_error(404, "Not Found", code=2100)
            updated = replace(window, **changes)
            if updated.start.tzinfo is None or updated.end.tzinfo is None or updated.end <= updated.start:
                return _rest_error(400, "Invalid Input Provided", ["end_time must be after start_time"], 2001)
            self._windows[window_id] = updated
            rendered = self._render_window(updated)
        return json_response(200, {"maintenance_window": rendered})

    def _get_service(self, service_id: str, request: Request) -> Response:
        if not self._authorized(request):
            return _rest_error(401, "Unauthorized")
        with self._lock:
            name = self._services[service_id]
            status, last_incident = self._service_status[service_id]
        service = {
            "id": service_id,
            "type": "service",
            "summary": name,
            "name": name,
            "self": f"{self.api_url}/services/{service_id}",
            "html_url": f"{self._web_url}/service-directory/{service_id}",
            "status": status,
            "last_incident_timestamp": _iso(last_incident) if last_incident is not None else None,
        }
        return json_response(200, {"service": service})

    @staticmethod
    def _parse_list_query(request: Request) -> tuple[list[str], str, int, int]:
        state = request.first("filter", "all") or "all"
        if state not in WINDOW_FILTERS:
            raise _InvalidInput(f"filter must be one of {', '.join(WINDOW_FILTERS)}, not {state!r}")
        limit = min(_non_negative_int(request, "limit", DEFAULT_LIMIT), MAX_LIMIT)
        if limit == 0:
            raise _InvalidInput("limit must be at least 1")
        offset = _non_negative_int(request, "offset", 0)
        if offset + limit > MAX_OFFSET_PLUS_LIMIT:
            raise _InvalidInput(f"offset + limit must not exceed {MAX_OFFSET_PLUS_LIMIT}")
        return request.query.get("service_ids[]", []), state, limit, offset

    def _render_window(self, window: MaintenanceWindow) -> dict[str, Any]:
        return {
            "id": window.id,
            "type": "maintenance_window",
            "summary": window.description,
            "self": f"{self.api_url}/maintenance_windows/{window.id}",
            "html_url": f"{self._web_url}/service-directory/maintenance-windows/{window.id}",
            "sequence_number": self._window_sequence[window.id],
            "start_time": _iso(window.start),
            "end_time": _iso(window.end),
            "description": window.description,
            "created_by": {
                "id": "PSIMUSR",
                "type": "user_reference",
                "summary": "depmon simulator",
                "self": f"{self.api_url}/users/PSIMUSR",
                "html_url": f"{self._web_url}/users/PSIMUSR",
            },
            "services": [
                {
                    "id": service,
                    "type": "service_reference",
                    "summary": self._services[service],
                    "self": f"{self.api_url}/services/{service}",
                    "html_url": f"{self._web_url}/service-directory/{service}",
                }
                for service in window.service_ids
            ],
            "teams": [],
        }


def _non_negative_int(request: Request, name: str, default: int) -> int:
    raw = request.first(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _InvalidInput(f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise _InvalidInput(f"{name} must not be negative")
    return value


def _in_state(window: MaintenanceWindow, state: str, now: datetime) -> bool:
    if state == "past":
        return window.end <= now
    if state == "future":
        return window.start > now
    if state == "ongoing":
        return window.is_open_at(now)
    if state == "open":
        return window.end > now
    return True


# -- standalone ------------------------------------------------------------------------------------


def _longer_than(count: int, events: list[ReceivedEvent]) -> bool:
    return len(events) > count


def main(argv: list[str] | None = None) -> int:
    """Run the fake until interrupted, printing each accepted event as a JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m monitor.sim.fake_pagerduty",
        description="A fake PagerDuty on loopback: Events API v2 and REST maintenance windows.",
    )
    parser.add_argument("--port", type=int, default=0, help="events API port (default: a free one)")
    parser.add_argument("--api-port", type=int, default=0, help="REST API port (default: a free one)")
    parser.add_argument("--api-token", default=SIM_API_TOKEN, help="REST token to accept")
    parser.add_argument("--service", action="append", default=[], help="a known service id (repeatable)")
    args = parser.parse_args(argv)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    with FakePagerDuty(api_token=args.api_token, events_port=args.port, api_port=args.api_port) as fake:
        for service in args.service:
            fake.add_service(service)
        print(f"events: POST {fake.events_url}/v2/enqueue", flush=True)
        print(
            f"rest:   GET {fake.api_url}/maintenance_windows  (Authorization: Token token={args.api_token})",
            flush=True,
        )
        seen = 0
        try:
            while True:
                try:
                    events = fake.wait_for(functools.partial(_longer_than, seen), timeout=1.0)
                except TimeoutError:
                    continue
                for event in events[seen:]:
                    received_at = _iso(datetime.fromtimestamp(event.received_at, UTC))
                    shown = {**event.body, "routing_key": "..." + str(event.body["routing_key"])[-4:]}
                    line = {"received_at": received_at, "dedup_key": event.dedup_key, **shown}
                    print(json.dumps(line), flush=True)
                seen = len(events)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
