"""The PagerDuty boundary: Events API v2 delivery and REST maintenance windows.

Both clients wrap the official `pagerduty` package (7.x), which is synchronous: every call runs
in a worker thread. What this module does to it, and why (read from the package's source):

- its own retry loops are switched off, so the outbox (events) and the poller (windows) own the
  retry schedule and the event loop never waits on a `time.sleep` inside a thread:
  `client.retry` is cleared (the events client retries 500 twice, 502 four times, 503/504 six
  times), `client.retry[429] = 1` with `client.max_http_attempts = -1` returns a 429 at once
  (`retry[429] = 0` means "the default", which is to retry 429 forever, ignoring `Retry-After`),
  and `client.max_network_attempts = 0` turns the first network error into `pagerduty.Error`;
- `client.timeout` is set after construction (the constructor's `timeout=` is overridden by the
  package's 60 s on every request);
- the package refuses non-https base URLs, so an `http://127.0.0.1:PORT` URL (tests, the demo)
  keeps the package's real https base URL and goes through `LoopbackRewriteTransport`, which
  refuses any non-loopback target: a secret never crosses a network in clear text;
- the package's logger is replaced by a silent one; what matters is logged by the callers.

Exceptions raised by the package are translated here and never leave this module: an event
delivery always ends in a `Delivery`; a maintenance-window query either succeeds or raises
`MaintenanceUnavailable`. Messages are secret-free: they are built here from the HTTP status and
PagerDuty's answer, never from the request (which holds the routing key or the API token).

Exceptions::

    PagerDutyError
     +-- MaintenanceUnavailable    the maintenance windows could not be read (reason inside)
     +-- WindowWriteFailed         a window could not be created or ended (reason inside)

Writes (`create_window`, `end_window`) are one request each, never retried here: creating a window
twice would leave two windows. PagerDuty requires a `From` header (a user's email address) on
them; DELETE both deletes a future window and ends an ongoing one (405 once it has ended).
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import anyio.to_thread
import httpx2
import pagerduty
import structlog
from pydantic import SecretStr

from monitor.errors import MaintenanceUnavailable, PagerDutyError, WindowWriteFailed
from monitor.logs import Redactor
from monitor.maintenance.records import SERVICE_STATUSES, MaintenanceWindow
from monitor.pagerduty.transport import BoundedTransport, LoopbackRewriteTransport
from monitor.proxies import DIRECT, Link

__all__ = [
    "Delivery",
    "EventsSender",
    "MaintenanceClient",
    "MaintenanceUnavailable",
    "PagerDutyError",
    "ServiceRead",
    "WindowWriteFailed",
    "WindowsResult",
    "window_request_body",
]

log = structlog.get_logger("depmon.pagerduty")

_EVENTS_BASE_URL = "https://events.pagerduty.com"
_REST_BASE_URL = "https://api.pagerduty.com"
_MESSAGE_LIMIT = 300  # characters of PagerDuty's answer kept in a message
_MAX_CONCURRENT_SENDS = 4
_MAX_ANSWER_BYTES = 1024 * 1024  # PagerDuty's answers are a few KB; a page of 100 windows is ~100 KB
_MAX_PAGES = 50  # 5,000 windows at 100 a page: far beyond any real query; a server that says `more` forever stops here
_THREAD_GRACE = 2.0  # seconds past the transport's own deadline before the event loop stops waiting

# The package logs retries and 5xx answers; our callers log what matters, once, with context.
_vendor_log = logging.getLogger("depmon.pagerduty.vendor")
_vendor_log.addHandler(logging.NullHandler())
_vendor_log.propagate = False


@dataclass(frozen=True, slots=True)
class ServiceRead:
    """One `GET /services/{id}` answer: the status, and `last_incident_timestamp` (UNIX time) when given."""

    status: str
    last_incident_at: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one delivery attempt ended.

    `status`: `accepted` (2xx), `dropped` (a 400: PagerDuty says the event itself is invalid, so
    sending it again cannot help) or `retry` (everything else: 429, 5xx, network errors, timeouts,
    and also 401/403/404/407/413, which an egress proxy, a load balancer or a wrong `events_url`
    answer as readily as PagerDuty; dropping on them would throw away every page while they last).
    `http_status` is None when no answer came.
    `retry_after` is PagerDuty's `Retry-After`, in seconds, when it sent one.
    `outcome` names a final failure more precisely for the metric (escalation's `not_found`).
    """

    status: Literal["accepted", "dropped", "retry"]
    http_status: int | None
    message: str
    retry_after: float | None = None
    outcome: str | None = None  # the metric's outcome when it is not the status's (`not_found`)


@dataclass(frozen=True, slots=True)
class WindowsResult:
    """Maintenance windows read from PagerDuty, and the service ids PagerDuty refused (400)."""

    windows: list[MaintenanceWindow]
    bad_service_ids: list[str] = field(default_factory=list)


def _connection(url: str, default_base_url: str, deadline: float, link: Link) -> dict[str, Any]:
    """Constructor arguments that point a `pagerduty` client at `url`, every request bounded.

    The package only takes https base URLs: an http (loopback) `url` keeps the package's base URL
    and a transport sends the requests to `url`. The package's client never reads the proxy
    variables (it is given a transport), so the proxy is the transport's: CONNECT for https,
    absolute-form for http, under the same deadline and size cap.
    """
    if url.startswith("http://"):
        inner: httpx2.BaseTransport = LoopbackRewriteTransport(url, proxy=link.proxy, verify=link.verify)
        base_url = default_base_url
    else:
        inner, base_url = httpx2.HTTPTransport(proxy=link.proxy, verify=link.verify), url.rstrip("/")
    return {"base_url": base_url, "transport": BoundedTransport(inner, deadline, _MAX_ANSWER_BYTES)}


def _single_attempt(client: pagerduty.ApiClient, timeout: float) -> None:
    """Make each call one HTTP request bounded by `timeout`: the caller owns retries."""
    client.timeout = timeout  # type: ignore[assignment]  # typed int after its default; httpx2 takes floats
    client.retry.clear()
    client.retry[429] = 1
    client.max_http_attempts = -1  # with retry[429] != 0, the package returns the 429 at once
    client.max_network_attempts = 0
    client.log = _vendor_log


def _answer_detail(response: httpx2.Response) -> str:
    """PagerDuty's own words from an error answer: `message` and `errors`, else the raw text."""
    try:
        body = json.loads(response.content)
    except (ValueError, httpx2.ResponseNotRead):
        return response.text.strip()[:_MESSAGE_LIMIT]
    parts: list[str] = []
    if isinstance(body, dict):
        error = body.get("error")
        source = error if isinstance(error, dict) else body
        if source.get("message"):
            parts.append(str(source["message"]))
        errors = source.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("; ".join(str(item) for item in errors))
    text = ": ".join(parts) if parts else json.dumps(body)
    return text[:_MESSAGE_LIMIT]


def _cause(exc: BaseException) -> str:
    """The class name of the network error behind `exc` (never its text, which may hold a URL)."""
    return (exc.__cause__ or exc).__class__.__name__


def _retry_after(response: httpx2.Response, now: float) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - now
    return max(seconds, 0.0)


def failed_delivery(response: httpx2.Response, message: str) -> Delivery:
    """A non-2xx answer as a `Delivery`: 429 retried after `Retry-After`, 400 dropped (what was sent is
    itself invalid), anything else retried."""
    status = response.status_code
    if status == 429:
        return Delivery("retry", status, message, _retry_after(response, time.time()))
    if status == 400:
        return Delivery("dropped", status, message)
    return Delivery("retry", status, message)


class EventsSender:
    """Sends Events API v2 events through one long-lived `pagerduty.EventsApiV2Client`.

    `send(body)` takes an event as the outbox stores it (no routing key: added here) and returns
    a `Delivery`; it never raises for a PagerDuty or network failure. `timeout` bounds each
    operation and `deadline` the whole request (a body that drips in slowly included); `link`
    says through which proxy, if any. Close it with `close()` (or `async with`).
    """

    def __init__(
        self,
        events_url: str,
        routing_key: SecretStr,
        timeout: float = 10.0,
        deadline: float = 15.0,
        link: Link = DIRECT,
    ) -> None:
        key = routing_key.get_secret_value()
        if not key:
            raise ValueError("pagerduty.routing_key is empty: events are recorded and not sent (dry run)")
        self.events_url = events_url
        self._redactor = Redactor([key])  # PagerDuty's answer may echo the routing key
        self.deadline = deadline
        self._client = pagerduty.EventsApiV2Client(key, **_connection(events_url, _EVENTS_BASE_URL, deadline, link))
        _single_attempt(self._client, timeout)
        self._limiter = anyio.CapacityLimiter(_MAX_CONCURRENT_SENDS)

    async def send(self, body: Mapping[str, Any]) -> Delivery:
        """Send one event once; the answer decides accepted, dropped or retry."""
        # The transport ends the request at `deadline`; this guard only covers a phase it cannot
        # see (a status line that drips in): the thread is abandoned and the event retried.
        with anyio.move_on_after(self.deadline + _THREAD_GRACE):
            return await anyio.to_thread.run_sync(self._send, dict(body), limiter=self._limiter, abandon_on_cancel=True)
        return Delivery("retry", None, f"no answer from the PagerDuty Events API within {self.deadline:g} s")

    def _send(self, body: dict[str, Any]) -> Delivery:
        event = {key: value for key, value in body.items() if key not in ("routing_key", "event_action", "dedup_key")}
        action = body.get("event_action")
        dedup_key = body.get("dedup_key")
        try:
            # send_event, not trigger(): it passes `client`, `client_url`, `links` and `images`
            # through, and `payload` (component, group, class, custom_details) as we built it.
            self._client.send_event(str(action), dedup_key=dedup_key, **event)
        except pagerduty.Error as exc:
            if exc.response is not None:
                return self._from_answer(exc.response)
            return Delivery("retry", None, f"no answer from the PagerDuty Events API ({_cause(exc)})")
        except (ValueError, TypeError) as exc:
            # The package checks the action and the dedup key before sending: the event itself is bad.
            return Delivery("dropped", None, self._redactor.scrub(f"invalid event, not sent: {exc}"))
        return Delivery("accepted", 202, "accepted by the PagerDuty Events API")

    def _from_answer(self, response: httpx2.Response) -> Delivery:
        status = response.status_code
        if 200 <= status < 300:
            # PagerDuty took the event; only the answer's body was not what the package expected.
            return Delivery("accepted", status, "accepted by the PagerDuty Events API")
        detail = self._redactor.scrub(_answer_detail(response))
        return failed_delivery(
            response, f"PagerDuty Events API answered HTTP {status}" + (f": {detail}" if detail else "")
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    async def __aenter__(self) -> EventsSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class _BadRequest(Exception):
    """PagerDuty answered 400 to a query (an unknown service id, usually)."""


def _bounded_int(text: str) -> int:
    """`int()` for JSON numbers, refusing absurd lengths before Python's own 4,300-digit limit."""
    if len(text) > 30:
        raise ValueError("number too long")
    return int(text)


def _window(item: object, wanted: set[str]) -> MaintenanceWindow | None:
    """One window entry of a REST answer, or None (logged) when it is not a readable window."""
    if not isinstance(item, dict):
        log.warning(
            "maintenance_window_unreadable", window=None, error=f"entry is {type(item).__name__}, not an object"
        )
        return None
    window_id = item.get("id")
    try:
        if not isinstance(window_id, str) or not window_id:
            raise ValueError("no id")
        services = item.get("services") or []
        if not isinstance(services, list):
            raise TypeError("services is not a list")
        ids = (s.get("id") if isinstance(s, dict) else None for s in services)
        return MaintenanceWindow(
            id=window_id,
            start=_parse_time(item.get("start_time")),
            end=_parse_time(item.get("end_time")),
            description=str(item.get("description") or "")[: _MESSAGE_LIMIT * 4],
            service_ids=tuple(str(s) for s in ids if isinstance(s, str) and s in wanted),
        )
    except (TypeError, ValueError) as exc:
        log.warning("maintenance_window_unreadable", window=str(window_id)[:64], error=str(exc)[:200])
        return None


_PD_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # PagerDuty object ids (`PW98YIO`): safe in a URL path


def window_request_body(service_id: str, start: datetime, end: datetime, description: str) -> dict[str, Any]:
    """The body of `POST /maintenance_windows` for one service (PagerDuty's schema: type, times, services)."""
    return {
        "maintenance_window": {
            "type": "maintenance_window",
            "start_time": start.astimezone(UTC).isoformat(timespec="seconds"),
            "end_time": end.astimezone(UTC).isoformat(timespec="seconds"),
            "description": description,
            "services": [{"id": service_id, "type": "service_reference"}],
        }
    }


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not an ISO 8601 time: {value!r}")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class MaintenanceClient:
    """Reads open maintenance windows through one long-lived `pagerduty.RestApiV2Client`.

    `page_size` is the `limit` of each page (PagerDuty allows at most 100); `link` says through
    which proxy, if any. Close it with `close()` (or `async with`).
    """

    def __init__(
        self,
        api_url: str,
        api_token: SecretStr,
        timeout: float = 10.0,
        page_size: int = 100,
        deadline: float = 15.0,
        link: Link = DIRECT,
    ) -> None:
        token = api_token.get_secret_value()
        if not token:
            raise ValueError("pagerduty.api_token is empty: maintenance windows are not polled")
        self.api_url = api_url
        self._redactor = Redactor([token])  # PagerDuty's answer may echo the API token
        self._page_size = page_size
        self.deadline = deadline
        self._client = pagerduty.RestApiV2Client(token, **_connection(api_url, _REST_BASE_URL, deadline, link))
        _single_attempt(self._client, timeout)
        self._limiter = anyio.CapacityLimiter(1)

    async def open_windows(self, service_ids: Sequence[str]) -> WindowsResult:
        """Open and upcoming windows of `service_ids` (`filter=open`), every page.

        A 400 for the whole query (PagerDuty's answer when one id is unknown) is isolated: the
        ids are queried one by one, the ones answered 400 are reported in `bad_service_ids`, the
        windows of the others are kept. Any other failure raises `MaintenanceUnavailable`.
        A window keeps only the service ids that were asked for and are not bad.
        """
        ids = tuple(dict.fromkeys(service_ids))
        # Each request is bounded by the transport; the whole poll (pages, and one query per id
        # after a 400) by this guard, so a stop signal never waits on it.
        with anyio.move_on_after(self.deadline * (len(ids) + _MAX_PAGES) + _THREAD_GRACE):
            return await anyio.to_thread.run_sync(
                self._open_windows, ids, limiter=self._limiter, abandon_on_cancel=True
            )
        raise MaintenanceUnavailable(f"PagerDuty REST API did not finish answering at {self.api_url}")

    def _open_windows(self, service_ids: tuple[str, ...]) -> WindowsResult:
        if not service_ids:
            return WindowsResult([], [])
        bad: list[str] = []
        try:
            raw = self._query(service_ids)
        except _BadRequest:
            raw = []
            for service_id in service_ids:
                try:
                    raw.extend(self._query((service_id,)))
                except _BadRequest:
                    bad.append(service_id)
        good = [service_id for service_id in service_ids if service_id not in bad]
        return WindowsResult(self._windows(raw, good), bad)

    def _query(self, service_ids: tuple[str, ...]) -> list[object]:
        """Every entry of every page, paginating by hand (the package's `iter_all` loops forever
        on `{"maintenance_windows": [], "more": true}`): stop when `more` is false, a page is
        empty, the offset would not move, or after `_MAX_PAGES` pages."""
        entries: list[object] = []
        offset = 0
        for _ in range(_MAX_PAGES):
            params = {
                "service_ids": list(service_ids),
                "filter": "open",
                "limit": self._page_size,
                "offset": offset,
                "total": "false",
            }
            page = self._page(params)
            items = page.get("maintenance_windows")
            if not isinstance(items, list):
                raise MaintenanceUnavailable("PagerDuty REST API answer has no maintenance_windows list")
            entries.extend(items)
            if page.get("more") is not True or not items:
                return entries
            offset += len(items)
        log.warning("maintenance_pages_capped", pages=_MAX_PAGES, windows=len(entries))
        return entries

    def _page(self, params: dict[str, Any]) -> dict[str, Any]:
        response = self._answer(MaintenanceUnavailable, "GET", "/maintenance_windows", params=params)
        if response.status_code == 400:
            raise _BadRequest
        if not 200 <= response.status_code < 300:
            raise MaintenanceUnavailable(self._reason(response))
        try:
            page = json.loads(response.content, parse_int=_bounded_int)
        except (ValueError, RecursionError):
            raise MaintenanceUnavailable("PagerDuty REST API answer is not JSON") from None
        if not isinstance(page, dict):
            raise MaintenanceUnavailable("PagerDuty REST API answer is not a JSON object")
        return page

    async def create_window(
        self, service_id: str, start: datetime, end: datetime, description: str, from_email: str
    ) -> MaintenanceWindow:
        """Create a window on one service (`POST /maintenance_windows`, `From: from_email`); one attempt.

        Raises `WindowWriteFailed` when PagerDuty refuses (its reason inside) or does not answer.
        """
        body = window_request_body(service_id, start, end, description)
        response = await self._write("POST", "/maintenance_windows", from_email, body)
        try:
            item = json.loads(response.content, parse_int=_bounded_int).get("maintenance_window")
        except (ValueError, RecursionError, AttributeError):
            item = None
        window = _window(item, {service_id})
        if window is None:
            raise WindowWriteFailed("PagerDuty created the window but its answer holds no readable window")
        return window

    async def end_window(self, window_id: str, from_email: str) -> None:
        """End an ongoing window or delete a future one (`DELETE /maintenance_windows/{id}`); one attempt.

        Raises `WindowWriteFailed` when PagerDuty refuses (404 unknown, 405 already ended) or does not answer.
        """
        if not _PD_ID.fullmatch(window_id):
            raise WindowWriteFailed(f"{window_id[:40]!r} is not a PagerDuty id (letters and digits)")
        await self._write("DELETE", f"/maintenance_windows/{window_id}", from_email, None)

    async def _write(self, method: str, path: str, from_email: str, body: dict[str, Any] | None) -> httpx2.Response:
        if not from_email:
            raise WindowWriteFailed("pagerduty.from_email is empty: PagerDuty requires a From header on writes")
        with anyio.move_on_after(self.deadline + _THREAD_GRACE):
            return await anyio.to_thread.run_sync(
                self._request, method, path, from_email, body, limiter=self._limiter, abandon_on_cancel=True
            )
        raise WindowWriteFailed(f"no answer from the PagerDuty REST API at {self.api_url} within {self.deadline:g} s")

    def _request(self, method: str, path: str, from_email: str, body: dict[str, Any] | None) -> httpx2.Response:
        kwargs: dict[str, Any] = {"headers": {"From": from_email}}
        if body is not None:
            kwargs["json"] = body
        response = self._answer(WindowWriteFailed, method, path, **kwargs)
        if not 200 <= response.status_code < 300:
            reason = self._reason(response)
            if response.status_code == 405 and method == "DELETE":
                reason += " (the window has already ended)"
            raise WindowWriteFailed(reason, response.status_code)
        response.read()
        return response

    async def service_statuses(self, service_ids: Sequence[str]) -> dict[str, ServiceRead | str]:
        """Each service's own status (`GET /services/{id}`), one request per id, each bounded.

        A service that cannot be read maps to the reason (secret-free) instead; this never raises
        for one service's failure.
        """
        ids = tuple(dict.fromkeys(service_ids))
        with anyio.move_on_after(self.deadline * len(ids) + _THREAD_GRACE):
            return await anyio.to_thread.run_sync(
                self._service_statuses, ids, limiter=self._limiter, abandon_on_cancel=True
            )
        return dict.fromkeys(ids, f"PagerDuty REST API did not finish answering at {self.api_url}")

    def _service_statuses(self, service_ids: tuple[str, ...]) -> dict[str, ServiceRead | str]:
        result: dict[str, ServiceRead | str] = {}
        for service_id in service_ids:
            try:
                result[service_id] = self._service(service_id)
            except MaintenanceUnavailable as exc:
                result[service_id] = exc.reason
        return result

    def _service(self, service_id: str) -> ServiceRead:
        if not _PD_ID.fullmatch(service_id):
            raise MaintenanceUnavailable(f"{service_id[:40]!r} is not a PagerDuty id")
        response = self._answer(MaintenanceUnavailable, "GET", f"/services/{service_id}")
        if not 200 <= response.status_code < 300:
            raise MaintenanceUnavailable(self._reason(response))
        try:
            service = json.loads(response.content, parse_int=_bounded_int).get("service")
            status = service.get("status")
            last = service.get("last_incident_timestamp")
        except (ValueError, RecursionError, AttributeError):
            raise MaintenanceUnavailable("PagerDuty REST API answer holds no service object") from None
        if status not in SERVICE_STATUSES:
            raise MaintenanceUnavailable(
                f"PagerDuty REST API answer has an unknown service status {str(status)[:40]!r}"
            )
        try:
            last_at = _parse_time(last).timestamp() if last else None
        except ValueError:
            last_at = None
        return ServiceRead(status, last_at)

    def _answer(
        self, unreachable: type[MaintenanceUnavailable | WindowWriteFailed], method: str, path: str, **kwargs: Any
    ) -> httpx2.Response:
        """PagerDuty's answer to one request, whatever its status; `unreachable(reason)` when none came."""
        try:
            return self._client.request(method, path, **kwargs)
        except pagerduty.Error as exc:  # a network failure, or a 401 (the package raises it at once)
            if exc.response is None:
                raise unreachable(f"PagerDuty REST API unreachable at {self.api_url} ({_cause(exc)})") from None
            response: httpx2.Response = exc.response
            return response

    def _reason(self, response: httpx2.Response) -> str:
        status = response.status_code
        detail = self._redactor.scrub(_answer_detail(response))
        reason = f"PagerDuty REST API answered HTTP {status}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            reason += " (check pagerduty.api_token)"
        return reason

    @staticmethod
    def _windows(raw: list[object], good_ids: Sequence[str]) -> list[MaintenanceWindow]:
        """The readable windows among `raw`; each entry is judged on its own, so one malformed
        entry (a number, a string, null, a missing time) is logged and skipped, not fatal."""
        wanted = set(good_ids)
        windows: dict[str, MaintenanceWindow] = {}
        for item in raw:
            window = _window(item, wanted)
            if window is not None and window.id not in windows and window.service_ids:
                windows[window.id] = window  # a window over several services comes once per queried id
        return sorted(windows.values(), key=lambda window: (window.start, window.id))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    async def __aenter__(self) -> MaintenanceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
